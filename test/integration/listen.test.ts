// LISTEN/NOTIFY in transaction mode (issue 15, failure 8): a listener holds no backend. Tessera
// keeps one listening server connection per pool, LISTENs there on the union of its clients'
// channels, and delivers each notification to the clients listening on its channel, once, in
// order, between their messages. Driven by node-postgres, psql and psycopg 3 through a pool
// smaller than the client count.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { ROLES, TEST_DB, PG_BIN, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, until, run, type RunningTessera } from '../support/tessera.js';

let cluster: Cluster;
let t: RunningTessera;
const user = ROLES.trust.user;
/** The listening connection's application_name (what an admin sees in pg_stat_activity). */
const LISTENER_APP = 'tessera listener';
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : null;

test.before(async () => {
  cluster = await sharedCluster();
  // Two backends for up to a dozen clients, and a short query_wait_timeout: a client pinned by
  // LISTEN would make the others fail with query_wait_timeout instead of hanging the test.
  t = await startTessera({ pool_mode: 'transaction', default_pool_size: 2, query_wait_timeout: 5, databases: { '*': clusterEntry(cluster) } });
});

test.after(async () => {
  await t?.stop();
});

type Note = { channel: string; payload: string };

/** A node-postgres client through Tessera that records every notification it gets. */
async function listener(): Promise<{ c: pg.Client; notes: Note[] }> {
  const c = await connect(t.conn(user));
  const notes: Note[] = [];
  c.on('notification', (n) => notes.push({ channel: n.channel, payload: n.payload ?? '' }));
  return { c, notes };
}

/** Waits for the marker notification on `channel`: everything committed before it has arrived. */
async function waitFor(notes: Note[], channel: string, payload: string): Promise<void> {
  await until(`notification ${channel}/${payload}`, async () => notes.some((n) => n.channel === channel && n.payload === payload));
}

async function listenerBackends(): Promise<number[]> {
  const { rows } = await cluster.query(`select pid from pg_stat_activity where application_name = $1 and datname = $2`, [LISTENER_APP, TEST_DB]);
  return rows.map((r) => r.pid as number);
}

test('LISTEN does not pin: four listeners and a fifth client share two backends', async () => {
  const ls = await Promise.all(Array.from({ length: 4 }, listener));
  const other = await connect(t.conn(user));
  try {
    for (const { c } of ls) {
      const r = await c.query('LISTEN pinless');
      assert.is(r.command, 'LISTEN');
    }
    // With each listener pinned to a backend, this would wait for one and fail.
    const r = await other.query('select 1 as one');
    assert.is(r.rows[0].one, 1);
    await other.query(`NOTIFY pinless, 'hello'`);
    for (const { notes } of ls) await waitFor(notes, 'pinless', 'hello');
    for (const { notes } of ls) assert.equal(notes, [{ channel: 'pinless', payload: 'hello' }]);
    // The listeners still run queries of their own over the same two backends.
    const sums = await Promise.all(ls.map(({ c }, i) => c.query('select $1::int + 1 as n', [i])));
    assert.equal(sums.map((s) => s.rows[0].n), [1, 2, 3, 4]);
  } finally {
    await Promise.all([...ls.map(({ c }) => c.end()), other.end()]);
  }
});

test('channel names are case-folded and quoted as PostgreSQL does', async () => {
  const { c, notes } = await listener();
  const sender = await connect(t.conn(user));
  try {
    await c.query('LISTEN MixedCase');
    await c.query('listen "Quoted""Name"');
    await sender.query(`NOTIFY mixedcase, 'folded'`);
    await sender.query(`NOTIFY "MixedCase", 'not folded'`);
    await sender.query(`select pg_notify('Quoted"Name', 'quoted')`);
    await sender.query(`NOTIFY quoted_done`);
    await c.query('LISTEN quoted_done');
    await sender.query(`NOTIFY quoted_done, 'end'`);
    await waitFor(notes, 'quoted_done', 'end');
    assert.equal(notes, [
      { channel: 'mixedcase', payload: 'folded' },
      { channel: 'Quoted"Name', payload: 'quoted' },
      { channel: 'quoted_done', payload: 'end' },
    ]);
  } finally {
    await Promise.all([c.end(), sender.end()]);
  }
});

