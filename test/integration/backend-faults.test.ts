// Faults on the server side and clients that vanish at the worst moment, against a real
// PostgreSQL: backends terminated mid-query, mid-COPY and mid-login, PostgreSQL restarted under
// load or stalled (SIGSTOP), clients gone mid-result or mid-COPY. What each client sees, that the
// others are untouched, and that the pool ends up with clean servers.
import fs from 'node:fs';
import path from 'node:path';
import { serialize } from 'pg-protocol';
import pg from 'pg';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { needing, tool } from '../support/tools.js';
import { startTessera, clusterEntry, connect, rejection, until, run, sendCancel, type RunningTessera } from '../support/tessera.js';
import { WireClient, errorCodes } from '../support/wire.js';

let cluster: Cluster;
const user = ROLES.trust.user;

test.before(async () => {
  cluster = await sharedCluster();
  await cluster.query(`drop table if exists fault_copy; create table fault_copy (x int); grant all on fault_copy to ${user}`, [], TEST_DB);
});

async function pidOf(sqlLike: string): Promise<number> {
  return until(`a backend running ${sqlLike}`, async () => {
    const { rows } = await cluster.query(`select pid from pg_stat_activity where query like $1 and pid <> pg_backend_pid() and state = 'active'`, [sqlLike]);
    return rows[0]?.pid as number | undefined;
  });
}

/** A raw protocol client, logged in with this application_name. */
async function rawClient(port: number, app: string): Promise<WireClient> {
  return (await WireClient.login(port, { user, database: TEST_DB, application_name: app })).client;
}

for (const mode of ['session', 'transaction'] as const) {
  test(`${mode}: a backend terminated mid-query gives its client 57P01; others are untouched; the pool replaces it`, async () => {
    const t = await startTessera({ pool_mode: mode, default_pool_size: 2, databases: { '*': clusterEntry(cluster) } });
    try {
      const victim = await connect({ ...t.conn(user), application_name: 'fault-victim' });
      const bystander = await connect(t.conn(user));
      await bystander.query('begin');
      const sleeping = rejection(victim.query('select pg_sleep(30) as mid_query_victim'));
      const pid = await pidOf('%mid_query_victim%');
      await cluster.query('select pg_terminate_backend($1)', [pid]);
      const err = await sleeping;
      assert.is(err.code, '57P01');
      assert.is((await bystander.query('select 1 as one')).rows[0].one, 1);
      await bystander.query('commit');
      const fresh = await connect(t.conn(user));
      const { rows } = await fresh.query('select pg_backend_pid() as pid');
      assert.is.not(rows[0].pid, pid);
      await fresh.end();
      await bystander.end();
      await victim.end().catch(() => {});
    } finally {
      await t.stop();
    }
  });

  test(`${mode}: a backend terminated mid-COPY FROM STDIN gives its client an ErrorResponse and a close`, async () => {
    const t = await startTessera({ pool_mode: mode, databases: { '*': clusterEntry(cluster) } });
    try {
      const c = await rawClient(t.port, 'fault-copy-victim');
      c.send(serialize.query('copy fault_copy from stdin'));
      await c.readUntil('G');
      c.send(serialize.copyData(Buffer.from('1\n2\n')));
      const { rows } = await cluster.query(`select pid from pg_stat_activity where application_name = 'fault-copy-victim'`);
      await cluster.query('select pg_terminate_backend($1)', [rows[0].pid]);
      await c.closed;
      assert.ok(errorCodes(c.received()).includes('57P01'));
      const other = await connect(t.conn(user));
      assert.is((await other.query('select count(*)::int as n from fault_copy')).rows[0].n, 0);
      await other.end();
    } finally {
      await t.stop();
    }
  });

  test(`${mode}: a client that vanishes mid-result while not reading leaves a clean backend to the next client`, async () => {
    // One server, and a long cancel_wait_timeout: the next client can only be served promptly if
    // the abandoned server is cancelled, drained and reset, not timed out.
    const t = await startTessera({ pool_mode: mode, default_pool_size: 1, cancel_wait_timeout: 120, databases: { '*': clusterEntry(cluster) } });
    try {
      const c = await rawClient(t.port, 'fault-slow');
      c.socket.pause(); // never reads: Tessera's buffers fill and it stops reading the server
      c.send(serialize.query(`select repeat('x', 1000) from generate_series(1, 2000000)`));
      await until('the server to block on the client', async () => {
        const { rows } = await cluster.query(`select wait_event from pg_stat_activity where application_name = 'fault-slow'`);
        return rows[0]?.wait_event === 'ClientWrite';
      });
      c.destroy();
      const next = await connect({ ...t.conn(user), application_name: 'fault-slow' });
      const { rows } = await next.query(`select 1 as one, now() = statement_timestamp() as fresh`);
      assert.equal(rows[0], { one: 1, fresh: true });
      await next.end();
    } finally {
      await t.stop();
    }
  });

  test(`${mode}: a client that vanishes mid-COPY FROM STDIN leaves no rows, no transaction, and a reusable backend`, async () => {
    const t = await startTessera({ pool_mode: mode, default_pool_size: 1, cancel_wait_timeout: 120, databases: { '*': clusterEntry(cluster) } });
    try {
      const c = await rawClient(t.port, 'fault-copy-vanish');
      c.send(serialize.query('begin'), serialize.query('copy fault_copy from stdin'));
      await c.readUntil('G');
      c.send(serialize.copyData(Buffer.from('1\n2\n3\n')));
      const { rows: before } = await cluster.query(`select pid from pg_stat_activity where application_name = 'fault-copy-vanish'`);
      c.destroy();
      // A COPY waiting for client data ignores cancel; only a CopyFail frees the backend promptly.
      const next = await connect({ ...t.conn(user), application_name: 'fault-copy-vanish' });
      const { rows } = await next.query(`select pg_backend_pid() as pid, (select count(*)::int from fault_copy) as n, now() = statement_timestamp() as fresh`);
      // Session mode gets the same backend back, cleaned; transaction mode (whose relay rewrites
      // messages) closes a server left owing responses and opens another.
      assert.equal(rows[0], { pid: mode === 'session' ? before[0].pid : rows[0].pid, n: 0, fresh: true });
      await next.end();
    } finally {
      await t.stop();
    }
  });
}

