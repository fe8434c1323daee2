// A real application's load: node-postgres clients, each connected once, running a parameterised
// query in a loop. node-postgres sends every parameterised query as the unnamed extended protocol
// (Parse/Bind/Describe/Execute/Sync with the statement unnamed), as pgjdbc (below its
// prepareThreshold), psycopg 3 and most ORMs do.
import pg from 'pg';
import { isAborted } from './proc.js';

export interface DriverLoadResult {
  queriesPerSecond: number;
  completed: number;
  failed: number;
  latencyAvgMs: number | null;
  latencyP99Ms: number | null;
  firstError: string | null;
}

/** pgbench -i -s 1 makes 100,000 accounts. */
const ACCOUNTS = 100_000;
const QUERY = 'select abalance from pgbench_accounts where aid = $1';

/**
 * `named`: the query as a named statement (node-postgres parses it once per connection and then
 * sends only Bind/Execute/Sync), what a pooler that prepares statements makes PostgreSQL do.
 */
export async function runDriverLoad(opts: { port: number; user: string; db: string; clients: number; seconds: number; named?: boolean }): Promise<DriverLoadResult> {
  const clients = await Promise.all(
    Array.from({ length: opts.clients }, async () => {
      const c = new pg.Client({ host: '127.0.0.1', port: opts.port, user: opts.user, database: opts.db });
      await c.connect();
      return c;
    }),
  );
  const latencies: number[] = [];
  let failed = 0;
  let firstError: string | null = null;
  const started = process.hrtime.bigint();
  const deadline = Date.now() + opts.seconds * 1000;
  try {
    await Promise.all(
      clients.map(async (c) => {
        while (Date.now() < deadline && !isAborted()) {
          const t0 = process.hrtime.bigint();
          try {
            const values = [1 + Math.floor(Math.random() * ACCOUNTS)];
            await c.query(opts.named ? { name: 'bench_select', text: QUERY, values } : { text: QUERY, values });
            latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
          } catch (err) {
            failed++;
            firstError ??= (err as Error).message;
          }
        }
      }),
    );
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  const avg = latencies.length ? latencies.reduce((s, x) => s + x, 0) / latencies.length : null;
  return {
    queriesPerSecond: latencies.length / seconds,
    completed: latencies.length,
    failed,
    latencyAvgMs: avg,
    latencyP99Ms: latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] : null,
    firstError,
  };
}
