// The admin console through the wire, as PgBouncer's users drive it: psql or a driver connected to
// the virtual database "pgbouncer".
import fs from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { needing, tool } from '../support/tools.js';
import { startTessera, clusterEntry, connect, rejection, run, until, type RunningTessera } from '../support/tessera.js';

let cluster: Cluster;
let t: RunningTessera;
const user = ROLES.trust.user;

// PgBouncer's documented column orders (../shared/PGBOUNCER-FACTS.md).
const COLUMNS: Record<string, string[]> = {
  POOLS: ['database', 'user', 'cl_active', 'cl_waiting', 'cl_active_cancel_req', 'cl_waiting_cancel_req', 'sv_active', 'sv_active_cancel', 'sv_being_canceled', 'sv_idle', 'sv_used', 'sv_tested', 'sv_login', 'maxwait', 'maxwait_us', 'pool_mode', 'load_balance_hosts'],
  CLIENTS: ['type', 'user', 'database', 'replication', 'state', 'addr', 'port', 'local_addr', 'local_port', 'connect_time', 'request_time', 'wait', 'wait_us', 'close_needed', 'ptr', 'link', 'remote_pid', 'tls', 'application_name', 'prepared_statements', 'id'],
  DATABASES: ['name', 'host', 'port', 'database', 'force_user', 'pool_size', 'min_pool_size', 'reserve_pool_size', 'server_lifetime', 'pool_mode', 'load_balance_hosts', 'max_connections', 'current_connections', 'max_client_connections', 'current_client_connections', 'paused', 'disabled'],
  USERS: ['name', 'pool_size', 'reserve_pool_size', 'pool_mode', 'max_user_connections', 'current_connections', 'max_user_client_connections', 'current_client_connections'],
  CONFIG: ['key', 'value', 'default', 'changeable'],
};
COLUMNS.SERVERS = [...COLUMNS.CLIENTS, 'role'];
// Tessera's own column after PgBouncer's: why a transaction-mode client keeps its backend.
COLUMNS.CLIENTS = [...COLUMNS.CLIENTS, 'pin_reason'];
const STATS = ['database', ...['server_assignment_count', 'xact_count', 'query_count', 'received', 'sent', 'xact_time', 'query_time', 'wait_time', 'client_parse_count', 'server_parse_count', 'bind_count'].map((c) => `total_${c}`), ...['server_assignment_count', 'xact_count', 'query_count', 'recv', 'sent', 'xact_time', 'query_time', 'wait_time', 'client_parse_count', 'server_parse_count', 'bind_count'].map((c) => `avg_${c}`)];

const admin = (who = 'admin') => connect({ ...t.conn(who, undefined, 'pgbouncer') });

test.before(async () => {
  cluster = await sharedCluster();
  t = await startTessera({ admin_users: 'admin', stats_users: ['watcher'], pool_mode: 'transaction', databases: { [TEST_DB]: clusterEntry(cluster) } });
});

test.after(async () => {
  await t?.stop();
});

test('SHOW commands answer with PgBouncer\'s columns, in order', async () => {
  const app = await connect(t.conn(user));
  await app.query('select 1');
  const a = await admin();
  try {
    for (const [what, columns] of Object.entries(COLUMNS)) {
      const r = await a.query(`SHOW ${what}`);
      assert.equal(r.fields.map((f) => f.name), columns, `SHOW ${what}`);
    }
    assert.equal((await a.query('show stats')).fields.map((f) => f.name), STATS);
    const pools = (await a.query('SHOW POOLS;')).rows;
    const mine = pools.find((p) => p.database === TEST_DB && p.user === user);
    assert.ok(mine, JSON.stringify(pools));
    assert.is(mine.pool_mode, 'transaction');
    assert.is(Number(mine.cl_active), 1);
    const clients = (await a.query('SHOW CLIENTS')).rows;
    assert.ok(clients.some((c) => c.user === user && c.database === TEST_DB));
    const config = (await a.query('SHOW CONFIG')).rows;
    assert.equal(config.find((r) => r.key === 'pool_mode')?.value, 'transaction');
    const version = (await a.query('SHOW VERSION')).rows[0];
    assert.match(Object.values(version)[0] as string, /^Tessera/);
  } finally {
    await a.end();
    await app.end();
  }
});

