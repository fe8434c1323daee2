/**
 * The effective value of every setting that has more than one level, worked out here and nowhere
 * else: a user's [users] entry overrides its database's entry, which overrides the global setting
 * (PgBouncer's rule), and a database name not in [databases] falls back to "*". These are the
 * configured values; with `workers` > 1 each worker's pools enforce their share of the limits
 * (pooler/settings.ts).
 */
import type { Config, DatabaseConfig } from './schema.js';

/** The entry a client's database name leads to: its own, else "*", else none (no such database). */
export function databaseEntryFor(c: Readonly<Config>, name: string): DatabaseConfig | undefined {
  return c.databases[name] ?? c.databases['*'];
}

/** A database entry's own sizes and limits, else the global ones (SHOW DATABASES; configured totals). */
export function databaseLimits(c: Readonly<Config>, entry: DatabaseConfig): { poolSize: number; minPoolSize: number; reservePoolSize: number; maxDbConnections: number } {
  return {
    poolSize: entry.pool_size ?? c.default_pool_size,
    minPoolSize: entry.min_pool_size ?? c.min_pool_size,
    reservePoolSize: entry.reserve_pool_size ?? c.reserve_pool_size,
    maxDbConnections: entry.max_db_connections ?? c.max_db_connections,
  };
}

/** A pool's mode, size and reserve: the server user's entry, else the database's, else global. */
export function poolLimits(c: Readonly<Config>, entry: DatabaseConfig, user: string): { mode: Config['pool_mode']; poolSize: number; reservePoolSize: number } {
  const u = c.users[user];
  const db = databaseLimits(c, entry);
  return {
    // connect_query's effect belongs to one client's login: the backend must stay with that client.
    mode: entry.connect_query ? 'session' : (u?.pool_mode ?? entry.pool_mode ?? c.pool_mode),
    poolSize: u?.pool_size ?? db.poolSize,
    reservePoolSize: u?.reserve_pool_size ?? db.reservePoolSize,
  };
}

/** max_user_connections: the user's entry, else the global setting (0 = unlimited; configured total). */
export function maxUserConnections(c: Readonly<Config>, user: string): number {
  return c.users[user]?.max_user_connections ?? c.max_user_connections;
}

/** max_user_client_connections: only a [users] entry sets it (0 = unlimited; configured total). */
export function maxUserClientConnections(c: Readonly<Config>, user: string): number {
  return c.users[user]?.max_user_client_connections ?? 0;
}

/** The client timeouts of one user, in ms (0 = off): its [users] entry, else the global settings. */
export interface ClientTimeouts {
  idleMs: number;
  queryMs: number;
  idleInTransactionMs: number;
}

export function clientTimeouts(c: Readonly<Config>, user: string): ClientTimeouts {
  const u = c.users[user];
  return {
    idleMs: (u?.client_idle_timeout ?? c.client_idle_timeout) * 1000,
    queryMs: (u?.query_timeout ?? c.query_timeout) * 1000,
    idleInTransactionMs: (u?.idle_transaction_timeout ?? c.idle_transaction_timeout) * 1000,
  };
}

/** auth_user and auth_query: the database entry's, else the global ones. */
export function secretLookup(c: Readonly<Config>, entry: DatabaseConfig): { authUser: string | undefined; query: string } {
  return { authUser: entry.auth_user ?? c.auth_user, query: entry.auth_query ?? c.auth_query };
}

