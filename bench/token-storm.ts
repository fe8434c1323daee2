// The session-token storm: the web pattern of issue 3. Many concurrent loops each connect with a
// fresh nonce, run one query, and disconnect:
//
//   direct     a new PostgreSQL backend per connection, logging in as the pool role (SCRAM, as the
//              cluster's pg_hba.conf asks), then `select * from tessera.open_connection($1,$2,$3)`,
//              then the query;
//   Tessera    a database entry with "auth_type": "session_token": the credentials travel in the
//              startup packet and Tessera runs open_connection on a pooled backend;
//   PgBouncer  (for reference) session mode, the client runs open_connection, the query and
//              tessera.close_connection() itself on a pooled backend.
//
// One session per loop, so each session's nonces are used in order (the server accepts at most 64
// ahead of the highest one used).
//
// Run on its own (it starts everything it needs, like `npm run bench -- --only token-storm`):
//   node --import tsx bench/token-storm.ts [--seconds N] [--concurrency C] [--no-pgbouncer] [--quick]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { Cluster } from '../test/support/cluster.js';
import { SessionCredentials } from '../src/client/index.js';
import { cleanEnv, isAborted, runToEnd } from './lib/proc.js';
import { DB_TOKENS, ROOT, TOKEN_POOL_ROLE } from './lib/poolers.js';

export const TOKEN_DB = 'tessera_bench_tokens';
const QUERY = 'select count(*) as n from demo.notes';
const PASSWORDS: Record<string, string> = { alice: 'alice-password', bob: 'bob-password' };
/** Rows each accessor sees in demo.notes (sql/demo.sql): a wrong count means a wrong binding. */
const ROWS_PER_USER = '2';

export interface TokenSession {
  user: string;
  creds: SessionCredentials;
}

export type StormTarget = 'direct' | 'tessera' | 'pgbouncer';

export interface StormResult {
  connectionsPerSecond: number;
  completed: number;
  failed: number;
  latencyAvgMs: number | null;
  latencyP99Ms: number | null;
  firstError: string | null;
  seconds: number;
  /** CPU the bench process (the clients) used, in % of one core: near 100 means client-bound. */
  clientCpuPercent: number;
}

