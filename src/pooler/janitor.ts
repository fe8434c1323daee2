/**
 * The janitor: a few times a second (as PgBouncer's), instead of a timer per connection, it lets
 * each pool close idle and aged servers, forgets expired login bans and long-unused sessions (SHOW
 * SESSIONS), and cuts off clients past client_login_timeout, client_idle_timeout, query_timeout or
 * idle_transaction_timeout.
 */
import type { Config } from '../config/schema.js';
import { PgError, SqlState } from '../protocol/messages.js';
import { ClientPhase } from '../frontend/client-connection.js';
import type { Registry } from './registry.js';
import { clientTimeouts, type ClientTimeouts } from '../config/effective.js';

const JANITOR_INTERVAL_MS = 500;

export class Janitor {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly registry: Registry,
    /** What forgets old entries as time passes: the login limiter's bans, the session accounting. */
    private readonly forgetting: readonly { prune(now: number): void }[],
    private readonly config: () => Readonly<Config>,
  ) {}

  start(): void {
    this.timer ??= setInterval(() => this.sweep(Date.now()), JANITOR_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  sweep(now: number): void {
    for (const pool of this.registry.pools.values()) pool.tick(now);
    for (const f of this.forgetting) f.prune(now);
    const c = this.config();
    const loginTimeout = c.client_login_timeout * 1000;
    // A [users] entry may set its own timeouts, as in PgBouncer: worked out once per user per sweep.
    const timeoutsOf = new Map<string, ClientTimeouts>();
    for (const client of this.registry.clients) {
      if (client.phase === ClientPhase.Startup || client.phase === ClientPhase.Auth) {
        if (loginTimeout > 0 && now - client.connectedAt > loginTimeout) {
          client.fail(PgError.fatal(SqlState.ProtocolViolation, 'client_login_timeout'));
        }
        continue;
      }
      if (client.phase !== ClientPhase.Ready) continue;
      let timeouts = timeoutsOf.get(client.user);
      if (!timeouts) timeoutsOf.set(client.user, (timeouts = clientTimeouts(c, client.user)));
      const server = client.server;
      if (!server || (server.outstanding === 0 && !server.isIdleInTransaction)) {
        if (timeouts.idleMs > 0 && !client.isWaiting && now - client.lastActiveAt > timeouts.idleMs) {
          client.fail(PgError.fatal(SqlState.IdleSessionTimeout, 'terminating connection due to client_idle_timeout'));
        }
      } else if (server.outstanding > 0) {
        if (timeouts.queryMs > 0 && now - server.queryStartedAt > timeouts.queryMs) {
          // The pool cancels and drains the server when the client is gone.
          client.fail(PgError.fatal(SqlState.QueryCanceled, 'canceling statement due to query_timeout'));
        }
      } else if (server.isIdleInTransaction) {
        if (timeouts.idleInTransactionMs > 0 && now - server.lastReadyAt > timeouts.idleInTransactionMs) {
          client.fail(PgError.fatal(SqlState.IdleInTransactionTimeout, 'terminating connection due to idle_transaction_timeout'));
        }
      }
    }
  }
}
