// Tessera as a service, on the real CLI in a child process: PgBouncer's command line (positional
// config, -V, -q, -v, -d refused), pidfile, dropping to an unprivileged user, SIGINT pausing new
// transactions, the logfile reopened on SIGHUP, readable text logs (log_format "text", and "auto"
// on a real terminal), the stats line.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { spawnTessera, clusterEntry, connect, rejection, until, freePort, ROOT } from '../support/tessera.js';
import { needing, tool } from '../support/tools.js';

let cluster: Cluster;
const user = ROLES.trust.user;
const isRoot = process.getuid?.() === 0;
const CLI = path.join(ROOT, 'src/cli.ts');

/** The CLI run to completion (for options that answer and exit). */
function cli(args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const jsonLines = (out: string) =>
  out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

test.before(async () => {
  cluster = await sharedCluster();
});

test('-V and --version print the version; -d is refused with a pointer to systemd; -h shows the positional FILE', () => {
  const version = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version as string;
  for (const flag of ['-V', '--version']) {
    const r = cli([flag]);
    assert.is(r.code, 0, r.stderr);
    assert.is(r.stdout, `Tessera ${version}\n`);
  }
  const d = cli(['-d', 'pgbouncer.ini']);
  assert.is(d.code, 2);
  assert.match(d.stderr, 'systemd');
  assert.is(d.stderr.trim().split('\n').length, 1, 'one line');
  const h = cli(['--help']);
  assert.is(h.code, 0);
  assert.match(h.stdout, '[--config] FILE');
});

test('tessera FILE (positional, as pgbouncer FILE) starts; -q keeps standard output empty', async () => {
  const t = await spawnTessera({ databases: { [TEST_DB]: clusterEntry(cluster) } }, undefined, (file) => [file]);
  try {
    const c = await connect({ host: '127.0.0.1', port: t.port, user, database: TEST_DB });
    assert.is((await c.query('select 1 as one')).rows[0].one, 1);
    await c.end();
  } finally {
    await t.stop();
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-quiet-'));
  const logfile = path.join(dir, 'tessera.log');
  // -q: the "listening" line goes to the logfile only (spawnTessera waits for it on stdout, so read the file).
  const port = await freePort();
  const file = path.join(dir, 'proxy.config.json');
  fs.writeFileSync(file, JSON.stringify({ listen_port: port, auth_type: 'trust', unix_socket_dir: '', logfile, databases: {} }));
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, '-q', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (d) => (stdout += d));
  const exited = new Promise((r) => child.on('exit', r));
  try {
    await until('the logfile to say listening', async () => fs.existsSync(logfile) && fs.readFileSync(logfile, 'utf8').includes('"listening"'), 20000);
    assert.is(stdout, '');
  } finally {
    child.kill('SIGTERM');
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('pidfile: written with the pid at start-up, removed at exit; a second start on it is refused', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-pid-'));
  const pidfile = path.join(dir, 'tessera.pid');
  const t = await spawnTessera({ pidfile, databases: {} });
  try {
    assert.is(fs.readFileSync(pidfile, 'utf8').trim(), String(t.child.pid));
    const second = cli(['--config', t.file]);
    assert.is(second.code, 2);
    assert.match(second.stderr, `names process ${t.child.pid}`);
    t.child.kill('SIGTERM');
    await t.exited;
    assert.not.ok(fs.existsSync(pidfile), 'pidfile left behind');
  } finally {
    await t.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

(isRoot ? test : test.skip)('user (and -u): started as root, it serves clients as nobody, and removes its pidfile', async () => {
  const nobody = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
  const run = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-run-'));
  fs.chownSync(run, nobody, Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).trim()));
  const pidfile = path.join(run, 'tessera.pid');
  for (const how of ['setting', '-u'] as const) {
    const t = await spawnTessera({ pidfile, ...(how === 'setting' ? { user: 'nobody' } : {}), databases: { [TEST_DB]: clusterEntry(cluster) } }, undefined, (file) =>
      how === '-u' ? ['-u', 'nobody', file] : [file],
    );
    try {
      await until('the switch', async () => t.output().includes('"switched user"'));
      const status = fs.readFileSync(`/proc/${t.child.pid}/status`, 'utf8');
      const uids = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status)!;
      assert.equal([uids[1], uids[2], uids[3]].map(Number), [nobody, nobody, nobody], `${how}: ${status}`);
      const c = await connect({ host: '127.0.0.1', port: t.port, user, database: TEST_DB });
      assert.is((await c.query('select 1 as one')).rows[0].one, 1);
      await c.end();
      t.child.kill('SIGTERM');
      await t.exited;
      assert.not.ok(fs.existsSync(pidfile), `${how}: pidfile left behind`);
    } finally {
      await t.stop();
    }
  }
  fs.rmSync(run, { recursive: true, force: true });
});

test('SIGINT (SHUTDOWN WAIT_FOR_SERVERS): running transactions finish, no new one starts', async () => {
  await cluster.query(`create table if not exists sigint_probe (who text); grant insert, select on sigint_probe to ${user}`, [], TEST_DB);
  await cluster.query('truncate sigint_probe', [], TEST_DB);
  const t = await spawnTessera({ pool_mode: 'transaction', shutdown_timeout: 30, databases: { [TEST_DB]: clusterEntry(cluster) } });
  const running = await connect({ host: '127.0.0.1', port: t.port, user, database: TEST_DB });
  const idle = await connect({ host: '127.0.0.1', port: t.port, user, database: TEST_DB });
  try {
    await idle.query('select 1'); // logged in and between transactions
    await running.query('begin');
    await running.query("insert into sigint_probe values ('running')");
    t.child.kill('SIGINT');
    await until('the shutdown line', async () => t.output().includes('"shutting down"'));
    // A new transaction is not started (and its client is told, not left waiting)...
    const late = await rejection(idle.query("insert into sigint_probe values ('late')"));
    assert.ok(late.message.length > 0);
    // ...while the running one may still commit.
    await running.query('commit');
    await t.exited;
    const rows = (await cluster.query('select who from sigint_probe order by who', [], TEST_DB)).rows.map((r) => r.who);
    assert.equal(rows, ['running']);
  } finally {
    await running.end().catch(() => {});
    await idle.end().catch(() => {});
    await t.stop();
  }
});

test('logfile: lines are appended there, and after logrotate moves it, SIGHUP makes a new one', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-logfile-'));
  const logfile = path.join(dir, 'tessera.log');
  const t = await spawnTessera({ logfile, databases: { [TEST_DB]: clusterEntry(cluster) } });
  try {
    assert.ok(jsonLines(fs.readFileSync(logfile, 'utf8')).some((l) => l.msg === 'listening'));
    fs.renameSync(logfile, `${logfile}.1`);
    t.child.kill('SIGHUP');
    await until('a new logfile', async () => fs.existsSync(logfile));
    const c = await connect({ host: '127.0.0.1', port: t.port, user, database: TEST_DB });
    await c.end();
    await until('the login in the new file', async () => jsonLines(fs.readFileSync(logfile, 'utf8')).some((l) => l.msg === 'client logged in'));
    assert.not.ok(jsonLines(fs.readFileSync(`${logfile}.1`, 'utf8')).some((l) => l.msg === 'client logged in'), 'written to the rotated file');
  } finally {
    await t.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('log_format "text": readable lines with local time; log_stats writes a stats line per stats_period', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-text-'));
  const port = await freePort();
  const file = path.join(dir, 'proxy.config.json');
  fs.writeFileSync(file, JSON.stringify({ listen_port: port, auth_type: 'trust', unix_socket_dir: '', log_format: 'text', stats_period: 1, databases: { [TEST_DB]: clusterEntry(cluster) } }));
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const exited = new Promise((r) => child.on('exit', r));
  try {
    await until('listening', async () => / INFO listening /.test(out), 20000);
    const line = out.split('\n').find((l) => / INFO listening /.test(l))!;
    assert.match(line, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d\d:\d\d \[\d+\] INFO listening addr=127\.0\.0\.1 port=\d+$/);
    const c = await connect({ host: '127.0.0.1', port, user, database: TEST_DB });
    await c.query('select 1');
    await c.end();
    await until('a stats line', async () => new RegExp(` INFO stats db=${TEST_DB} xacts_per_s=\\d+ queries_per_s=\\d+`).test(out), 10000);
  } finally {
    child.kill('SIGTERM');
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

needing('script')('log_format "auto": readable local-time lines on a terminal (a real pseudo-terminal), JSON on a pipe', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-tty-'));
  const port = await freePort();
  const file = path.join(dir, 'proxy.config.json');
  // log_format left at its default, "auto".
  fs.writeFileSync(file, JSON.stringify({ listen_port: port, auth_type: 'trust', unix_socket_dir: '', databases: { [TEST_DB]: clusterEntry(cluster) } }));
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const command = [process.execPath, '--import', 'tsx', CLI, file].map(quote).join(' ');
  // util-linux script: runs the command on a new pseudo-terminal and copies what it shows. A time
  // zone with a 45-minute offset, so local time cannot be UTC by accident.
  const terminal = spawn(tool('script'), ['-qfec', command, '/dev/null'], { cwd: ROOT, env: { ...process.env, TZ: 'Asia/Kathmandu' }, stdio: ['pipe', 'pipe', 'pipe'] });
  let screen = '';
  terminal.stdout.on('data', (d) => (screen += d));
  const closed = new Promise((r) => terminal.on('close', r));
  const lines = () => screen.split(/\r?\n/).filter(Boolean);
  let pid = 0;
  try {
    const listening = await until('listening on the terminal', async () => lines().find((l) => l.includes('listening')), 20000);
    // Tessera's own pid, on every line (in either format): it is stopped by its pid, and script ends with it.
    const pidOf = /\[(\d+)\]|"pid":(\d+)/.exec(listening);
    pid = Number(pidOf?.[1] ?? pidOf?.[2] ?? 0);
    assert.match(listening, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \+05:45 \[\d+\] INFO listening addr=127\.0\.0\.1 port=\d+$/);
    const c = await connect({ host: '127.0.0.1', port, user, database: TEST_DB });
    await c.end();
    const login = await until('the login on the terminal', async () => lines().find((l) => / INFO client logged in /.test(l)));
    assert.match(login, new RegExp(`\\+05:45 \\[\\d+\\] INFO client logged in client=\\d+ user=${user} db=${TEST_DB} addr=127\\.0\\.0\\.1$`));
    assert.not.ok(lines().some((l) => l.startsWith('{')), `JSON on the terminal:\n${screen}`);
    process.kill(pid, 'SIGTERM');
    await closed;
  } finally {
    if (terminal.exitCode === null) {
      if (pid) process.kill(pid, 'SIGKILL');
      terminal.kill('SIGKILL');
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // The same config on a pipe: JSON lines.
  const piped = await spawnTessera({ databases: { [TEST_DB]: clusterEntry(cluster) } });
  try {
    assert.ok(jsonLines(piped.output()).some((l) => l.msg === 'listening'), piped.output());
  } finally {
    await piped.stop();
  }
});

test.run();
