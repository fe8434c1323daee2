/**
 * What the admin console shows, as plain data: one row type per SHOW command (PgBouncer's column
 * names, so the mapping is one to one; see the notes on each type for what PgBouncer means by a
 * field), the snapshot of all of them that a worker hands the console of another, and how the
 * snapshots of several workers add up to one.
 */

/** Effective pool modes, as PgBouncer prints them. */
export type PoolModeName = 'session' | 'transaction' | 'statement';

/** One row of SHOW POOLS: one pool per (database, user) pair. Counts are connections in that state now. */
export interface PoolSnapshot {
  database: string;
  user: string;
  /** Clients that have a server linked, or are logged in and idle (no query waiting for a server). */
  cl_active: number;
  /** Clients that sent a query and are queued for a server. */
  cl_waiting: number;
  /** Clients whose cancel request was forwarded and awaits the server's answer (default 0). */
  cl_active_cancel_req?: number;
  /** Clients whose cancel request has not been forwarded yet (default 0). */
  cl_waiting_cancel_req?: number;
  /** Servers linked to a client. */
  sv_active: number;
  /** Servers currently carrying a cancel request (default 0). */
  sv_active_cancel?: number;
  /** Servers that would be idle but wait for in-flight cancels aimed at them (default 0). */
  sv_being_canceled?: number;
  /** Servers unused and immediately usable. */
  sv_idle: number;
  /** Servers idle for longer than server_check_delay: they need server_check_query before reuse. */
  sv_used: number;
  /** Servers running server_reset_query or server_check_query. */
  sv_tested: number;
  /** Servers connecting / logging in. */
  sv_login: number;
  /** How long the oldest waiting client has waited: whole seconds ... */
  maxwait: number;
  /** ... and the microsecond part. See splitMicros(). */
  maxwait_us: number;
  pool_mode: PoolModeName;
  /** Only when the database's host is a comma-separated list, else null/undefined (NULL). */
  load_balance_hosts?: string | null;
}

/** Client states shown by SHOW CLIENTS (PgBouncer's words). */
export type ClientStateName = 'active' | 'idle' | 'waiting' | 'active_cancel_req' | 'waiting_cancel_req';
/** Server states shown by SHOW SERVERS; `new` is a server still connecting or logging in. */
export type ServerStateName = 'active' | 'idle' | 'used' | 'tested' | 'new' | 'active_cancel' | 'being_canceled';

/**
 * One row of SHOW CLIENTS or SHOW SERVERS (the `type` column, C or S, comes from which list it is in).
 * For a server, user/database are the pool's; addr/port the PostgreSQL server's; local_* our end.
 * For a client, addr/port are the client's, local_* our listening end.
 */
export interface ConnectionSnapshot {
  user: string;
  database: string;
  /** 'none' unless a replication connection (default 'none'). */
  replication?: 'none' | 'logical' | 'physical';
  /**
   * PgBouncer's state word. As PgBouncer does, 'active' with an empty `link` is shown as 'idle',
   * so the proxy may report 'active' for every logged-in client and let `link` decide.
   */
  state: ClientStateName | ServerStateName;
  /** IP address as text, or 'unix' for a Unix socket. */
  addr: string;
  port: number;
  local_addr: string;
  local_port: number;
  connect_time: Date;
  /** Time of the latest request (client: last query; server: last use). */
  request_time: Date;
  /** Seconds (and below, the microsecond part) the current query has waited/run; 0 when none. */
  wait: number;
  wait_us: number;
  /** Servers: true when the connection will be closed as soon as possible (RELOAD/RECONNECT). Clients: false. */
  close_needed: boolean;
  /** Unique hex id of this connection object, e.g. '0x1a2b'; `link` of the other side refers to it. */
  ptr: string;
  /** ptr of the linked connection (a client's server or a server's client), '' when unlinked. */
  link: string;
  /** Servers: the backend PID from BackendKeyData. Clients: PID over a Unix socket if known, else 0. */
  remote_pid: number;
  /** SHOW SERVERS only: the role of the server's host (primary, standby, unknown). */
  role?: string;
  /** TLS description ('TLSv1.3/TLS_AES_256_GCM_SHA384' ...), '' when not TLS. */
  tls: string;
  /** Clients: their application_name. Servers: the linked client's, '' when none. */
  application_name: string;
  /** Prepared statements known on this connection (client: the client's; server: prepared on it). */
  prepared_statements: number;
  /** Unique numeric id; KILL_CLIENT takes a client's id. */
  id: number;
  /** Clients in transaction mode: why it keeps its backend (advisory_lock, temp_objects, ...); '' when pooled. */
  pin_reason?: string;
}