test('only admin_users and stats_users get in; stats users may SHOW but not control', async () => {
  const refused = await rejection(admin('stranger'));
  assert.is(refused.code, '08P01');
  assert.match(refused.message, 'not allowed');
  const w = await admin('watcher');
  try {
    assert.equal((await w.query('SHOW POOLS')).fields.map((f) => f.name), COLUMNS.POOLS);
    const err = await rejection(w.query('PAUSE'));
    assert.match(err.message, /admin/i);
    const bad = await rejection(w.query('SHOW NONSENSE'));
    assert.is(bad.code, '08P01');
  } finally {
    await w.end();
  }
});

test('PAUSE holds new transactions until RESUME', async () => {
  const a = await admin();
  const app = await connect(t.conn(user));
  try {
    await app.query('select 1');
    await a.query('PAUSE');
    let done = false;
    const held = app.query('select 2 as two').then((r) => ((done = true), r));
    await new Promise((r) => setTimeout(r, 300));
    assert.not.ok(done, 'a query ran while paused');
    const waiting = (await a.query('SHOW POOLS')).rows.find((p) => p.user === user);
    assert.is(Number(waiting.cl_waiting), 1);
    await a.query('RESUME');
    assert.is((await held).rows[0].two, 2);
  } finally {
    await a.end();
    await app.end();
  }
});

needing('pgbench')('PAUSE holds a running pgbench and RESUME releases it: no transaction runs in between, none fails', async () => {
  const init = await run(tool('pgbench'), ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'postgres', TEST_DB], { env: { PGPASSWORD: cluster.superPassword } });
  assert.is(init.code, 0, init.stderr);
  await cluster.query(`grant select on pgbench_accounts, pgbench_branches to ${user}`, [], TEST_DB);
  const a = await admin();
  const xacts = async () => Number((await a.query('SHOW STATS')).rows.find((r) => r.database === TEST_DB).total_xact_count);
  try {
    const bench = run(tool('pgbench'), ['-S', '-c', '4', '-j', '2', '-T', '5', '-h', '127.0.0.1', '-p', String(t.port), '-U', user, TEST_DB], { timeoutMs: 60_000 });
    await until('pgbench to be running', async () => (await xacts()) > 100);
    await a.query('PAUSE');
    const paused = await xacts();
    await new Promise((r) => setTimeout(r, 800));
    const pool = (await a.query('SHOW POOLS')).rows.find((p) => p.database === TEST_DB && p.user === user);
    assert.is(await xacts(), paused, 'transactions ran while paused');
    assert.ok(Number(pool.cl_waiting) > 0, 'pgbench clients wait while paused');
    assert.is(Number(pool.sv_active), 0);
    await a.query('RESUME');
    const done = await bench;
    assert.is(done.code, 0, done.stderr);
    assert.match(done.stdout, /number of failed transactions: 0 /);
    assert.ok((await xacts()) > paused, 'transactions ran after RESUME');
    // The time columns count too (they were 0 before): pgbench's queries took some time.
    const stats = (await a.query('SHOW STATS')).rows.find((r) => r.database === TEST_DB);
    for (const column of ['total_query_count', 'total_xact_time', 'total_query_time']) assert.ok(Number(stats[column]) > 0, `${column} = ${stats[column]}`);
  } finally {
    await a.query('RESUME').catch(() => {});
    await a.end();
  }
});

test('SUSPEND stops every client socket (not the console) until RESUME; new clients wait too', async () => {
  const a = await admin();
  const app = await connect(t.conn(user));
  try {
    await app.query('select 1');
    await a.query('SUSPEND');
    assert.equal((await a.query('SHOW STATE')).rows.find((r) => Object.values(r)[0] === 'suspended'), { key: 'suspended', value: 'yes' });
    let answered = false;
    const held = app.query('select 2 as two').then((r) => ((answered = true), r));
    let loggedIn = false;
    const late = connect(t.conn(user)).then((c) => ((loggedIn = true), c));
    await new Promise((r) => setTimeout(r, 400));
    assert.not.ok(answered, 'a query was answered while suspended');
    assert.not.ok(loggedIn, 'a login finished while suspended');
    assert.match((await rejection(a.query('SUSPEND'))).message, 'already suspended/paused');
    await a.query('RESUME');
    assert.is((await held).rows[0].two, 2);
    const c = await late;
    assert.is((await c.query('select 3 as three')).rows[0].three, 3);
    await c.end();
  } finally {
    await a.query('RESUME').catch(() => {});
    await a.end();
    await app.end();
  }
});

