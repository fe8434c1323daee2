// Tessera and PgBouncer as child processes, configured alike: the same databases (pool mode per
// database), pool size, client limit and trust logins; both log in to PostgreSQL over TCP on
// 127.0.0.1 (or, with Backend.socketDir, both over its Unix socket) and log only warnings.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS } from '../../src/node-flags.js';
import { cleanEnv, freePort, progress, rssBytes, runToEnd, serverIds, start, stop, tempDir, waitForPort, which, type Started } from './proc.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Databases every pooler offers (names clients connect to). */
export const DB_SESSION = 'bench_session';
export const DB_TX = 'bench_tx';
/** Transaction mode with Tessera's auto_prepare on (PgBouncer: a plain transaction pool). */
export const DB_TX_AUTO = 'bench_tx_auto';
export const DB_TOKENS = 'tokens';

export interface Backend {
  port: number;
  /** Database pgbench tables live in. */
  benchDb: string;
  /** Database with sql/tessera.sql and sql/demo.sql, or undefined when the token storm is not run. */
  tokenDb?: string;
  /**
   * PostgreSQL's Unix socket folder: both poolers reach it there instead of over TCP (bench
   * --server-socket). The cluster's pg_hba.conf trusts every local connection.
   */
  socketDir?: string;
}

/** Where the poolers' server connections go: the Unix socket folder, else 127.0.0.1 (TCP). */
function serverHost(backend: Backend): string {
  return backend.socketDir ?? '127.0.0.1';
}

export const TOKEN_POOL_ROLE = { user: 'tessera_app', password: 'tessera-app-password' } as const;
/** The cluster's trust role (test/support/cluster.ts): pgbench logs in as it everywhere. */
export const BENCH_USER = 'trust_user';

export interface PoolerSettings {
  poolSize: number;
  maxClientConn: number;
  /** Tessera's `workers` setting (PgBouncer always runs one process). */
  workers?: number;
}

export interface Pooler {
  name: 'tessera' | 'pgbouncer';
  port: number;
  pid: number | undefined;
  proc: Started;
  /** Lines the pooler wrote (warnings and worse, given the log levels set). */
  logLines(): number;
  stop(): Promise<void>;
}

// ---- Tessera ----------------------------------------------------------------------------------

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(full));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, fs.statSync(full).mtimeMs);
  }
  return newest;
}

export type TesseraRunner = 'dist' | 'tsx';

/**
 * How to start Tessera: the compiled dist (faster start, no tsx loader) when it is at least as new
 * as src, building it first when `mayBuild`; otherwise through tsx from src.
 */
export async function prepareTessera(opts: { mayBuild: boolean; force?: TesseraRunner }): Promise<TesseraRunner> {
  if (opts.force === 'tsx') return 'tsx';
  const cli = path.join(ROOT, 'dist/src/cli.js');
  const fresh = () => fs.existsSync(cli) && fs.statSync(cli).mtimeMs >= newestMtime(path.join(ROOT, 'src'));
  if (fresh()) return 'dist';
  if (!opts.mayBuild && opts.force !== 'dist') {
    progress('bench: dist/ is missing or older than src/; running Tessera through tsx (no build in --quick)');
    return 'tsx';
  }
  progress('bench: dist/ is missing or older than src/; running npm run build');
  const r = await runToEnd('npm', ['run', 'build'], { cwd: ROOT, env: cleanEnv(), timeoutMs: 180_000 });
  if (r.code === 0 && fs.existsSync(cli)) return 'dist';
  progress(`bench: npm run build failed (${r.timedOut ? 'timed out' : `exit ${r.code}`}); running Tessera through tsx instead\n${(r.stdout + r.stderr).trim().split('\n').slice(-15).join('\n')}`);
  return 'tsx';
}

/** Client TLS for a Tessera (prefer: each pgbench run picks TLS or plaintext with PGSSLMODE). */
export interface TesseraTls {
  keyFile: string;
  certFile: string;
}

