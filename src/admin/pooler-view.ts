/**
 * The admin console's window on this process's pooler: snapshots of pools, clients and servers in
 * PgBouncer's terms, and every operation of admin/operations.ts (PAUSE, RESUME, RELOAD, KILL, ...).
 */
import type { Socket } from 'node:net';
import { AdminError, splitMicros, type AdminView, type KillSessionResult, type ConnectionSnapshot, type DatabaseSnapshot, type ListsSnapshot, type PoolSnapshot, type PoolerState, type SessionSnapshot, type ShutdownMode, type StatCounters, type StatsSnapshot, type UserSnapshot } from './view.js';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../config/load.js';
import { databaseLimits, maxUserConnections } from '../config/effective.js';
import type { OperationMethods } from './operations.js';
import type { AdminSnapshot, ServerStateName } from './snapshots.js';
import { tesseraVersion } from './commands/show.js';
import { PgError, SqlState } from '../protocol/messages.js';
import { ServerState, type ServerConnection } from '../pool/server-connection.js';
import { zeroPoolCounters, type Pool, type PoolCounters } from '../pool/pool.js';
import { ClientPhase, type ClientConnection } from '../frontend/client-connection.js';
import { suspension } from '../net/suspension.js';
import { describeTls } from '../tls/contexts.js';
import type { MetricsSnapshot } from '../metrics/snapshot.js';
import type { Readiness } from '../metrics/health.js';
import { parseHostList } from '../pool/hosts.js';

const STATS_PERIOD_MS = 60_000;

/** SHOW SERVERS' state column, in PgBouncer's words, for each pool list. */
const SERVER_STATE_NAMES: Record<Exclude<ServerState, ServerState.Closed>, ServerStateName> = {
  [ServerState.Login]: 'new',
  [ServerState.Idle]: 'idle',
  [ServerState.Active]: 'active',
  [ServerState.Cleanup]: 'tested',
  [ServerState.Canceling]: 'being_canceled',
};

/** What the view reads and asks of the pooler (src/pooler/pooler.ts builds it). */
export interface ViewedPooler {
  readonly pools: ReadonlyMap<string, Pool>;
  readonly clients: ReadonlySet<ClientConnection>;
  /** The database name a pool serves (the name the client asked for, which "*" may have matched). */
  databaseNameOf(pool: Pool): string;
  readonly config: Readonly<Config>;
  readonly isStopping: boolean;
  /** Databases closed to new clients: DISABLE and ENABLE change it, the login policy reads it. */
  readonly disabled: Set<string>;
  suspend(): Promise<void>;
  unsuspend(): void;
  reload(): Promise<void>;
  /** SET key = value: throws a ConfigError naming the key when the value does not fit. */
  set(key: string, value: string): void;
  shutdown(mode: ShutdownMode): void;
  /** Ends a session in every session-token database; `ended`: some database had it. */
  endSession(sessionId: string): Promise<{ ended: boolean; errors: PgError[] }>;
  /** SHOW SESSIONS rows, most recently active first. */
  sessions(): SessionSnapshot[];
  metrics(): MetricsSnapshot;
  readiness(): Promise<Readiness>;
}

const ptr = (kind: 'c' | 's', id: number) => `0x${kind === 'c' ? '1' : '2'}${id.toString(16).padStart(7, '0')}`;

function endpoints(socket: Socket): Pick<ConnectionSnapshot, 'addr' | 'port' | 'local_addr' | 'local_port'> {
  return { addr: socket.remoteAddress ?? 'unix', port: socket.remotePort ?? 0, local_addr: socket.localAddress ?? 'unix', local_port: socket.localPort ?? 0 };
}

/** Every operation of admin/operations.ts, none optional (a worker's primary may ask any of them). */
export class PoolerAdminView implements AdminView, OperationMethods {
  /** Totals at the start of the current stats period, for the per-second averages. */
  private periodStart = Date.now();
  private periodTotals = new Map<Pool, PoolCounters>();
  private lastAverages = new Map<string, StatCounters>();

  constructor(private readonly pooler: ViewedPooler) {}

  version(): string {
    return `Tessera ${tesseraVersion()}`;
  }

  /** Everything SHOW reads, at once: what a worker gives the console of another (workers > 1). */
  snapshot(): AdminSnapshot {
    return { state: this.state(), pools: this.pools(), clients: this.clients(), servers: this.servers(), databases: this.databases(), users: this.users(), stats: this.stats(), lists: this.lists(), mem: [], sessions: this.sessions() };
  }

