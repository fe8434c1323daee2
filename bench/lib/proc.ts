// Child processes and temp folders of one bench run, and their cleanup.
//
// Every child is spawned in its own process group (detached), so a Ctrl-C reaches only the bench
// process, which then stops its children in order; at exit (normal, error or signal) whatever is
// still alive is killed by group and every temp folder is removed. The PostgreSQL cluster has its
// own exit hooks (test/support/cluster.ts).
import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const children = new Set<ChildProcess>();
const dirs = new Set<string>();
let installed = false;
let aborted = false;

/** True once the run was interrupted or ran out of time: loops must stop. */
export function isAborted(): boolean {
  return aborted;
}

export class Aborted extends Error {
  constructor(why = 'bench aborted') {
    super(why);
  }
}

export function checkAborted(): void {
  if (aborted) throw new Aborted();
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* gone */
    }
  }
}

/** Synchronous: also runs inside process.on('exit'). */
export function cleanupNow(): void {
  for (const child of children) killGroup(child, 'SIGKILL');
  children.clear();
  for (const dir of dirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
  dirs.clear();
}

/** Stops the run: loops see isAborted(), children are killed, the process exits with `code`. */
export function abort(why: string, code: number): void {
  if (aborted) return;
  aborted = true;
  process.stderr.write(`\nbench: ${why}; stopping and cleaning up\n`);
  cleanupNow();
  // 'exit' handlers (the cluster's pg_ctl stop) run inside process.exit.
  process.exit(code);
}

export function installCleanup(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupNow);
  for (const [sig, num] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]] as const) {
    process.on(sig, () => abort(`got ${sig}`, 128 + num));
  }
}

/** A temp folder removed at exit; `owner` makes it the given user's (PgBouncer runs as postgres). */
export function tempDir(prefix: string, owner?: Ids): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.add(dir);
  if (owner) fs.chownSync(dir, owner.uid, owner.gid);
  return dir;
}

export function removeDir(dir: string): void {
  dirs.delete(dir);
  fs.rmSync(dir, { recursive: true, force: true });
}

export interface Ids {
  uid: number;
  gid: number;
}

/** As root, servers (PostgreSQL, PgBouncer) run as `postgres`; as anyone else, as themselves. */
export function serverIds(): Ids | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()),
  };
}

/** Environment without the developer's PG* settings. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('PG') || k.startsWith('TESSERA_')) delete env[k];
  return { ...env, ...extra };
}

/** Keeps only the last `max` characters of a stream. */
export class Tail {
  private text = '';
  lines = 0;
  constructor(private readonly max = 16_384) {}
  push(chunk: Buffer | string): void {
    const s = chunk.toString();
    for (let i = s.indexOf('\n'); i >= 0; i = s.indexOf('\n', i + 1)) this.lines++;
    this.text += s;
    if (this.text.length > this.max * 2) this.text = this.text.slice(-this.max);
  }
  toString(): string {
    return this.text.slice(-this.max);
  }
}

export interface Started {
  child: ChildProcess;
  output: Tail;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns a tracked child in its own process group, collecting the tail of its output. */
export function start(cmd: string, args: string[], opts: SpawnOptions = {}): Started {
  checkAborted();
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts, detached: true });
  children.add(child);
  const output = new Tail();
  child.stdout?.on('data', (c: Buffer) => output.push(c));
  child.stderr?.on('data', (c: Buffer) => output.push(c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (err) => {
      output.push(`spawn error: ${err.message}\n`);
      children.delete(child);
      resolve({ code: -1, signal: null });
    });
    child.on('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
  });
  return { child, output, exited };
}

/** Runs a child to completion; kills its group after `timeoutMs`. */
export async function runToEnd(
  cmd: string,
  args: string[],
  opts: SpawnOptions & { timeoutMs: number },
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; timedOut: boolean }> {
  const { timeoutMs, ...spawnOpts } = opts;
  checkAborted();
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...spawnOpts, detached: true });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => {
    if (stdout.length < 4 << 20) stdout += c.toString();
  });
  child.stderr?.on('data', (c: Buffer) => {
    if (stderr.length < 4 << 20) stderr += c.toString();
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child, 'SIGKILL');
  }, timeoutMs);
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (err) => {
      stderr += `spawn error: ${err.message}\n`;
      resolve({ code: -1, signal: null });
    });
    child.on('close', (c, s) => resolve({ code: c, signal: s }));
  });
  clearTimeout(timer);
  children.delete(child);
  return { code, signal, stdout, stderr, timedOut };
}

/** Stops a started child: `signal`, then SIGKILL after `graceMs`. */
export async function stop(s: Started, signal: NodeJS.Signals = 'SIGINT', graceMs = 5000): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return;
  killGroup(s.child, signal);
  const timer = setTimeout(() => killGroup(s.child, 'SIGKILL'), graceMs);
  await s.exited;
  clearTimeout(timer);
}

// One free-port helper for tests and bench alike.
export { freePort } from '../../test/support/cluster.js';

/** Waits until something accepts TCP connections on 127.0.0.1:port, or the child exits. */
export async function waitForPort(port: number, s: Started, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    checkAborted();
    if (s.child.exitCode !== null || s.child.signalCode !== null) {
      throw new Error(`${what} exited (${s.child.exitCode ?? s.child.signalCode}) before listening:\n${s.output}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      sock.once('connect', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on port ${port} within ${timeoutMs} ms:\n${s.output}`);
    await sleep(50);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resident set size of a process in bytes (Linux /proc), or undefined. */
export function rssBytes(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds (user + system) a process and all its live descendants have used (Linux /proc), or
 * undefined. Descendants count so that Tessera with workers is measured as a whole.
 */
export function cpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  const ticks = 100; // USER_HZ; 100 on every Linux this runs on
  const visit = (p: number): number => {
    let total = 0;
    try {
      // Fields after the ")" that ends the command name: state is 3rd, utime 14th, stime 15th.
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += (Number(f[11]) + Number(f[12])) / ticks;
      for (const tid of fs.readdirSync(`/proc/${p}/task`)) {
        const children = fs.readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8').trim();
        for (const c of children ? children.split(' ') : []) total += visit(Number(c));
      }
    } catch {
      /* gone meanwhile */
    }
    return total;
  };
  return fs.existsSync(`/proc/${pid}/stat`) ? visit(pid) : undefined;
}

/**
 * Runs `work` and gives its result with the CPU microseconds `pid` (children included) spent
 * per unit of it (`units`: transactions, connections); undefined when that can't be known.
 */
export async function cpuPerUnit<T>(pid: number | undefined, work: () => Promise<T>, units: (result: T) => number): Promise<{ result: T; cpuUs: number | undefined }> {
  const before = cpuSeconds(pid);
  const result = await work();
  const after = cpuSeconds(pid);
  const n = units(result);
  const cpuUs = before !== undefined && after !== undefined && n > 0 ? ((after - before) * 1e6) / n : undefined;
  return { result, cpuUs };
}

/** A binary on PATH, or undefined. */
export function which(name: string): string | undefined {
  for (const d of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!d) continue;
    const full = path.join(d, name);
    try {
      fs.accessSync(full, fs.constants.X_OK);
      return full;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** Writes progress to stderr. */
export function progress(line: string): void {
  process.stderr.write(`${line}\n`);
}
