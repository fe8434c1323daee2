/**
 * The admin console's window on the running proxy: snapshots of pools, clients and servers in
 * PgBouncer's terms, and the control commands (PAUSE, RESUME, RELOAD, KILL, ...).
 */
import type { Socket } from 'node:net';
import { AdminError, splitMicros, type AdminView, type KillSessionResult, type ConnectionSnapshot, type DatabaseSnapshot, type ListsSnapshot, type PoolSnapshot, type PoolerState, type SessionSnapshot, type ShutdownMode, type StatCounters, type StatsSnapshot, type UserSnapshot } from '../admin/view.js';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../config/load.js';
import type { WorkerSnapshot } from '../workers/merge.js';
import { tesseraVersion } from '../admin/commands/show.js';
import { PgError, SqlState } from '../protocol/messages.js';
import { ServerState, type ServerConnection } from '../pool/server-connection.js';
import { zeroPoolCounters, type Pool, type PoolCounters } from '../pool/pool.js';
import { ClientPhase, type ClientConnection } from './client-connection.js';
import type { Proxy } from './proxy.js';
import { suspension } from './suspension.js';
import { describeTls } from '../tls/contexts.js';

const STATS_PERIOD_MS = 60_000;

/** What the view needs from the proxy beyond its public fields. */
export interface AdminControl {
  reload(): Promise<void>;
  /** SET key = value: throws a ConfigError naming the key when the value does not fit. */
  set(key: string, value: string): void;
  shutdown(mode: ShutdownMode): void;
  disabled: Set<string>;
  databaseNameOf(pool: Pool): string;
}

const ptr = (kind: 'c' | 's', id: number) => `0x${kind === 'c' ? '1' : '2'}${id.toString(16).padStart(7, '0')}`;

function endpoints(socket: Socket): Pick<ConnectionSnapshot, 'addr' | 'port' | 'local_addr' | 'local_port'> {
  return { addr: socket.remoteAddress ?? 'unix', port: socket.remotePort ?? 0, local_addr: socket.localAddress ?? 'unix', local_port: socket.localPort ?? 0 };
}

export class ProxyAdminView implements AdminView {
  /** Totals at the start of the current stats period, for the per-second averages. */
  private periodStart = Date.now();
  private periodTotals = new Map<Pool, PoolCounters>();
  private lastAverages = new Map<string, StatCounters>();

  constructor(
    private readonly proxy: Proxy,
    private readonly control: AdminControl,
  ) {}

  version(): string {
    return `Tessera ${tesseraVersion()}`;
  }

  /** Everything SHOW reads, at once: what a worker gives the console of another (workers > 1). */
  snapshot(): WorkerSnapshot {
    return { state: this.state(), pools: this.pools(), clients: this.clients(), servers: this.servers(), databases: this.databases(), users: this.users(), stats: this.stats(), lists: this.lists(), mem: [], sessions: this.sessions() };
  }

  sessions(): SessionSnapshot[] {
    return this.proxy.stats.accounting.snapshot();
  }

  config(): Readonly<Config> {
    return this.proxy.currentConfig;
  }

  state(): PoolerState {
    const pools = [...this.proxy.pools.values()];
    return { paused: pools.length > 0 && pools.every((p) => p.paused), suspended: suspension.active, shuttingDown: this.proxy.isStopping };
  }

  pools(): PoolSnapshot[] {
    const now = Date.now();
    return [...this.proxy.pools.values()].map((pool) => {
      const clients = [...this.proxy.clients].filter((c) => c.pool === pool && c.phase === ClientPhase.Ready);
      const waiting = clients.filter((c) => c.isWaiting).length;
      const servers = [...pool.servers];
      const count = (state: ServerState) => servers.filter((s) => s.state === state).length;
      const { seconds, us: micros } = splitMicros(pool.maxWaitMs(now) * 1000);
      return {
        database: this.control.databaseNameOf(pool),
        user: pool.target.user,
        cl_active: clients.length - waiting,
        cl_waiting: waiting,
        sv_active: count(ServerState.Active),
        // Free but held back until the cancel requests sent for it are done (as PgBouncer).
        sv_being_canceled: servers.filter((s) => s.cancelsInFlight > 0 && s.state !== ServerState.Active).length,
        sv_idle: count(ServerState.Idle),
        sv_used: 0,
        sv_tested: count(ServerState.Cleanup),
        sv_login: count(ServerState.Login),
        maxwait: seconds,
        maxwait_us: micros,
        pool_mode: pool.settings.mode,
      };
    });
  }