  /** SHOW SESSIONS: who the pooled connections served (session-token and connect_query logins). */
  sessions(): SessionSnapshot[] {
    return this.pooler.sessions();
  }

  /** The metrics endpoint's figures (with workers, the primary sums every worker's). */
  metrics(): MetricsSnapshot {
    return this.pooler.metrics();
  }

  /** /readyz: listening, not shutting down, every database reachable. */
  readiness(): Promise<Readiness> {
    return this.pooler.readiness();
  }

  config(): Readonly<Config> {
    return this.pooler.config;
  }

  state(): PoolerState {
    const pools = [...this.pooler.pools.values()];
    return { paused: pools.length > 0 && pools.every((p) => p.paused), suspended: suspension.active, shuttingDown: this.pooler.isStopping };
  }

  pools(): PoolSnapshot[] {
    const now = Date.now();
    return [...this.pooler.pools.values()].map((pool) => {
      const clients = [...this.pooler.clients].filter((c) => c.pool === pool && c.phase === ClientPhase.Ready);
      const waiting = clients.filter((c) => c.isWaiting).length;
      const count = (state: ServerState) => pool.count(state);
      const { seconds, us: micros } = splitMicros(pool.maxWaitMs(now) * 1000);
      return {
        database: this.pooler.databaseNameOf(pool),
        user: pool.target.user,
        cl_active: clients.length - waiting,
        cl_waiting: waiting,
        sv_active: count(ServerState.Active),
        // Free but held back until the cancel requests sent for it are done (as PgBouncer).
        sv_being_canceled: count(ServerState.Canceling),
        sv_idle: count(ServerState.Idle),
        sv_used: 0,
        sv_tested: count(ServerState.Cleanup),
        sv_login: count(ServerState.Login),
        maxwait: seconds,
        maxwait_us: micros,
        pool_mode: pool.settings.mode,
        load_balance_hosts: pool.target.hosts.length > 1 ? pool.settings.hosts.balance : null,
      };
    });
  }

  clients(): ConnectionSnapshot[] {
    const now = Date.now();
    return [...this.pooler.clients]
      .filter((c) => c.phase === ClientPhase.Ready)
      .map((c) => {
        const { seconds, us: micros } = splitMicros(c.isWaiting ? (now - c.waitingSince) * 1000 : 0);
        return {
          user: c.user,
          database: c.database,
          state: c.isWaiting ? 'waiting' : 'active',
          ...endpoints(c.socket),
          connect_time: new Date(c.connectedAt),
          request_time: new Date(c.lastActiveAt),
          wait: seconds,
          wait_us: micros,
          close_needed: false,
          ptr: ptr('c', c.id),
          link: c.server ? ptr('s', c.server.id) : '',
          remote_pid: 0,
          tls: describeTls(c.socket),
          application_name: c.serverParams.get('application_name') ?? c.startupSettings.get('application_name') ?? '',
          prepared_statements: 0,
          id: c.id,
          pin_reason: c.pinReason ?? '',
        };
      });
  }

  servers(): ConnectionSnapshot[] {
    const linked = new Map<ServerConnection, ClientConnection>();
    for (const c of this.pooler.clients) if (c.server) linked.set(c.server, c);
    const rows: ConnectionSnapshot[] = [];
    for (const pool of this.pooler.pools.values()) {
      for (const s of pool.servers) {
        const client = linked.get(s);
        const state = SERVER_STATE_NAMES[s.state as Exclude<ServerState, ServerState.Closed>];
        rows.push({
          user: pool.target.user,
          database: this.pooler.databaseNameOf(pool),
          state,
          ...endpoints(s.socket),
          connect_time: new Date(s.createdAt),
          request_time: new Date(s.lastUsedAt),
          wait: 0,
          wait_us: 0,
          close_needed: false,
          ptr: ptr('s', s.id),
          link: client ? ptr('c', client.id) : '',
          remote_pid: s.pid,
          tls: describeTls(s.socket),
          application_name: s.target.params.get('application_name') ?? '',
          prepared_statements: 0,
          id: s.id,
          role: pool.roleOf(s),
        });
      }
    }
    return rows;
  }

