/**
 * One process's figures at one moment, as plain data: what /metrics, the dashboard and /readyz
 * are made from. With `workers` > 1 every worker takes its own and the primary sums them
 * (mergeMetrics), so each page is rendered once, from one shape, whatever the process layout.
 */
import type { Config } from '../config/schema.js';
import { databaseEntryFor, databaseLimits, maxUserConnections } from '../config/effective.js';
import { CLOSE_REASONS, ServerState } from '../pool/server-connection.js';
import type { Pool } from '../pool/pool.js';
import type { PoolerStats } from './pooler-stats.js';

export interface PoolFigures {
  database: string;
  user: string;
  mode: string;
  clients_active: number;
  clients_waiting: number;
  servers_login: number;
  servers_idle: number;
  servers_active: number;
  servers_cleanup: number;
  max_wait_seconds: number;
  /** Limits as this process applies them (its share with workers > 1; the sum is the configured total). */
  pool_size: number;
  reserve_size: number;
  min_pool_size: number;
  transactions: number;
  queries: number;
  received_bytes: number;
  sent_bytes: number;
  server_assignments: number;
  server_connects: number;
  transaction_us: number;
  query_us: number;
  wait_us: number;
  transaction_times: number[];
  wait_times: number[];
}

export interface MetricsSnapshot {
  /** Processes summed into it (1, or the workers that answered). */
  processes: number;
  /** A SHUTDOWN is under way, or the process is not (yet, or any more) listening. */
  stopping: boolean;
  listening: boolean;
  clients: number;
  clients_logging_in: number;
  max_client_conn: number;
  /** max_db_connections per database entry and max_user_connections per user (0: unlimited). */
  database_limits: Record<string, number>;
  user_limits: Record<string, number>;
  pools: PoolFigures[];
  login_failures: Record<string, number>;
  client_errors: Record<string, number>;
  session_logins: { ok: number; failed: number };
  accessors: { accessor: string; transactions: number; queries: number; errors: number }[];
  /** Server connections the pools closed, by reason (every CloseReason, from the start). */
  server_closes: Record<string, number>;
}

/** The client fields a snapshot counts. */
interface ObservedClient {
  readonly pool: Pool | null;
  readonly admin: boolean;
  readonly isWaiting: boolean;
}

/** What a snapshot reads from the running pooler (src/pooler/pooler.ts implements it). */
export interface ObservedPooler {
  readonly pools: ReadonlyMap<string, Pool>;
  readonly clients: ReadonlySet<ObservedClient>;
  readonly currentConfig: Readonly<Config>;
  readonly stats: PoolerStats;
  readonly isStopping: boolean;
  readonly isListening: boolean;
  databaseNameOf(pool: Pool): string;
}

export function takeSnapshot(pooler: ObservedPooler): MetricsSnapshot {
  const c = pooler.currentConfig;
  // One pass over the clients, not one per pool (1,000 pools x 10,000 clients would show).
  const perPool = new Map<Pool, { active: number; waiting: number }>();
  let loggingIn = 0;
  for (const client of pooler.clients) {
    const pool = client.pool;
    if (!pool) {
      if (!client.admin) loggingIn++;
      continue;
    }
    let n = perPool.get(pool);
    if (!n) perPool.set(pool, (n = { active: 0, waiting: 0 }));
    if (client.isWaiting) n.waiting++;
    else n.active++;
  }
  const now = Date.now();
  const pools: PoolFigures[] = [];
  const dbLimits: Record<string, number> = {};
  const userLimits: Record<string, number> = {};
  const serverCloses: Record<string, number> = Object.fromEntries(CLOSE_REASONS.map((r) => [r, 0]));
  for (const [name, entry] of Object.entries(c.databases)) if (name !== '*') dbLimits[name] = databaseLimits(c, entry).maxDbConnections;
  for (const name of Object.keys(c.users)) userLimits[name] = maxUserConnections(c, name);
  for (const pool of pooler.pools.values()) {
    const database = pooler.databaseNameOf(pool);
    const user = pool.target.user;
    const entry = databaseEntryFor(c, database);
    dbLimits[database] ??= entry ? databaseLimits(c, entry).maxDbConnections : c.max_db_connections;
    userLimits[user] ??= maxUserConnections(c, user);
    for (const [reason, n] of pool.closes) serverCloses[reason] += n;
    const k = pool.counters;
    const clients = perPool.get(pool) ?? { active: 0, waiting: 0 };
    pools.push({
      database,
      user,
      mode: pool.settings.mode,
      clients_active: clients.active,
      clients_waiting: clients.waiting,
      servers_login: pool.count(ServerState.Login),
      servers_idle: pool.count(ServerState.Idle),
      servers_active: pool.count(ServerState.Active),
      servers_cleanup: pool.count(ServerState.Cleanup),
      max_wait_seconds: pool.maxWaitMs(now) / 1000,
      pool_size: pool.settings.size,
      reserve_size: pool.settings.reserveSize,
      min_pool_size: pool.settings.minSize,
      transactions: k.xacts,
      queries: k.queries,
      received_bytes: k.received,
      sent_bytes: k.sent,
      server_assignments: k.assignments,
      server_connects: k.connects,
      transaction_us: k.xactUs,
      query_us: k.queryUs,
      wait_us: k.waitUs,
      transaction_times: [...k.xactTimes],
      wait_times: [...k.waitTimes],
    });
  }
  const st = pooler.stats;
  return {
    processes: 1,
    stopping: pooler.isStopping,
    listening: pooler.isListening,
    clients: pooler.clients.size,
    clients_logging_in: loggingIn,
    max_client_conn: c.max_client_conn,
    database_limits: dbLimits,
    user_limits: userLimits,
    pools,
    login_failures: Object.fromEntries(st.loginFailures),
    client_errors: Object.fromEntries(st.clientErrors),
    session_logins: { ...st.sessionLogins },
    accessors: st.accounting.accessorSeries(),
    server_closes: serverCloses,
  };
}

