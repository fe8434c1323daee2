// Pool housekeeping that a user can observe from PostgreSQL's side: prefill, idle and lifetime
// retirement, waiting clients timing out, and logins that never finish.
import fs from 'node:fs';
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import keepalive from 'net-keepalive';
import { ROLES, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, until } from '../support/tessera.js';
import { WireClient, errorFields } from '../support/wire.js';
import { applySocketOptions } from '../../src/net/socket-options.js';

let cluster: Cluster;
const user = ROLES.trust.user;

async function backendPids(app: string): Promise<number[]> {
  const { rows } = await cluster.query(`select pid from pg_stat_activity where application_name = $1 order by pid`, [app]);
  return rows.map((r) => r.pid);
}


test.before(async () => {
  cluster = await sharedCluster();
});

test('min_pool_size keeps servers open; server_idle_timeout retires the rest', async () => {
  const app = 'tessera-minpool';
  const t = await startTessera({ min_pool_size: 2, server_idle_timeout: 0.5, databases: { '*': clusterEntry(cluster) } });
  try {
    // Five clients at once open five servers...
    const clients = await Promise.all([1, 2, 3, 4, 5].map(() => connect({ ...t.conn(user), application_name: app })));
    await Promise.all(clients.map((c) => c.query('select 1')));
    assert.is((await backendPids(app)).length, 5);
    await Promise.all(clients.map((c) => c.end()));
    // ...idle ones are closed after server_idle_timeout, down to min_pool_size.
    await until('idle servers to retire', async () => (await backendPids(app)).length === 2);
    await new Promise((r) => setTimeout(r, 1200));
    assert.is((await backendPids(app)).length, 2);
  } finally {
    await t.stop();
  }
});

test('server_lifetime replaces old servers once they are idle', async () => {
  const app = 'tessera-lifetime';
  const t = await startTessera({ server_lifetime: 0.5, databases: { '*': clusterEntry(cluster) } });
  try {
    const c = await connect({ ...t.conn(user), application_name: app });
    const first = (await c.query('select pg_backend_pid() as pid')).rows[0].pid;
    await c.end();
    await until('the old server to be closed', async () => !(await backendPids(app)).includes(first));
    const d = await connect({ ...t.conn(user), application_name: app });
    const second = (await d.query('select pg_backend_pid() as pid')).rows[0].pid;
    await d.end();
    assert.is.not(second, first);
  } finally {
    await t.stop();
  }
});

test('query_wait_timeout: a client waiting for a busy pool gets an error, the holder is unaffected', async () => {
  const t = await startTessera({ default_pool_size: 1, query_wait_timeout: 0.5, databases: { '*': clusterEntry(cluster) } });
  try {
    const holder = await connect(t.conn(user));
    await holder.query('begin');
    const waiter = await connect(t.conn(user)).catch((e) => e);
    // In session mode the waiter logs in from the status cache and waits at its first query.
    const err = waiter instanceof Error ? waiter : await rejection((waiter as Awaited<ReturnType<typeof connect>>).query('select 1'));
    assert.is((err as { code?: string }).code, '08P01');
    assert.match(err.message, 'query_wait_timeout');
    assert.is((await holder.query('select 1 as one')).rows[0].one, 1);
    await holder.query('commit');
    await holder.end();
  } finally {
    await t.stop();
  }
});

test('client_login_timeout cuts a client that never finishes its login; others still get in', async () => {
  const t = await startTessera({ client_login_timeout: 0.5, databases: { '*': clusterEntry(cluster) } });
  try {
    const silent = await WireClient.connect(t.port);
    silent.send(Buffer.from([0, 0])); // half a length word, then nothing
    const c = await connect(t.conn(user));
    assert.is((await c.query('select 1 as one')).rows[0].one, 1);
    await c.end();
    const said = await silent.next();
    assert.is(said.type, 'E');
    assert.match(errorFields(said).M, 'client_login_timeout');
    await silent.closed;
  } finally {
    await t.stop();
  }
});

for (const mode of ['session', 'transaction']) test(`${mode} mode: client_idle_timeout, query_timeout and idle_transaction_timeout end the offending client with a clear error`, async () => {
  const t = await startTessera({ pool_mode: mode, client_idle_timeout: 0.6, query_timeout: 0.6, idle_transaction_timeout: 0.6, databases: { '*': clusterEntry(cluster) } });
  const errors = (c: Awaited<ReturnType<typeof connect>>) => {
    const seen: { code?: string; message: string }[] = [];
    c.on('error', (e: Error & { code?: string }) => seen.push(e));
    return seen;
  };
  try {
    const idle = await connect(t.conn(user));
    const idleErrors = errors(idle);
    const slow = await connect(t.conn(user));
    const inTx = await connect(t.conn(user));
    const inTxErrors = errors(inTx);
    const busy = await connect(t.conn(user));
    // A client that keeps working is never cut.
    const slowQuery = rejection(slow.query('select pg_sleep(5)'));
    await inTx.query('begin');
    for (let i = 0; i < 8; i++) {
      await busy.query('select 1');
      await new Promise((r) => setTimeout(r, 150));
    }
    const err = await slowQuery;
    assert.is(err.code, '57014');
    assert.match(err.message, 'query_timeout');
    await until('idle clients to be cut', async () => idleErrors.length > 0 && inTxErrors.length > 0);
    assert.is(idleErrors[0].code, '57P05');
    assert.match(idleErrors[0].message, 'client_idle_timeout');
    assert.is(inTxErrors[0].code, '25P03');
    assert.match(inTxErrors[0].message, 'idle_transaction_timeout');
    assert.is((await busy.query('select 2 as two')).rows[0].two, 2);
    for (const c of [idle, slow, inTx, busy]) await c.end().catch(() => {});
  } finally {
    await t.stop();
  }
});