test('a backend terminated during a session-token login handshake: the client gets an ErrorResponse, not a hang', async () => {
  // open_connection stands in for the check, made slow so the backend can be killed during it.
  const slow = `select true, pg_sleep(30)::text || $1::text || $2::text || $3::text || coalesce($4::text, '') as login_handshake_victim`;
  const t = await startTessera({ session_tokens: { open_connection: slow }, databases: { app: clusterEntry(cluster, { dbname: TEST_DB, auth_type: 'session_token', user }) } });
  try {
    const login = rejection(connect({ ...t.conn('web', undefined, 'app'), password: '1:2:token' }));
    const pid = await pidOf('%login_handshake_victim%');
    await cluster.query('select pg_terminate_backend($1)', [pid]);
    const err = await login;
    assert.is(err.code, '28000');
    assert.match(err.message, '57P01');
    // Tessera lets go of the client too (the probe fails the test if it never does).
    await until('the failed login to leave Tessera', async () => t.proxy.clients.size === 0);
  } finally {
    await t.stop();
  }
});

/** pid of the postmaster, from postmaster.pid. */
function postmasterPid(): number {
  return Number(fs.readFileSync(path.join(cluster.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

test('PostgreSQL stalled (SIGSTOP on the postmaster): new logins fail with server_connect_timeout, connected clients go on, all recover', async () => {
  const t = await startTessera({ server_connect_timeout: 1, server_login_retry: 0, databases: { '*': clusterEntry(cluster) } });
  const pm = postmasterPid();
  try {
    const connected = await connect(t.conn(user));
    await connected.query('select 1');
    process.kill(pm, 'SIGSTOP');
    try {
      // A new set of startup parameters needs a new server, which the stalled postmaster never answers.
      const err = await rejection(connect({ ...t.conn(user), application_name: 'stalled-login' }));
      assert.is(err.code, '08006');
      assert.match(err.message, 'server_connect_timeout');
      // Backends already forked are not stalled: the connected client still works.
      assert.is((await connected.query('select 2 as two')).rows[0].two, 2);
    } finally {
      process.kill(pm, 'SIGCONT');
    }
    const after = await until('logins to work again', async () => connect({ ...t.conn(user), application_name: 'stalled-login' }).catch(() => undefined));
    assert.is((await after.query('select 3 as three')).rows[0].three, 3);
    await after.end();
    await connected.end();
  } finally {
    await t.stop();
  }
});

test('a cancel that reaches PostgreSQL late never hits the next client of that backend', async () => {
  // Transaction mode, one backend. A's cancel request is held up at the (stopped) postmaster
  // while A's query ends by itself; B, waiting, must not get the backend until that cancel is
  // done, or the cancel would land on B's query.
  const t = await startTessera({ pool_mode: 'transaction', default_pool_size: 1, databases: { '*': clusterEntry(cluster) } });
  const pm = postmasterPid();
  try {
    const a = await connect(t.conn(user));
    const b = await connect(t.conn(user));
    await b.query('select 1'); // both logged in; the one backend exists
    const aDone = a.query('select pg_sleep(0.4) as slept');
    await until('A to run', async () => (await cluster.query(`select 1 from pg_stat_activity where query = 'select pg_sleep(0.4) as slept' and state = 'active'`)).rowCount === 1);
    process.kill(pm, 'SIGSTOP');
    let bAnswer: Promise<pg.QueryResult>;
    try {
      const key = a as unknown as { processID: number; secretKey: number };
      await sendCancel(t.port, key.processID, key.secretKey);
      await aDone; // not cancelled: the postmaster has not read the request
      bAnswer = b.query('select pg_sleep(1.5), 42 as answer');
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      process.kill(pm, 'SIGCONT');
    }
    assert.is((await bAnswer).rows[0].answer, 42);
    await a.end();
    await b.end();
  } finally {
    await t.stop();
  }
});

test('clients waiting for a server while PostgreSQL restarts are served after the restart, by new backends', async () => {
  const t = await startTessera({ pool_mode: 'transaction', default_pool_size: 1, databases: { '*': clusterEntry(cluster) } });
  try {
    const holder = await connect(t.conn(user));
    await holder.query('begin');
    await holder.query('select 1');
    // Five clients queue behind the holder's transaction.
    const waiters = await Promise.all(Array.from({ length: 5 }, () => connect(t.conn(user))));
    const answers = waiters.map((c) => c.query(`select extract(epoch from backend_start) * 1000 as ms from pg_stat_activity where pid = pg_backend_pid()`));
    await until('the five to wait', async () => [...t.proxy.pools.values()][0]?.maxWaitMs() > 0);
    const restartedAt = Date.now();
    await cluster.restart('immediate');
    for (const r of await Promise.all(answers)) assert.ok(Number(r.rows[0].ms) >= restartedAt - 1000, 'served by a backend from after the restart');
    await Promise.all(waiters.map((c) => c.end()));
    await holder.end().catch(() => {});
  } finally {
    await t.stop();
  }
});

for (const restartMode of ['fast', 'immediate'] as const) {
  needing('pgbench')(`PostgreSQL restarted (${restartMode}) under pgbench load: Tessera stays up and then serves only backends started after the restart`, async () => {
    const t = await startTessera({ pool_mode: 'transaction', default_pool_size: 4, server_login_retry: 0.2, databases: { '*': clusterEntry(cluster) } });
    try {
      await run(tool('pgbench'), ['-i', '-q', '-s', '1', '-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'postgres', TEST_DB], { env: { PGPASSWORD: cluster.superPassword } });
      await cluster.query(`grant select on pgbench_accounts, pgbench_branches to ${user}`, [], TEST_DB);
      // All four servers open, two left idle under the load: the restart kills busy and idle ones.
      const warm = await Promise.all(Array.from({ length: 4 }, () => connect(t.conn(user))));
      for (const c of warm) await c.query('begin');
      for (const c of warm) await c.query('commit');
      await Promise.all(warm.map((c) => c.end()));
      const bench = run(tool('pgbench'), ['-S', '-n', '-c', '2', '-j', '2', '-T', '5', '-h', '127.0.0.1', '-p', String(t.port), '-U', user, TEST_DB], { env: { PGHOST: '127.0.0.1' }, timeoutMs: 60000 });
      await new Promise((r) => setTimeout(r, 1500));
      await cluster.restart(restartMode);
      const result = await bench;
      // pgbench clients whose transaction was cut abort, as they would against PostgreSQL itself.
      assert.match(result.stdout + result.stderr, /number of transactions actually processed: [1-9]/, result.stdout + result.stderr);
      // Clients arriving now are served, each by a backend of the new postmaster. A server left
      // over from before the restart is a dead socket: the query on it would fail, so each
      // client's first query must succeed, with no retry, or fail the test (not hang it) on a
      // socket that never answers. (Logins may be retried: PostgreSQL refuses them while it
      // starts, and server_login_retry holds them a moment.)
      const login = () => connect({ ...t.conn(user), query_timeout: 15_000 }).catch(() => undefined);
      const clients = await Promise.all(Array.from({ length: 10 }, () => until('a login after the restart', login)));
      try {
        const served = await Promise.all(clients.map(async (c) => (await c.query(`select backend_start >= pg_postmaster_start_time() as fresh from pg_stat_activity where pid = pg_backend_pid()`)).rows[0]));
        assert.equal(served, clients.map(() => ({ fresh: true })));
      } finally {
        await Promise.all(clients.map((c) => c.end()));
      }
    } finally {
      await t.stop();
    }
  });
}

test.run();
