// The real CLI as a child process: config errors and exit codes, SIGTERM / SIGINT shutdowns,
// memory while streaming a large result to a slow reader, and what the logs look like.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { serialize } from 'pg-protocol';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { ROOT, clusterEntry, connect, freePort, rejection } from '../support/tessera.js';

// ---- a child process we control completely (stdout and stderr kept apart) ----

interface Cli {
  child: ChildProcess;
  pid: number;
  port: number;
  dir: string;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const launched = new Set<Cli>();

/**
 * Writes `config` (an object, serialised as is: no defaults are added) and `files` into a fresh
 * folder and starts `src/cli.ts --config <folder>/proxy.config.json`. Does not wait for anything.
 */
function launch(config: Record<string, unknown>, files: Record<string, string> = {}, port = 0): Cli {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-proc-'));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  const file = path.join(dir, 'proxy.config.json');
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
  const env = { ...process.env };
  delete env.TESSERA_LOG_LEVEL;
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli.ts'), '--config', file], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  // 'close' (not 'exit'): by then both pipes are drained, so the captured output is complete.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  const cli: Cli = { child, pid: child.pid!, port, dir, stdout: () => out, stderr: () => err, exited };
  launched.add(cli);
  return cli;
}

/** A config that listens on a free port and sends every database to the test cluster. */
async function start(settings: Record<string, unknown>, files: Record<string, string> = {}): Promise<Cli> {
  const port = await freePort();
  const cli = launch(
    { listen_port: port, auth_type: 'trust', databases: { '*': clusterEntry(cluster) }, ...settings },
    files,
    port,
  );
  await until(() => cli.stdout().includes('"msg":"listening"'), 20_000, () => `tessera did not start:\n${cli.stdout()}${cli.stderr()}`, cli);
  return cli;
}

const running = (cli: Cli) => cli.child.exitCode === null && cli.child.signalCode === null;

/** Polls `cond` every 25 ms; throws `why()` after `ms` (a hang guard, not a timing assertion). */
async function until(cond: () => boolean | Promise<boolean>, ms: number, why: () => string, cli?: Cli): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (cli && !running(cli)) throw new Error(`tessera exited early (${cli.child.exitCode ?? cli.child.signalCode}): ${why()}`);
    if (Date.now() > deadline) throw new Error(why());
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Resolves like `p`, or rejects after `ms` (hang guard). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Every non-empty stdout line is one JSON object with a string `msg`. Returns them parsed. */
function jsonLines(cli: Cli): Array<Record<string, unknown>> {
  const lines = cli.stdout().split('\n').filter((l) => l !== '');
  assert.ok(lines.length > 0, 'expected some log lines on stdout');
  return lines.map((line) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      assert.unreachable(`stdout line is not JSON: ${line}`);
    }
    assert.type(parsed, 'object', `not a JSON object: ${line}`);
    assert.type((parsed as Record<string, unknown>).msg, 'string', `no "msg" field: ${line}`);
    return parsed as Record<string, unknown>;
  });
}

/** Waits until the cluster shows a backend running exactly `sql` (so a signal lands mid-query). */
async function untilRunning(sql: string, cli: Cli): Promise<void> {
  await until(
    async () => (await cluster.query(`select 1 from pg_stat_activity where state = 'active' and query = $1`, [sql])).rowCount === 1,
    10_000,
    () => `query never showed up as active in pg_stat_activity: ${sql}`,
    cli,
  );
}

