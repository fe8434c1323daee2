// A primary and a streaming standby (pg_basebackup -R), one host list, two database entries:
// read-write lands on the primary, prefer-standby on the standby; a standby-only entry whose
// standby is down fails clearly; a standby lagging past max_replica_lag is skipped until it
// catches up; and pgbench -S keeps running through a failover (primary stopped, standby
// promoted) with no restart of Tessera. What a client sees is checked through Tessera itself
// (pg_is_in_recovery(), inet_server_port(), SHOW SERVERS).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, PG_BIN, startCluster, startStandby, freePort, type Cluster, type Standby } from '../support/cluster.js';
import { startTessera, connect, rejection, until, run, type RunningTessera } from '../support/tessera.js';

let primary: Cluster;
let standby: Standby;
const user = ROLES.trust.user;

test.before(async () => {
  primary = await startCluster();
  if (PG_BIN) {
    // In the base backup, so the standby has the tables too.
    const init = await run(`${PG_BIN}/pgbench`, ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres', TEST_DB], { env: { PGPASSWORD: primary.superPassword } });
    assert.is(init.code, 0, init.stderr);
    await primary.query(`grant select on pgbench_accounts, pgbench_branches to ${user}`, [], TEST_DB);
  }
  await primary.query(`create table lag_probe (x int); grant all on lag_probe to ${user}`, [], TEST_DB);
  standby = await startStandby(primary);
});

test.after(async () => {
  await standby?.stop();
  await primary?.stop();
});

/** An entry over both hosts: the primary first, as a Patroni-managed list usually is. */
function pairEntry(extra: Record<string, unknown>): Record<string, unknown> {
  return { host: '127.0.0.1,127.0.0.1', port: `${primary.port},${standby.port}`, dbname: TEST_DB, pool_mode: 'transaction', ...extra };
}

async function whereAmI(t: RunningTessera, database: string): Promise<{ recovery: boolean; port: number }> {
  const c = await connect(t.conn(user, undefined, database));
  try {
    const { rows } = await c.query('select pg_is_in_recovery() as recovery, inet_server_port() as port');
    return { recovery: rows[0].recovery, port: rows[0].port };
  } finally {
    await c.end();
  }
}

test('read-write lands on the primary and prefer-standby on the standby, over the same host list; SHOW SERVERS names each role', async () => {
  const t = await startTessera({
    role_check_interval: 0.5,
    admin_users: 'admin',
    databases: { app: pairEntry({ target_session_attrs: 'read-write' }), app_ro: pairEntry({ target_session_attrs: 'prefer-standby' }) },
  });
  try {
    // Round-robin would put every other new server on the standby: each must land right anyway.
    for (let i = 0; i < 4; i++) {
      assert.equal(await whereAmI(t, 'app'), { recovery: false, port: primary.port });
      assert.equal(await whereAmI(t, 'app_ro'), { recovery: true, port: standby.port });
    }
    const writer = await connect(t.conn(user, undefined, 'app'));
    await writer.query('insert into lag_probe values (1)');
    await writer.end();
    const admin = await connect(t.conn('admin', undefined, 'pgbouncer'));
    const { rows } = await admin.query('SHOW SERVERS');
    await admin.end();
    const roles = new Set(rows.map((r) => `${r.database} ${r.port} ${r.role}`));
    assert.ok(roles.has(`app ${primary.port} primary`), JSON.stringify(rows));
    assert.ok(roles.has(`app_ro ${standby.port} standby`), JSON.stringify(rows));
    // Servers that logged in to the wrong host were closed, never handed to a client.
    assert.not.ok(roles.has(`app ${standby.port} standby`));
  } finally {
    await t.stop();
  }
});

test('target_session_attrs standby with its standby down: a clear FATAL after server_connect_timeout, not a hang', async () => {
  const down = await freePort(); // nothing listens there
  const t = await startTessera({
    role_check_interval: 0.5,
    server_connect_timeout: 2,
    databases: { reports: { host: '127.0.0.1,127.0.0.1', port: `${primary.port},${down}`, dbname: TEST_DB, pool_mode: 'transaction', target_session_attrs: 'standby' } },
  });
  try {
    // Transaction mode logs a client in once any server has told it the server's parameters:
    // none can here, so the login itself fails.
    const err = await rejection(connect(t.conn(user, undefined, 'reports')));
    assert.is(err.code, '08006');
    assert.match(err.message, /no server for "reports\/trust_user" matches target_session_attrs "standby"/);
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${primary.port} \\(primary\\)`));
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${down} \\(unreachable\\)`));
  } finally {
    await t.stop();
  }
});

