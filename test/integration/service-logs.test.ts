// The log lines a PgBouncer admin acts on, read back as JSON: every refused login and every
// pooler-made disconnect (client id, user, database, address, reason; never the secret), server
// connections opened and closed with the reason, the log_* switches, a failed RELOAD.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, until, capturedLogs } from '../support/tessera.js';
import { writeDevCerts } from '../../src/tls/cert-command.js';

let cluster: Cluster;
const user = ROLES.trust.user;
const SECRET = 'not-the-password-9f3b';

type Line = Record<string, unknown> & { msg: string };

/** Log lines written since `from` (an index into capturedLogs), parsed. */
function linesSince(from: number): Line[] {
  return capturedLogs.slice(from).map((l) => JSON.parse(l) as Line);
}

function findLine(from: number, msg: string, match: Record<string, unknown> = {}): Line | undefined {
  return linesSince(from).find((l) => l.msg === msg && Object.entries(match).every(([k, v]) => l[k] === v));
}

test.before(async () => {
  cluster = await sharedCluster();
});

test('a wrong password and an unknown user each leave a "login refused" line, without the secret', async () => {
  const t = await startTessera({ auth_type: 'md5', databases: { [TEST_DB]: clusterEntry(cluster) } }, `"${ROLES.md5.user}" "${ROLES.md5.password}"\n`);
  const from = capturedLogs.length;
  try {
    assert.is((await rejection(connect(t.conn(ROLES.md5.user, SECRET)))).code, '28P01');
    assert.is((await rejection(connect(t.conn('nobody_here', SECRET)))).code, '28P01');
    const wrong = await until('the refusal line', async () => findLine(from, 'login refused', { user: ROLES.md5.user }));
    assert.is(wrong.code, '28P01');
    assert.is(wrong.db, TEST_DB);
    assert.is(wrong.addr, '127.0.0.1');
    assert.is(typeof wrong.client, 'number');
    assert.match(String(wrong.reason), 'password authentication failed');
    assert.ok(findLine(from, 'login refused', { user: 'nobody_here', code: '28P01' }), 'unknown user');
    assert.not.ok(capturedLogs.slice(from).some((l) => l.includes(SECRET)), 'the password was logged');
  } finally {
    await t.stop();
  }
});

