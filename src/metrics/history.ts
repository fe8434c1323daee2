/**
 * The dashboard's memory: once a second, the summed snapshot becomes one point of rates and
 * gauges (transactions/s, p99 times, clients, servers, errors/s), kept for the last five minutes,
 * so a dashboard opened now shows the minutes before it. Runs only where the endpoint is served.
 */
import { quantileUs } from '../pool/histogram.js';
import type { MetricsSnapshot, PoolFigures } from './snapshot.js';

export const HISTORY_POINTS = 300;

export interface HistoryPoint {
  /** Unix time, seconds. */
  t: number;
  xacts_per_s: number;
  queries_per_s: number;
  /** Over the last interval, in milliseconds (0 without transactions / assignments). */
  xact_avg_ms: number;
  xact_p99_ms: number;
  wait_avg_ms: number;
  wait_p99_ms: number;
  clients_active: number;
  clients_waiting: number;
  servers_active: number;
  servers_idle: number;
  servers_login: number;
  /** Sum of pool_size over the pools (against which servers_active shows saturation). */
  pool_size: number;
  login_failures_per_s: number;
  client_errors_per_s: number;
  session_logins_per_s: number;
  session_failures_per_s: number;
}

/** A pool as the dashboard's table shows it: now, and its rate over the last interval. */
export interface PoolRow extends PoolFigures {
  xacts_per_s: number;
  /** servers_active over pool_size, 0..1 (can pass 1 with the reserve). */
  usage: number;
  /** Every server in use (or more clients than it can hold are waiting). */
  saturated: boolean;
}

type NumericField = { [K in keyof PoolFigures]: PoolFigures[K] extends number ? K : never }[keyof PoolFigures];

/** The pools' `fields`, each summed over every pool. */
export function sumPools<F extends NumericField>(pools: readonly PoolFigures[], fields: readonly F[]): Record<F, number> {
  const out = Object.fromEntries(fields.map((f) => [f, 0])) as Record<F, number>;
  for (const p of pools) for (const f of fields) out[f] += p[f];
  return out;
}

/** Clients wait, or every server of pool_size is in use: the next client will wait. */
export function isSaturated(p: PoolFigures): boolean {
  return p.clients_waiting > 0 || (p.pool_size > 0 && p.servers_active >= p.pool_size);
}

const COUNTED = ['transactions', 'queries', 'transaction_us', 'wait_us', 'server_assignments'] as const;
const GAUGES = ['clients_active', 'clients_waiting', 'servers_active', 'servers_idle', 'servers_login', 'pool_size'] as const;

interface Totals extends Record<(typeof COUNTED)[number], number> {
  at: number;
  xact_times: number[];
  wait_times: number[];
  login_failures: number;
  client_errors: number;
  session_ok: number;
  session_failed: number;
}

const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);

function addInto(into: number[], more: readonly number[]): void {
  for (let i = 0; i < more.length; i++) into[i] = (into[i] ?? 0) + more[i];
}

function totalsOf(s: MetricsSnapshot, at: number): Totals {
  const t: Totals = {
    at,
    ...sumPools(s.pools, COUNTED),
    xact_times: [],
    wait_times: [],
    login_failures: sum(s.login_failures),
    client_errors: sum(s.client_errors),
    session_ok: s.session_logins.ok,
    session_failed: s.session_logins.failed,
  };
  for (const p of s.pools) {
    addInto(t.xact_times, p.transaction_times);
    addInto(t.wait_times, p.wait_times);
  }
  return t;
}

const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

export class History {
  readonly points: HistoryPoint[] = [];
  private last: Totals | null = null;
  private lastPoolXacts = new Map<string, number>();
  private poolRates = new Map<string, number>();
  latest: MetricsSnapshot | null = null;

