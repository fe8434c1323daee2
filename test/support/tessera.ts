// Starts Tessera for a test: in-process (fast, and its logs are captured), or as a child process
// running the real CLI (for signals, exit codes and memory measurements).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { parseConfig } from '../../src/config/load.js';
import { loadUserlist } from '../../src/auth/userlist.js';
import { Pooler } from '../../src/pooler/pooler.js';
import { setLogger } from '../../src/log.js';
import { freePort, type Cluster } from './cluster.js';

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

/** Every log line any in-process Tessera wrote during this test run. */
export const capturedLogs: string[] = [];
setLogger(
  pino(
    { level: 'debug', base: { pid: process.pid } },
    new Writable({
      write(chunk, _enc, done) {
        capturedLogs.push(...chunk.toString().split('\n').filter(Boolean));
        done();
      },
    }),
  ),
);

export { freePort };

export interface RunningTessera {
  port: number;
  proxy: Pooler;
  dir: string;
  /** The config file it was started from (edit it, then proxy.reload()). */
  file: string;
  /** Connection settings for node-postgres through Tessera. */
  conn(user: string, password?: string, database?: string): pg.ClientConfig;
  stop(): Promise<void>;
}

/** A database entry pointing at the test cluster. */
export function clusterEntry(cluster: Cluster, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { host: cluster.host, port: cluster.port, ...extra };
}

function writeConfig(settings: Record<string, unknown>, userlist: string | undefined, port: number): { dir: string; file: string; json: Record<string, unknown> } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-cfg-'));
  // No Unix socket unless a test asks for one: parallel runs would otherwise litter /tmp.
  const json: Record<string, unknown> = { listen_port: port, auth_type: 'trust', unix_socket_dir: '', ...settings };
  if (userlist !== undefined) {
    fs.writeFileSync(path.join(dir, 'userlist.txt'), userlist);
    json.auth_file ??= 'userlist.txt';
  }
  const file = path.join(dir, 'proxy.config.json');
  fs.writeFileSync(file, JSON.stringify(json, null, 2));
  return { dir, file, json };
}

/** Starts Tessera in this process with the given settings (auth_type defaults to trust). */
export async function startTessera(settings: Record<string, unknown>, userlist?: string): Promise<RunningTessera> {
  const port = await freePort();
  const { dir, file, json } = writeConfig(settings, userlist, port);
  const config = parseConfig(json, file, dir);
  const proxy = new Pooler({ config, configPath: file, userlist: config.auth_file ? loadUserlist(config.auth_file) : new Map() });
  await proxy.listen();
  return {
    port,
    proxy,
    dir,
    file,
    conn: (user, password, database = 'tessera_test') => ({ host: '127.0.0.1', port, user, password, database }),
    stop: async () => {
      await proxy.shutdown(0);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TesseraProcess {
  port: number;
  child: ChildProcess;
  output: () => string;
  /** Resolves with the exit code once the process ends. */
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

/**
 * Runs the real CLI (through tsx) on a config written from `settings`; waits until it listens.
 * `cliArgs` gets that file and its port (to write a pgbouncer.ini of the test's own instead);
 * `env` is added to this process's environment.
 */
export async function spawnTessera(
  settings: Record<string, unknown>,
  userlist?: string,
  cliArgs: (configFile: string, port: number) => string[] = (file) => ['--config', file],
  env: Record<string, string> = {},
): Promise<TesseraProcess & { file: string }> {
  const port = await freePort();
  const { dir, file } = writeConfig(settings, userlist, port);
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli.ts'), ...cliArgs(file, port)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 20000;
  while (!out.includes('"listening"')) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`tessera did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    file,
    child,
    output: () => out,
    exited,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGINT');
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs a program without blocking the event loop (an in-process Tessera must keep serving). */
export function run(cmd: string, args: string[], opts: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    // A program that exits without reading its input (psql refused at login) closes the pipe first.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** A CancelRequest on a new connection to 127.0.0.1:`port`, as libpq sends it; resolves when it is closed. */
export function sendCancel(port: number, pid: number, secret: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.end(serialize.cancel(pid, secret)));
    s.on('close', () => resolve());
    s.on('error', () => resolve());
  });
}

/** A connected node-postgres client; the caller ends it. */
export async function connect(config: pg.ClientConfig): Promise<pg.Client> {
  const client = new pg.Client(config);
  client.on('error', () => {}); // asserted through query results, not as crashes
  await client.connect();
  return client;
}

/** The error a promise rejects with (fails the test if it resolves). */
export async function rejection(p: Promise<unknown>): Promise<Error & { code?: string; severity?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected an error, got success');
}

/** Polls `probe` until it returns something truthy; a bounded wait, never a timing assertion. */
export async function until<T>(what: string, probe: () => Promise<T | undefined | false>, ms = 10000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A promise's outcome as a value, to be awaited later without an unhandled rejection. */
export const settle = <T>(p: Promise<T>) => p.then((v) => ({ ok: true as const, v }), (e: Error) => ({ ok: false as const, e }));

/** Whether `p` settles within a short, bounded wait (used only to see that something is still waiting). */
export async function settledSoon(p: Promise<unknown>, ms = 500): Promise<boolean> {
  let done = false;
  void p.finally(() => (done = true)).catch(() => {});
  await new Promise((r) => setTimeout(r, ms));
  return done;
}