test('"SSL required" and client_login_timeout refusals are logged with the address', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-logcert-'));
  const certs = writeDevCerts(dir);
  const t = await startTessera({
    client_tls_sslmode: 'require',
    client_tls_key_file: certs.serverKey,
    client_tls_cert_file: certs.serverCert,
    client_login_timeout: 1,
    databases: { [TEST_DB]: clusterEntry(cluster) },
  });
  const from = capturedLogs.length;
  try {
    const err = await rejection(connect({ ...t.conn(user), ssl: false }));
    assert.match(err.message, 'SSL required');
    const ssl = await until('the SSL refusal', async () => findLine(from, 'login refused', { reason: 'SSL required' }));
    assert.is(ssl.user, user);
    assert.is(ssl.addr, '127.0.0.1');
    // A socket that never sends its startup packet.
    const silent = net.connect(t.port, '127.0.0.1');
    silent.on('error', () => {});
    const timedOut = await until('the login timeout line', async () => findLine(from, 'login refused', { reason: 'client_login_timeout' }), 8000);
    assert.is(timedOut.addr, '127.0.0.1');
    silent.destroy();
  } finally {
    await t.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('query_wait_timeout and KILL_CLIENT: a "client closed" line by the pooler, with the reason', async () => {
  const t = await startTessera({ admin_users: 'admin', default_pool_size: 1, query_wait_timeout: 1, databases: { [TEST_DB]: clusterEntry(cluster) } });
  const from = capturedLogs.length;
  const holder = await connect(t.conn(user));
  const waiter = await connect(t.conn(user));
  try {
    await holder.query('select 1'); // session mode: holder keeps the only server
    const err = await rejection(waiter.query('select 2'));
    assert.match(err.message, 'query_wait_timeout');
    const closed = await until('the close line', async () => findLine(from, 'client closed', { reason: 'query_wait_timeout' }));
    assert.is(closed.by, 'pooler');
    assert.is(closed.user, user);
    assert.is(closed.db, TEST_DB);
    assert.is(closed.code, '08P01');
    const admin = await connect(t.conn('admin', undefined, 'pgbouncer'));
    const holderId = (await admin.query('SHOW CLIENTS')).rows.find((r) => r.user === user)!.id;
    await admin.query(`KILL_CLIENT ${holderId}`);
    const killed = await until('the KILL_CLIENT line', async () => findLine(from, 'client closed', { client: Number(holderId) }));
    assert.is(killed.by, 'pooler');
    assert.match(String(killed.reason), 'KILL_CLIENT');
    await admin.end();
    // The console's Terminate is a close request too, not an unexpected EOF.
    assert.ok(await until('the console close line', async () => findLine(from, 'client closed', { user: 'admin', by: 'client', reason: 'client close request' })));
    // A client that leaves on its own says so.
    const leaver = await connect(t.conn(user));
    await leaver.end();
    assert.ok(await until('the client close line', async () => findLine(from, 'client closed', { by: 'client', reason: 'client close request' })));
  } finally {
    await holder.end().catch(() => {});
    await waiter.end().catch(() => {});
    await t.stop();
  }
});

test('server connections opened and closed are logged with the close reason', async () => {
  const t = await startTessera({ server_idle_timeout: 1, databases: { [TEST_DB]: clusterEntry(cluster) } });
  const from = capturedLogs.length;
  try {
    const c = await connect(t.conn(user));
    await c.query('select 1');
    await c.end();
    const opened = await until('the server open line', async () => findLine(from, 'server connection opened'));
    assert.is(typeof opened.backend_pid, 'number');
    const closed = await until('the server close line', async () => findLine(from, 'server connection closed', { reason: 'server_idle_timeout' }), 8000);
    assert.is(closed.backend_pid, opened.backend_pid);
  } finally {
    await t.stop();
  }
});

test('log_connections = 0 and log_disconnections = 0 silence logins and closes; log_pooler_errors = 0 refusals', async () => {
  const t = await startTessera(
    { auth_type: 'md5', log_connections: false, log_disconnections: false, log_pooler_errors: false, databases: { [TEST_DB]: clusterEntry(cluster) } },
    `"${ROLES.md5.user}" "${ROLES.md5.password}"\n`,
  );
  const from = capturedLogs.length;
  try {
    const c = await connect(t.conn(ROLES.md5.user, ROLES.md5.password));
    await c.query('select 1');
    await c.end();
    await rejection(connect(t.conn(ROLES.md5.user, SECRET)));
    // A line that is always written, as a marker that the quiet ones had their chance.
    await t.proxy.adminView.reconnect();
    await new Promise((r) => setTimeout(r, 200));
    const msgs = linesSince(from).map((l) => l.msg);
    for (const quiet of ['client logged in', 'client closed', 'login refused', 'server connection opened']) assert.not.ok(msgs.includes(quiet), `${quiet} was logged: ${capturedLogs.slice(from).filter((l) => l.includes(quiet)).join(' ')}`);
  } finally {
    await t.stop();
  }
});

test('a failed RELOAD logs why; the console says "see logs"', async () => {
  const t = await startTessera({ admin_users: 'admin', databases: { [TEST_DB]: clusterEntry(cluster) } });
  const from = capturedLogs.length;
  try {
    fs.writeFileSync(t.file, JSON.stringify({ listen_port: t.port, auth_type: 'trust', unix_socket_dir: '', admin_users: 'admin', pool_size_typo: 3 }));
    const admin = await connect(t.conn('admin', undefined, 'pgbouncer'));
    const err = await rejection(admin.query('RELOAD'));
    assert.match(err.message, 'see logs');
    await admin.end();
    const line = await until('the reload failure line', async () => findLine(from, 'reload failed; keeping the running configuration'));
    assert.match(String(line.err), 'pool_size_typo');
  } finally {
    await t.stop();
  }
});

test.run();
