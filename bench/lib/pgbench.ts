// Runs pgbench against one target and reads its summary: tps, latency average, failed
// transactions, and p99 latency from the per-transaction log (--log).
import fs from 'node:fs';
import path from 'node:path';
import { cleanEnv, removeDir, runToEnd, tempDir } from './proc.js';

export interface PgbenchArgs {
  bin: string;
  port: number;
  user: string;
  db: string;
  clients: number;
  threads: number;
  seconds: number;
  /** Extra pgbench flags: -S, -C, -M extended, ... */
  flags: string[];
  /** Compute p99 from a per-transaction log (costs a log line per transaction, on every target). */
  p99: boolean;
  /** Extra environment, e.g. PGSSLMODE. */
  env?: Record<string, string>;
}

export interface PgbenchResult {
  tps: number | null;
  latencyAvgMs: number | null;
  latencyP99Ms: number | null;
  transactions: number | null;
  failed: number | null;
  /** -C only: pgbench's average connection time. */
  connectMs: number | null;
  /** Non-empty when pgbench did not finish cleanly (the numbers may still be there). */
  error: string | null;
}

function num(re: RegExp, text: string): number | null {
  const m = re.exec(text);
  return m ? Number(m[1]) : null;
}

export function parsePgbench(out: string): Omit<PgbenchResult, 'latencyP99Ms' | 'error'> {
  return {
    tps: num(/^tps = ([\d.]+)/m, out),
    latencyAvgMs: num(/^latency average = ([\d.]+) ms/m, out),
    transactions: num(/^number of transactions actually processed: (\d+)/m, out),
    failed: num(/^number of failed transactions: (\d+)/m, out),
    connectMs: num(/^average connection time = ([\d.]+) ms/m, out),
  };
}

/** p99 of the `time` column (µs) of pgbench's per-transaction logs in `dir`, in ms. */
export function p99FromLogs(dir: string): number | null {
  const values: number[] = [];
  for (const name of fs.readdirSync(dir)) {
    const text = fs.readFileSync(path.join(dir, name), 'utf8');
    let start = 0;
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = text.length;
      // client_id transaction_no time script_no time_epoch time_us [...]
      const a = text.indexOf(' ', start);
      const b = a < 0 ? -1 : text.indexOf(' ', a + 1);
      const c = b < 0 ? -1 : text.indexOf(' ', b + 1);
      if (c > 0 && c < end) {
        const us = Number(text.slice(b + 1, c)); // "failed"/"skipped" give NaN
        if (Number.isFinite(us)) values.push(us);
      }
      start = end + 1;
    }
  }
  if (values.length === 0) return null;
  values.sort((x, y) => x - y);
  return values[Math.min(values.length - 1, Math.ceil(values.length * 0.99) - 1)] / 1000;
}

export async function runPgbench(a: PgbenchArgs): Promise<PgbenchResult> {
  const logDir = a.p99 ? tempDir('tessera-bench-log-') : undefined;
  const args = [
    '-h', '127.0.0.1',
    '-p', String(a.port),
    '-U', a.user,
    '-n', // the tables were vacuumed after -i; VACUUM through a pooler is no part of the measurement
    '-c', String(a.clients),
    '-j', String(Math.max(1, Math.min(a.threads, a.clients))),
    '-T', String(a.seconds),
    ...a.flags,
  ];
  if (logDir) args.push('--log', `--log-prefix=${path.join(logDir, 'tx')}`);
  args.push(a.db);
  try {
    // Generous: 500 clients connecting through a loaded machine can take a while before -T starts.
    const r = await runToEnd(a.bin, args, { env: cleanEnv(a.env), timeoutMs: (a.seconds + 90) * 1000, cwd: logDir });
    const parsed = parsePgbench(r.stdout);
    let error: string | null = null;
    if (r.timedOut) error = 'pgbench timed out';
    else if (r.code !== 0) error = `pgbench exited ${r.code ?? r.signal}: ${lastLines(r.stderr || r.stdout, 4)}`;
    else if (parsed.tps === null) error = `no tps in pgbench output: ${lastLines(r.stdout + r.stderr, 4)}`;
    const latencyP99Ms = logDir && parsed.tps !== null ? p99FromLogs(logDir) : null;
    return { ...parsed, latencyP99Ms, error };
  } finally {
    if (logDir) removeDir(logDir);
  }
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join(' | ');
}

/** pgbench -i: tables at the given scale, then VACUUM ANALYZE (pgbench does that itself). */
export async function initPgbench(bin: string, port: number, user: string, db: string, scale: number): Promise<void> {
  const r = await runToEnd(bin, ['-i', '-q', '-s', String(scale), '-h', '127.0.0.1', '-p', String(port), '-U', user, db], {
    env: cleanEnv(),
    timeoutMs: 300_000,
  });
  if (r.code !== 0) throw new Error(`pgbench -i failed (${r.code ?? r.signal}):\n${r.stderr}${r.stdout}`);
}