/** VmRSS of a process in bytes, or undefined once it is gone. */
function rss(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

let cluster: Cluster;

test.before(async () => {
  cluster = await sharedCluster();
});

test.after.each(async () => {
  for (const cli of launched) {
    launched.delete(cli);
    if (running(cli)) {
      cli.child.kill('SIGKILL');
      await cli.exited;
    }
    fs.rmSync(cli.dir, { recursive: true, force: true });
  }
});

// ---- 1. bad configs: exit 2, one stderr line naming the problem ----

/** Runs the CLI on a config that must be refused; returns its single stderr line. */
async function refused(config: Record<string, unknown>, files: Record<string, string> = {}): Promise<string> {
  const cli = launch(config, files);
  const { code, signal } = await within(cli.exited, 20_000, 'tessera with a bad config');
  assert.is(signal, null);
  assert.is(code, 2, `exit status; stderr: ${cli.stderr()}`);
  assert.is(cli.stdout(), '', 'nothing on stdout');
  const stderr = cli.stderr();
  assert.ok(stderr.endsWith('\n'), `stderr ends with a newline: ${JSON.stringify(stderr)}`);
  const lines = stderr.slice(0, -1).split('\n');
  assert.is(lines.length, 1, `exactly one stderr line, got:\n${stderr}`);
  assert.ok(lines[0]!.startsWith('tessera: config error: '), lines[0]);
  return lines[0]!;
}

test('bad config: an unknown key exits 2 naming its key path', async () => {
  const line = await refused({ auth_type: 'trust', databases: { '*': { host: '127.0.0.1', colour: 1 } } });
  assert.match(line, /proxy\.config\.json: databases\.\*\.colour: unknown setting$/);
});

test('bad config: a wrong type exits 2 naming its key path', async () => {
  const top = await refused({ auth_type: 'trust', default_pool_size: 'twenty' });
  assert.match(top, /proxy\.config\.json: default_pool_size: expected integer >= 0, got "twenty"$/);
  // "5432" is a one-port list now (issue 19: port may be a comma list); "abc" is neither.
  const nested = await refused({ auth_type: 'trust', databases: { main: { host: '127.0.0.1', port: 'abc' } } });
  assert.match(nested, /proxy\.config\.json: databases\.main\.port: expected integer from 1 to 65535 or comma-separated list of ports, got "abc"$/);
});

test('bad config: a missing auth_file exits 2 naming auth_file and the path', async () => {
  const line = await refused({ auth_type: 'md5', auth_file: 'no-such-userlist.txt' });
  assert.match(line, /proxy\.config\.json: auth_file: file not found \(.*\/no-such-userlist\.txt\)$/);
});

test('bad config: a malformed userlist line exits 2 naming file:line, not the secret', async () => {
  const line = await refused(
    { auth_type: 'md5', auth_file: 'userlist.txt' },
    { 'userlist.txt': '; comment\n"alice" "alice-pass"\n"bob" "hunter2-unterminated\n' },
  );
  assert.match(line, /\/userlist\.txt:3: /);
  assert.not.match(line, /hunter2/);
  assert.not.match(line, /alice-pass/);
});

// ---- 2. SIGTERM: no new clients, running queries finish, then exit 0 ----

test('SIGTERM: refuses new connections, lets a running query finish, exits 0 once the client leaves', async () => {
  const cli = await start({ pool_mode: 'session', shutdown_timeout: 10 });
  const conn = { host: '127.0.0.1', port: cli.port, user: ROLES.trust.user, database: TEST_DB };
  const c = await connect(conn);
  try {
    const sql = 'select pg_sleep(1.5), 42 as n /* sigterm */';
    const q = c.query(sql);
    q.catch(() => {}); // awaited below; never an unhandled rejection meanwhile
    await untilRunning(sql, cli);

    cli.child.kill('SIGTERM');
    await until(() => cli.stdout().includes('"msg":"shutting down"'), 10_000, () => `no "shutting down" log:\n${cli.stdout()}`);
    const err = await rejection(within(connect(conn), 10_000, 'connect during shutdown'));
    assert.ok(
      (err as { code?: string }).code === 'ECONNREFUSED' || (err as { code?: string }).code === '57P03',
      `a new connection is refused, got ${(err as { code?: string }).code}: ${err.message}`,
    );

    const { rows } = await within(q, 10_000, 'the running query');
    assert.is(rows.length, 1);
    assert.is(rows[0].n, 42);
    assert.ok(running(cli), 'tessera waits while a client is still connected');
  } finally {
    await c.end().catch(() => {});
  }
  const { code, signal } = await within(cli.exited, 15_000, 'exit after SIGTERM');
  assert.is(signal, null);
  assert.is(code, 0, `exit status; output:\n${cli.stdout()}${cli.stderr()}`);
  assert.ok(cli.stdout().includes('"msg":"stopped"'), 'logs "stopped"');
  assert.is(cli.stderr(), '');
  jsonLines(cli);
});

// ---- 3. SIGQUIT: clients are cut off at once; SIGINT: once servers are released ----

test('SIGQUIT: a client inside a long query gets an error and the process exits promptly', async () => {
  const cli = await start({ pool_mode: 'session', shutdown_timeout: 10 });
  const c = await connect({ host: '127.0.0.1', port: cli.port, user: ROLES.trust.user, database: TEST_DB });
  const sql = 'select pg_sleep(30) /* sigint */';
  try {
    const q = c.query(sql);
    q.catch(() => {});
    await untilRunning(sql, cli);

    cli.child.kill('SIGQUIT');
    const err = await within(rejection(q), 10_000, 'the query cut off by SIGQUIT');
    assert.ok(
      err.code === '57P01' || /terminat|ended|closed|ECONNRESET/i.test(err.message),
      `expected 57P01 or a connection-ended error, got ${err.code}: ${err.message}`,
    );
    const { code, signal } = await within(cli.exited, 10_000, 'exit after SIGQUIT');
    assert.is(signal, null);
    assert.is(code, 0, `exit status; output:\n${cli.stdout()}${cli.stderr()}`);
    assert.is(cli.stderr(), '');
    jsonLines(cli);
    // Tessera cancelled the running query on its way out: PostgreSQL is not left sleeping.
    await until(
      async () => (await cluster.query(`select count(*)::int as n from pg_stat_activity where query = $1 and state = 'active'`, [sql])).rows[0].n === 0,
      10_000,
      () => 'the abandoned pg_sleep to be cancelled',
    );
  } finally {
    await c.end().catch(() => {});
  }
});

test('SIGINT (WAIT_FOR_SERVERS): a running transaction finishes, then idle clients are cut and the process exits', async () => {
  const cli = await start({ pool_mode: 'transaction', shutdown_timeout: 60 });
  const idle = await connect({ host: '127.0.0.1', port: cli.port, user: ROLES.trust.user, database: TEST_DB });
  const busy = await connect({ host: '127.0.0.1', port: cli.port, user: ROLES.trust.user, database: TEST_DB });
  // What the idle client is told when it is cut off (node-postgres emits it as an 'error').
  const idleCut = new Promise<Error & { code?: string }>((resolve) => idle.once('error', resolve));
  idle.on('error', () => {});
  busy.on('error', () => {});
  const sql = 'select pg_sleep(1.5) /* sigint */, 42 as answer';
  try {
    await idle.query('select 1');
    const q = busy.query(sql);
    await untilRunning(sql, cli);
    cli.child.kill('SIGINT');
    // The query that holds a server runs to its end; the idle client does not hold SIGINT up.
    assert.is((await within(q, 10_000, 'the running query to finish')).rows[0].answer, 42);
    const { code } = await within(cli.exited, 10_000, 'exit after SIGINT once no server is in use');
    assert.is(code, 0);
    // Cut by Tessera with PostgreSQL's admin-shutdown FATAL, not just a socket that died with the process.
    const cut = await within(idleCut, 1_000, 'the idle client to be told');
    assert.is(cut.code, '57P01', cut.message);
    assert.is(cut.message, 'terminating connection due to pooler shutdown');
  } finally {
    await idle.end().catch(() => {});
    await busy.end().catch(() => {});
  }
});

test('SIGQUIT after SIGTERM stops at once instead of waiting out shutdown_timeout', async () => {
  const cli = await start({ pool_mode: 'session', shutdown_timeout: 60 });
  const c = await connect({ host: '127.0.0.1', port: cli.port, user: ROLES.trust.user, database: TEST_DB });
  try {
    await c.query('select 1');
    cli.child.kill('SIGTERM');
    await until(() => cli.stdout().includes('"SIGTERM"'), 10_000, () => 'SIGTERM to be logged', cli);
    cli.child.kill('SIGQUIT');
    const { code } = await within(cli.exited, 10_000, 'exit after SIGQUIT (the idle client would hold SIGTERM for 60 s)');
    assert.is(code, 0);
  } finally {
    await c.end().catch(() => {});
  }
});

// ---- 4. a 100 MB result to a slow reader: forwarded with backpressure, not buffered ----

test('a 100 MB result to a client that stops reading: the server waits on Tessera, which holds only what is in flight', async () => {
  const cli = await start({ pool_mode: 'session' });
  const socket = net.connect({ host: '127.0.0.1', port: cli.port });
  socket.setNoDelay(true);
  socket.on('error', () => {}); // surfaced through `done`
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });

    // Scans message headers across chunks without keeping any body: counts bytes, DataRows
    // ('D'), ErrorResponses ('E') and ReadyForQuery ('Z').
    let total = 0;
    let rows = 0;
    let readies = 0;
    let errorSeen = false;
    let header = Buffer.alloc(0);
    let skip = 0;
    let onReady: (() => void) | null = null;
    const MB = 1 << 20;
    // The reader: stops after its first megabyte until told to go on (`stopped` is cleared), then
    // is slow, pausing for 15 ms after every megabyte.
    let stopped: (() => void) | null = null;
    const stoppedOnce = new Promise<void>((resolve) => (stopped = resolve));
    let sincePause = 0;
    socket.on('data', (chunk: Buffer) => {
      total += chunk.length;
      let i = 0;
      while (i < chunk.length) {
        if (skip > 0) {
          const n = Math.min(skip, chunk.length - i);
          skip -= n;
          i += n;
          continue;
        }
        const need = 5 - header.length;
        const take = chunk.subarray(i, i + need);
        header = header.length === 0 ? Buffer.from(take) : Buffer.concat([header, take]);
        i += take.length;
        if (header.length < 5) break;
        const type = String.fromCharCode(header[0]!);
        skip = header.readInt32BE(1) - 4;
        header = Buffer.alloc(0);
        if (type === 'D') rows++;
        else if (type === 'E') errorSeen = true;
        else if (type === 'Z') {
          readies++;
          onReady?.();
        }
      }
      sincePause += chunk.length;
      if (sincePause >= MB && readies > 0) {
        sincePause = 0;
        socket.pause();
        if (stopped) {
          stopped();
          stopped = null;
        } else setTimeout(() => socket.resume(), 15);
      }
    });
    const nextReady = () =>
      within(
        new Promise<void>((resolve, reject) => {
          onReady = resolve;
          socket.once('close', () => reject(new Error('connection closed before ReadyForQuery')));
        }),
        60_000,
        'ReadyForQuery',
      );

    const login = nextReady();
    socket.write(serialize.startup({ user: ROLES.trust.user, database: TEST_DB }));
    await login;
    assert.not.ok(errorSeen, 'login succeeded');

    const before = rss(cli.pid)!;
    let peak = before;
    const sampler = setInterval(() => {
      const now = rss(cli.pid);
      if (now !== undefined && now > peak) peak = now;
    }, 100);
    const loginBytes = total;
    const sql = `select repeat('x', 1000) from generate_series(1, 100000)`;
    try {
      const done = nextReady();
      socket.write(serialize.query(sql));

      // The client has stopped reading. Backpressure reaches PostgreSQL: its backend blocks writing
      // to Tessera (wait_event ClientWrite) while Tessera holds what the socket buffers could not
      // take. Without it Tessera would read the whole result into memory (+100 MB, all live) and
      // the backend would finish. Checked while nothing moves, so garbage the GC has not collected
      // yet is bounded by the little relayed so far.
      await within(stoppedOnce, 60_000, 'the first megabyte');
      await until(
        async () => (await cluster.query(`select 1 from pg_stat_activity where query = $1 and wait_event = 'ClientWrite'`, [sql])).rowCount === 1,
        30_000,
        () => `the backend never waited on Tessera (ClientWrite); the client has read ${total - loginBytes} bytes`,
        cli,
      );
      await new Promise((r) => setTimeout(r, 300));
      const held = rss(cli.pid)! - before;
      assert.ok(held < 16 * MB, `with the client stopped, Tessera's RSS grew by ${(held / MB).toFixed(1)} MB`);
      assert.ok(total - loginBytes < 32 * MB, `the stopped client was sent ${total - loginBytes} bytes`);

      socket.resume();
      await done;
    } finally {
      clearInterval(sampler);
    }
    const after = rss(cli.pid);
    if (after !== undefined && after > peak) peak = after;

    assert.not.ok(errorSeen, 'the query succeeded');
    assert.is(readies, 2);
    assert.is(rows, 100_000);
    const received = total - loginBytes;
    assert.ok(received > 100_000_000, `received ${received} bytes`);
    // While it streams, relayed chunks are garbage that V8 frees only under external-memory
    // pressure (about 32 MB of them on Node 20, up to 64 MB on Node 26), so the peak depends on the
    // GC, not on Tessera: it stays below the result's size unless Tessera keeps what it relayed.
    const growth = peak - before;
    assert.ok(growth < 90 * MB, `Tessera's RSS grew by ${(growth / MB).toFixed(1)} MB (from ${(before / MB).toFixed(1)} MB to a peak of ${(peak / MB).toFixed(1)} MB)`);

    socket.end(serialize.end());
  } finally {
    socket.destroy();
  }
});

