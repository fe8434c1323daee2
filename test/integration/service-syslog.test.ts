// syslog = 1 (PgBouncer's syslog, syslog_ident, syslog_facility): the lines an admin acts on reach a
// syslog daemon's Unix datagram socket, here a listener of the test's own (python3, as /dev/log
// would be), with the ident, the facility and each line's own priority, and never a secret.
// logger missing or stopped is said once on standard error and logging goes on elsewhere; a
// stopped logger starts again by itself once its daemon is back.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { spawnTessera, clusterEntry, connect, rejection, until } from '../support/tessera.js';
import { needing, tool } from '../support/tools.js';
import { RETRY_MS } from '../../src/log/syslog.js';

let cluster: Cluster;
const SECRET = 'not-the-password-5c1e';
const USERLIST = `"${ROLES.md5.user}" "${ROLES.md5.password}"\n"admin" "admin-pw"\n`;
// Syslog's codes: local3 is facility 19, daemon 3; severities err 3, warning 4, info 6.
const pri = (facility: number, severity: number) => facility * 8 + severity;

/** One datagram as logger sends it to a local socket: `<PRI>Mmm dd hh:mm:ss IDENT[PID]: MESSAGE`. */
interface Datagram {
  pri: number;
  ident: string;
  pid: number;
  message: string;
  raw: string;
}

const LISTENER = `
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print('ready', flush=True)
while True:
    print(json.dumps(s.recv(65536).decode('utf-8', 'replace')), flush=True)
`;

interface SyslogDaemon {
  socket: string;
  /** Every datagram received since the test began (across restarts). */
  datagrams: Datagram[];
  /** The daemon goes away: its socket is removed. */
  stop(): Promise<void>;
  /** It is back, on the same socket. */
  start(): Promise<void>;
}