  databases(): DatabaseSnapshot[] {
    const c = this.config();
    return Object.entries(c.databases).map(([name, d]) => {
      const pools = [...this.pooler.pools.values()].filter((p) => this.pooler.databaseNameOf(p) === name);
      const limits = databaseLimits(c, d);
      return {
        name,
        // A host list as written (as PgBouncer shows it); the first host's port (the column is an integer).
        host: d.embedded ? '127.0.0.1' : (d.host ?? null),
        port: d.embedded ? 0 : parseHostList(d.host, d.port)[0]!.port,
        load_balance_hosts: !d.embedded && d.host.includes(',') ? (d.load_balance_hosts ?? 'round-robin') : null,
        database: d.dbname ?? name,
        force_user: d.user ?? null,
        pool_size: limits.poolSize,
        min_pool_size: limits.minPoolSize,
        reserve_pool_size: limits.reservePoolSize,
        server_lifetime: Math.round(c.server_lifetime),
        pool_mode: d.pool_mode ?? null,
        max_connections: limits.maxDbConnections,
        current_connections: pools.reduce((n, p) => n + p.servers.size, 0),
        max_client_connections: 0,
        current_client_connections: [...this.pooler.clients].filter((cl) => cl.database === name).length,
        paused: pools.length > 0 && pools.every((p) => p.paused),
        disabled: this.pooler.disabled.has(name),
      };
    });
  }

  users(): UserSnapshot[] {
    const c = this.config();
    return Object.entries(c.users).map(([name, u]) => ({
      name,
      pool_size: u.pool_size ?? null,
      reserve_pool_size: null,
      pool_mode: u.pool_mode ?? null,
      max_user_connections: maxUserConnections(c, name),
      current_connections: [...this.pooler.pools.values()].filter((p) => p.target.user === name).reduce((n, p) => n + p.servers.size, 0),
      max_user_client_connections: 0,
      current_client_connections: [...this.pooler.clients].filter((cl) => cl.user === name).length,
    }));
  }

  /** Totals since start; averages per second over the last full stats period (60 s). */
  stats(): StatsSnapshot[] {
    this.rollPeriod();
    const byDb = new Map<string, StatCounters>();
    for (const pool of this.pooler.pools.values()) {
      const name = this.pooler.databaseNameOf(pool);
      const t = byDb.get(name) ?? zeroCounters();
      const k = pool.counters;
      t.server_assignment_count = Number(t.server_assignment_count) + k.assignments;
      t.xact_count = Number(t.xact_count) + k.xacts;
      t.query_count = Number(t.query_count) + k.queries;
      t.received = Number(t.received) + k.received;
      t.sent = Number(t.sent) + k.sent;
      t.wait_time = Number(t.wait_time) + k.waitUs;
      t.xact_time = Number(t.xact_time) + k.xactUs;
      t.query_time = Number(t.query_time) + k.queryUs;
      t.client_parse_count = Number(t.client_parse_count) + k.clientParses;
      t.server_parse_count = Number(t.server_parse_count) + k.serverParses;
      t.bind_count = Number(t.bind_count) + k.binds;
      byDb.set(name, t);
    }
    return [...byDb].map(([database, total]) => ({ database, total, avg: this.lastAverages.get(database) ?? zeroCounters() }));
  }

  lists(): ListsSnapshot {
    const clients = [...this.pooler.clients];
    const servers = [...this.pooler.pools.values()].flatMap((p) => [...p.servers]);
    return {
      databases: Object.keys(this.config().databases).length,
      users: Object.keys(this.config().users).length,
      pools: this.pooler.pools.size,
      used_clients: clients.filter((c) => c.phase === ClientPhase.Ready).length,
      login_clients: clients.filter((c) => c.phase !== ClientPhase.Ready).length,
      free_servers: servers.filter((s) => s.state === ServerState.Idle).length,
      used_servers: servers.filter((s) => s.state !== ServerState.Idle).length,
    };
  }

  async pause(db?: string): Promise<void> {
    await Promise.all(this.poolsOf(db).map((p) => p.pause()));
  }

  resume(db?: string): void {
    if (db === undefined && suspension.active) this.pooler.unsuspend();
    for (const p of this.poolsOf(db)) p.resume();
  }

  suspend(): Promise<void> {
    return this.pooler.suspend();
  }

  set(key: string, value: string): void {
    try {
      this.pooler.set(key, value);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      throw new AdminError('SET failed', SqlState.InvalidParameterValue, err.message.replace(/^SET: /, ''));
    }
  }

  reload(): Promise<void> {
    return this.pooler.reload();
  }

  shutdown(mode: ShutdownMode): void {
    this.pooler.shutdown(mode);
  }

  killClient(id: number): boolean {
    const client = [...this.pooler.clients].find((c) => c.id === id);
    if (!client) return false;
    client.fail(PgError.fatal(SqlState.AdminShutdown, 'terminating connection due to KILL_CLIENT from the admin console'));
    return true;
  }

