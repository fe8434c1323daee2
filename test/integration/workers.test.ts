// `workers: 2`: two processes share the port, each with its own pools sized so the totals stay as
// configured; the admin console and the metrics endpoint sum both; a cancel request reaches the
// worker that owns the client whichever worker it lands on; signals stop both.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { spawnTessera, clusterEntry, connect, rejection, until, freePort, sendCancel, type TesseraProcess } from '../support/tessera.js';

let cluster: Cluster;
let t: TesseraProcess;
let metricsPort: number;
const user = ROLES.trust.user;
const APP = 'tessera-workers-test';
// The application name reaches the servers too (startup parameters are honoured), which tells
// this test's backends from any other test's in pg_stat_activity.
const conn = (database = TEST_DB): pg.ClientConfig => ({ host: '127.0.0.1', port: t.port, user, database, application_name: APP });

test.before(async () => {
  cluster = await sharedCluster();
  metricsPort = await freePort();
  t = await spawnTessera({
    workers: 2,
    pool_mode: 'transaction',
    default_pool_size: 4,
    admin_users: 'admin',
    metrics_listen: `127.0.0.1:${metricsPort}`,
    databases: { [TEST_DB]: clusterEntry(cluster) },
  });
  await until('both workers to listen', async () => (t.output().match(/"msg":"listening"/g) ?? []).length >= 2);
});

test.after(async () => {
  await t?.stop();
});

/** Connects until clients of both workers are open (ids are odd on worker 0, even on worker 1). */
async function clientsOnBothWorkers(admin: pg.Client): Promise<pg.Client[]> {
  const clients: pg.Client[] = [];
  for (let i = 0; i < 200; i++) {
    const c = await connect(conn());
    c.on('error', () => {});
    clients.push(c);
    if (clients.length < 4) continue;
    const ids = (await admin.query('SHOW CLIENTS')).rows.filter((r) => r.database === TEST_DB).map((r) => Number(r.id));
    if (ids.some((id) => id % 2 === 1) && ids.some((id) => id % 2 === 0)) return clients;
  }
  throw new Error('200 connections all landed on one worker');
}

test('SHOW sums both workers, and the pools together stay within default_pool_size', async () => {
  const admin = await connect({ ...conn('pgbouncer'), user: 'admin' });
  const clients = await clientsOnBothWorkers(admin);
  try {
    // Everyone at once: more clients than servers, so both workers fill their pools.
    await Promise.all(clients.map((c) => c.query('select pg_sleep(0.2)')));
    const pool = (await admin.query('SHOW POOLS')).rows.find((p) => p.database === TEST_DB && p.user === user);
    assert.is(Number(pool.cl_active) + Number(pool.cl_waiting), clients.length);
    const db = (await admin.query('SHOW DATABASES')).rows.find((d) => d.name === TEST_DB);
    assert.is(Number(db.current_client_connections), clients.length);
    assert.is(Number(db.pool_size), 4);
    assert.ok(Number(db.current_connections) <= 4, `servers across workers: ${db.current_connections}`);
    const servers = (await cluster.query(`select count(*)::int as n from pg_stat_activity where datname = $1 and application_name = $2`, [TEST_DB, APP])).rows[0].n;
    assert.ok(servers <= 4, `backends in PostgreSQL: ${servers}`);
    const stats = (await admin.query('SHOW STATS')).rows.find((r) => r.database === TEST_DB);
    assert.ok(Number(stats.total_xact_count) >= clients.length);
    // KILL_CLIENT finds a client on either worker.
    const ids = (await admin.query('SHOW CLIENTS')).rows.filter((r) => r.database === TEST_DB).map((r) => Number(r.id));
    for (const id of [ids.find((i) => i % 2 === 1)!, ids.find((i) => i % 2 === 0)!]) await admin.query(`KILL_CLIENT ${id}`);
    await until('two clients fewer', async () => Number((await admin.query('SHOW DATABASES')).rows.find((d) => d.name === TEST_DB).current_client_connections) === clients.length - 2);
    // SET applies on both workers.
    await admin.query('SET default_pool_size = 6');
    assert.is(Number((await admin.query('SHOW DATABASES')).rows.find((d) => d.name === TEST_DB).pool_size), 6);
    await admin.query('SET default_pool_size = 4');
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await admin.end();
  }
});