test('LISTEN follows its transaction: rolled back (also to a savepoint) it never takes effect', async () => {
  const { c, notes } = await listener();
  const sender = await connect(t.conn(user));
  try {
    await c.query('LISTEN tx_marker');
    await c.query('BEGIN');
    const r = await c.query('LISTEN tx_rolled_back');
    assert.is(r.command, 'LISTEN');
    await c.query('ROLLBACK');
    await c.query('BEGIN');
    await c.query('LISTEN tx_committed');
    await c.query('SAVEPOINT s');
    await c.query('LISTEN tx_to_savepoint');
    await c.query('ROLLBACK TO SAVEPOINT s');
    // Not yet committed: a NOTIFY now reaches nobody on this client.
    await sender.query(`NOTIFY tx_committed, 'too early'`);
    await c.query('COMMIT');
    await c.query('BEGIN');
    await c.query('UNLISTEN tx_marker');
    await c.query('select 1/0').catch(() => {});
    await c.query('COMMIT'); // a failed transaction: COMMIT rolls back, the UNLISTEN with it
    for (const ch of ['tx_rolled_back', 'tx_to_savepoint', 'tx_committed']) await sender.query(`NOTIFY ${ch}, 'after'`);
    await sender.query(`NOTIFY tx_marker, 'end'`);
    await waitFor(notes, 'tx_marker', 'end');
    assert.equal(notes, [
      { channel: 'tx_committed', payload: 'after' },
      { channel: 'tx_marker', payload: 'end' },
    ]);
  } finally {
    await Promise.all([c.end(), sender.end()]);
  }
});

test('LISTEN in an aborted transaction fails as in PostgreSQL, and its client goes on', async () => {
  const { c, notes } = await listener();
  try {
    await c.query('BEGIN');
    await c.query('select 1/0').catch(() => {});
    const err = await c.query('LISTEN aborted_tx').then(
      () => null,
      (e: Error & { code?: string }) => e,
    );
    assert.is(err?.code, '25P02');
    await c.query('ROLLBACK');
    await c.query('LISTEN aborted_tx_ok');
    await c.query(`NOTIFY aborted_tx, 'no'`);
    await c.query(`NOTIFY aborted_tx_ok, 'yes'`);
    await waitFor(notes, 'aborted_tx_ok', 'yes');
    assert.equal(notes, [{ channel: 'aborted_tx_ok', payload: 'yes' }]);
  } finally {
    await c.end();
  }
});

test('a client hears its own NOTIFY and pg_notify() once, after its commit', async () => {
  const { c, notes } = await listener();
  try {
    await c.query('LISTEN self');
    await c.query(`NOTIFY self, 'one'`);
    await c.query('BEGIN');
    await c.query(`select pg_notify('self', 'two')`);
    await c.query('ROLLBACK');
    await c.query('BEGIN');
    await c.query(`select pg_notify('self', 'three')`);
    await c.query('COMMIT');
    await c.query(`NOTIFY self, 'end'`);
    await waitFor(notes, 'self', 'end');
    assert.equal(
      notes.map((n) => n.payload),
      ['one', 'three', 'end'],
    );
  } finally {
    await c.end();
  }
});

test('UNLISTEN, UNLISTEN * and disconnects update the union; the listening connection goes with the last channel', async () => {
  const a = await listener();
  const b = await listener();
  const sender = await connect(t.conn(user));
  try {
    await a.c.query('LISTEN u1; LISTEN u2');
    await b.c.query('LISTEN u1');
    await b.c.query('LISTEN u_marker');
    assert.is((await listenerBackends()).length, 1, 'one listening connection for the pool');
    const r = await a.c.query('UNLISTEN u1');
    assert.is(r.command, 'UNLISTEN');
    await sender.query(`NOTIFY u1, 'x'; NOTIFY u2, 'y'; NOTIFY u_marker, 'm1'`);
    await waitFor(b.notes, 'u_marker', 'm1');
    await a.c.query('UNLISTEN *');
    await sender.query(`NOTIFY u2, 'z'; NOTIFY u1, 'w'; NOTIFY u_marker, 'm2'`);
    await waitFor(b.notes, 'u_marker', 'm2');
    assert.equal(a.notes, [{ channel: 'u2', payload: 'y' }]);
    assert.equal(b.notes, [
      { channel: 'u1', payload: 'x' },
      { channel: 'u_marker', payload: 'm1' },
      { channel: 'u1', payload: 'w' },
      { channel: 'u_marker', payload: 'm2' },
    ]);
    await b.c.end();
    // Nobody listens any more: the listening connection is closed, not kept for nothing.
    await until('the listening connection to close', async () => (await listenerBackends()).length === 0);
  } finally {
    await Promise.all([a.c.end(), b.c.end().catch(() => {}), sender.end()]);
  }
});