/** One row of SHOW DATABASES: a configured (or auto-created from "*") database entry. */
export interface DatabaseSnapshot {
  name: string;
  /** Server host, or null for the default Unix socket. */
  host: string | null;
  port: number;
  /** Actual database name on the server. */
  database: string;
  /** The forced server user of the entry, null when clients log in as themselves. */
  force_user: string | null;
  /** Effective values (entry's own, else the global setting). */
  pool_size: number;
  min_pool_size: number;
  reserve_pool_size: number;
  /** Effective server_lifetime in whole seconds. */
  server_lifetime: number;
  /** The entry's own pool_mode, null when it inherits the global one. */
  pool_mode: PoolModeName | null;
  load_balance_hosts?: string | null;
  /** Effective max_db_connections (0 = unlimited) and the server connections open now. */
  max_connections: number;
  current_connections: number;
  /** Effective max_db_client_connections (0 = unlimited) and the clients connected now. */
  max_client_connections: number;
  current_client_connections: number;
  paused: boolean;
  disabled: boolean;
}

/** One row of SHOW USERS. */
export interface UserSnapshot {
  name: string;
  /** The user's own override, null when not set (PgBouncer then prints an empty string). */
  pool_size: number | null;
  reserve_pool_size: number | null;
  pool_mode: PoolModeName | null;
  /** Effective max_user_connections (0 = unlimited) and server connections of this user now. */
  max_user_connections: number;
  current_connections: number;
  /** Effective max_user_client_connections (0 = unlimited) and clients of this user now. */
  max_user_client_connections: number;
  current_client_connections: number;
}

/** PgBouncer's per-database counters. Times are microseconds; bytes are bytes. */
export interface StatCounters {
  /** Times a server was assigned to a client. */
  server_assignment_count: number | bigint;
  xact_count: number | bigint;
  query_count: number | bigint;
  /** Bytes received from clients. */
  received: number | bigint;
  /** Bytes sent to clients. */
  sent: number | bigint;
  xact_time: number | bigint;
  query_time: number | bigint;
  /** Time clients waited for a server. */
  wait_time: number | bigint;
  client_parse_count: number | bigint;
  server_parse_count: number | bigint;
  bind_count: number | bigint;
}

/**
 * One database's statistics. `total`: since process start. `avg`: over the last stats period
 * (PgBouncer: 60 s): counts and bytes are per second; xact_time, query_time and wait_time are
 * the mean duration per transaction, query and server assignment in microseconds.
 */
export interface StatsSnapshot {
  database: string;
  total: StatCounters;
  avg: StatCounters;
}

/** SHOW LISTS row names, in PgBouncer's order. */
export const LIST_NAMES = [
  'databases',
  'users',
  'peers',
  'pools',
  'peer_pools',
  'free_clients',
  'used_clients',
  'login_clients',
  'free_servers',
  'used_servers',
  'dns_names',
  'dns_zones',
  'dns_queries',
  'dns_pending',
] as const;
export type ListName = (typeof LIST_NAMES)[number];
/** Counts for SHOW LISTS; missing names are shown as 0. */
export type ListsSnapshot = Partial<Record<ListName, number>>;

/** Global pause state, for SHOW STATE and the PAUSE/RESUME/SUSPEND/KILL preconditions. */
export interface PoolerState {
  /** PAUSE (or SHUTDOWN WAIT_FOR_SERVERS) is in effect for the whole pooler. */
  paused: boolean;
  suspended: boolean;
  /** A SHUTDOWN is in progress. */
  shuttingDown: boolean;
}

/** One row of SHOW MEM (PgBouncer: one per slab cache). */
export interface MemSnapshot {
  name: string;
  size: number;
  used: number;
  free: number;
  memtotal: number;
}

/** Splits a duration in microseconds into PgBouncer's (seconds, microsecond part) column pair. */
export function splitMicros(totalUs: number): { seconds: number; us: number } {
  const t = Math.max(0, Math.floor(totalUs));
  return { seconds: Math.floor(t / 1_000_000), us: t % 1_000_000 };
}

/**
 * One row of SHOW SESSIONS (Tessera's own): an end user's session as Tessera served it. A
 * session-token session, or (session_id null) the connect_query logins of one accessor.
 */
export interface SessionSnapshot {
  /** The session-token session's id; null for connect_query logins. */
  session_id: string | null;
  /** The end user row-level security sees (tessera.current_accessor()); '' when unknown. */
  accessor: string;
  database: string;
  /** Clients logged in with it now. */
  clients: number;
  /** Transactions, queries and errors its clients had since Tessera first saw it. */
  transactions: number;
  queries: number;
  errors: number;
  last_active: Date;
  /** Address of the client that logged in with it most recently. */
  addr: string;
}

/** Everything SHOW reads, taken at one moment: what one worker gives the console of another. */
export interface AdminSnapshot {
  state: PoolerState;
  pools: PoolSnapshot[];
  clients: ConnectionSnapshot[];
  servers: ConnectionSnapshot[];
  databases: DatabaseSnapshot[];
  users: UserSnapshot[];
  stats: StatsSnapshot[];
  lists: ListsSnapshot;
  mem: MemSnapshot[];
  sessions: SessionSnapshot[];
}

