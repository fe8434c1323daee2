/**
 * log_stats: every stats_period, one line per database with PgBouncer's averages over the period
 * (transactions and queries per second, bytes in and out per second, average transaction, query
 * and wait times in microseconds), computed from SHOW STATS's totals.
 */
import { log } from '../log.js';

type Count = number | bigint;
/** The SHOW STATS totals this reads (the admin view's stats() rows have them). */
export interface StatsSource {
  stats(): { database: string; total: { xact_count: Count; query_count: Count; received: Count; sent: Count; xact_time: Count; query_time: Count; wait_time: Count; server_assignment_count: Count } }[];
}

interface Settings {
  log_stats: boolean;
  stats_period: number;
}

const n = (v: Count) => Number(v);

/** Starts the periodic line; the period and the switch are read from `settings()` at each line. */
export function startStatsLog(source: StatsSource, settings: () => Settings): () => void {
  let before = new Map(source.stats().map((s) => [s.database, s.total]));
  let since = Date.now();
  let timer: NodeJS.Timeout;
  const schedule = () => {
    timer = setTimeout(tick, Math.max(1, settings().stats_period) * 1000);
    timer.unref();
  };
  const tick = () => {
    const now = Date.now();
    const seconds = (now - since) / 1000;
    const rows = source.stats();
    if (settings().log_stats && settings().stats_period > 0) {
      for (const { database, total: t } of rows) {
        const b = before.get(database);
        const d = (k: keyof typeof t) => n(t[k]) - (b ? n(b[k]) : 0);
        const per = (v: number) => Math.round(v / seconds);
        const avg = (v: number, over: number) => (over > 0 ? Math.round(v / over) : 0);
        log.info(
          {
            db: database,
            xacts_per_s: per(d('xact_count')),
            queries_per_s: per(d('query_count')),
            in_bytes_per_s: per(d('received')),
            out_bytes_per_s: per(d('sent')),
            xact_us: avg(d('xact_time'), d('xact_count')),
            query_us: avg(d('query_time'), d('query_count')),
            wait_us: avg(d('wait_time'), d('server_assignment_count')),
          },
          'stats',
        );
      }
    }
    before = new Map(rows.map((s) => [s.database, s.total]));
    since = now;
    schedule();
  };
  schedule();
  return () => clearTimeout(timer);
}
