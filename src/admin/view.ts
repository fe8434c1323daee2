/**
 * What the admin console (the virtual database `pgbouncer`) needs from the running proxy.
 *
 * The console is pure: it asks this view for plain-data snapshots, formats them exactly as
 * PgBouncer's SHOW commands do, and calls the actions for PAUSE, KILL and the rest. The proxy
 * implements it. Field names are PgBouncer's column names, so the mapping is one to one; see
 * the notes on each type for what PgBouncer means by a field.
 *
 * An action the proxy cannot do (or a precondition the console cannot see) is reported by
 * throwing an `AdminError` (or any `PgError`); the console turns it into an ErrorResponse and the
 * connection stays usable. Any other thrown Error becomes an ErrorResponse 08P01 with its message.
 */
import { PgError, SqlState } from '../protocol/messages.js';
import type { Config } from '../config/schema.js';

/** An error for the console client; `code` defaults to 08P01, PgBouncer's code for every console error. */
export class AdminError extends PgError {
  constructor(message: string, code: string = SqlState.ProtocolViolation, detail?: string) {
    super({ severity: 'ERROR', code, message, detail });
    this.name = 'AdminError';
  }
}

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
  /** TLS description ('TLSv1.3/TLS_AES_256_GCM_SHA384' ...), '' when not TLS. */
  tls: string;
  /** Clients: their application_name. Servers: the linked client's, '' when none. */
  application_name: string;
  /** Prepared statements known on this connection (client: the client's; server: prepared on it). */
  prepared_statements: number;
  /** Unique numeric id; KILL_CLIENT takes a client's id. */
  id: number;
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

export type ShutdownMode = 'immediate' | 'wait_for_servers' | 'wait_for_clients';

/** What KILL_SESSION did. */
export interface KillSessionResult {
  /** Clients logged in with the session that were disconnected. */
  clients: number;
  /** A session-token database had the session and ended it. */
  ended: boolean;
  /** Why ending it failed where it could not be asked (server errors, e.g. permission denied). */
  errors: PgError[];
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

/** One row of SHOW MEM (PgBouncer: one per slab cache). */
export interface MemSnapshot {
  name: string;
  size: number;
  used: number;
  free: number;
  memtotal: number;
}

/**
 * Implemented by the proxy. Snapshot methods are called once per SHOW and must not mutate.
 * Database-name arguments are already checked by the console against databases() (and the "*"
 * fallback in config().databases, for the commands where PgBouncer auto-creates the entry),
 * and are never the console's own database `pgbouncer`.
 */
export interface AdminView {
  /** SHOW VERSION text; defaults to "Tessera <package.json version>". */
  version?(): string;
  config(): Readonly<Config>;
  state(): PoolerState;
  pools(): PoolSnapshot[];
  clients(): ConnectionSnapshot[];
  servers(): ConnectionSnapshot[];
  databases(): DatabaseSnapshot[];
  users(): UserSnapshot[];
  stats(): StatsSnapshot[];
  lists(): ListsSnapshot;
  /** SHOW MEM rows; optional, an empty result without it. */
  mem?(): MemSnapshot[];
  /** SHOW SESSIONS rows; optional, an empty result without it. */
  sessions?(): SessionSnapshot[];

  /**
   * PAUSE: stop handing out servers (all databases, or one) and resolve once every server of
   * the paused databases has been released by its client (PgBouncer answers only then).
   * With no db this is the global pause: state().paused becomes true.
   */
  pause(db?: string): Promise<void> | void;
  /** RESUME after PAUSE/KILL/SUSPEND (global when db is undefined). */
  resume(db?: string): Promise<void> | void;
  /** SUSPEND: flush and stop all socket activity. Omit if unsupported: the console answers 0A000. */
  suspend?(): Promise<void> | void;
  /** RELOAD the config file(s). Throw to report failure (sent as F0000, your message as detail). */
  reload(): Promise<void> | void;
  /** SHUTDOWN; immediate needs no answer, the proxy may close the console connection. */
  shutdown(mode: ShutdownMode): Promise<void> | void;
  /** KILL_CLIENT: disconnect the client with this id; false when there is no such client. */
  killClient(id: number): boolean | Promise<boolean>;
  /**
   * KILL_SESSION: end a session-token session (its id, in decimal) in the databases and
   * disconnect every client logged in with it. Optional; without it the console answers 0A000.
   */
  killSession?(sessionId: string): Promise<KillSessionResult>;
  /** KILL: pause the database(s) and close all their client and server connections at once. */
  kill(db?: string): Promise<void> | void;
  /** RECONNECT: close each server connection of the database(s) as soon as it is released. */
  reconnect(db?: string): Promise<void> | void;
  /** WAIT_CLOSE: resolve when the servers marked by RECONNECT/RELOAD of the database(s) are closed. */
  waitClose(db?: string): Promise<void> | void;
  /** ENABLE / DISABLE new client connections to a database. */
  enable(db: string): Promise<void> | void;
  disable(db: string): Promise<void> | void;
  /** SET key = value at run time; optional, without it SET answers 0A000. `key` is a SHOW CONFIG key. */
  set?(key: string, value: string): Promise<void> | void;
}

/** Who is asking: the console user and whether it is in admin_users / stats_users. */
export interface AdminWho {
  user: string;
  isAdmin: boolean;
  isStats: boolean;
}

/** Splits a duration in microseconds into PgBouncer's (seconds, microsecond part) column pair. */
export function splitMicros(totalUs: number): { seconds: number; us: number } {
  const t = Math.max(0, Math.floor(totalUs));
  return { seconds: Math.floor(t / 1_000_000), us: t % 1_000_000 };
}