  /** Adds the point for `s`, taken at `at` (ms). The first call only sets the baseline. */
  add(s: MetricsSnapshot, at = Date.now()): void {
    const now = totalsOf(s, at);
    const before = this.last;
    this.last = now;
    this.latest = s;
    const seconds = before ? Math.max(0.001, (at - before.at) / 1000) : 1;
    const poolXacts = new Map<string, number>();
    this.poolRates = new Map();
    for (const p of s.pools) {
      const key = `${p.database}\u0000${p.user}`;
      poolXacts.set(key, p.transactions);
      const was = this.lastPoolXacts.get(key);
      this.poolRates.set(key, was === undefined ? 0 : round(Math.max(0, p.transactions - was) / seconds, 1));
    }
    this.lastPoolXacts = poolXacts;
    if (!before) return;
    const d = (a: number, b: number) => Math.max(0, a - b);
    const dx = d(now.transactions, before.transactions);
    const da = d(now.server_assignments, before.server_assignments);
    const deltaCounts = (a: number[], b: number[]) => a.map((v, i) => d(v, b[i] ?? 0));
    this.points.push({
      t: Math.round(at / 1000),
      xacts_per_s: round(dx / seconds, 1),
      queries_per_s: round(d(now.queries, before.queries) / seconds, 1),
      xact_avg_ms: dx > 0 ? round(d(now.transaction_us, before.transaction_us) / dx / 1000) : 0,
      xact_p99_ms: round(quantileUs(deltaCounts(now.xact_times, before.xact_times), 0.99) / 1000),
      wait_avg_ms: da > 0 ? round(d(now.wait_us, before.wait_us) / da / 1000) : 0,
      wait_p99_ms: round(quantileUs(deltaCounts(now.wait_times, before.wait_times), 0.99) / 1000),
      ...sumPools(s.pools, GAUGES),
      login_failures_per_s: round(d(now.login_failures, before.login_failures) / seconds, 2),
      client_errors_per_s: round(d(now.client_errors, before.client_errors) / seconds, 2),
      session_logins_per_s: round(d(now.session_ok, before.session_ok) / seconds, 2),
      session_failures_per_s: round(d(now.session_failed, before.session_failed) / seconds, 2),
    });
    if (this.points.length > HISTORY_POINTS) this.points.splice(0, this.points.length - HISTORY_POINTS);
  }

  /** The latest snapshot's pools, searched, sorted and cut to `limit`, with the total that matched. */
  pools(query: { search?: string; sort?: string; limit?: number }): { matched: number; total: number; rows: PoolRow[] } {
    const all = this.latest?.pools ?? [];
    const needle = (query.search ?? '').toLowerCase();
    const rows: PoolRow[] = [];
    for (const p of all) {
      if (needle && !p.database.toLowerCase().includes(needle) && !p.user.toLowerCase().includes(needle)) continue;
      const usage = p.pool_size > 0 ? p.servers_active / p.pool_size : 0;
      rows.push({
        ...p,
        xacts_per_s: this.poolRates.get(`${p.database}\u0000${p.user}`) ?? 0,
        usage: round(usage),
        saturated: isSaturated(p),
      });
    }
    const key = query.sort ?? 'usage';
    const by: Record<string, (a: PoolRow, b: PoolRow) => number> = {
      usage: (a, b) => Number(b.saturated) - Number(a.saturated) || b.usage - a.usage || b.clients_waiting - a.clients_waiting,
      waiting: (a, b) => b.clients_waiting - a.clients_waiting || b.max_wait_seconds - a.max_wait_seconds,
      clients: (a, b) => b.clients_active + b.clients_waiting - (a.clients_active + a.clients_waiting),
      xacts: (a, b) => b.xacts_per_s - a.xacts_per_s,
      name: () => 0,
    };
    const name = (a: PoolRow, b: PoolRow) => (a.database < b.database ? -1 : a.database > b.database ? 1 : a.user < b.user ? -1 : a.user > b.user ? 1 : 0);
    const order = by[key] ?? by.usage;
    rows.sort((a, b) => order(a, b) || name(a, b));
    const limit = Math.min(Math.max(1, query.limit ?? 50), 1000);
    return { matched: rows.length, total: all.length, rows: rows.slice(0, limit) };
  }
}