// ---- 5. logs: JSON lines, and no password in them ----

test('logs are JSON lines and never contain the password (md5 auth, SCRAM to the server)', async () => {
  const { user, password } = ROLES.scram;
  const cli = await start(
    { auth_type: 'md5', auth_file: 'userlist.txt', log_level: 'debug' },
    { 'userlist.txt': `"${user}" "${password}"\n` },
  );
  const conn = { host: '127.0.0.1', port: cli.port, user, database: TEST_DB };
  const c = await connect({ ...conn, password });
  try {
    const { rows } = await c.query('select current_user as u');
    assert.is(rows[0].u, user);
  } finally {
    await c.end();
  }
  const wrong = await rejection(connect({ ...conn, password: 'not-the-password' }));
  assert.is(wrong.code, '28P01');

  cli.child.kill('SIGTERM');
  const { code } = await within(cli.exited, 15_000, 'exit after SIGTERM');
  assert.is(code, 0);

  const logs = jsonLines(cli);
  assert.ok(
    logs.some((l) => l.msg === 'client logged in' && l.user === user),
    `a "client logged in" line for ${user}:\n${cli.stdout()}`,
  );
  const output = cli.stdout() + cli.stderr();
  assert.not.ok(output.includes(password), 'the password appears in the output');
  // The md5 secret stands in for the password too.
  const md5secret = createHash('md5').update(password + user).digest('hex');
  assert.not.ok(output.includes(md5secret), 'the md5 secret appears in the output');
});