  /** KILL_SESSION: the session ends first, so none of its clients can log in again meanwhile. */
  async killSession(sessionId: string): Promise<KillSessionResult> {
    const { ended, errors } = await this.pooler.endSession(sessionId);
    let clients = 0;
    for (const client of [...this.pooler.clients]) {
      if (client.sessionId !== sessionId) continue;
      clients++;
      client.fail(PgError.fatal(SqlState.AdminShutdown, 'terminating connection due to KILL_SESSION from the admin console: session ended'));
    }
    // Plain data: with workers the result crosses the IPC channel, which keeps no PgError fields.
    return { clients, ended, errors: errors.map((e) => ({ code: e.code, message: e.message, hint: e.fields.hint })) };
  }

  kill(db?: string): void {
    for (const client of [...this.pooler.clients]) {
      if (!client.admin && (db === undefined || client.database === db)) {
        client.fail(PgError.fatal(SqlState.AdminShutdown, 'terminating connection due to KILL from the admin console'));
      }
    }
    // As PgBouncer: the killed database stays paused; new clients wait until RESUME.
    for (const p of this.poolsOf(db)) {
      p.reconnect();
      void p.pause();
    }
  }

  reconnect(db?: string): void {
    for (const p of this.poolsOf(db)) p.reconnect();
  }

  async waitClose(db?: string): Promise<void> {
    const pools = this.poolsOf(db);
    for (const p of pools) p.reconnect();
    while (pools.some((p) => p.servers.size > 0)) await new Promise((r) => setTimeout(r, 50));
  }

  enable(db: string): void {
    this.pooler.disabled.delete(db);
  }

  disable(db: string): void {
    this.pooler.disabled.add(db);
  }

  private poolsOf(db?: string): Pool[] {
    const pools = [...this.pooler.pools.values()].filter((p) => db === undefined || this.pooler.databaseNameOf(p) === db);
    if (db !== undefined && pools.length === 0 && !(db in this.config().databases) && !('*' in this.config().databases)) {
      throw new AdminError(`no such database: ${db}`);
    }
    return pools;
  }

  private rollPeriod(now = Date.now()): void {
    if (now - this.periodStart < STATS_PERIOD_MS) return;
    const seconds = (now - this.periodStart) / 1000;
    const averages = new Map<string, StatCounters>();
    for (const pool of this.pooler.pools.values()) {
      const before = this.periodTotals.get(pool) ?? zeroPoolCounters();
      const k = pool.counters;
      const name = this.pooler.databaseNameOf(pool);
      const a = averages.get(name) ?? zeroCounters();
      a.server_assignment_count = Number(a.server_assignment_count) + Math.round((k.assignments - before.assignments) / seconds);
      a.xact_count = Number(a.xact_count) + Math.round((k.xacts - before.xacts) / seconds);
      a.query_count = Number(a.query_count) + Math.round((k.queries - before.queries) / seconds);
      a.received = Number(a.received) + Math.round((k.received - before.received) / seconds);
      a.sent = Number(a.sent) + Math.round((k.sent - before.sent) / seconds);
      const assigned = k.assignments - before.assignments;
      a.wait_time = assigned > 0 ? Math.round((k.waitUs - before.waitUs) / assigned) : 0;
      // As PgBouncer: average transaction and query durations, and parse/bind counts per second.
      const xacts = k.xacts - before.xacts;
      const queries = k.queries - before.queries;
      a.xact_time = Number(a.xact_time) + (xacts > 0 ? Math.round((k.xactUs - before.xactUs) / xacts) : 0);
      a.query_time = Number(a.query_time) + (queries > 0 ? Math.round((k.queryUs - before.queryUs) / queries) : 0);
      a.client_parse_count = Number(a.client_parse_count) + Math.round((k.clientParses - before.clientParses) / seconds);
      a.server_parse_count = Number(a.server_parse_count) + Math.round((k.serverParses - before.serverParses) / seconds);
      a.bind_count = Number(a.bind_count) + Math.round((k.binds - before.binds) / seconds);
      averages.set(name, a);
      this.periodTotals.set(pool, { ...k });
    }
    this.lastAverages = averages;
    this.periodStart = now;
  }
}

function zeroCounters(): StatCounters {
  return { server_assignment_count: 0, xact_count: 0, query_count: 0, received: 0, sent: 0, xact_time: 0, query_time: 0, wait_time: 0, client_parse_count: 0, server_parse_count: 0, bind_count: 0 };
}
