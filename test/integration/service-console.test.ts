// The console and pool behaviour a PgBouncer admin relies on: KILL leaves the database paused,
// SUSPEND keeps the console reachable (and resumes when its admin leaves), a server that cannot be
// reached is retried after server_login_retry, not in a tight loop.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, until, settle, settledSoon, capturedLogs, type RunningTessera } from '../support/tessera.js';
import type pg from 'pg';

let cluster: Cluster;
const user = ROLES.trust.user;

const admin = (t: RunningTessera) => connect(t.conn('admin', undefined, 'pgbouncer'));

test.before(async () => {
  cluster = await sharedCluster();
});

test('KILL db: its clients are cut, the database stays paused, new clients wait until RESUME db', async () => {
  const t = await startTessera({ admin_users: 'admin', databases: { [TEST_DB]: clusterEntry(cluster) } });
  try {
    const victim = await connect(t.conn(user));
    await victim.query('select 1');
    const a = await admin(t);
    await a.query(`KILL ${TEST_DB}`);
    await rejection(victim.query('select 1'));
    const dbRow = async () => (await a.query('SHOW DATABASES')).rows.find((r) => r.name === TEST_DB)!;
    assert.is(String((await dbRow()).paused), '1', 'paused after KILL');
    // A new client's query waits while the database is paused...
    const late = await connect(t.conn(user));
    const answer = settle(late.query("select 'after resume' as v"));
    assert.not.ok(await settledSoon(answer), 'a query ran on a killed database before RESUME');
    // ...and runs once it is resumed.
    await a.query(`RESUME ${TEST_DB}`);
    const r = await answer;
    assert.ok(r.ok, r.ok ? '' : r.e.message);
    assert.is(r.ok && (r.v as pg.QueryResult).rows[0].v, 'after resume');
    await late.end();
    await a.end();
  } finally {
    await t.stop();
  }
});

test('SUSPEND: the console stays reachable, a new admin can RESUME; other logins wait until then', async () => {
  const t = await startTessera({ admin_users: 'admin', databases: { [TEST_DB]: clusterEntry(cluster) } });
  try {
    const suspender = await admin(t);
    await suspender.query('SUSPEND');
    const waitingLogin = settle(connect(t.conn(user)));
    assert.not.ok(await settledSoon(waitingLogin), 'a client logged in under SUSPEND');
    // A second admin gets in and resumes.
    const other = await admin(t);
    await other.query('RESUME');
    const r = await waitingLogin;
    assert.ok(r.ok, r.ok ? '' : r.e.message);
    if (r.ok) {
      assert.is((await r.v.query('select 1 as one')).rows[0].one, 1);
      await r.v.end();
    }
    await other.end();
    await suspender.end();
  } finally {
    await t.stop();
  }
});

test('SUSPEND: when the admin who suspended disconnects, the pooler resumes by itself', async () => {
  const t = await startTessera({ admin_users: 'admin', databases: { [TEST_DB]: clusterEntry(cluster) } });
  const from = capturedLogs.length;
  try {
    const app = await connect(t.conn(user));
    const suspender = await admin(t);
    await suspender.query('SUSPEND');
    const answer = settle(app.query('select 2 as two'));
    assert.not.ok(await settledSoon(answer), 'a query ran under SUSPEND');
    await suspender.end();
    const r = await answer;
    assert.ok(r.ok && (r.v as pg.QueryResult).rows[0].two === 2);
    assert.ok(capturedLogs.slice(from).some((l) => JSON.parse(l).msg === 'admin disappeared when suspended, doing RESUME'));
    await app.end();
  } finally {
    await t.stop();
  }
});

test('an unreachable server is retried after server_login_retry, not every half second', async () => {
  // Port 1: connection refused at once, the "server down" case (08006) clients are kept waiting for.
  const t = await startTessera({ server_login_retry: 1.5, server_connect_timeout: 3, databases: { nowhere_retry: { host: '127.0.0.1', port: 1 } } });
  const from = capturedLogs.length;
  try {
    const err = await rejection(connect(t.conn(user, undefined, 'nowhere_retry')));
    assert.is(err.code, '08006');
    const attempts = capturedLogs
      .slice(from)
      .map((l) => JSON.parse(l))
      .filter((l) => l.msg === 'server login failed' && String(l.pool).startsWith('nowhere_retry/'));
    // At 0, 1.5 and 3 s at most (the client gives up after server_connect_timeout); every 0.5 s was 7.
    assert.ok(attempts.length >= 1 && attempts.length <= 3, `${attempts.length} attempts`);
    for (const a of attempts) assert.is(a.retry_in_s, 1.5);
  } finally {
    await t.stop();
  }
});

test.run();
