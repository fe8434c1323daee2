// auto_prepare (issue 18): in transaction mode, an unnamed Parse whose text was seen before runs as
// a prepared statement shared per backend, so PostgreSQL skips parse and analysis. What a client
// sees must not change: the same answers as a direct connection, byte for byte where the protocol
// allows it, errors naming the client's statement, and a schema change made outside Tessera that
// changes a statement's result type answered as a fresh unnamed Parse would be (outside a
// transaction block; inside one PostgreSQL's 0A000 reaches the client, as README says).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import postgres from 'postgres';
import { serialize } from 'pg-protocol';
import { ROLES, TEST_DB, PG_BIN, sharedCluster, type Cluster } from '../support/cluster.js';
import { WireClient, errorFields, type Message } from '../support/wire.js';
import { startTessera, clusterEntry, connect, rejection, run, type RunningTessera } from '../support/tessera.js';

let cluster: Cluster;
/** auto_prepare on, one backend (so what the backend holds can be read through Tessera). */
let one: RunningTessera;
/** auto_prepare on, two backends for four clients (work moves between backends). */
let two: RunningTessera;
const user = ROLES.trust.user;

test.before(async () => {
  cluster = await sharedCluster();
  one = await startTessera({ pool_mode: 'transaction', auto_prepare: true, default_pool_size: 1, databases: { '*': clusterEntry(cluster) } });
  two = await startTessera({ pool_mode: 'transaction', auto_prepare: true, default_pool_size: 2, databases: { '*': clusterEntry(cluster) } });
});

test.after(async () => {
  await one?.stop();
  await two?.stop();
});

/** Tessera's statements on the backend (one backend: the simple query runs where the statements are). */
async function serverStatements(c: pg.Client): Promise<string[]> {
  const { rows } = await c.query(`select statement from pg_prepared_statements where name like 'tessera_%' order by statement`);
  return rows.map((r) => r.statement);
}

/** A fresh table owned by the superuser (so its ALTER comes from outside Tessera). */
async function table(name: string): Promise<void> {
  await cluster.query(`drop table if exists ${name}; create table ${name} (a int, b text); insert into ${name} select g, 'r' || g from generate_series(1, 5) g; grant select, insert on ${name} to ${user}`, [], TEST_DB);
}

/** Each batch sent on one login; the messages up to each ReadyForQuery, as type (errors as E:code:message). */
async function replies(port: number, batches: Buffer[]): Promise<string[][]> {
  const { client } = await WireClient.login(port, { user, database: TEST_DB });
  const out: string[][] = [];
  try {
    for (const batch of batches) {
      client.send(batch);
      out.push((await client.readUntil('Z')).map(describe));
    }
  } finally {
    client.end();
  }
  return out;
}

function describe(m: Message): string {
  if (m.type === 'E') {
    const f = errorFields(m);
    return `E:${f.C}:${f.M}`;
  }
  if (m.type === 'D' || m.type === 'C' || m.type === 'Z') return `${m.type}:${m.body.toString('latin1').replace(/\0/g, '|')}`;
  return m.type;
}

const parse = (text: string, name = '') => serialize.parse({ name, text });
const bind = (values: (string | null)[], statement = '') => serialize.bind({ statement, values });
const run1 = (text: string, values: (string | null)[]) => Buffer.concat([parse(text), bind(values), serialize.describe({ type: 'P' }), serialize.execute(), serialize.sync()]);

test('node-postgres parameterised queries: a text seen twice becomes one statement on the backend, answers unchanged', async () => {
  const c = await connect(one.conn(user));
  try {
    const text = 'select $1::int + 1 as next, $2::text as label';
    for (let i = 0; i < 20; i++) {
      const r = await c.query(text, [i, `n${i}`]);
      assert.equal(r.rows, [{ next: i + 1, label: `n${i}` }]);
    }
    // A text used once (values written into it) is never prepared.
    await c.query('select 424242 as once, $1::int as x', [1]);
    const held = await serverStatements(c);
    assert.ok(held.includes(text), `backend statements: ${JSON.stringify(held)}`);
    assert.not.ok(held.some((s) => s.includes('424242')), `a text seen once was prepared: ${JSON.stringify(held)}`);
  } finally {
    await c.end();
  }
});