test('SIGHUP reloads the config file: an edited default_pool_size shows in SHOW DATABASES; SIGUSR1/SIGUSR2 pause and resume', async () => {
  const cli = await start({ admin_users: 'admin', unix_socket_dir: '' });
  const admin = async (sql: string) => {
    const a = await connect({ host: '127.0.0.1', port: cli.port, user: 'admin', database: 'pgbouncer' });
    try {
      return (await a.query(sql)).rows;
    } finally {
      await a.end();
    }
  };
  const show = async () => (await admin('SHOW DATABASES')).find((d) => d.name === '*');
  const paused = async () => (await admin('SHOW STATE')).find((r) => r.key === 'paused')?.value;
  try {
    assert.is(Number((await show()).pool_size), 20);
    const file = path.join(cli.dir, 'proxy.config.json');
    const json = JSON.parse(fs.readFileSync(file, 'utf8'));
    fs.writeFileSync(file, JSON.stringify({ ...json, default_pool_size: 9 }));
    cli.child.kill('SIGHUP');
    await until(async () => Number((await show()).pool_size) === 9, 10_000, () => 'the reload to show', cli);
    // The log line is written right after the new settings apply; it may reach our pipe a moment later.
    await until(async () => cli.stdout().includes('configuration reloaded'), 10_000, () => 'the reload to be logged', cli);

    const c = await connect({ host: '127.0.0.1', port: cli.port, user: ROLES.trust.user, database: TEST_DB });
    try {
      await c.query('select 1');
      cli.child.kill('SIGUSR1');
      await until(async () => (await paused()) === 'yes' || (await paused()) === '1', 10_000, () => 'PAUSE by SIGUSR1', cli);
      cli.child.kill('SIGUSR2');
      await until(async () => (await paused()) === 'no' || (await paused()) === '0', 10_000, () => 'RESUME by SIGUSR2', cli);
      assert.is((await c.query('select 2 as two')).rows[0].two, 2);
    } finally {
      await c.end();
    }
  } finally {
    cli.child.kill('SIGINT');
    await cli.exited;
  }
});

test.run();
