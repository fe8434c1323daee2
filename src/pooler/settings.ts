/**
 * What a pool and a socket run with, assembled from the effective settings (config/effective.ts,
 * where every user-over-database-over-global rule lives). With `workers` > 1, the limits a pool
 * enforces are this worker's share (shareOf); what the console shows is the configured total.
 */
import type { Config, DatabaseConfig } from '../config/schema.js';
import { databaseLimits, poolLimits } from '../config/effective.js';
import { isDiscardAll, type PoolSettings } from '../pool/pool.js';
import { sessionRelease } from '../pool/session-sql.js';
import { sessionReset } from '../config/session-presets.js';
import type { SocketOptions } from '../net/socket-options.js';
import { shareOf } from '../net/worker-identity.js';
import type { ServerTls } from '../tls/contexts.js';
import { parseReplicaLag, type HostPolicy } from '../pool/hosts.js';

/** A down host of a list is skipped this long at most (a refused connection costs little). */
const HOST_RETRY_CAP_MS = 1000;

/** How the entry's host list is used (pool/hosts.ts); the loader has checked max_replica_lag. */
export function hostPolicy(c: Readonly<Config>, entry: DatabaseConfig): HostPolicy {
  return {
    attrs: entry.target_session_attrs ?? 'any',
    balance: entry.load_balance_hosts ?? 'round-robin',
    maxLag: entry.max_replica_lag === undefined ? null : parseReplicaLag(entry.max_replica_lag),
    checkIntervalMs: c.role_check_interval * 1000,
    retryMs: Math.min(c.server_login_retry * 1000, HOST_RETRY_CAP_MS),
  };
}

/** The TCP settings every socket gets, client and server side alike. */
export function socketOptions(c: Readonly<Config>): SocketOptions {
  return {
    tcp_keepalive: c.tcp_keepalive,
    tcp_keepidle: c.tcp_keepidle,
    tcp_keepintvl: c.tcp_keepintvl,
    tcp_keepcnt: c.tcp_keepcnt,
    tcp_user_timeout: c.tcp_user_timeout,
  };
}

/** Everything a pool of `entry`'s database for server user `user` runs with, this worker's share. */
export function poolSettings(c: Readonly<Config>, entry: DatabaseConfig, user: string, tls: ServerTls): PoolSettings {
  const limits = poolLimits(c, entry, user);
  const token = entry.auth_type === 'session_token';
  const connectQuery = entry.connect_query ?? '';
  // What undoes connect_query (tessera.hello()'s binding) unless the entry says otherwise.
  const release = entry.release_query ?? (connectQuery ? c.session_tokens.close_connection : '');
  const closeQueries = new Set([token ? c.session_tokens.close_connection : '', release].filter((q) => q !== ''));
  return {
    mode: limits.mode,
    // workers > 1: each worker's pools get their part, so the totals stay as configured.
    size: shareOf(limits.poolSize),
    minSize: shareOf(databaseLimits(c, entry).minPoolSize),
    reserveSize: shareOf(limits.reservePoolSize),
    reserveTimeoutMs: c.reserve_pool_timeout * 1000,
    // Logins here run Tessera's session functions: keep their plans across releases (see
    // DISCARD_ALL_KEEPING_PLANS); everything else DISCARD ALL resets is still reset.
    resetQuery: closeQueries.size > 0 && isDiscardAll(c.server_reset_query) ? sessionReset(c.session_tokens.preset) : c.server_reset_query,
    // Whether another session may have the backend after its unbinding (README: which rule applies).
    ...sessionRelease([token ? c.session_tokens.open_connection : '', connectQuery, ...closeQueries], closeQueries.size > 0, c.session_tokens.release_check),
    // A session-token or connect_query backend is unbound before anyone else can have it.
    closeQuery: [...closeQueries].join('; '),
    connectQuery,
    tickets: token ? { issue: c.session_tokens.issue_ticket, redeem: c.session_tokens.redeem_ticket, revoke: c.session_tokens.revoke_tickets } : null,
    resetAlways: c.server_reset_query_always,
    idleTimeoutMs: c.server_idle_timeout * 1000,
    lifetimeMs: c.server_lifetime * 1000,
    queryWaitTimeoutMs: c.query_wait_timeout * 1000,
    connectTimeoutMs: c.server_connect_timeout * 1000,
    cancelWaitTimeoutMs: c.cancel_wait_timeout * 1000,
    loginRetryMs: c.server_login_retry * 1000,
    checkDelayMs: c.server_check_delay * 1000,
    checkQuery: c.server_check_query,
    maxPreparedStatements: c.max_prepared_statements,
    autoPrepare: entry.auto_prepare ?? c.auto_prepare,
    socket: socketOptions(c),
    tls,
    hosts: hostPolicy(c, entry),
  };
}