/** A line as a Datagram; one that is not in syslog's form keeps pri NaN, so assertions on it fail. */
function datagram(raw: string): Datagram {
  const m = /^<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d ([^[\s]+)\[(\d+)\]: (.*)$/s.exec(raw);
  return m ? { pri: Number(m[1]), ident: m[2], pid: Number(m[3]), message: m[4], raw } : { pri: NaN, ident: '', pid: 0, message: raw, raw };
}

/** Runs `body` with a syslog daemon's socket: a Unix datagram listener in a folder of its own. */
async function withSyslog(body: (daemon: SyslogDaemon) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-syslog-'));
  const socket = path.join(dir, 'log.sock');
  const datagrams: Datagram[] = [];
  let child: ChildProcess | null = null;
  let exited: Promise<unknown> = Promise.resolve();
  const daemon: SyslogDaemon = {
    socket,
    datagrams,
    start: async () => {
      const listener = spawn(tool('python3:socket'), ['-c', LISTENER, socket], { stdio: ['ignore', 'pipe', 'inherit'] });
      child = listener;
      exited = new Promise((r) => listener.on('exit', r));
      let ready = false;
      let buffered = '';
      listener.stdout.on('data', (d: Buffer) => {
        buffered += d.toString('utf8');
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        for (const line of lines) {
          if (line === 'ready') ready = true;
          else datagrams.push(datagram(JSON.parse(line) as string));
        }
      });
      await until('the syslog listener', async () => ready);
    },
    stop: async () => {
      child?.kill('SIGKILL');
      child = null;
      await exited;
      fs.rmSync(socket, { force: true });
    },
  };
  await daemon.start();
  try {
    await body(daemon);
  } finally {
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const find = (datagrams: Datagram[], text: string) => datagrams.find((d) => d.message.includes(text));

test.before(async () => {
  cluster = await sharedCluster();
});

needing('python3:socket', 'logger')('a refused login reaches syslog with syslog_ident, syslog_facility and its priority, and no secret; an error line as err; SET applies', () =>
  withSyslog(async (syslog) => {
    const t = await spawnTessera(
      // verbose 1: debug lines ("client connected") are written, to standard output only.
      { auth_type: 'md5', admin_users: 'admin', verbose: 1, syslog: true, syslog_ident: 'tessera-test', syslog_facility: 'local3', syslog_socket: syslog.socket, databases: { [TEST_DB]: clusterEntry(cluster) } },
      USERLIST,
    );
    const refusedLogin = () => rejection(connect({ host: '127.0.0.1', port: t.port, user: ROLES.md5.user, password: SECRET, database: TEST_DB }));
    try {
      assert.is((await refusedLogin()).code, '28P01');
      const refused = await until('the refusal in syslog', async () => find(syslog.datagrams, 'login refused'));
      assert.is(refused.ident, 'tessera-test');
      assert.is(refused.pid, t.child.pid, 'the pid is Tessera\'s');
      assert.is(refused.pri, pri(19, 6), refused.raw);
      assert.match(refused.message, new RegExp(`^INFO login refused client=\\d+ user=${ROLES.md5.user} db=${TEST_DB} addr=127\\.0\\.0\\.1 .*code=28P01`));
      // A failed reload is an error, and arrives as one.
      fs.writeFileSync(t.file, JSON.stringify({ listen_port: t.port, auth_type: 'md5', pool_size_typo: 3 }));
      t.child.kill('SIGHUP');
      const failed = await until('the reload failure in syslog', async () => find(syslog.datagrams, 'reload failed'));
      assert.is(failed.pri, pri(19, 3), failed.raw);
      assert.match(failed.message, 'pool_size_typo');
      // The console's SET applies at once, as RELOAD does.
      const admin = await connect({ host: '127.0.0.1', port: t.port, user: 'admin', password: 'admin-pw', database: 'pgbouncer' });
      await admin.query(`SET syslog_facility = 'local4'`);
      await admin.end();
      await refusedLogin();
      const local4 = await until('a refusal at local4', async () => syslog.datagrams.find((d) => d.message.includes('login refused') && d.pri === pri(20, 6)));
      assert.is(local4.ident, 'tessera-test');
      assert.not.ok(syslog.datagrams.some((d) => d.raw.includes(SECRET)), 'the password reached syslog');
      // Debug lines stay out of syslog, as in PgBouncer; standard output still has everything.
      assert.match(t.output(), /"level":20,[^\n]*"msg":"client connected"/);
      assert.ok(syslog.datagrams.every((d) => d.pri % 8 <= 6 && !d.message.includes('client connected')), syslog.datagrams.map((d) => d.raw).join('\n'));
    } finally {
      await t.stop();
    }
  }),
);

needing('python3:socket', 'logger')('pgbouncer.ini: syslog, syslog_ident and syslog_facility are read; a start-up warning arrives as warning', () =>
  withSyslog(async (syslog) => {
    const ini = path.join(path.dirname(syslog.socket), 'pgbouncer.ini');
    const t = await spawnTessera({}, undefined, (_json, port) => {
      fs.writeFileSync(
        ini,
        [
          '[databases]',
          `${TEST_DB} = host=${cluster.host} port=${cluster.port}`,
          '[pgbouncer]',
          'listen_addr = 127.0.0.1',
          `listen_port = ${port}`,
          'unix_socket_dir =',
          'auth_type = trust',
          'syslog = 1',
          'syslog_ident = pgbouncer',
          'syslog_facility = daemon',
          `syslog_socket = ${syslog.socket}`,
          'dns_max_ttl = 15',
          '',
        ].join('\n'),
      );
      return [ini];
    });
    try {
      const warning = await until('the start-up warning in syslog', async () => find(syslog.datagrams, 'dns_max_ttl'));
      assert.is(warning.ident, 'pgbouncer');
      assert.is(warning.pri, pri(3, 4), warning.raw);
      assert.match(warning.message, /^WARN \S+pgbouncer\.ini:12: setting "dns_max_ttl" is not supported/, warning.raw);
      assert.ok(await until('the listening line', async () => find(syslog.datagrams, 'INFO listening')));
    } finally {
      await t.stop();
    }
  }),
);

needing('python3:socket', 'logger')('the syslog daemon gone: said once on standard error, clients are served and logged on; logger starts again by itself when it is back, and at SIGHUP', () =>
  withSyslog(async (syslog) => {
    const t = await spawnTessera({ syslog: true, syslog_socket: syslog.socket, databases: { [TEST_DB]: clusterEntry(cluster) } });
    const login = async () => (await connect({ host: '127.0.0.1', port: t.port, user: ROLES.trust.user, database: TEST_DB })).end();
    const said = () => t.output().split('\n').filter((l) => l.startsWith('tessera: syslog: logger exited')).length;
    const inSyslog = () => syslog.datagrams.filter((d) => d.message.includes('client logged in')).length;
    try {
      await login();
      await until('a login in syslog', async () => inSyslog() === 1);
      await syslog.stop();
      // The next lines find no daemon: logger stops, and Tessera says so once.
      await login();
      await until('the notice on standard error', async () => said() === 1);
      assert.match(t.output(), `tessera: syslog: logger exited (code 1): logger: socket ${syslog.socket}`);
      assert.match(t.output(), `starting it again in ${RETRY_MS / 1000} s, or at SIGHUP or RELOAD`);
      for (let i = 0; i < 3; i++) await login();
      await until('the logins on standard output', async () => (t.output().match(/"client logged in"/g) ?? []).length >= 5);
      // The daemon is back: a line after the retry delay starts logger again, with no signal.
      await syslog.start();
      await until('a login in syslog again, without SIGHUP', async () => (await login(), inSyslog() >= 2), 3 * RETRY_MS);
      await until('the notice that it works again', async () => t.output().includes(`tessera: syslog: logger is running again (${syslog.socket})`), 3 * RETRY_MS);
      assert.is(said(), 1, 'said more than once');

      // Gone again (said again, since it had worked), back, and SIGHUP starts it at once: before
      // a line could have started it (RETRY_MS after the stop).
      await syslog.stop();
      await login();
      await until('the second notice', async () => said() === 2);
      const stoppedAt = Date.now();
      await syslog.start();
      t.child.kill('SIGHUP');
      const before = inSyslog();
      await until('a login in syslog after SIGHUP', async () => (await login(), inSyslog() > before), RETRY_MS - 1000 - (Date.now() - stoppedAt));
    } finally {
      await t.stop();
    }
  }),
);

test('logger not found: said once on standard error with what to install; Tessera serves and logs to standard output', async () => {
  const t = await spawnTessera({ syslog: true, databases: { [TEST_DB]: clusterEntry(cluster) } }, undefined, undefined, { PATH: '/nonexistent-tessera-bin' });
  try {
    await until('the notice', async () => t.output().includes('tessera: syslog: logger was not found'));
    assert.match(t.output(), 'apt-get install bsdutils');
    const c = await connect({ host: '127.0.0.1', port: t.port, user: ROLES.trust.user, database: TEST_DB });
    assert.is((await c.query('select 1 as one')).rows[0].one, 1);
    await c.end();
    await until('the login on standard output', async () => t.output().includes('"client logged in"'));
    assert.is(t.output().split('\n').filter((l) => l.startsWith('tessera: syslog:')).length, 1);
  } finally {
    await t.stop();
  }
});

test.run();
