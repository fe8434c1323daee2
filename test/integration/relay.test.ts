// Queries, errors, notices, COPY and startup parameters through Tessera to a real PostgreSQL.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { needing, tool } from '../support/tools.js';
import { startTessera, clusterEntry, connect, rejection, run, type RunningTessera } from '../support/tessera.js';

let cluster: Cluster;
let session: RunningTessera;
let txn: RunningTessera;
const { user, password } = ROLES.scram;
const userlist = `"${user}" "${password}"\n`;

test.before(async () => {
  cluster = await sharedCluster();
  session = await startTessera({ auth_type: 'md5', databases: { '*': clusterEntry(cluster) } }, userlist);
  txn = await startTessera({ auth_type: 'md5', pool_mode: 'transaction', databases: { '*': clusterEntry(cluster) } }, userlist);
});

test.after(async () => {
  await session?.stop();
  await txn?.stop();
});

for (const mode of ['session', 'transaction'] as const) {
  const t = () => (mode === 'session' ? session : txn);

  test(`${mode}: queries return PostgreSQL's results, errors keep the connection usable`, async () => {
    const c = await connect(t().conn(user, password));
    try {
      const { rows } = await c.query('select $1::int + 1 as n, current_user as u', [41]);
      assert.equal(rows, [{ n: 42, u: user }]);
      const err = await rejection(c.query('selec 1'));
      assert.is(err.code, '42601');
      const again = await c.query('select 2 as two');
      assert.is(again.rows[0].two, 2);
      const many = await c.query('select g from generate_series(1, 5000) g');
      assert.is(many.rowCount, 5000);
    } finally {
      await c.end();
    }
  });

  test(`${mode}: NOTICE reaches the client`, async () => {
    const c = await connect(t().conn(user, password));
    const notices: string[] = [];
    c.on('notice', (n) => notices.push(n.message ?? ''));
    try {
      await c.query(`do $$ begin raise notice 'hello from %', 'plpgsql'; end $$`);
      assert.equal(notices, ['hello from plpgsql']);
    } finally {
      await c.end();
    }
  });

  test(`${mode}: startup parameters are honoured and do not leak to the next client`, async () => {
    const a = await connect({
      ...t().conn(user, password),
      application_name: 'tessera-test-app',
      options: '-c search_path=pg_catalog -c statement_timeout=1234 -c DateStyle=SQL,DMY',
    });
    try {
      const { rows } = await a.query(
        `select current_setting('application_name') app, current_setting('search_path') sp,
                current_setting('statement_timeout') st, current_setting('DateStyle') ds`,
      );
      assert.equal(rows[0], { app: 'tessera-test-app', sp: 'pg_catalog', st: '1234ms', ds: 'SQL, DMY' });
      // RESET goes back to the client's own startup value, as on a direct connection.
      await a.query('set search_path = public');
      await a.query('reset search_path');
      const reset = await a.query(`select current_setting('search_path') sp`);
      assert.is(reset.rows[0].sp, 'pg_catalog');
    } finally {
      await a.end();
    }
    const b = await connect(t().conn(user, password));
    try {
      const { rows } = await b.query(`select current_setting('application_name') app, current_setting('search_path') sp, current_setting('statement_timeout') st`);
      assert.equal(rows[0], { app: '', sp: '"$user", public', st: '0' });
    } finally {
      await b.end();
    }
  });

  test(`${mode}: an invalid startup parameter gets PostgreSQL's own error`, async () => {
    const err = await rejection(connect({ ...t().conn(user, password), options: '-c statement_timeout=banana' }));
    assert.is(err.code, '22023');
  });

  needing('psql')(`${mode}: psql runs queries, COPY in and COPY out`, async () => {
    const env = { PGPASSWORD: password, PGCONNECT_TIMEOUT: '10' };
    const args = ['-X', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(t().port), '-U', user, '-d', TEST_DB, '-At'];
    const table = `copy_${mode}`;
    const setup = await run(tool('psql'), [...args, '-c', `drop table if exists ${table}`, '-c', `create table ${table} (id int, name text)`], { env });
    assert.is(setup.code, 0, setup.stderr);
    const lines = Array.from({ length: 1000 }, (_, i) => `${i}\tname ${i}`).join('\n') + '\n';
    const copyIn = await run(tool('psql'), [...args, '-c', `copy ${table} from stdin`], { env, input: lines });
    assert.is(copyIn.code, 0, copyIn.stderr);
    assert.is(copyIn.stdout.trim(), 'COPY 1000');
    const copyOut = await run(tool('psql'), [...args, '-c', `copy (select * from ${table} order by id) to stdout`], { env });
    assert.is(copyOut.code, 0, copyOut.stderr);
    assert.is(copyOut.stdout, lines);
    const q = await run(tool('psql'), [...args, '-c', `select count(*), sum(id) from ${table}`], { env });
    assert.is(q.stdout.trim(), '1000|499500');
  });
}

test('session mode: session state (temp tables, prepared statements) lives as long as the client', async () => {
  const c = await connect(session.conn(user, password));
  try {
    await c.query('create temp table t_session (x int)');
    await c.query('prepare p1 as select 1 as one');
    await c.query('insert into t_session values (1)');
    const { rows } = await c.query('execute p1');
    assert.is(rows[0].one, 1);
  } finally {
    await c.end();
  }
  // The next client of the same server finds it reset (DISCARD ALL).
  const d = await connect(session.conn(user, password));
  try {
    const err = await rejection(d.query('select * from t_session'));
    assert.is(err.code, '42P01');
  } finally {
    await d.end();
  }
});

test.run();