async function psqlFile(psqlBin: string, cluster: Cluster, db: string, file: string): Promise<void> {
  const args = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', '-d', db, '-f', path.join(ROOT, file)];
  const r = await runToEnd(psqlBin, args, { env: cleanEnv({ PGPASSWORD: cluster.superPassword }), timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`psql -f ${file} failed (${r.code ?? r.signal}):\n${r.stderr}${r.stdout}`);
}

/** A fresh database with sql/tessera.sql and sql/demo.sql, as README says to install them. */
export async function setupTokenDb(psqlBin: string, cluster: Cluster): Promise<string> {
  await cluster.query(`drop database if exists ${TOKEN_DB} with (force)`);
  await cluster.query(`create database ${TOKEN_DB}`);
  await psqlFile(psqlBin, cluster, TOKEN_DB, 'sql/tessera.sql');
  await psqlFile(psqlBin, cluster, TOKEN_DB, 'sql/demo.sql');
  return TOKEN_DB;
}

/**
 * `count` sessions, alternately alice's and bob's: create_session as the pool role, then the first
 * open_connection with the password (nonce 1), as an application's login page would.
 */
export async function createSessions(cluster: Cluster, count: number): Promise<TokenSession[]> {
  const c = new pg.Client({ host: cluster.host, port: cluster.port, database: TOKEN_DB, ...TOKEN_POOL_ROLE });
  c.on('error', () => {});
  await c.connect();
  try {
    const sessions: TokenSession[] = [];
    for (let i = 0; i < count; i++) {
      const user = i % 2 === 0 ? 'alice' : 'bob';
      const { rows } = await c.query('select session_id, session_token from tessera.create_session($1)', [user]);
      const id = rows[0].session_id as string;
      const token = rows[0].session_token as string;
      const r = await c.query('select success, errmsg from tessera.open_connection($1, 1, $2)', [id, PASSWORDS[user]]);
      if (r.rows[0]?.success !== true) throw new Error(`password login for ${user} failed: ${r.rows[0]?.errmsg}`);
      sessions.push({ user, creds: new SessionCredentials(id, token, { firstNonce: 2 }) });
    }
    await c.query('select tessera.close_connection()');
    return sessions;
  } finally {
    await c.end().catch(() => {});
  }
}

async function once(target: StormTarget, port: number, session: TokenSession, timeoutMs: number): Promise<void> {
  let client: pg.Client;
  if (target === 'tessera') {
    client = new pg.Client({
      host: '127.0.0.1',
      port,
      database: DB_TOKENS,
      user: session.user, // a label only: the backend role is the entry's
      options: session.creds.asOptions(), // the startup-packet form: no password round trip
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs,
    });
  } else {
    client = new pg.Client({
      host: '127.0.0.1',
      port,
      database: target === 'direct' ? TOKEN_DB : DB_TOKENS,
      ...TOKEN_POOL_ROLE,
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs,
    });
  }
  client.on('error', () => {});
  try {
    await client.connect();
    if (target !== 'tessera') {
      const c = session.creds.next();
      const r = await client.query('select success, errmsg from tessera.open_connection($1, $2, $3)', [c.sessionId, c.nonce, c.authentToken]);
      if (r.rows[0]?.success !== true) throw new Error(`open_connection: ${r.rows[0]?.errmsg ?? 'no row'}`);
    }
    const { rows } = await client.query(QUERY);
    if (String(rows[0]?.n) !== ROWS_PER_USER) throw new Error(`${session.user} saw ${rows[0]?.n} rows, expected ${ROWS_PER_USER}`);
    // Through PgBouncer the backend is reused: unbind it as Tessera does on release.
    if (target === 'pgbouncer') await client.query('select tessera.close_connection()');
  } finally {
    await client.end().catch(() => {});
  }
}

/** Runs one loop per session for `seconds`; counts completed connect/query/disconnect cycles. */
export async function runStorm(target: StormTarget, port: number, sessions: TokenSession[], seconds: number): Promise<StormResult> {
  const startedAt = performance.now();
  const cpu0 = process.cpuUsage();
  const deadline = startedAt + seconds * 1000;
  const latencies: number[] = [];
  let failed = 0;
  let firstError: string | null = null;
  const MAX_PER_LOOP = 1_000_000; // a bound besides time
  const loop = async (session: TokenSession): Promise<void> => {
    for (let i = 0; i < MAX_PER_LOOP && performance.now() < deadline && !isAborted(); i++) {
      const t0 = performance.now();
      try {
        await once(target, port, session, 15_000);
        latencies.push(performance.now() - t0);
      } catch (err) {
        failed++;
        firstError ??= (err as Error).message;
        // A failing target must not spin: back off a little.
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };
  await Promise.all(sessions.map(loop));
  const elapsed = (performance.now() - startedAt) / 1000;
  const cpu = process.cpuUsage(cpu0);
  latencies.sort((a, b) => a - b);
  const avg = latencies.length ? latencies.reduce((a, b) => a + b, 0) / latencies.length : null;
  const p99 = latencies.length ? latencies[Math.min(latencies.length - 1, Math.ceil(latencies.length * 0.99) - 1)] : null;
  return {
    connectionsPerSecond: latencies.length / elapsed,
    completed: latencies.length,
    failed,
    latencyAvgMs: avg,
    latencyP99Ms: p99,
    firstError,
    seconds: elapsed,
    clientCpuPercent: ((cpu.user + cpu.system) / 1e6 / elapsed) * 100,
  };
}

// Standalone: the same as `bench/run.ts --only token-storm [args]`.
if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const mapped: string[] = ['--only', 'token-storm'];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--seconds') mapped.push('--duration', args[++i]);
    else if (args[i] === '--concurrency') mapped.push('--token-concurrency', args[++i]);
    else mapped.push(args[i]);
  }
  // Not awaited: this module must finish evaluating before run.ts (which imports it) can load.
  void import('./run.js').then(({ main }) => main(mapped));
}