test('[users] overrides: a user\'s own query_timeout and max_user_client_connections', async () => {
  const t = await startTessera({ users: { [user]: { query_timeout: 0.5, max_user_client_connections: 2 } }, databases: { '*': clusterEntry(cluster) } });
  try {
    const a = await connect(t.conn(user));
    const b = await connect(t.conn(user));
    const third = await rejection(connect(t.conn(user)));
    assert.is(third.code, '53300');
    assert.match(third.message, 'max_user_client_connections');
    const slow = await rejection(a.query('select pg_sleep(5)'));
    assert.is(slow.code, '57014');
    assert.match(slow.message, 'query_timeout');
    assert.is((await b.query('select 1 as one')).rows[0].one, 1);
    await a.end().catch(() => {});
    await b.end();
  } finally {
    await t.stop();
  }
});

test('server_check_delay / server_check_query: a server idle longer than the delay is checked before reuse', async () => {
  // A check query with a visible effect, so the test can see it ran on the reused server.
  const t = await startTessera({
    server_check_delay: 0.2,
    server_check_query: `select set_config('application_name', 'checked', false)`,
    databases: { '*': clusterEntry(cluster) },
  });
  try {
    const a = await connect(t.conn(user));
    const first = (await a.query('select pg_backend_pid() as pid')).rows[0].pid;
    await a.end();
    await new Promise((r) => setTimeout(r, 400));
    const b = await connect(t.conn(user));
    const r = (await b.query(`select pg_backend_pid() as pid, current_setting('application_name') as app`)).rows[0];
    assert.equal(r, { pid: first, app: 'checked' });
    // Used just now: no check this time.
    await b.query(`select set_config('application_name', 'mine', false)`);
    assert.is((await b.query(`select current_setting('application_name') as app`)).rows[0].app, 'mine');
    await b.end();
  } finally {
    await t.stop();
  }
});

test('max_db_connections caps servers across users; clients queue instead', async () => {
  const app = 'tessera-maxdb';
  // Session mode (the default): a connected client holds its server, so two clients of two
  // users use the database's two servers up and a third client must wait for one of them.
  const t = await startTessera(
    { max_db_connections: 2, admin_users: user, databases: { '*': clusterEntry(cluster) } },
    `"${ROLES.md5.user}" "${ROLES.md5.password}"\n`,
  );
  const admin = await connect(t.conn(user, undefined, 'pgbouncer'));
  const waiting = async () => (await admin.query('SHOW POOLS')).rows.filter((r) => r.database === 'tessera_test').reduce((n, r) => n + Number(r.cl_waiting), 0);
  try {
    const a = await connect({ ...t.conn(user), application_name: app });
    const b = await connect({ ...t.conn(ROLES.md5.user, ROLES.md5.password), application_name: app });
    await a.query('select 1');
    await b.query('select 1');
    assert.is((await backendPids(app)).length, 2);
    let third: number | undefined;
    const c = await connect({ ...t.conn(user), application_name: app });
    const served = c.query('select 3 as n').then((r) => (third = r.rows[0].n));
    await until('the third client to wait for a server', async () => (await waiting()) === 1);
    assert.is(third, undefined, 'the third client was served while both servers were taken');
    assert.is((await backendPids(app)).length, 2, 'a third server was opened');
    // The first client leaves: its server goes to the one waiting.
    await a.end();
    await served;
    assert.is(third, 3);
    assert.is(await waiting(), 0);
    assert.ok((await backendPids(app)).length <= 2, 'more than max_db_connections servers');
    await b.end();
    await c.end();
  } finally {
    await admin.end();
    await t.stop();
  }
});

test('server_login_retry: after a refused server login, the next client hears the same error at once', async () => {
  const t = await startTessera({ server_login_retry: 30, databases: { ghost: clusterEntry(cluster, { dbname: 'no_such_db_retry' }) } });
  try {
    const first = await rejection(connect(t.conn(user, undefined, 'ghost')));
    assert.is(first.code, '3D000');
    const second = await rejection(connect(t.conn(user, undefined, 'ghost')));
    assert.is(second.code, '3D000');
    assert.match(second.message, 'no_such_db_retry');
  } finally {
    await t.stop();
  }
});

/** A connected TCP socket on loopback, for reading back the options Tessera sets on it. */
async function loopbackSocket(): Promise<{ socket: net.Socket; close: () => void }> {
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((r) => socket.on('connect', r));
  return {
    socket,
    close: () => {
      socket.destroy();
      server.close();
    },
  };
}

test('keepalive settings reach the socket (TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT)', async () => {
  const { socket, close } = await loopbackSocket();
  applySocketOptions(socket, { tcp_keepalive: true, tcp_keepidle: 7, tcp_keepintvl: 3, tcp_keepcnt: 4, tcp_user_timeout: 9000 });
  assert.is(keepalive.getKeepAliveInterval(socket), 3000);
  assert.is(keepalive.getKeepAliveProbes(socket), 4);
  assert.is(keepalive.getUserTimeout(socket), 9000);
  close();
});

test('tcp_keepidle alone leaves the system keepalive interval and probe count (Node would set 1 s and 10)', async () => {
  const { socket, close } = await loopbackSocket();
  applySocketOptions(socket, { tcp_keepalive: true, tcp_keepidle: 30, tcp_keepintvl: 0, tcp_keepcnt: 0, tcp_user_timeout: 0 });
  const system = (file: string) => Number(fs.readFileSync(`/proc/sys/net/ipv4/${file}`, 'utf8').trim());
  assert.is(keepalive.getKeepAliveInterval(socket), system('tcp_keepalive_intvl') * 1000);
  assert.is(keepalive.getKeepAliveProbes(socket), system('tcp_keepalive_probes'));
  close();
});

test.run();