/** Rows with the same key become one; `combine` folds a row into the kept one. */
function mergeBy<T>(rows: T[], key: (row: T) => string, combine: (kept: T, row: T) => void): T[] {
  const byKey = new Map<string, T>();
  for (const row of rows) {
    const k = key(row);
    const kept = byKey.get(k);
    if (kept) combine(kept, row);
    else byKey.set(k, { ...row });
  }
  return [...byKey.values()];
}

function add<T>(kept: T, row: T, fields: (keyof T)[]): void {
  for (const f of fields) (kept[f] as number) = Number(kept[f] ?? 0) + Number(row[f] ?? 0);
}

const POOL_SUMS: (keyof PoolSnapshot)[] = ['cl_active', 'cl_waiting', 'cl_active_cancel_req', 'cl_waiting_cancel_req', 'sv_active', 'sv_active_cancel', 'sv_being_canceled', 'sv_idle', 'sv_used', 'sv_tested', 'sv_login'];
const COUNTS: (keyof StatCounters)[] = ['server_assignment_count', 'xact_count', 'query_count', 'received', 'sent', 'client_parse_count', 'server_parse_count', 'bind_count'];
/** Average durations, weighted by the count each is an average over. */
const TIMES: [keyof StatCounters, keyof StatCounters][] = [['xact_time', 'xact_count'], ['query_time', 'query_count'], ['wait_time', 'server_assignment_count']];
/** SHOW LISTS entries every worker counts alike (configuration, not connections). */
const SAME_IN_EVERY_WORKER = new Set(['databases', 'users', 'peers', 'dns_names', 'dns_zones', 'dns_queries', 'dns_pending']);

/** `workers` > 1: the snapshots of every worker as one (sums by pool, database, user; rows side by side). */
export function mergeSnapshots(snaps: AdminSnapshot[]): AdminSnapshot {
  const pools = mergeBy(snaps.flatMap((s) => s.pools), (p) => `${p.database}\u0000${p.user}`, (kept, p) => {
    add(kept, p, POOL_SUMS);
    // The longest wait of any worker.
    if (p.maxwait * 1e6 + p.maxwait_us > kept.maxwait * 1e6 + kept.maxwait_us) {
      kept.maxwait = p.maxwait;
      kept.maxwait_us = p.maxwait_us;
    }
  });
  const databases = mergeBy(snaps.flatMap((s) => s.databases), (d) => d.name, (kept, d) => {
    add(kept, d, ['current_connections', 'current_client_connections']);
    kept.paused = kept.paused && d.paused;
    kept.disabled = kept.disabled || d.disabled;
  });
  const users = mergeBy(snaps.flatMap((s) => s.users), (u) => u.name, (kept, u) => add(kept, u, ['current_connections', 'current_client_connections']));
  const stats = mergeBy(snaps.flatMap((s) => s.stats), (s) => s.database, (kept, s) => {
    kept.total = { ...kept.total };
    kept.avg = { ...kept.avg };
    add(kept.total, s.total, [...COUNTS, ...TIMES.map(([t]) => t)]);
    for (const [time, count] of TIMES) {
      const n = Number(kept.avg[count]) + Number(s.avg[count]);
      kept.avg[time] = n > 0 ? Math.round((Number(kept.avg[time]) * Number(kept.avg[count]) + Number(s.avg[time]) * Number(s.avg[count])) / n) : 0;
    }
    add(kept.avg, s.avg, COUNTS);
  });
  const lists: ListsSnapshot = {};
  for (const s of snaps) {
    for (const [name, n] of Object.entries(s.lists) as [keyof ListsSnapshot, number][]) {
      lists[name] = SAME_IN_EVERY_WORKER.has(name) ? Math.max(lists[name] ?? 0, n) : (lists[name] ?? 0) + n;
    }
  }
  const mem = mergeBy(snaps.flatMap((s) => s.mem), (m) => m.name, (kept, m) => add(kept, m, ['used', 'free', 'memtotal']));
  // A session's clients may be spread over workers: one row, the latest activity and address.
  const sessions = mergeBy(snaps.flatMap((s) => s.sessions), (r) => `${r.session_id ?? ''}\u0000${r.database}\u0000${r.accessor}`, (kept, r) => {
    add(kept, r, ['clients', 'transactions', 'queries', 'errors']);
    if (r.last_active > kept.last_active) {
      kept.last_active = r.last_active;
      kept.addr = r.addr;
    }
  }).sort((a, b) => b.last_active.getTime() - a.last_active.getTime());
  return {
    state: {
      // Held if any worker is (one restarted, or signalled on its own): RESUME must reach it.
      paused: snaps.some((s) => s.state.paused),
      suspended: snaps.some((s) => s.state.suspended),
      shuttingDown: snaps.some((s) => s.state.shuttingDown),
    },
    pools,
    clients: snaps.flatMap((s) => s.clients),
    servers: snaps.flatMap((s) => s.servers),
    databases,
    users,
    stats,
    lists,
    mem,
    sessions,
  };
}
