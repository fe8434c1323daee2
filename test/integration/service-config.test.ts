// Settings as a PgBouncer admin meets them on a running pooler: SHOW CONFIG without secrets,
// restart-only settings showing their running value (and RELOAD saying it did not apply them),
// warnings said once per change, and a first-start message that says what to run.
import fs from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, until, freePort, capturedLogs } from '../support/tessera.js';

let cluster: Cluster;
const parsed = (from: number) => capturedLogs.slice(from).map((l) => JSON.parse(l) as Record<string, unknown> & { msg: string });

test.before(async () => {
  cluster = await sharedCluster();
});

test('SHOW CONFIG never shows embedded_password, to admin_users or stats_users', async () => {
  const secret = 'embedded-secret-7c1e';
  const t = await startTessera({ admin_users: 'admin', stats_users: 'watcher', embedded_password: secret, databases: { [TEST_DB]: clusterEntry(cluster) } });
  try {
    for (const who of ['admin', 'watcher']) {
      const c = await connect(t.conn(who, undefined, 'pgbouncer'));
      const rows = (await c.query('SHOW CONFIG')).rows;
      await c.end();
      assert.ok(rows.some((r) => r.key === 'embedded_password'), 'listed');
      assert.not.ok(JSON.stringify(rows).includes(secret), `${who} sees the password`);
      assert.is(rows.find((r) => r.key === 'embedded_password').value, '(hidden)');
    }
  } finally {
    await t.stop();
  }
});

test('RELOAD of a restart-only setting (listen_port, metrics_listen): SHOW CONFIG keeps the running value, the log says not applied', async () => {
  const t = await startTessera({ admin_users: 'admin', databases: { [TEST_DB]: clusterEntry(cluster) } });
  try {
    const other = await freePort();
    const json = JSON.parse(fs.readFileSync(t.file, 'utf8'));
    fs.writeFileSync(t.file, JSON.stringify({ ...json, listen_port: other, metrics_listen: '127.0.0.1:1', default_pool_size: 7 }));
    const from = capturedLogs.length;
    const a = await connect(t.conn('admin', undefined, 'pgbouncer'));
    await a.query('RELOAD');
    const rows = (await a.query('SHOW CONFIG')).rows;
    await a.end();
    const value = (key: string) => rows.find((r) => r.key === key).value;
    assert.is(value('listen_port'), String(t.port));
    assert.is(value('metrics_listen'), '');
    assert.is(value('default_pool_size'), '7', 'a reloadable setting is applied');
    const notApplied = parsed(from).filter((l) => l.msg === 'setting changed in the config file needs a restart; not applied').map((l) => l.setting);
    assert.equal(notApplied.sort(), ['listen_port', 'metrics_listen']);
  } finally {
    await t.stop();
  }
});

test('warnings about unsupported settings are logged once per change, not at every RELOAD', async () => {
  const t = await startTessera({ admin_users: 'admin', databases: { [TEST_DB]: clusterEntry(cluster) } });
  const ini = (extra: string) =>
    `[pgbouncer]\nlisten_port = ${t.port}\nauth_type = trust\nunix_socket_dir =\nadmin_users = admin\n${extra}\n[databases]\n${TEST_DB} = host=${cluster.host} port=${cluster.port}\n`;
  const warned = (from: number, setting: string) => parsed(from).filter((l) => l.level === 40 && l.msg.includes(`"${setting}"`)).length;
  try {
    // A .json name with ini content is read as an ini (by its first line).
    fs.writeFileSync(t.file, ini('server_round_robin = 1'));
    let from = capturedLogs.length;
    await t.proxy.reload();
    assert.is(warned(from, 'server_round_robin'), 1, 'said once');
    from = capturedLogs.length;
    await t.proxy.reload();
    assert.is(warned(from, 'server_round_robin'), 0, 'said again with nothing changed');
    fs.writeFileSync(t.file, ini('server_round_robin = 1\ndns_max_ttl = 3'));
    from = capturedLogs.length;
    await t.proxy.reload();
    assert.is(warned(from, 'dns_max_ttl'), 1, 'a new warning is said');
    assert.is(warned(from, 'server_round_robin'), 0);
  } finally {
    await t.stop();
  }
});

test('first start before the session schema is installed: the pool role check says what is missing and what to run', async () => {
  const from = capturedLogs.length;
  const t = await startTessera({
    databases: { tok: clusterEntry(cluster, { dbname: TEST_DB, auth_type: 'session_token', user: 'no_such_pool_role', password: 'whatever' }) },
  });
  try {
    const line = await until('the role check line', async () => parsed(from).find((l) => l.role === 'no_such_pool_role'));
    assert.is(line.level, 40);
    assert.is(line.code, '28P01');
    assert.match(line.msg, 'cannot log in');
    assert.match(line.msg, 'sql/tessera.sql');
  } finally {
    await t.stop();
  }
});

test.run();
