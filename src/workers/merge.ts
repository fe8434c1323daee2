/**
 * The admin console with `workers` > 1: each SHOW reads a snapshot of every worker and shows the
 * sums (pools, databases and users by name, stats by database, clients and servers side by side),
 * and each command runs on every worker. The console's own code is unchanged: it sees one
 * AdminView.
 */
import type { Config } from '../config/schema.js';
import type { AdminView, ConnectionSnapshot, DatabaseSnapshot, ListsSnapshot, MemSnapshot, PoolSnapshot, PoolerState, SessionSnapshot, ShutdownMode, StatCounters, StatsSnapshot, UserSnapshot } from '../admin/view.js';
import { throwIfFailed, type WorkerLink } from './worker-link.js';

/** Everything SHOW can ask of one worker, taken at one moment. */
export interface WorkerSnapshot {
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

export function mergeSnapshots(snaps: WorkerSnapshot[]): WorkerSnapshot {
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
      paused: snaps.every((s) => s.state.paused),
      suspended: snaps.every((s) => s.state.suspended),
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

/** The console's view across all workers, for one command (SHOW reads one merged snapshot). */
export class ClusterAdminView implements AdminView {
  private constructor(
    private readonly link: WorkerLink,
    private readonly localConfig: () => Readonly<Config>,
    private readonly merged: WorkerSnapshot,
    readonly version: () => string,
  ) {}

  static async open(link: WorkerLink, localConfig: () => Readonly<Config>, version: () => string): Promise<ClusterAdminView> {
    const results = await link.request('snapshot');
    throwIfFailed(results);
    return new ClusterAdminView(link, localConfig, mergeSnapshots(results.map((r) => r.value as WorkerSnapshot)), version);
  }

  config(): Readonly<Config> {
    return this.localConfig();
  }
  state(): PoolerState {
    return this.merged.state;
  }
  pools(): PoolSnapshot[] {
    return this.merged.pools;
  }
  clients(): ConnectionSnapshot[] {
    return this.merged.clients;
  }
  servers(): ConnectionSnapshot[] {
    return this.merged.servers;
  }
  databases(): DatabaseSnapshot[] {
    return this.merged.databases;
  }
  users(): UserSnapshot[] {
    return this.merged.users;
  }
  stats(): StatsSnapshot[] {
    return this.merged.stats;
  }
  lists(): ListsSnapshot {
    return this.merged.lists;
  }
  mem(): MemSnapshot[] {
    return this.merged.mem;
  }
  sessions(): SessionSnapshot[] {
    return this.merged.sessions;
  }

  async pause(db?: string): Promise<void> {
    throwIfFailed(await this.link.request('pause', [db]));
  }
  async resume(db?: string): Promise<void> {
    throwIfFailed(await this.link.request('resume', [db]));
  }
  async suspend(): Promise<void> {
    throwIfFailed(await this.link.request('suspend'));
  }
  async reload(): Promise<void> {
    const failed = (await this.link.request('reload')).find((r) => !r.ok);
    // The console reports a failed RELOAD itself (F0000, this message as detail).
    if (failed) throw new Error(failed.error?.message ?? 'reload failed');
  }
  async shutdown(mode: ShutdownMode): Promise<void> {
    throwIfFailed(await this.link.request('shutdown', [mode]));
  }
  async killClient(id: number): Promise<boolean> {
    const results = await this.link.request('killClient', [id]);
    throwIfFailed(results);
    return results.some((r) => r.value === true);
  }
  async kill(db?: string): Promise<void> {
    throwIfFailed(await this.link.request('kill', [db]));
  }
  async reconnect(db?: string): Promise<void> {
    throwIfFailed(await this.link.request('reconnect', [db]));
  }
  async waitClose(db?: string): Promise<void> {
    throwIfFailed(await this.link.request('waitClose', [db]));
  }
  async enable(db: string): Promise<void> {
    throwIfFailed(await this.link.request('enable', [db]));
  }
  async disable(db: string): Promise<void> {
    throwIfFailed(await this.link.request('disable', [db]));
  }
  async set(key: string, value: string): Promise<void> {
    throwIfFailed(await this.link.request('set', [key, value]));
  }
}