test('SET changes a running setting at once; a bad value or a fixed setting is refused with the key named', async () => {
  const a = await admin();
  const w = await admin('watcher');
  const value = async (key: string) => (await a.query('SHOW CONFIG')).rows.find((r) => r.key === key).value;
  try {
    await a.query('SET default_pool_size = 9');
    assert.is(await value('default_pool_size'), '9');
    assert.is(Number((await a.query('SHOW DATABASES')).rows.find((d) => d.name === TEST_DB).pool_size), 9);
    await a.query(`SET query_timeout = '0.5'`);
    const app = await connect(t.conn(user));
    try {
      const err = await rejection(app.query('select pg_sleep(3)'));
      assert.is(err.code, '57014');
    } finally {
      await app.end().catch(() => {});
    }
    await a.query(`SET query_timeout = 0`);
    const bad = await rejection(a.query(`SET default_pool_size = 'lots'`));
    assert.is(bad.code, '22023');
    assert.match(`${bad.message} ${(bad as { detail?: string }).detail ?? ''}`, /default_pool_size/);
    const fixed = await rejection(a.query('SET listen_port = 7777'));
    assert.match(`${fixed.message} ${(fixed as { detail?: string }).detail ?? ''}`, /listen_port/);
    // stats_users may look, not change.
    const denied = await rejection(w.query('SET default_pool_size = 3'));
    assert.match(denied.message, /admin/i);
    assert.is(await value('default_pool_size'), '9');
    // SET lasts until the next RELOAD, which goes back to the file.
    await a.query('RELOAD');
    assert.is(await value('default_pool_size'), '20');
  } finally {
    await a.end();
    await w.end();
  }
});

test('RELOAD picks up an edited default_pool_size (SHOW DATABASES shows it)', async () => {
  const a = await admin();
  try {
    const before = (await a.query('SHOW DATABASES')).rows.find((d) => d.name === TEST_DB);
    assert.is(Number(before.pool_size), 20);
    const json = JSON.parse(fs.readFileSync(t.file, 'utf8'));
    fs.writeFileSync(t.file, JSON.stringify({ ...json, default_pool_size: 7 }));
    await a.query('RELOAD');
    const after = (await a.query('SHOW DATABASES')).rows.find((d) => d.name === TEST_DB);
    assert.is(Number(after.pool_size), 7);
    // A broken file is refused and the running configuration stays.
    fs.writeFileSync(t.file, '{ "default_pool_size": "many" }');
    const err = await rejection(a.query('RELOAD'));
    assert.match(err.message + ((err as { detail?: string }).detail ?? ''), /RELOAD|default_pool_size/);
    assert.is(Number((await a.query('SHOW DATABASES')).rows.find((d) => d.name === TEST_DB).pool_size), 7);
    fs.writeFileSync(t.file, JSON.stringify(json));
    await a.query('RELOAD');
  } finally {
    await a.end();
  }
});

test('KILL_CLIENT disconnects exactly that client', async () => {
  const a = await admin();
  const victim = await connect(t.conn(user));
  const bystander = await connect(t.conn(user));
  const errors: { code?: string }[] = [];
  victim.on('error', (e: Error & { code?: string }) => errors.push(e));
  try {
    await victim.query('select 1');
    const id = (await a.query('SHOW CLIENTS')).rows.filter((c) => c.user === user).map((c) => Number(c.id))[0];
    await a.query(`KILL_CLIENT ${id}`);
    await until('the victim to be told', async () => errors.length > 0);
    assert.is(errors[0].code, '57P01');
    assert.is((await bystander.query('select 3 as three')).rows[0].three, 3);
  } finally {
    await a.end();
    await bystander.end();
    await victim.end().catch(() => {});
  }
});

needing('psql')('psql -d pgbouncer -c "SHOW POOLS" works as with PgBouncer', async () => {
  const r = await run(tool('psql'), ['-X', '-h', '127.0.0.1', '-p', String(t.port), '-U', 'admin', '-d', 'pgbouncer', '-c', 'SHOW POOLS'], {});
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /cl_active/);
});

test.run();