test('auto_prepare off (the default): unnamed statements stay unnamed', async () => {
  const off = await startTessera({ pool_mode: 'transaction', default_pool_size: 1, databases: { '*': clusterEntry(cluster) } });
  const c = await connect(off.conn(user));
  try {
    for (let i = 0; i < 5; i++) await c.query('select $1::int as v', [i]);
    assert.equal(await serverStatements(c), []);
  } finally {
    await c.end();
    await off.stop();
  }
});

test('the wire answers are the same as a direct connection, errors included', async () => {
  const text = 'select $1::int * 2 as twice';
  const batches = [
    run1(text, ['1']),
    run1(text, ['2']),
    run1(text, ['3']),
    // Too few parameters: PostgreSQL's message names the unnamed statement ("").
    Buffer.concat([parse(text), bind([]), serialize.execute(), serialize.sync()]),
    // A bad value: the error comes from the executor, the batch is skipped to Sync.
    Buffer.concat([parse(text), bind(['x']), serialize.execute(), serialize.sync()]),
    // Describe of the unnamed statement, then a Bind reusing it in the next batch.
    Buffer.concat([parse(text), serialize.describe({ type: 'S' }), serialize.sync()]),
    Buffer.concat([bind(['21']), serialize.execute(), serialize.sync()]),
    // A simple query drops the unnamed statement: a Bind after it finds none.
    serialize.query('select 1'),
    Buffer.concat([bind(['5']), serialize.execute(), serialize.sync()]),
    // A named statement of the same text: its errors name it, never Tessera's statement.
    Buffer.concat([parse(text, 'mine'), serialize.sync()]),
    Buffer.concat([bind([], 'mine'), serialize.execute(), serialize.sync()]),
    Buffer.concat([bind(['4'], 'mine'), serialize.execute(), serialize.close({ type: 'S', name: 'mine' }), serialize.sync()]),
  ];
  const direct = await replies(cluster.port, batches);
  const through = await replies(one.port, batches);
  assert.equal(through, direct);
  // The test says something: the errors are there, and name the client's statements.
  assert.ok(direct[3].some((m) => m.includes('prepared statement "" requires 1')), JSON.stringify(direct[3]));
  assert.ok(direct[10].some((m) => m.includes('prepared statement "mine" requires 1')), JSON.stringify(direct[10]));
  assert.ok(direct[8].some((m) => m.startsWith('E:26000')), JSON.stringify(direct[8]));
});

