/**
 * Counts of what happens to clients outside the pools' own counters: refused logins and errors
 * Tessera ended a client with, by reason; session-token logins; and the per-accessor accounting.
 * The pooler owns one; the metrics endpoint and the dashboard read it. Every reason below has a
 * series from the start (at 0), so an alert on a rate works before the first failure.
 */
import type { Config } from '../config/schema.js';
import type { PgError } from '../protocol/messages.js';
import { Accounting } from './accessors.js';

/** Why logins are refused (client-connection's labels for the SQLSTATEs, and the session-token ones). */
export const LOGIN_FAILURE_REASONS = [
  'invalid_password',
  'unknown_database',
  'max_client_conn',
  'not_authorized',
  'protocol_violation',
  'shutting_down',
  'connect_query',
  'session_authfail',
  'session_expired',
  'session_noncefail',
  'session_locked',
  'session_ended',
  'session_sql',
] as const;

/** Why Tessera itself ended a logged-in client (the error it sent), from its SQLSTATE. */
const CLIENT_ERROR_REASONS: Record<string, string> = {
  '57014': 'query_timeout',
  '25P03': 'idle_transaction_timeout',
  '57P05': 'client_idle_timeout',
  '08006': 'server_unavailable',
  '57P01': 'terminated',
  '28000': 'session_ended',
  '08P01': 'protocol_violation',
};
export const CLIENT_ERROR_REASON_NAMES = ['query_wait_timeout', ...new Set(Object.values(CLIENT_ERROR_REASONS))];

export function clientErrorReason(err: PgError): string {
  // query_wait_timeout is 08P01, as in PgBouncer, with the setting's name as its message.
  if (err.message === 'query_wait_timeout') return 'query_wait_timeout';
  return CLIENT_ERROR_REASONS[err.code] ?? err.code;
}

export class PoolerStats {
  readonly startedAt = Date.now();
  readonly loginFailures = new Map<string, number>(LOGIN_FAILURE_REASONS.map((r) => [r, 0]));
  readonly clientErrors = new Map<string, number>(CLIENT_ERROR_REASON_NAMES.map((r) => [r, 0]));
  /** Session-token logins by outcome. */
  readonly sessionLogins = { ok: 0, failed: 0 };
  readonly accounting: Accounting;

  constructor(config: Readonly<Config>) {
    this.accounting = new Accounting(config);
  }

  configure(config: Readonly<Config>): void {
    this.accounting.configure(config);
  }

  /** Shutdown: flushes the audit log. */
  close(): Promise<void> {
    return this.accounting.closeAudit();
  }

  loginFailed(reason: string): void {
    this.loginFailures.set(reason, (this.loginFailures.get(reason) ?? 0) + 1);
  }

  /** An error Tessera sends a logged-in client (not a login refusal, not the server's own). */
  clientError(err: PgError): void {
    const reason = clientErrorReason(err);
    this.clientErrors.set(reason, (this.clientErrors.get(reason) ?? 0) + 1);
  }

  sessionLogin(ok: boolean): void {
    if (ok) this.sessionLogins.ok++;
    else this.sessionLogins.failed++;
  }
}