export async function startTessera(backend: Backend, s: PoolerSettings, runner: TesseraRunner, cpuProfDir: string | null = null, tls?: TesseraTls): Promise<Pooler> {
  const dir = tempDir('tessera-bench-cfg-');
  const port = await freePort();
  const server = { host: serverHost(backend), port: backend.port };
  const databases: Record<string, unknown> = {
    [DB_SESSION]: { ...server, dbname: backend.benchDb, pool_mode: 'session' },
    [DB_TX]: { ...server, dbname: backend.benchDb, pool_mode: 'transaction' },
    [DB_TX_AUTO]: { ...server, dbname: backend.benchDb, pool_mode: 'transaction', auto_prepare: true },
  };
  if (backend.tokenDb) {
    databases[DB_TOKENS] = {
      ...server,
      dbname: backend.tokenDb,
      pool_mode: 'session',
      auth_type: 'session_token',
      user: TOKEN_POOL_ROLE.user,
      password: TOKEN_POOL_ROLE.password,
    };
  }
  const config = {
    listen_addr: '127.0.0.1',
    listen_port: port,
    auth_type: 'trust',
    pool_mode: 'transaction',
    workers: s.workers ?? 1,
    default_pool_size: s.poolSize,
    max_client_conn: s.maxClientConn,
    log_level: 'warn',
    // A failed token login in a storm is a number to report, not an address to ban.
    session_tokens: { max_failures: 0 },
    ...(tls ? { client_tls_sslmode: 'prefer', client_tls_key_file: tls.keyFile, client_tls_cert_file: tls.certFile } : {}),
    databases,
  };
  const file = path.join(dir, 'proxy.config.json');
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
  const entry = runner === 'dist' ? [path.join(ROOT, 'dist/src/cli.js')] : ['--import', 'tsx', path.join(ROOT, 'src/cli.ts')];
  // The flags the `tessera` command and `npm start` run with, so the bench measures what users run.
  const args = [...NODE_FLAGS, ...entry, '--config', file];
  // The profile is written when Tessera exits (SIGQUIT: it closes at once and exits).
  if (cpuProfDir) args.unshift('--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`);
  const proc = start(process.execPath, args, { cwd: ROOT, env: cleanEnv() });
  await waitForPort(port, proc, 'Tessera');
  return running('tessera', port, proc, 'SIGQUIT');
}

/** A started pooler; log lines are counted from now (its start-up lines are not the run's). */
function running(name: Pooler['name'], port: number, proc: Started, signal: NodeJS.Signals): Pooler {
  const base = proc.output.lines;
  return { name, port, pid: proc.child.pid, proc, logLines: () => proc.output.lines - base, stop: () => stop(proc, signal) };
}

// ---- PgBouncer --------------------------------------------------------------------------------

export function pgbouncerBinary(): string | undefined {
  return which('pgbouncer');
}

export async function pgbouncerVersion(bin: string): Promise<string> {
  const r = await runToEnd(bin, ['--version'], { timeoutMs: 10_000 });
  return r.stdout.split('\n')[0]?.trim() || 'unknown';
}

export async function startPgBouncer(bin: string, backend: Backend, s: PoolerSettings): Promise<Pooler> {
  // PgBouncer refuses to run as root: as root it runs as postgres, so its files must be theirs.
  const ids = serverIds();
  const dir = tempDir('pgbouncer-bench-', ids);
  fs.chmodSync(dir, 0o700);
  const port = await freePort();
  const server = `host=${serverHost(backend)} port=${backend.port}`;
  const dbs = [
    `${DB_SESSION} = ${server} dbname=${backend.benchDb} pool_mode=session`,
    `${DB_TX} = ${server} dbname=${backend.benchDb} pool_mode=transaction`,
    `${DB_TX_AUTO} = ${server} dbname=${backend.benchDb} pool_mode=transaction`,
  ];
  if (backend.tokenDb) {
    dbs.push(`${DB_TOKENS} = ${server} dbname=${backend.tokenDb} user=${TOKEN_POOL_ROLE.user} password=${TOKEN_POOL_ROLE.password} pool_mode=session`);
  }
  const ini = [
    '[databases]',
    ...dbs,
    '',
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = trust',
    `auth_file = ${path.join(dir, 'userlist.txt')}`,
    'pool_mode = transaction',
    `default_pool_size = ${s.poolSize}`,
    `max_client_conn = ${s.maxClientConn}`,
    'server_reset_query = DISCARD ALL',
    'ignore_startup_parameters = extra_float_digits',
    // Tessera logs at "warn": no per-connection lines here either.
    'log_connections = 0',
    'log_disconnections = 0',
    'log_pooler_errors = 1',
    'log_stats = 0',
    '',
  ].join('\n');
  // trust still wants the user names in auth_file.
  const userlist = [`"${BENCH_USER}" ""`, `"${TOKEN_POOL_ROLE.user}" ""`, ''].join('\n');
  const iniFile = path.join(dir, 'pgbouncer.ini');
  fs.writeFileSync(iniFile, ini, { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'userlist.txt'), userlist, { mode: 0o600 });
  if (ids) {
    fs.chownSync(iniFile, ids.uid, ids.gid);
    fs.chownSync(path.join(dir, 'userlist.txt'), ids.uid, ids.gid);
  }
  const proc = start(bin, [iniFile], { cwd: dir, env: cleanEnv(), ...ids });
  await waitForPort(port, proc, 'PgBouncer');
  return running('pgbouncer', port, proc, 'SIGINT');
}

export function rssOf(p: Pooler): number | undefined {
  return rssBytes(p.pid);
}