test('10 listeners over 2 backends get every NOTIFY once, in order per channel, while running queries', async () => {
  const ls = await Promise.all(Array.from({ length: 10 }, listener));
  const senders = await Promise.all([connect(t.conn(user)), connect(t.conn(user))]);
  const N = 150;
  try {
    // Even listeners take both channels, odd ones only their own.
    await Promise.all(ls.map(({ c }, i) => c.query(i % 2 === 0 ? 'LISTEN ten_a; LISTEN ten_b' : 'LISTEN ten_b')));
    let busy = true;
    // Each listener keeps querying, so notifications arrive while it holds a backend too.
    const work = ls.map(async ({ c }, i) => {
      let k = 0;
      while (busy) {
        const r = await c.query(k % 2 ? 'select $1::int as k' : 'begin; select 1; commit', k % 2 ? [k] : undefined);
        if (k % 2) assert.is((r as pg.QueryResult).rows[0].k, k);
        k++;
      }
      return i;
    });
    await Promise.all(
      senders.map(async (s, j) => {
        const channel = j === 0 ? 'ten_a' : 'ten_b';
        for (let n = 0; n < N; n++) {
          if (n % 3 === 0) await s.query(`select pg_notify($1, $2)`, [channel, String(n)]);
          else await s.query(`NOTIFY ${channel}, '${n}'`);
        }
        await s.query(`NOTIFY ${channel}, 'end'`);
      }),
    );
    for (const [i, { notes }] of ls.entries()) {
      if (i % 2 === 0) await waitFor(notes, 'ten_a', 'end');
      await waitFor(notes, 'ten_b', 'end');
    }
    busy = false;
    await Promise.all(work);
    const expected = [...Array.from({ length: N }, (_, n) => String(n)), 'end'];
    for (const [i, { notes }] of ls.entries()) {
      assert.equal(
        notes.filter((n) => n.channel === 'ten_b').map((n) => n.payload),
        expected,
        `listener ${i}, ten_b`,
      );
      assert.equal(
        notes.filter((n) => n.channel === 'ten_a').map((n) => n.payload),
        i % 2 === 0 ? expected : [],
        `listener ${i}, ten_a`,
      );
    }
    const { rows } = await cluster.query(`select count(*)::int as n from pg_stat_activity where datname = $1 and usename = $2 and application_name <> $3`, [TEST_DB, user, LISTENER_APP]);
    assert.ok(rows[0].n <= 2, `${rows[0].n} pooled backends for 12 clients`);
  } finally {
    await Promise.all([...ls.map(({ c }) => c.end()), ...senders.map((s) => s.end())]);
  }
});

test('a dropped listening connection is re-established and LISTENs again; clients see no error', async () => {
  const { c, notes } = await listener();
  const sender = await connect(t.conn(user));
  let clientError: Error | null = null;
  c.on('error', (e) => (clientError = e));
  try {
    await c.query('LISTEN dropped');
    await sender.query(`NOTIFY dropped, 'before'`);
    await waitFor(notes, 'dropped', 'before');
    const [pid] = await listenerBackends();
    assert.ok(pid, 'the pool has a listening connection');
    await cluster.query('select pg_terminate_backend($1)', [pid]);
    // Notifications sent while it is down are lost (README says so): send until one arrives.
    let n = 0;
    await until('a notification after the reconnect', async () => {
      await sender.query(`NOTIFY dropped, 'after ${n++}'`);
      return notes.length > 1;
    });
    assert.ok(!(await listenerBackends()).includes(pid), 'a new listening connection');
    await sender.query(`NOTIFY dropped, 'last'`);
    await waitFor(notes, 'dropped', 'last');
    const after = notes.slice(1).map((x) => x.payload);
    assert.is(after.at(-1), 'last');
    assert.equal(after, [...new Set(after)], 'no duplicates');
    assert.is(clientError, null);
    assert.is((await c.query('select 2 as two')).rows[0].two, 2);
  } finally {
    await Promise.all([c.end(), sender.end()]);
  }
});

