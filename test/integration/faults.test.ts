// Cancels, killed backends, vanished clients, a server that goes away, and transaction pooling
// under concurrency: what a client sees, and that no one inherits another client's server state.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { needing, tool } from '../support/tools.js';
import { WireClient, types } from '../support/wire.js';
import { startTessera, clusterEntry, connect, rejection, until, run, type RunningTessera } from '../support/tessera.js';

let cluster: Cluster;
let session: RunningTessera;
let txn: RunningTessera;
const user = ROLES.trust.user;
const APP = 'tessera-faults';

/** Backends Tessera holds for the test role, as PostgreSQL sees them. */
async function backends(app = APP): Promise<{ pid: number; state: string; xact: boolean }[]> {
  const { rows } = await cluster.query(
    `select pid, state, xact_start is not null as xact from pg_stat_activity where usename = $1 and application_name = $2`,
    [user, app],
  );
  return rows;
}


test.before(async () => {
  cluster = await sharedCluster();
  session = await startTessera({ databases: { '*': clusterEntry(cluster) } });
  txn = await startTessera({ pool_mode: 'transaction', default_pool_size: 5, databases: { '*': clusterEntry(cluster) } });
});

test.after(async () => {
  await session?.stop();
  await txn?.stop();
});

const conn = (t: RunningTessera) => ({ ...t.conn(user), application_name: APP });

for (const mode of ['session', 'transaction'] as const) {
  const t = () => (mode === 'session' ? session : txn);

  test(`${mode}: cancelling pg_sleep(30) through Tessera gives 57014 and the connection lives on`, async () => {
    const c = await connect(conn(t()));
    try {
      const sleeping = c.query('select pg_sleep(30)');
      await until('the query to run', async () => (await backends()).some((b) => b.state === 'active'));
      // node-postgres's own cancel path (Client#cancel: a CancelRequest with c's key), untyped in @types/pg.
      const canceller = new pg.Client(conn(t())) as unknown as { cancel(client: pg.Client, query: unknown): void };
      canceller.cancel(c, (c as unknown as { activeQuery: unknown }).activeQuery);
      const err = await rejection(sleeping);
      assert.is(err.code, '57014');
      assert.is((await c.query('select 1 as one')).rows[0].one, 1);
    } finally {
      await c.end();
    }
  });

  test(`${mode}: a backend killed with pg_terminate_backend gives the client 57P01, others are untouched`, async () => {
    const victim = await connect(conn(t()));
    const bystander = await connect(conn(t()));
    // PostgreSQL's FATAL arrives unprompted (the client is idle in a transaction), so node-postgres
    // reports it as a connection error event, exactly as it would on a direct connection.
    const seen: (Error & { code?: string })[] = [];
    victim.on('error', (e) => seen.push(e));
    try {
      await victim.query('begin');
      const { rows } = await victim.query('select pg_backend_pid() as pid');
      await cluster.query('select pg_terminate_backend($1)', [rows[0].pid]);
      await until('the FATAL to reach the client', async () => seen.length > 0);
      assert.is(seen[0].code, '57P01');
      assert.match(seen[0].message, 'terminating connection due to administrator command');
      await rejection(victim.query('select 1'));
      assert.is((await bystander.query('select 2 as two')).rows[0].two, 2);
      // The pool replaces the dead server: a new client works.
      const fresh = await connect(conn(t()));
      assert.is((await fresh.query('select 3 as three')).rows[0].three, 3);
      await fresh.end();
    } finally {
      await victim.end().catch(() => {});
      await bystander.end();
    }
  });
}