test('a schema change outside Tessera: outside a transaction the query is answered as directly; inside one PostgreSQL says 0A000 once', async () => {
  await table('auto_alter');
  const clients = await Promise.all([0, 1, 2, 3].map(() => connect(two.conn(user))));
  const text = 'select * from auto_alter where a = $1';
  try {
    for (let i = 0; i < 6; i++) await Promise.all(clients.map((c, k) => c.query(text, [k + 1])));
    await cluster.query('alter table auto_alter add column c int default 7', [], TEST_DB);
    // Every client, on every backend, gets the new shape with no error.
    for (let i = 0; i < 4; i++) {
      const rs = await Promise.all(clients.map((c, k) => c.query(text, [k + 1])));
      for (const r of rs) assert.equal(r.fields.map((f) => f.name), ['a', 'b', 'c']);
    }
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
  // Inside a transaction block (one backend, so the statement is surely there): the error aborts
  // the transaction, as it would for a named statement; the next transaction is answered afresh.
  const c = await connect(one.conn(user));
  try {
    for (let i = 0; i < 3; i++) await c.query(text, [1]);
    await cluster.query('alter table auto_alter add column d int default 8', [], TEST_DB);
    await c.query('begin');
    const e = await rejection(c.query(text, [1]));
    assert.is(e.code, '0A000');
    assert.is(e.message, 'cached plan must not change result type');
    await c.query('rollback');
    const after = await c.query(text, [1]);
    assert.equal(after.fields.map((f) => f.name), ['a', 'b', 'c', 'd']);
  } finally {
    await c.end();
  }
});

test('a retried batch runs once: an INSERT ... RETURNING after a schema change inserts one row', async () => {
  await table('auto_insert');
  const c = await connect(one.conn(user));
  const text = 'insert into auto_insert (a, b) values ($1, $2) returning *';
  try {
    for (let i = 0; i < 3; i++) await c.query(text, [100 + i, 'x']);
    await cluster.query('alter table auto_insert add column c int default 7', [], TEST_DB);
    const r = await c.query(text, [200, 'y']);
    assert.equal(r.rows, [{ a: 200, b: 'y', c: 7 }]);
    const { rows } = await cluster.query('select count(*)::int as n from auto_insert where a = 200', [], TEST_DB);
    assert.is(rows[0].n, 1);
  } finally {
    await c.end();
  }
});

/** A Bind of a named statement asking for binary results, one format code per column (as pgjdbc sends it). */
function bindPerColumn(statement: string, value: string, columns: number): Buffer {
  const v = Buffer.from(value);
  const body = Buffer.concat([
    Buffer.from(`\0${statement}\0`),
    Buffer.from([0, 0, 0, 1]),
    Buffer.from([(v.length >> 24) & 255, (v.length >> 16) & 255, (v.length >> 8) & 255, v.length & 255]),
    v,
    Buffer.from([0, columns]),
    ...Array.from({ length: columns }, () => Buffer.from([0, 1])),
  ]);
  const head = Buffer.alloc(5);
  head[0] = 0x42;
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

test('a named statement prepared again after a schema change Tessera did not see: the client hears 0A000, as directly, not 08P01', async () => {
  await table('auto_shape');
  const text = 'select * from auto_shape where a = $1';
  const { client: a } = await WireClient.login(one.port, { user, database: TEST_DB });
  const other = await connect(one.conn(user));
  const ask = async (...bytes: Buffer[]) => {
    a.send(...bytes);
    return (await a.readUntil('Z')).map(describe);
  };
  try {
    assert.equal(await ask(parse(text, 'q'), serialize.describe({ type: 'S', name: 'q' }), serialize.sync()), ['1', 't', 'T', 'Z:I']);
    assert.equal((await ask(bindPerColumn('q', '2', 2), serialize.execute(), serialize.sync()))[0], '2');
    // Another client's DISCARD ALL empties the one backend: Tessera prepares 'q' there again when
    // it is next used, after a schema change only PostgreSQL saw.
    await other.query('DISCARD ALL');
    await cluster.query('alter table auto_shape add column c int default 7', [], TEST_DB);
    const stale = await ask(bindPerColumn('q', '2', 2), serialize.execute(), serialize.sync());
    assert.equal(stale, ['E:0A000:cached plan must not change result type', 'Z:I']);
    // As a driver recovers: the statement prepared again under its name sees the new shape.
    const again = await ask(serialize.close({ type: 'S', name: 'q' }), parse(text, 'q'), bindPerColumn('q', '2', 3), serialize.execute(), serialize.sync());
    assert.equal(again.slice(0, 3), ['3', '1', '2']);
    assert.ok(again.some((m) => m.startsWith('C:SELECT 1')), JSON.stringify(again));
  } finally {
    a.end();
    await other.end();
  }
});

test('postgres.js with prepare: false (unnamed statements) and node-postgres, four clients over two backends', async () => {
  const sql = postgres({ host: '127.0.0.1', port: two.port, user, database: TEST_DB, max: 4, prepare: false, onnotice: () => {} });
  const pool = new pg.Pool({ ...two.conn(user), max: 4 });
  try {
    for (let i = 0; i < 30; i++) {
      const [a, b] = await Promise.all([sql`select ${i}::int + 1 as v`, pool.query('select $1::int * 3 as v', [i])]);
      assert.is(a[0].v, i + 1);
      assert.is(b.rows[0].v, i * 3);
    }
  } finally {
    await sql.end();
    await pool.end();
  }
});

test('pgbench -M extended through auto_prepare: every transaction completes', async () => {
  const init = await run(`${PG_BIN}/pgbench`, ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'postgres', TEST_DB], { env: { PGPASSWORD: cluster.superPassword } });
  assert.is(init.code, 0, init.stderr);
  await cluster.query(`grant select, update on pgbench_accounts, pgbench_branches, pgbench_tellers to ${user}; grant insert on pgbench_history to ${user}`, [], TEST_DB);
  const bench = await run(`${PG_BIN}/pgbench`, ['-n', '-M', 'extended', '-c', '6', '-j', '2', '-t', '100', '-h', '127.0.0.1', '-p', String(two.port), '-U', user, TEST_DB], { timeoutMs: 120000 });
  assert.is(bench.code, 0, `pgbench exited ${bench.code}\n${bench.stderr}`);
  assert.match(bench.stdout, /number of transactions actually processed: 600\/600/);
});

test.run();
