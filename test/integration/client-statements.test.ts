// Prepared statements in transaction mode as real drivers use them (issue 15): each client's
// statement names are its own, DEALLOCATE / DISCARD ALL touch only that client's view, a schema
// change is recovered from as on a direct connection, SQL-level PREPARE/EXECUTE/DEALLOCATE work
// across transactions, and a Parse Tessera can answer itself never waits for a server. Every test
// runs with fewer backends than clients, so work really moves between backends. A test whose
// driver is not installed is skipped and says so (.ci/run installs them).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import postgres from 'postgres';
import { ROLES, TEST_DB, PG_BIN, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, run, type RunningTessera } from '../support/tessera.js';

let cluster: Cluster;
let t: RunningTessera;
const user = ROLES.trust.user;
/** The Debian interpreter, which has python3-psycopg2 and python3-psycopg. */
const PYTHON = '/usr/bin/python3';
const JDBC_JAR = '/usr/share/java/postgresql.jar';

function have(file: string): boolean {
  return fs.existsSync(file);
}

/** Is `code` runnable? (exit 0) */
async function works(cmd: string, args: string[]): Promise<boolean> {
  try {
    return (await run(cmd, args, { timeoutMs: 30000 })).code === 0;
  } catch {
    return false;
  }
}

const tools = {
  psycopg2: have(PYTHON) && (await works(PYTHON, ['-c', 'import psycopg2'])),
  psycopg: have(PYTHON) && (await works(PYTHON, ['-c', 'import psycopg'])),
  ruby: await works('ruby', ['-e', 'require "pg"']),
  java: have(JDBC_JAR) && (await works('java', ['-version'])),
};

/** A test that needs `tool`: skipped, and said so, when it is missing. */
function needs(tool: keyof typeof tools, name: string, fn: () => Promise<void>): void {
  if (tools[tool]) test(name, fn);
  else {
    console.log(`SKIPPED (${tool} is not installed): ${name}`);
    test.skip(name, fn);
  }
}

test.before(async () => {
  cluster = await sharedCluster();
  t = await startTessera({ pool_mode: 'transaction', default_pool_size: 2, databases: { '*': clusterEntry(cluster) } });
});

test.after(async () => {
  await t?.stop();
});

const dsn = () => `host=127.0.0.1 port=${t.port} user=${user} dbname=${TEST_DB}`;

