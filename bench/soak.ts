// `npm run soak [-- --duration S] [-- --slow-reader-mb N]`: mixed load against Tessera (a child
// process running the real CLI) while a backend is terminated every few seconds, then a report:
// transactions done, errors by kind (only those the injected faults cause are allowed), and
// Tessera's RSS at the start and the end. Exits 1 on an unexpected error or on RSS growth beyond
// noise. Not part of npm test. Starts its own PostgreSQL on loopback and stops everything at the end.
//
// Load, all at once: session-mode clients running write transactions, transaction-mode clients
// running named prepared statements, session-token logins (connect with a fresh nonce, query,
// disconnect), a query cancelled every 2 s, a backend terminated every 3 s, and (optionally) one
// client reading a large result slowly, to show memory stays bounded under backpressure.
import net from 'node:net';
import fs from 'node:fs';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { startCluster, type Cluster } from '../test/support/cluster.js';
import { sendCancel, spawnTessera, type TesseraProcess } from '../test/support/tessera.js';
import { demoDatabase } from '../test/support/sql.js';
import { SessionCredentials } from '../src/client/index.js';

const args = process.argv.slice(2);
const opt = (name: string, def: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
if (args.includes('--help')) {
  process.stdout.write('npm run soak -- [--duration S (600)] [--slow-reader-mb N (1024; 0 = off)] [--kill-every S (3)]\n');
  process.exit(0);
}
const DURATION_S = opt('duration', 600);
const SLOW_MB = opt('slow-reader-mb', 1024);
const KILL_EVERY_S = opt('kill-every', 3);
const DB = 'soak';
const TOKEN_DB = 'soak_tokens';
const APP_ROLE = { user: 'tessera_app', password: 'tessera-app-password' };
const MB = 1 << 20;

/** Errors the injected faults cause: a terminated backend, a cancelled query, the cut connection. */
function allowed(err: Error & { code?: string }): string | null {
  const m = err.message ?? '';
  if (err.code === '57P01') return 'backend terminated (57P01)';
  if (err.code === '57014') return 'query cancelled (57014)';
  if (err.code === '08006' || /Connection terminated|ECONNRESET|server closed the connection/.test(m)) return 'connection cut by the termination';
  if (err.code === '28000' && /open_connection raised SQLSTATE 57P01/.test(m)) return 'session login cut by the termination';
  if (/Client has encountered a connection error and is not queryable|Client was closed and is not queryable/.test(m)) return 'connection cut by the termination';
  return null;
}

const counts = { transactions: 0, tokenLogins: 0, cancels: 0, kills: 0 };
const allowedErrors = new Map<string, number>();
const unexpected = new Map<string, number>();
let stopping = false;

function record(err: Error & { code?: string }): void {
  const kind = allowed(err);
  const map = kind ? allowedErrors : unexpected;
  const key = kind ?? `${err.code ?? '-'} ${err.message}`;
  map.set(key, (map.get(key) ?? 0) + 1);
}

function rss(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function client(config: pg.ClientConfig): Promise<pg.Client> {
  const c = new pg.Client(config);
  c.on('error', () => {}); // seen through the failing query
  await c.connect();
  return c;
}

/** Runs `body` on a connection until the end, reconnecting after a fault. */
async function loop(config: pg.ClientConfig, body: (c: pg.Client) => Promise<void>): Promise<void> {
  while (!stopping) {
    let c: pg.Client | null = null;
    try {
      c = await client(config);
      while (!stopping) await body(c);
    } catch (err) {
      record(err as Error);
      await sleep(50);
    } finally {
      await c?.end().catch(() => {});
    }
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  process.stderr.write(`soak: ${DURATION_S} s, slow reader ${SLOW_MB} MB, a backend terminated every ${KILL_EVERY_S} s\n`);
  const cluster: Cluster = await startCluster();
  let tessera: TesseraProcess | null = null;
  try {
    await cluster.query(`create database ${DB}`);
    await cluster.query(`create table soak (id bigserial primary key, who int, at timestamptz default now()); grant all on soak, soak_id_seq to trust_user`, [], DB);
    await demoDatabase(cluster, TOKEN_DB);
    const target = { host: cluster.host, port: cluster.port };
    tessera = await spawnTessera({
      log_level: 'info', // spawnTessera waits for the "listening" line
      max_client_conn: 500,
      default_pool_size: 8,
      server_login_retry: 1,
      databases: {
        sess: { ...target, dbname: DB, pool_mode: 'session' },
        tx: { ...target, dbname: DB, pool_mode: 'transaction' },
        tokens: { ...target, dbname: TOKEN_DB, auth_type: 'session_token', user: APP_ROLE.user, password: APP_ROLE.password },
      },
    });
    const pid = tessera.child.pid!;
    const port = tessera.port;
    const conn = (database: string, app: string): pg.ClientConfig => ({ host: '127.0.0.1', port, user: 'trust_user', database, application_name: app });

    const workers: Promise<void>[] = [];
    // Session mode: write transactions.
    for (let i = 0; i < 6; i++) {
      workers.push(
        loop(conn('sess', 'soak-session'), async (c) => {
          await c.query('begin');
          await c.query('insert into soak (who) values ($1)', [i]);
          await c.query('select count(*) from soak where who = $1', [i]);
          await c.query('commit');
          counts.transactions++;
        }),
      );
    }
    // Transaction mode: named prepared statements, one transaction each.
    for (let i = 0; i < 10; i++) {
      workers.push(
        loop(conn('tx', 'soak-tx'), async (c) => {
          await c.query({ name: 'soak-read', text: 'select id, who from soak where id > $1 order by id limit 5', values: [i] });
          await c.query({ name: 'soak-write', text: 'insert into soak (who) values ($1) returning id', values: [100 + i] });
          counts.transactions += 2;
        }),
      );
    }
    // Session-token logins: one session per loop, nonces in order.
    for (let i = 0; i < 3; i++) {
      workers.push(
        (async () => {
          const app = await client({ ...target, database: TOKEN_DB, ...APP_ROLE });
          const user = i % 2 ? 'alice' : 'bob';
          const { rows } = await app.query('select session_id, session_token from tessera.create_session($1)', [user]);
          await app.end();
          const first = await client({ host: '127.0.0.1', port, database: 'tokens', user: 'web', password: `${rows[0].session_id}:1:${user}-password` }).catch((e) => (record(e), null));
          await first?.end();
          const creds = new SessionCredentials(rows[0].session_id, rows[0].session_token, { firstNonce: 2 });
          while (!stopping) {
            try {
              const c = await client({ host: '127.0.0.1', port, database: 'tokens', user: 'web', password: creds.passwordFunction() as never });
              try {
                const who = (await c.query('select tessera.current_accessor() as who')).rows[0].who;
                if (who !== user) record(new Error(`session-token login saw accessor ${who}, expected ${user}`));
                counts.tokenLogins++;
                counts.transactions++;
              } finally {
                await c.end();
              }
            } catch (err) {
              record(err as Error);
              await sleep(50);
            }
          }
        })(),
      );
    }
    // A cancelled query every 2 s.
    workers.push(
      loop(conn('tx', 'soak-cancel'), async (c) => {
        const q = c.query('select pg_sleep(5)').then(
          () => record(new Error('cancelled query ran to completion')),
          (err) => (err.code === '57014' ? counts.cancels++ : record(err)),
        );
        // Cancel once the query runs on a server: a cancel that arrives while the query still
        // waits for one (the pool is busy) reaches no server, by design, and is lost.
        const deadline = Date.now() + 3000;
        while (Date.now() < deadline && !stopping) {
          const { rows } = await cluster.query(`select 1 from pg_stat_activity where application_name = 'soak-cancel' and state = 'active' and query like 'select pg_sleep(5)%'`).catch(() => ({ rows: [] }));
          if (rows.length > 0) break;
          await sleep(50);
        }
        const key = c as unknown as { processID: number; secretKey: number };
        await sendCancel(port, key.processID, key.secretKey);
        await q;
        await sleep(1700);
      }),
    );
    // The fault: a backend serving Tessera terminated every few seconds.
    workers.push(
      (async () => {
        while (!stopping) {
          await sleep(KILL_EVERY_S * 1000);
          if (stopping) break;
          const { rows } = await cluster.query(`select pg_terminate_backend(pid) as ok from pg_stat_activity where application_name like 'soak-%' and pid <> pg_backend_pid() order by random() limit 1`).catch(() => ({ rows: [] as { ok: boolean }[] }));
          if (rows[0]?.ok) counts.kills++;
        }
      })(),
    );

    // Warm up (JIT, heap sizing), then take the starting RSS.
    await sleep(Math.min(15_000, DURATION_S * 100));
    const rssStart = rss(pid);
    let rssPeak = rssStart;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rss(pid))), 500);
    const slow = SLOW_MB > 0 ? slowReader(port, SLOW_MB) : Promise.resolve(null);
    const progress = setInterval(() => process.stderr.write(`soak: ${Math.round((Date.now() - started) / 1000)} s, ${counts.transactions} transactions, RSS ${(rss(pid) / MB).toFixed(1)} MB\n`), 30_000);
    await sleep(Math.max(0, DURATION_S * 1000 - (Date.now() - started)));
    stopping = true;
    clearInterval(progress);
    const slowResult = await slow;
    await Promise.race([Promise.all(workers), sleep(20_000)]);
    clearInterval(sampler);
    // Let the pool settle after the last fault before the final reading.
    await sleep(3000);
    const rssEnd = rss(pid);
    const ok = unexpected.size === 0 && rssEnd - rssStart < 32 * MB && tessera.child.exitCode === null;

    const lines = [
      `soak: ${DURATION_S} s, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Node ${process.version}`,
      `  transactions: ${counts.transactions} (session-token logins ${counts.tokenLogins}, cancels ${counts.cancels}), backends terminated: ${counts.kills}`,
      `  errors from the injected faults: ${[...allowedErrors.values()].reduce((a, b) => a + b, 0)}${[...allowedErrors].map(([k, n]) => `\n    ${n} x ${k}`).join('')}`,
      `  unexpected errors: ${[...unexpected.values()].reduce((a, b) => a + b, 0)}${[...unexpected].map(([k, n]) => `\n    ${n} x ${k}`).join('')}`,
      `  Tessera RSS: start ${(rssStart / MB).toFixed(1)} MB, end ${(rssEnd / MB).toFixed(1)} MB, peak ${(rssPeak / MB).toFixed(1)} MB`,
      slowResult ? `  slow reader: ${(slowResult.bytes / MB).toFixed(0)} MB read in ${slowResult.seconds.toFixed(0)} s${slowResult.error ? ` (ended early: ${slowResult.error})` : ''}` : '  slow reader: off',
      `  result: ${ok ? 'PASS' : 'FAIL'}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
    process.exitCode = ok ? 0 : 1;
  } finally {
    stopping = true;
    await tessera?.stop();
    await cluster.stop();
  }
}

/**
 * One client asking for `mb` MB and reading it at about 20 MB/s: Tessera must hold back the server
 * (backpressure) instead of buffering the result.
 */
function slowReader(port: number, mb: number): Promise<{ bytes: number; seconds: number; error?: string }> {
  const rows = Math.ceil((mb * MB) / 1000);
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const t0 = Date.now();
    let bytes = 0;
    let readyCount = 0;
    let window = 0;
    let finished = false;
    const done = (error?: string) => {
      if (finished) return;
      finished = true;
      s.destroy();
      resolve({ bytes, seconds: (Date.now() - t0) / 1000, error });
    };
    s.on('error', (e) => done(e.message));
    s.on('close', () => done('connection closed (its backend was terminated)'));
    s.on('connect', () => s.write(serialize.startup({ user: 'trust_user', database: 'sess', application_name: 'slow-reader' })));
    s.on('data', (d: Buffer) => {
      bytes += d.length;
      // ReadyForQuery 'Z' of length 5: the login, then the end of the result.
      for (let i = d.indexOf(0x5a); i >= 0 && i + 5 <= d.length; i = d.indexOf(0x5a, i + 1)) if (d.readInt32BE(i + 1) === 5) readyCount++;
      if (readyCount === 1 && bytes < 4096) s.write(serialize.query(`select repeat('x', 990) from generate_series(1, ${rows})`));
      if (readyCount >= 2 || stopping) return done(readyCount >= 2 ? undefined : 'the soak ended first');
      window += d.length;
      if (window >= 2 * MB) {
        window = 0;
        s.pause();
        setTimeout(() => s.resume(), 100);
      }
    });
  });
}

await main();