const POOL_SUMS = [
  'clients_active', 'clients_waiting', 'servers_login', 'servers_idle', 'servers_active', 'servers_cleanup', 'pool_size', 'reserve_size',
  'min_pool_size', 'transactions', 'queries', 'received_bytes', 'sent_bytes', 'server_assignments', 'server_connects', 'transaction_us',
  'query_us', 'wait_us',
] as const satisfies readonly (keyof PoolFigures)[];

function sumInto(kept: Record<string, number>, more: Record<string, number>): void {
  for (const [k, v] of Object.entries(more)) kept[k] = (kept[k] ?? 0) + v;
}

function addCounts(kept: number[], more: readonly number[]): void {
  for (let i = 0; i < more.length; i++) kept[i] = (kept[i] ?? 0) + more[i];
}

/** The workers' snapshots as one: counts summed, pools and accessors by name, the longest wait. */
export function mergeMetrics(snaps: readonly MetricsSnapshot[]): MetricsSnapshot {
  const pools = new Map<string, PoolFigures>();
  const accessors = new Map<string, MetricsSnapshot['accessors'][number]>();
  const merged: MetricsSnapshot = {
    processes: 0,
    stopping: false,
    listening: snaps.length > 0,
    clients: 0,
    clients_logging_in: 0,
    max_client_conn: 0,
    database_limits: {},
    user_limits: {},
    pools: [],
    login_failures: {},
    client_errors: {},
    session_logins: { ok: 0, failed: 0 },
    accessors: [],
    server_closes: {},
  };
  for (const s of snaps) {
    merged.processes += s.processes;
    merged.stopping ||= s.stopping;
    merged.listening &&= s.listening;
    merged.clients += s.clients;
    merged.clients_logging_in += s.clients_logging_in;
    // Configured limits are the same in every worker: shown once.
    merged.max_client_conn = Math.max(merged.max_client_conn, s.max_client_conn);
    Object.assign(merged.database_limits, s.database_limits);
    Object.assign(merged.user_limits, s.user_limits);
    sumInto(merged.login_failures, s.login_failures);
    sumInto(merged.client_errors, s.client_errors);
    sumInto(merged.server_closes, s.server_closes);
    merged.session_logins.ok += s.session_logins.ok;
    merged.session_logins.failed += s.session_logins.failed;
    for (const p of s.pools) {
      const key = `${p.database}\u0000${p.user}`;
      const kept = pools.get(key);
      if (!kept) {
        pools.set(key, { ...p, transaction_times: [...p.transaction_times], wait_times: [...p.wait_times] });
        continue;
      }
      for (const f of POOL_SUMS) kept[f] += p[f];
      kept.max_wait_seconds = Math.max(kept.max_wait_seconds, p.max_wait_seconds);
      addCounts(kept.transaction_times, p.transaction_times);
      addCounts(kept.wait_times, p.wait_times);
    }
    for (const a of s.accessors) {
      const kept = accessors.get(a.accessor);
      if (!kept) accessors.set(a.accessor, { ...a });
      else {
        kept.transactions += a.transactions;
        kept.queries += a.queries;
        kept.errors += a.errors;
      }
    }
  }
  merged.pools = [...pools.values()];
  merged.accessors = [...accessors.values()];
  return merged;
}