test('session mode is unchanged: LISTEN runs on the client\'s own backend', async () => {
  const s = await startTessera({ pool_mode: 'session', default_pool_size: 2, databases: { '*': clusterEntry(cluster) } });
  try {
    const c = await connect({ ...s.conn(user) });
    const notes: string[] = [];
    c.on('notification', (n) => notes.push(n.payload ?? ''));
    await c.query('LISTEN session_chan');
    const { rows } = await c.query('select pg_listening_channels() as ch');
    assert.equal(rows, [{ ch: 'session_chan' }]);
    await c.query(`NOTIFY session_chan, 'direct'`);
    await until('the notification', async () => notes.length > 0);
    assert.equal(notes, ['direct']);
    assert.is((await listenerBackends()).length, 0, 'no listening connection in session mode');
    await c.end();
  } finally {
    await s.stop();
  }
});

if (PG_BIN) {
  test('psql: LISTEN through transaction pooling prints the notifications others send', async () => {
    const sender = await connect(t.conn(user));
    let sending = true;
    let n = 0;
    const loop = (async () => {
      while (sending) {
        await sender.query(`NOTIFY psql_chan, 'n${n++}'`);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    try {
      const script = 'LISTEN psql_chan;\nselect pg_sleep(0.5);\nselect 1;\nselect pg_sleep(0.5);\nselect 2;\n';
      const out = await run(`${PG_BIN}/psql`, ['-X', '-h', '127.0.0.1', '-p', String(t.port), '-U', user, '-d', TEST_DB], { input: script });
      assert.is(out.code, 0, out.stderr);
      assert.match(out.stdout, /^LISTEN$/m);
      const got = [...out.stdout.matchAll(/Asynchronous notification "psql_chan" with payload "n(\d+)" received from server process with PID \d+\./g)].map((m) => Number(m[1]));
      assert.ok(got.length > 0, out.stdout);
      assert.equal(got, [...got].sort((x, y) => x - y), 'in order');
      assert.equal(got, [...new Set(got)], 'no duplicates');
    } finally {
      sending = false;
      await loop;
      await sender.end();
    }
  });
} else test.skip('psql: LISTEN through transaction pooling (psql not installed)', () => {});

const PSYCOPG_LISTENER = `
import sys, psycopg
conn = psycopg.connect(sys.argv[1])  # autocommit off: LISTEN runs in a transaction, as psycopg's users write it
conn.execute("LISTEN psy_chan")
conn.execute("select 1")
conn.commit()
print("ready", flush=True)
got = []
for n in conn.notifies():
    got.append(n.payload)
    if n.payload == "end":
        break
print(" ".join(got), flush=True)
`;

/** /usr/bin/python3 with psycopg 3 importable (Debian's python3-psycopg). */
const HAS_PSYCOPG = PYTHON !== null && spawnSync(PYTHON, ['-c', 'import psycopg'], { stdio: 'ignore' }).status === 0;

if (HAS_PSYCOPG) {
  test('psycopg 3: LISTEN in a committed transaction, then notifies() gets every NOTIFY once', async () => {
    const child = spawn(PYTHON!, ['-c', PSYCOPG_LISTENER, `host=127.0.0.1 port=${t.port} user=${user} dbname=${TEST_DB}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const done = new Promise<number | null>((resolve) => child.on('close', resolve));
    const killer = setTimeout(() => child.kill('SIGKILL'), 60000);
    const sender = await connect(t.conn(user));
    try {
      await until('psycopg to listen', async () => out.includes('ready') || (err !== '' && Promise.reject(new Error(err))));
      for (let i = 0; i < 20; i++) await sender.query(`select pg_notify('psy_chan', $1)`, [String(i)]);
      await sender.query(`NOTIFY psy_chan, 'end'`);
      assert.is(await done, 0, err);
      const lines = out.trim().split('\n');
      assert.is(lines.at(-1), [...Array.from({ length: 20 }, (_, i) => String(i)), 'end'].join(' '));
    } finally {
      clearTimeout(killer);
      child.kill();
      await sender.end();
    }
  });
} else test.skip('psycopg 3: LISTEN and notifies() (/usr/bin/python3 with psycopg 3 not installed)', () => {});

test.run();