test('transaction mode: 50 clients share 5 server connections and all their transactions succeed', async () => {
  await cluster.query(`drop table if exists txn_counter; create table txn_counter (client int, n int)`, [], TEST_DB);
  await cluster.query(`grant all on txn_counter to ${user}`, [], TEST_DB);
  const app = 'tessera-fifty';
  const clients = await Promise.all(Array.from({ length: 50 }, () => connect({ ...conn(txn), application_name: app })));
  let maxBackends = 0;
  const watcher = setInterval(async () => {
    maxBackends = Math.max(maxBackends, (await backends(app)).length);
  }, 20);
  try {
    await Promise.all(
      clients.map(async (c, i) => {
        for (let k = 0; k < 20; k++) {
          await c.query('begin');
          await c.query('insert into txn_counter values ($1, $2)', [i, k]);
          await c.query('commit');
        }
      }),
    );
  } finally {
    clearInterval(watcher);
    await Promise.all(clients.map((c) => c.end()));
  }
  const { rows } = await cluster.query('select count(*)::int as n, count(distinct client)::int as c from txn_counter', [], TEST_DB);
  assert.equal(rows[0], { n: 1000, c: 50 });
  assert.ok((await backends(app)).length <= 5, 'at most default_pool_size servers');
  assert.ok(maxBackends <= 5, `saw ${maxBackends} backends`);
});

