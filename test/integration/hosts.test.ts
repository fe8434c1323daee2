// A primary and a streaming standby (pg_basebackup -R), one host list, two database entries:
// read-write lands on the primary, prefer-standby on the standby; a standby-only entry whose
// standby is down fails clearly; a standby lagging past max_replica_lag is skipped until it
// catches up; and pgbench -S keeps running through a failover (primary stopped, standby
// promoted) with no restart of Tessera. What a client sees is checked through Tessera itself
// (pg_is_in_recovery(), inet_server_port(), SHOW SERVERS).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, PG_BIN, startCluster, startStandby, freePort, type Cluster, type Standby } from '../support/cluster.js';
import type { AddressInfo } from 'node:net';
import { startTessera, connect, rejection, until, run, type RunningTessera } from '../support/tessera.js';
import { demoDatabase } from '../support/sql.js';
import { startMetrics } from '../../src/metrics/metrics.js';

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
    // /readyz agrees: the first host accepts TCP connections, but it is not one the pool would use.
    const ready = await readiness(t);
    assert.is(ready.status, 503);
    assert.equal(ready.body.databases.map((d) => d.ok), [false]);
    assert.match(ready.body.databases[0]!.detail, /no host matches target_session_attrs "standby"/);
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

async function readiness(t: RunningTessera): Promise<{ status: number; body: { databases: { database: string; ok: boolean; detail: string }[] } }> {
  const http = await startMetrics('127.0.0.1:0', t.proxy);
  try {
    const res = await fetch(`http://127.0.0.1:${(http.address() as AddressInfo).port}/readyz`);
    return { status: res.status, body: (await res.json()) as { databases: { database: string; ok: boolean; detail: string }[] } };
  } finally {
    http.close();
  }
}

test('KILL_SESSION (a write, outside the pool) reaches the primary of a read-write entry whose list starts with a host that is down and then the standby', async () => {
  const db = 'tessera_hosts_tokens';
  await demoDatabase(primary, db);
  await primary.query('grant tessera_admin to tessera_app');
  // The standby has replayed all of it (the roles' passwords too), so it refuses only as a standby.
  const lsn = (await primary.query('select pg_current_wal_lsn()::text as lsn')).rows[0].lsn as string;
  await until('the standby to replay the database', async () => (await standby.query('select pg_last_wal_replay_lsn() >= $1::pg_lsn as done', [lsn])).rows[0].done === true);
  const down = await freePort(); // nothing listens there
  const admin = { user: 'admin', password: 'admin-console-password' };
  const t = await startTessera(
    {
      auth_type: 'scram-sha-256',
      admin_users: admin.user,
      role_check_interval: 0.5,
      databases: {
        app: { host: '127.0.0.1,127.0.0.1,127.0.0.1', port: `${down},${standby.port},${primary.port}`, dbname: db, auth_type: 'session_token', user: 'tessera_app', password: 'tessera-app-password', target_session_attrs: 'read-write' },
      },
    },
    `"${admin.user}" "${admin.password}"\n`,
  );
  try {
    // Twice: before any pool of the database exists (every host, in the order written), and with one.
    for (let round = 0; round < 2; round++) {
      const { rows } = await primary.query('select session_id, session_token from tessera.create_session($1)', ['alice'], db);
      const id = rows[0].session_id as string;
      if (round === 1) {
        const client = await connect({ host: '127.0.0.1', port: t.port, database: 'app', user: 'web', password: `${id}:1:alice-password` });
        assert.equal((await client.query('select tessera.current_accessor() as who, pg_is_in_recovery() as recovery')).rows, [{ who: 'alice', recovery: false }]);
        await client.end();
      }
      const console_ = await connect(t.conn(admin.user, admin.password, 'pgbouncer'));
      try {
        await console_.query(`KILL_SESSION ${id}`); // an error (the down host's, the standby's read-only refusal) would reject
      } finally {
        await console_.end();
      }
      assert.is((await primary.query('select count(*)::int as n from tessera.sessions where session_id = $1', [id], db)).rows[0].n, 0, `round ${round + 1}: the session is gone`);
    }
  } finally {
    await t.stop();
    await primary.query('revoke tessera_admin from tessera_app').catch(() => {});
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