/** Runs a driver program; its stdout, after asserting it exited 0. */
async function program(cmd: string, args: string[], timeoutMs = 90000): Promise<string> {
  const r = await run(cmd, args, { timeoutMs });
  assert.is(r.code, 0, `${cmd} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/**
 * Runs a Python program's work(n) in 4 threads, one connection each; any exception it raises
 * fails the test (with its repr).
 */
async function inThreads(program_: string): Promise<void> {
  const harness = `
import threading
errors = []
def guarded(n):
    try:
        work(n)
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=guarded, args=(i,)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print("errors:", errors)
`;
  const out = await program(PYTHON, ['-c', program_ + harness]);
  assert.is(out.trim(), 'errors: []');
}

/** A fresh table owned by the superuser (so its ALTER can come from outside Tessera). */
async function table(name: string): Promise<void> {
  await cluster.query(`drop table if exists ${name}; create table ${name} (a int, b text); insert into ${name} select g, 'r' || g from generate_series(1, 5) g; grant select on ${name} to ${user}`, [], TEST_DB);
}

test('DEALLOCATE ALL and DISCARD ALL run as named statements affect only their client', async () => {
  const clients = await Promise.all(Array.from({ length: 4 }, () => connect(t.conn(user))));
  try {
    const use = async (c: pg.Client, k: number) => (await c.query({ name: 'add', text: 'select $1::int + 1 as n', values: [k] })).rows[0].n;
    for (const c of clients) for (let k = 0; k < 3; k++) assert.is(await use(c, k), k + 1);
    await clients[0].query({ name: 'dropall', text: 'DEALLOCATE ALL' });
    // node-postgres still believes "add" is prepared and sends only Bind: PostgreSQL's own answer.
    const gone = await rejection(use(clients[0], 1));
    assert.is(gone.code, '26000');
    assert.is(gone.message, 'prepared statement "add" does not exist');
    await clients[1].query({ name: 'discard', text: 'DISCARD ALL' });
    assert.is((await rejection(use(clients[1], 1))).message, 'prepared statement "add" does not exist');
    // Everyone else's statement still works, on every backend, many times over.
    for (let round = 0; round < 10; round++) {
      await Promise.all(clients.slice(2).map(async (c, i) => assert.is(await use(c, round + i), round + i + 1)));
    }
    // And the two can prepare again under the same name.
    for (const c of clients.slice(0, 2)) {
      assert.is((await c.query({ name: 'add2', text: 'select $1::int + 1 as n', values: [7] })).rows[0].n, 8);
    }
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
});

test('errors that name a statement name the client\'s, never Tessera\'s', async () => {
  const c = await connect(t.conn(user));
  const other = await connect(t.conn(user));
  try {
    await c.query({ name: 'mine', text: 'select 1 as one' });
    await other.query({ name: 'theirs', text: 'select 1 as one' });
    await c.query('DEALLOCATE mine');
    assert.is((await rejection(c.query('DEALLOCATE mine'))).message, 'prepared statement "mine" does not exist');
    const e = await rejection(c.query({ name: 'mine', text: 'select 1 as one' }));
    assert.is(e.code, '26000');
    assert.is(e.message, 'prepared statement "mine" does not exist');
    // The other client's statement of the same text is untouched.
    assert.is((await other.query({ name: 'theirs', text: 'select 1 as one' })).rows[0].one, 1);
    // DEALLOCATE inside a transaction block, and in an aborted one, as PostgreSQL answers.
    await c.query({ name: 'again', text: 'select 2 as two' });
    await c.query('begin');
    await c.query('deallocate again');
    await rejection(c.query('select 1/0'));
    const aborted = await rejection(c.query('deallocate all'));
    assert.is(aborted.code, '25P02');
    await c.query('rollback');
  } finally {
    await c.end();
    await other.end();
  }
});

test('SQL PREPARE / EXECUTE / DEALLOCATE are each client\'s own and work across transactions', async () => {
  const one = await startTessera({ pool_mode: 'transaction', default_pool_size: 1, databases: { '*': clusterEntry(cluster) } });
  const [a, b, c] = await Promise.all([0, 1, 2].map(() => connect(one.conn(user))));
  try {
    await a.query('PREPARE q(int) AS select $1 + 1 as n');
    await b.query(`PREPARE q AS select 'b' as who`);
    for (let i = 0; i < 5; i++) {
      assert.is((await a.query(`EXECUTE q(${i})`)).rows[0].n, i + 1);
      assert.is((await b.query('EXECUTE q')).rows[0].who, 'b');
    }
    assert.is((await a.query('explain (costs off) execute q(1)')).rows.length > 0, true);
    // A client that never prepared q does not see another's.
    const none = await rejection(c.query('EXECUTE q'));
    assert.is(none.code, '26000');
    assert.is(none.message, 'prepared statement "q" does not exist');
    const dup = await rejection(a.query('PREPARE q AS select 1'));
    assert.is(dup.code, '42P05');
    assert.is(dup.message, 'prepared statement "q" already exists');
    await a.query('DEALLOCATE q');
    assert.is((await rejection(a.query('EXECUTE q(1)'))).message, 'prepared statement "q" does not exist');
    assert.is((await b.query('EXECUTE q')).rows[0].who, 'b');
    await a.query('PREPARE q AS select 10 as n');
    assert.is((await a.query('EXECUTE q')).rows[0].n, 10);
    await b.query('DEALLOCATE ALL');
    assert.is((await rejection(b.query('EXECUTE q'))).code, '26000');
    assert.is((await a.query('EXECUTE q')).rows[0].n, 10);
    // pg_prepared_statements shows the client its own statements under its own names.
    assert.ok((await a.query(`select count(*)::int as n from pg_prepared_statements where name = 'q'`)).rows[0].n >= 1);
  } finally {
    await Promise.all([a, b, c].map((x) => x.end()));
    await one.stop();
  }
});

if (PG_BIN) {
  test('psql: PREPARE in one transaction, EXECUTE in later ones, with another client between', async () => {
    const one = await startTessera({ pool_mode: 'transaction', default_pool_size: 1, databases: { '*': clusterEntry(cluster) } });
    const b = await connect(one.conn(user));
    try {
      await b.query(`PREPARE p AS select 'not yours' as v`);
      const r = await run(`${PG_BIN}/psql`, ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(one.port), '-U', user, TEST_DB], {
        input: `PREPARE p(int) AS select $1 * 2;\nEXECUTE p(21);\nbegin;\nEXECUTE p(5);\ncommit;\nDEALLOCATE p;\n`,
      });
      assert.is(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim().split('\n'), ['PREPARE', '42', 'BEGIN', '10', 'COMMIT', 'DEALLOCATE']);
      assert.is((await b.query('EXECUTE p')).rows[0].v, 'not yours');
    } finally {
      await b.end();
      await one.stop();
    }
  });

  test('pgbench -M prepared -c 6 -j 1 over 5 backends completes (a known Parse waits for no server)', async () => {
    const five = await startTessera({ pool_mode: 'transaction', default_pool_size: 5, databases: { '*': clusterEntry(cluster) } });
    try {
      const init = await run(`${PG_BIN}/pgbench`, ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'postgres', TEST_DB], { env: { PGPASSWORD: cluster.superPassword } });
      assert.is(init.code, 0, init.stderr);
      await cluster.query(`grant select, update on pgbench_accounts, pgbench_branches, pgbench_tellers to ${user}; grant insert on pgbench_history to ${user}`, [], TEST_DB);
      const bench = await run(`${PG_BIN}/pgbench`, ['-n', '-M', 'prepared', '-c', '6', '-j', '1', '-t', '40', '-h', '127.0.0.1', '-p', String(five.port), '-U', user, TEST_DB], { timeoutMs: 90000 });
      assert.is(bench.code, 0, `pgbench exited ${bench.code} (killed when it stalled)\n${bench.stderr}`);
      assert.match(bench.stdout, /number of transactions actually processed: 240\/240/);
    } finally {
      await five.stop();
    }
  });
}

test('a Parse and Sync of a known statement are answered while every backend is busy', async () => {
  const one = await startTessera({ pool_mode: 'transaction', default_pool_size: 1, databases: { '*': clusterEntry(cluster) } });
  const holder = await connect(one.conn(user));
  const c = await connect(one.conn(user));
  try {
    await c.query({ name: 'warm', text: 'select $1::int as v', values: [1] });
    await holder.query('begin');
    // c's own driver-level prepare of the same text (Parse + Sync) needs no server.
    const conn = (c as unknown as { connection: { parse(o: object): void; sync(): void; once(e: string, f: () => void): void } }).connection;
    const ready = new Promise<string>((resolve) => conn.once('readyForQuery', () => resolve('ready')));
    conn.parse({ name: 'again', text: 'select $1::int as v', types: [] });
    conn.sync();
    const got = await Promise.race([ready, new Promise<string>((r) => setTimeout(() => r('waited for a server'), 5000))]);
    await holder.query('commit');
    assert.is(got, 'ready');
  } finally {
    await holder.end();
    await c.end();
    await one.stop();
  }
});

test('postgres.js recovers from "cached plan must not change result type" as it does directly', async () => {
  await table('stmts_alter_pjs');
  const sql = postgres({ host: '127.0.0.1', port: t.port, user, database: TEST_DB, max: 4, prepare: true, onnotice: () => {} });
  try {
    for (let i = 0; i < 8; i++) await Promise.all([1, 2, 3, 4].map((a) => sql`select * from stmts_alter_pjs where a = ${a}`));
    await cluster.query('alter table stmts_alter_pjs add column c int default 7', [], TEST_DB);
    for (let i = 0; i < 8; i++) {
      const rows = await Promise.all([1, 2, 3, 4].map((a) => sql`select * from stmts_alter_pjs where a = ${a}`));
      for (const r of rows) assert.equal(Object.keys(r[0]), ['a', 'b', 'c']);
    }
  } finally {
    await sql.end();
  }
});

test('a schema change made through Tessera never hands a stale statement to a new preparation', async () => {
  const owner = await connect(t.conn(user));
  await owner.query(`drop table if exists stmts_alter_pg; create table stmts_alter_pg (a int, b text); insert into stmts_alter_pg values (1, 'x'), (2, 'y'), (3, 'z'), (4, 'w')`);
  const clients = await Promise.all([0, 1, 2, 3].map(() => connect(t.conn(user))));
  try {
    for (const c of clients) await c.query({ name: 'sel', text: 'select * from stmts_alter_pg where a = $1', values: [1] });
    await owner.query('alter table stmts_alter_pg add column c int default 7');
    // New preparations (new connections) of the same text see the new shape at once, as directly.
    for (let k = 0; k < 4; k++) {
      const fresh = await connect(t.conn(user));
      const r = await fresh.query({ name: 'sel', text: 'select * from stmts_alter_pg where a = $1', values: [k + 1] });
      assert.equal(r.fields.map((f) => f.name), ['a', 'b', 'c']);
      await fresh.end();
    }
  } finally {
    await Promise.all([owner, ...clients].map((c) => c.end().catch(() => {})));
  }
});

needs('psycopg', 'psycopg 3: a full statement cache (prepared_max) sends DEALLOCATE, and that works', async () => {
  await inThreads(`
import psycopg
def work(n):
        with psycopg.connect(${JSON.stringify(dsn())}, autocommit=True, prepare_threshold=0) as conn:
            conn.prepared_max = 4
            for rnd in range(6):
                for k in range(10):
                    v = conn.execute("select %s::int + " + str(k), (rnd,)).fetchone()[0]
                    assert v == rnd + k, (v, rnd, k)
            with conn.pipeline():
                for k in range(12):
                    conn.execute("select %s::int * " + str(k + 100), (2,))
            assert conn.execute("select %s::int * 101", (2,)).fetchone()[0] == 202
`);
});

needs('psycopg', 'psycopg 3: new connections after ALTER TABLE prepare the new shape', async () => {
  await table('stmts_alter_py');
  const script = (phase: string) => `
import psycopg
for i in range(3):
    with psycopg.connect(${JSON.stringify(dsn())}, autocommit=True, prepare_threshold=0) as conn:
        for a in range(1, 4):
            cur = conn.execute("select * from stmts_alter_py where a = %s", (a,))
            print("${phase}", [d.name for d in cur.description])
`;
  const before = await program(PYTHON, ['-c', script('before')]);
  assert.ok(before.split('\n').filter(Boolean).every((l) => l === "before ['a', 'b']"), before);
  await cluster.query('alter table stmts_alter_py add column c int', [], TEST_DB);
  // pgjdbc, postgres.js and the rest get the error once, directly too; a new connection never does.
  // Through a pool the first use on each backend may still meet the old plan; it must not last.
  const first = await run(PYTHON, ['-c', script('after')]);
  const after = await program(PYTHON, ['-c', script('after')]);
  assert.ok(after.split('\n').filter(Boolean).every((l) => l === "after ['a', 'b', 'c']"), after + first.stderr);
});

needs('psycopg2', 'psycopg2: SQL PREPARE / EXECUTE / DEALLOCATE across transactions, 4 connections over 2 backends', async () => {
  await inThreads(`
import psycopg2
def work(n):
        conn = psycopg2.connect(${JSON.stringify(dsn())})
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("PREPARE mine(int) AS select $1 + %d" % n)
        for i in range(50):
            cur.execute("EXECUTE mine(%s)", (i,))
            assert cur.fetchone()[0] == i + n
        cur.execute("DEALLOCATE mine")
        try:
            cur.execute("EXECUTE mine(1)")
            errors.append("EXECUTE after DEALLOCATE worked")
        except psycopg2.Error as e:
            if e.pgcode != "26000" or 'prepared statement "mine" does not exist' not in str(e):
                errors.append(repr(e))
        conn.close()
`);
});

needs('ruby', 'ruby-pg: prepare("x1") then exec("deallocate x1"), as PostgreSQL answers', async () => {
  const out = await program('ruby', [
    '-e',
    `
require "pg"
conns = 3.times.map { PG.connect(${JSON.stringify(dsn())}) }
conns.each_with_index do |c, i|
  c.prepare("x1", "select $1::int + #{i}")
  raise "bad" unless c.exec_prepared("x1", [1]).getvalue(0, 0) == (1 + i).to_s
end
c = conns[0]
c.exec("deallocate x1")
begin
  c.exec_prepared("x1", [1]); puts "no error"
rescue PG::InvalidSqlStatementName => e
  puts e.message.lines.first.strip
end
begin
  c.exec("deallocate x1"); puts "no error"
rescue PG::InvalidSqlStatementName => e
  puts e.message.lines.first.strip
end
c.prepare("x1", "select 5")
begin
  c.prepare("x1", "select 6"); puts "no error"
rescue PG::DuplicatePstatement => e
  puts e.message.lines.first.strip
end
puts c.exec_prepared("x1").getvalue(0, 0)
conns[1..].each_with_index { |o, i| puts o.exec_prepared("x1", [2]).getvalue(0, 0) }
conns.each(&:close)
`,
  ]);
  assert.equal(out.trim().split('\n'), [
    'ERROR:  prepared statement "x1" does not exist',
    'ERROR:  prepared statement "x1" does not exist',
    'ERROR:  prepared statement "x1" already exists',
    '5',
    '3',
    '4',
  ]);
});

needs('java', 'pgjdbc: DISCARD ALL then reusing a PreparedStatement; ALTER TABLE recovered; 5 connections over 2 backends', async () => {
  await table('stmts_alter_jdbc');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-jdbc-'));
  try {
    fs.writeFileSync(
      path.join(dir, 'Main.java'),
      `
import java.sql.*;
import java.util.*;
public class Main {
  public static void main(String[] args) throws Exception {
    String url = "jdbc:postgresql://127.0.0.1:${t.port}/${TEST_DB}?user=${user}&prepareThreshold=1&assumeMinServerVersion=10";
    List<Connection> conns = new ArrayList<>();
    for (int i = 0; i < 5; i++) conns.add(DriverManager.getConnection(url));
    List<PreparedStatement> ps = new ArrayList<>();
    for (Connection c : conns) ps.add(c.prepareStatement("select * from stmts_alter_jdbc where a = ?"));
    for (int round = 0; round < 6; round++) for (PreparedStatement p : ps) run(p, 2);
    conns.get(0).createStatement().execute("DISCARD ALL");
    conns.get(1).createStatement().execute("DEALLOCATE ALL");
    for (int round = 0; round < 6; round++) for (PreparedStatement p : ps) run(p, 2);
    System.out.println("discard ok");
    try (Statement s = DriverManager.getConnection("jdbc:postgresql://127.0.0.1:${cluster.port}/${TEST_DB}?user=postgres&password=${cluster.superPassword}").createStatement()) {
      s.execute("alter table stmts_alter_jdbc add column c int default 7");
    }
    int failures = 0;
    for (int round = 0; round < 6; round++) for (PreparedStatement p : ps) {
      try { run(p, 3); } catch (SQLException e) {
        if (!"0A000".equals(e.getSQLState())) throw e;
        failures++;
      }
    }
    // Directly, each connection meets the changed plan at most once, then re-prepares.
    System.out.println(failures <= 5 ? "alter ok" : "alter failed " + failures + " times");
    for (Connection c : conns) c.close();
  }
  static void run(PreparedStatement p, int columns) throws SQLException {
    p.setInt(1, 2);
    try (ResultSet rs = p.executeQuery()) {
      if (!rs.next()) throw new RuntimeException("no row");
      if (rs.getMetaData().getColumnCount() != columns) throw new RuntimeException("columns: " + rs.getMetaData().getColumnCount());
    }
  }
}
`,
    );
    const out = await program('java', ['-cp', JDBC_JAR, path.join(dir, 'Main.java')], 120000);
    assert.equal(out.trim().split('\n'), ['discard ok', 'alter ok']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