test('transaction mode: a client that vanishes mid-transaction leaves no open transaction or lock behind', async () => {
  const a = await connect(conn(txn));
  await a.query('begin');
  await a.query(`select pg_advisory_xact_lock(4242)`);
  // Vanish without ROLLBACK or Terminate.
  (a as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
  // Whichever server a new client gets, the lock is free and no transaction is open.
  await until('the abandoned transaction to end', async () => (await backends()).every((b) => !b.xact));
  const b = await connect(conn(txn));
  try {
    const { rows } = await b.query('select pg_try_advisory_lock(4242) as got, now() = statement_timestamp() as fresh_xact');
    assert.equal(rows[0], { got: true, fresh_xact: true });
    await b.query('select pg_advisory_unlock(4242)');
  } finally {
    await b.end();
  }
});

test('transaction mode: a client that vanishes while its query runs leaves no busy server to others', async () => {
  const a = await connect(conn(txn));
  a.query('select pg_sleep(20)').catch(() => {});
  await until('the query to run', async () => (await backends()).some((b) => b.state === 'active'));
  (a as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
  // The busy server is closed (or cancelled and drained), never handed out while busy.
  await until('no active backend', async () => (await backends()).every((b) => b.state !== 'active'));
  const clients = await Promise.all(Array.from({ length: 5 }, () => connect(conn(txn))));
  try {
    const results = await Promise.all(clients.map((c) => c.query('select 1 as one')));
    for (const r of results) assert.is(r.rows[0].one, 1);
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
});

test('transaction mode: a client that vanishes in the middle of an extended-protocol pipeline leaves no busy server', async () => {
  const { client: s } = await WireClient.login(txn.port, { user, database: TEST_DB, application_name: APP });
  // Parse/Bind/Execute and a Flush, but no Sync: the server is mid-pipeline when the client goes.
  s.send(serialize.parse({ text: 'select pg_sleep(20)' }), serialize.bind(), serialize.execute(), serialize.flush());
  await until('the pipelined query to run', async () => (await backends()).some((b) => b.state === 'active'));
  s.destroy();
  await until('the pipeline to be cancelled', async () => (await backends()).every((b) => b.state !== 'active'));
  const c = await connect(conn(txn));
  try {
    const { rows } = await c.query('select 1 as one, now() = statement_timestamp() as fresh');
    assert.equal(rows[0], { one: 1, fresh: true });
  } finally {
    await c.end();
  }
});

test('a query pipelined right before Terminate still runs to completion, as on a direct connection', async () => {
  await cluster.query(`drop table if exists fire_and_forget; create table fire_and_forget (x int); grant insert on fire_and_forget to ${user}`, [], TEST_DB);
  const { client: s } = await WireClient.login(session.port, { user, database: TEST_DB });
  s.send(serialize.query('select 1'));
  assert.equal(types(await s.readUntil('Z')), ['T', 'D', 'C', 'Z']);
  // The client does not wait for the result: INSERT, then Terminate, in one write.
  s.end(serialize.query('insert into fire_and_forget select 1 from pg_sleep(0.3)'));
  await until('the insert to commit', async () => (await cluster.query('select count(*)::int as n from fire_and_forget', [], TEST_DB)).rows[0].n === 1);
});

test('transaction mode: a query sent with Terminate while every server is busy still runs', async () => {
  const one = await startTessera({ pool_mode: 'transaction', default_pool_size: 1, databases: { '*': clusterEntry(cluster) } });
  try {
    await cluster.query(`drop table if exists orphaned; create table orphaned (x int); grant insert on orphaned to ${user}`, [], TEST_DB);
    const holder = await connect(one.conn(user));
    await holder.query('begin');
    await holder.query('select 1');
    const { client: s } = await WireClient.login(one.port, { user, database: TEST_DB });
    s.end(serialize.query('insert into orphaned values (7)'));
    await new Promise((r) => setTimeout(r, 200));
    await holder.query('commit');
    await until('the orphaned insert to run', async () => (await cluster.query('select count(*)::int as n from orphaned', [], TEST_DB)).rows[0].n === 1);
    await holder.end();
  } finally {
    await one.stop();
  }
});

test('session mode: a client that vanishes mid-transaction is rolled back before its server is reused', async () => {
  const a = await connect(conn(session));
  await a.query('begin');
  await a.query('create temp table left_behind (x int)');
  (a as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
  await until('the abandoned transaction to end', async () => (await backends()).every((b) => !b.xact));
  const b = await connect(conn(session));
  try {
    assert.is((await rejection(b.query('select * from left_behind'))).code, '42P01');
  } finally {
    await b.end();
  }
});

needing('pgbench')('transaction mode: pgbench -S with 20 clients over 5 servers reports 0 failed transactions', async () => {
  const env = { PGHOST: '127.0.0.1' };
  const init = await run(tool('pgbench'), ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'postgres', TEST_DB], { env: { ...env, PGPASSWORD: cluster.superPassword } });
  assert.is(init.code, 0, init.stderr);
  await cluster.query(`grant select, update on pgbench_accounts, pgbench_branches, pgbench_tellers to ${user}; grant insert on pgbench_history to ${user}`, [], TEST_DB);
  const bench = await run(tool('pgbench'), ['-S', '-c', '20', '-j', '2', '-t', '200', '-h', '127.0.0.1', '-p', String(txn.port), '-U', user, TEST_DB], { env });
  assert.is(bench.code, 0, bench.stderr);
  assert.match(bench.stdout, /number of transactions actually processed: 4000\/4000/);
  assert.match(bench.stdout, /number of failed transactions: 0 \(0\.000%\)/);
  // and the simple-protocol TPC-B-like script, which writes
  const tpcb = await run(tool('pgbench'), ['-c', '10', '-t', '50', '-h', '127.0.0.1', '-p', String(txn.port), '-U', user, TEST_DB], { env });
  assert.is(tpcb.code, 0, tpcb.stderr);
  assert.match(tpcb.stdout, /number of failed transactions: 0 \(0\.000%\)/);
});

test('a server that is down gives a prompt 08006-class error; the pool heals when it is back', async () => {
  const t = await startTessera({ pool_mode: 'transaction', server_connect_timeout: 5, databases: { '*': clusterEntry(cluster) } });
  try {
    const before = await connect(conn(t));
    assert.is((await before.query('select 1 as one')).rows[0].one, 1);
    await before.end();
    await cluster.restart('immediate');
    // Old servers died with the restart; a new client is served by a new one.
    const after = await connect(conn(t));
    assert.is((await after.query('select 2 as two')).rows[0].two, 2);
    await after.end();
  } finally {
    await t.stop();
  }
  // Nothing listening at all: a clear error once server_connect_timeout has passed, not a hang.
  const dead = await startTessera({ server_connect_timeout: 1, databases: { '*': { host: '127.0.0.1', port: 1 } } });
  try {
    const err = await rejection(connect(dead.conn(user)));
    assert.is(err.code, '08006');
    assert.match(err.message, /ECONNREFUSED|connect/);
  } finally {
    await dead.stop();
  }
});

test.run();