test('a standby paused past max_replica_lag is not chosen for new transactions, and is chosen again once it catches up', async () => {
  const t = await startTessera({
    role_check_interval: 0.2,
    databases: { app_ro: pairEntry({ target_session_attrs: 'prefer-standby', max_replica_lag: '64kB' }) },
  });
  try {
    assert.is((await whereAmI(t, 'app_ro')).port, standby.port);
    await standby.query('select pg_wal_replay_pause()');
    try {
      // Well over 64kB of WAL, received by the standby but not replayed.
      await primary.query('insert into lag_probe select generate_series(1, 20000)', [], TEST_DB);
      await until('the lagging standby to be skipped', async () => (await whereAmI(t, 'app_ro')).port === primary.port, 15000);
      // And it stays skipped while it lags: the next transactions go to the primary too.
      for (let i = 0; i < 3; i++) assert.equal(await whereAmI(t, 'app_ro'), { recovery: false, port: primary.port });
    } finally {
      await standby.query('select pg_wal_replay_resume()');
    }
    await until('the standby to be chosen again', async () => (await whereAmI(t, 'app_ro')).port === standby.port, 15000);
  } finally {
    await t.stop();
  }
});

/** pgbench's own counts from one run. */
function pgbenchCounts(out: string): { processed: number; aborted: number } {
  const processed = Number(/number of transactions actually processed: (\d+)/.exec(out)?.[1] ?? 0);
  const aborted = (out.match(/client \d+ aborted/g) ?? []).length;
  return { processed, aborted };
}

test('failover under pgbench -S: stop the primary, promote the standby; read-write clients are served by the new primary, Tessera never restarted', async () => {
  if (!PG_BIN) throw new Error('pgbench not found under /usr/lib/postgresql/*/bin');
  const t = await startTessera({
    role_check_interval: 0.5,
    server_connect_timeout: 20,
    query_wait_timeout: 60,
    databases: { app: pairEntry({ target_session_attrs: 'read-write' }) },
  });
  const clients = 2;
  const bench = () => run(`${PG_BIN}/pgbench`, ['-n', '-S', '-c', String(clients), '-T', '1', '-h', '127.0.0.1', '-p', String(t.port), '-U', user, 'app'], { timeoutMs: 90_000 });
  try {
    assert.is((await whereAmI(t, 'app')).port, primary.port);
    // pgbench in back-to-back one-second runs: a run cut by the failover ends, the next goes on.
    let switched = false;
    let before = 0;
    let after = 0;
    let aborted = 0;
    const runs = (async () => {
      let afterRuns = 0;
      while (afterRuns < 3) {
        const wasSwitched = switched;
        const r = await bench();
        const counts = pgbenchCounts(r.stdout + r.stderr);
        aborted += counts.aborted;
        if (wasSwitched) {
          after += counts.processed;
          afterRuns++;
        } else before += counts.processed;
      }
    })();
    await until('pgbench to be running', async () => before > 0, 30000);
    await primary.stop();
    await standby.promote();
    switched = true;
    await runs;
    assert.ok(before > 0 && after > 0, `before ${before}, after ${after}`);
    // Only the transactions in flight when the primary went away may fail: one per client.
    assert.ok(aborted <= clients, `${aborted} pgbench clients aborted`);
    const now = await whereAmI(t, 'app');
    assert.equal(now, { recovery: false, port: standby.port });
    const writer = await connect(t.conn(user, undefined, 'app'));
    await writer.query('insert into lag_probe values (2)');
    await writer.end();
  } finally {
    await t.stop();
  }
});

test.run();