  clients(): ConnectionSnapshot[] {
    const now = Date.now();
    return [...this.proxy.clients]
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
          application_name: c.serverParams.get('application_name') ?? '',
          prepared_statements: 0,
          id: c.id,
        };
      });
  }

  servers(): ConnectionSnapshot[] {
    const linked = new Map<ServerConnection, ClientConnection>();
    for (const c of this.proxy.clients) if (c.server) linked.set(c.server, c);
    const rows: ConnectionSnapshot[] = [];
    for (const pool of this.proxy.pools.values()) {
      for (const s of pool.servers) {
        const client = linked.get(s);
        const state = s.state === ServerState.Login ? 'new' : s.state === ServerState.Cleanup ? 'tested' : s.state === ServerState.Active ? 'active' : 'idle';
        rows.push({
          user: pool.target.user,
          database: this.control.databaseNameOf(pool),
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
        });
      }
    }
    return rows;
  }

  databases(): DatabaseSnapshot[] {
    const c = this.config();
    return Object.entries(c.databases).map(([name, d]) => {
      const pools = [...this.proxy.pools.values()].filter((p) => this.control.databaseNameOf(p) === name);
      return {
        name,
        host: d.embedded ? '127.0.0.1' : (d.host ?? null),
        port: d.port ?? 0,
        database: d.dbname ?? name,
        force_user: d.user ?? null,
        pool_size: d.pool_size ?? c.default_pool_size,
        min_pool_size: d.min_pool_size ?? c.min_pool_size,
        reserve_pool_size: d.reserve_pool_size ?? c.reserve_pool_size,
        server_lifetime: Math.round(c.server_lifetime),
        pool_mode: d.pool_mode ?? null,
        max_connections: d.max_db_connections ?? c.max_db_connections,
        current_connections: pools.reduce((n, p) => n + p.servers.size, 0),
        max_client_connections: 0,
        current_client_connections: [...this.proxy.clients].filter((cl) => cl.database === name).length,
        paused: pools.length > 0 && pools.every((p) => p.paused),
        disabled: this.control.disabled.has(name),
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
      max_user_connections: u.max_user_connections ?? c.max_user_connections,
      current_connections: [...this.proxy.pools.values()].filter((p) => p.target.user === name).reduce((n, p) => n + p.servers.size, 0),
      max_user_client_connections: 0,
      current_client_connections: [...this.proxy.clients].filter((cl) => cl.user === name).length,
    }));
  }

  /** Totals since start; averages per second over the last full stats period (60 s). */
  stats(): StatsSnapshot[] {
    this.rollPeriod();
    const byDb = new Map<string, StatCounters>();
    for (const pool of this.proxy.pools.values()) {
      const name = this.control.databaseNameOf(pool);
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
    const clients = [...this.proxy.clients];
    const servers = [...this.proxy.pools.values()].flatMap((p) => [...p.servers]);
    return {
      databases: Object.keys(this.config().databases).length,
      users: Object.keys(this.config().users).length,
      pools: this.proxy.pools.size,
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
    if (db === undefined && suspension.active) this.proxy.unsuspend();
    for (const p of this.poolsOf(db)) p.resume();
  }

  suspend(): Promise<void> {
    return this.proxy.suspend();
  }

  set(key: string, value: string): void {
    try {
      this.control.set(key, value);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      throw new AdminError('SET failed', SqlState.InvalidParameterValue, err.message.replace(/^SET: /, ''));
    }
  }

  reload(): Promise<void> {
    return this.control.reload();
  }

  shutdown(mode: ShutdownMode): void {
    this.control.shutdown(mode);
  }

  killClient(id: number): boolean {
    const client = [...this.proxy.clients].find((c) => c.id === id);
    if (!client) return false;
    client.fail(PgError.fatal(SqlState.AdminShutdown, 'terminating connection due to KILL_CLIENT from the admin console'));
    return true;
  }

  /** KILL_SESSION: the session ends first, so none of its clients can log in again meanwhile. */
  async killSession(sessionId: string): Promise<KillSessionResult> {
    const { ended, errors } = await this.proxy.endSession(sessionId);
    let clients = 0;
    for (const client of [...this.proxy.clients]) {
      if (client.sessionId !== sessionId) continue;
      clients++;
      client.fail(PgError.fatal(SqlState.AdminShutdown, 'terminating connection due to KILL_SESSION from the admin console: session ended'));
    }
    return { clients, ended, errors };
  }

  kill(db?: string): void {
    for (const client of [...this.proxy.clients]) {
      if (!client.admin && (db === undefined || client.database === db)) {
        client.fail(PgError.fatal(SqlState.AdminShutdown, 'terminating connection due to KILL from the admin console'));
      }
    }
    for (const p of this.poolsOf(db)) p.reconnect();
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
    this.control.disabled.delete(db);
  }

  disable(db: string): void {
    this.control.disabled.add(db);
  }

  private poolsOf(db?: string): Pool[] {
    const pools = [...this.proxy.pools.values()].filter((p) => db === undefined || this.control.databaseNameOf(p) === db);
    if (db !== undefined && pools.length === 0 && !(db in this.config().databases) && !('*' in this.config().databases)) {
      throw new AdminError(`no such database: ${db}`);
    }
    return pools;
  }

  private rollPeriod(now = Date.now()): void {
    if (now - this.periodStart < STATS_PERIOD_MS) return;
    const seconds = (now - this.periodStart) / 1000;
    const averages = new Map<string, StatCounters>();
    for (const pool of this.proxy.pools.values()) {
      const before = this.periodTotals.get(pool) ?? zeroPoolCounters();
      const k = pool.counters;
      const name = this.control.databaseNameOf(pool);
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