test('a cancel request reaches the worker that owns the client, whichever worker it lands on', async () => {
  const admin = await connect({ ...conn('pgbouncer'), user: 'admin' });
  const clients = await clientsOnBothWorkers(admin);
  try {
    // Every client's long query is cancelled through connections that land on either worker.
    for (const c of clients.slice(0, 12)) {
      let settled: (Error & { code?: string }) | null = null;
      const q = rejection(c.query('select pg_sleep(20)'));
      void q.then((e) => (settled = e));
      const key = c as unknown as { processID: number; secretKey: number };
      await until('the query to run', async () => {
        if (settled) throw new Error(`the query ended before it was cancelled: ${settled.code} ${settled.message}\n${t.output().split('\n').slice(-12).join('\n')}`);
        return (await cluster.query(`select 1 from pg_stat_activity where query = 'select pg_sleep(20)' and state = 'active' and application_name = $1`, [APP])).rowCount === 1;
      });
      await sendCancel(t.port, key.processID, key.secretKey);
      assert.is((await q).code, '57014');
    }
    // The kernel spreads new connections between the workers, so some cancels crossed over.
    const crossed = (t.output().match(/cancel request for another worker/g) ?? []).length;
    assert.ok(crossed > 0, 'no cancel request landed on the other worker');
    // A wrong secret cancels nothing.
    const victim = clients[0] as unknown as { processID: number; secretKey: number } & pg.Client;
    const slow = victim.query('select pg_sleep(0.5) as slept');
    await sendCancel(t.port, victim.processID, victim.secretKey ^ 1);
    assert.equal((await slow).rows, [{ slept: '' }]);
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await admin.end();
  }
});

test('the metrics endpoint sums the workers: /metrics, the dashboard\'s data, /readyz', async () => {
  const admin = await connect({ ...conn('pgbouncer'), user: 'admin' });
  const clients = await clientsOnBothWorkers(admin);
  const base = `http://127.0.0.1:${metricsPort}`;
  const sample = (text: string, name: string) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name}{database="${TEST_DB}",user="${user}"}`) || l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.split(' ').pop());
  };
  try {
    const before = sample(await (await fetch(`${base}/metrics`)).text(), 'tessera_transactions_total') ?? 0;
    for (const c of clients) for (let i = 0; i < 3; i++) await c.query('select 1');
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.is(sample(metrics, 'tessera_workers'), 2);
    assert.ok(sample(metrics, 'tessera_transactions_total')! >= before + clients.length * 3);
    // Each worker's pool has its share; summed, the configured default_pool_size.
    assert.is(sample(metrics, 'tessera_pool_size'), 4);
    assert.ok(/^process_resident_memory_bytes \d/m.test(metrics));
    const dashboard = await until('the dashboard to see the pool', async () => {
      const d = (await (await fetch(`${base}/api/dashboard`)).json()) as { info: { workers: number }; pools: { rows: { database: string; user: string; pool_size: number; clients_active: number }[] } };
      return d.pools.rows.some((r) => r.database === TEST_DB && r.clients_active >= clients.length) && d;
    });
    assert.is(dashboard.info.workers, 2);
    assert.is(dashboard.pools.rows.find((r) => r.database === TEST_DB && r.user === user)!.pool_size, 4);
    const ready = await fetch(`${base}/readyz`);
    assert.is(ready.status, 200, await ready.clone().text());
    assert.is(((await ready.json()) as { ready: boolean }).ready, true);
    assert.is((await admin.query('SHOW SESSIONS')).rows.length, 0);
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await admin.end();
  }
});

test('SIGTERM stops both workers and the process exits 0', async () => {
  t.child.kill('SIGTERM');
  assert.is(await t.exited, 0);
  assert.not.ok(/"level":50|"level":60/.test(t.output()), t.output());
});

test.run();
