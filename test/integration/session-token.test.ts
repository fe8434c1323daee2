// Session-token logins through Tessera: the three ways to present credentials, every failure
// open_connection can report, isolation between users sharing one backend, forgery attempts from
// inside a relayed connection, the per-address failure limit, and no secrets in the log.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { sharedCluster, type Cluster } from '../support/cluster.js';
import { needing, tool } from '../support/tools.js';
import { startTessera, clusterEntry, connect, rejection, run, capturedLogs, ROOT, type RunningTessera } from '../support/tessera.js';
import { demoDatabase } from '../support/sql.js';
import { WireClient, authCode, errorCodes, readyStatus } from '../support/wire.js';
import { SessionCredentials, authentToken } from '../../src/client/index.js';

const DB = 'tessera_token_test';
const APP = { user: 'tessera_app', password: 'tessera-app-password' };
const PASSWORDS: Record<string, string> = { alice: 'alice-password', bob: 'bob-password' };

let cluster: Cluster;
let t: RunningTessera;
const secrets: string[] = [];

interface Session {
  id: string;
  token: string;
}

/** create_session as the application would (directly, as the pool role), plus the password login at nonce 1. */
async function login(user: string): Promise<{ session: Session; creds: SessionCredentials }> {
  const c = new pg.Client({ host: cluster.host, port: cluster.port, database: DB, ...APP });
  await c.connect();
  try {
    const { rows } = await c.query('select session_id, session_token from tessera.create_session($1)', [user]);
    const session = { id: rows[0].session_id as string, token: rows[0].session_token as string };
    secrets.push(session.token);
    // The first open_connection authenticates the session with the password, through Tessera.
    const first = await connect(tokenConn({ password: `${session.id}:1:${PASSWORDS[user] ?? 'nope'}` }));
    await first.end();
    const creds = new SessionCredentials(session.id, session.token, { firstNonce: 2 });
    return { session, creds };
  } finally {
    await c.end();
  }
}

function tokenConn(extra: pg.ClientConfig = {}): pg.ClientConfig {
  return { host: '127.0.0.1', port: t.port, database: 'app', user: 'web', ...extra };
}

async function notes(c: pg.Client): Promise<string[]> {
  const { rows } = await c.query('select owner from demo.notes order by owner');
  return [...new Set(rows.map((r) => r.owner as string))];
}

async function whoAmI(c: pg.Client): Promise<string | null> {
  return (await c.query('select tessera.current_accessor() as who')).rows[0].who;
}

test.before(async () => {
  cluster = await sharedCluster();
  await demoDatabase(cluster, DB);
  t = await startTessera({
    session_tokens: { max_failures: 1000 },
    databases: {
      app: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: APP.user, password: APP.password, pool_size: 1 }),
      plain: clusterEntry(cluster, { dbname: DB, user: APP.user, password: APP.password, pool_size: 1 }),
    },
  });
});

test.after(async () => {
  await t?.stop();
});

test('password form: <session_id>:<nonce>:<authent_token> logs in, and RLS sees only alice', async () => {
  const { creds } = await login('alice');
  const c = await connect(tokenConn({ password: creds.asPassword() }));
  try {
    assert.is(await whoAmI(c), 'alice');
    assert.equal(await notes(c), ['alice']);
    // The backend role is the pool's; the client's user name is a label only.
    assert.is((await c.query('select current_user as u')).rows[0].u, APP.user);
  } finally {
    await c.end();
  }
});

test('startup-parameter form (node-postgres sends custom parameters through `options` too)', async () => {
  const { creds } = await login('bob');
  const c = await connect(tokenConn({ options: creds.asOptions() }));
  try {
    assert.is(await whoAmI(c), 'bob');
    assert.equal(await notes(c), ['bob']);
    // The token settings never reach PostgreSQL.
    const { rows } = await c.query(`select current_setting('tessera.session_id', true) as s, current_setting('tessera.authent_token', true) as a`);
    assert.equal(rows[0], { s: null, a: null });
  } finally {
    await c.end();
  }
});

test('session credentials sent to a password database are dropped, never forwarded', async () => {
  const c = await connect(tokenConn({ database: 'plain', options: '-c tessera.session_id=1 -c tessera.nonce=2 -c tessera.authent_token=leak -c application_name=kept' }));
  try {
    const { rows } = await c.query(`select current_setting('tessera.authent_token', true) as a, current_setting('application_name') as app`);
    assert.equal(rows[0], { a: null, app: 'kept' });
  } finally {
    await c.end();
  }
});

test('raw startup parameters tessera.session_id / tessera.nonce / tessera.authent_token', async () => {
  const { creds } = await login('alice');
  const { client, messages } = await WireClient.login(t.port, { user: 'web', database: 'app', ...creds.asStartupParams() });
  client.end();
  assert.equal(errorCodes(messages), []);
  assert.is(authCode(messages[0]), 0); // AuthenticationOk, straight away
  assert.is(readyStatus(messages.at(-1)!), 'I');
});

needing('psql')('psql with PGOPTIONS and with PGPASSWORD', async () => {
  const { creds } = await login('alice');
  const args = ['-X', '-At', '-h', '127.0.0.1', '-p', String(t.port), '-U', 'web', '-d', 'app', '-c', 'select tessera.current_accessor()'];
  const viaOptions = await run(tool('psql'), args, { env: { PGOPTIONS: creds.asOptions() } });
  assert.is(viaOptions.stdout.trim(), 'alice', viaOptions.stderr);
  const viaPassword = await run(tool('psql'), args, { env: { PGPASSWORD: creds.asPassword() } });
  assert.is(viaPassword.stdout.trim(), 'alice', viaPassword.stderr);
});

needing('psql')('`tessera token` prints PGOPTIONS and PGPASSWORD lines that psql logs in with', async () => {
  const { session } = await login('bob');
  const psql = `${tool('psql')} -X -At -h 127.0.0.1 -p ${t.port} -U web -d app -c 'select tessera.current_accessor()'`;
  const script = [
    `eval "$(node --import tsx ${ROOT}/src/cli.ts token --session-id ${session.id} --nonce 2)"`,
    `PGPASSWORD= ${psql}`, // options form (nonce 2)
    `PGOPTIONS= ${psql}`, // password form (nonce 3)
  ].join('\n');
  const r = await run('bash', ['-c', script], { env: { TESSERA_SESSION_TOKEN: session.token } });
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trim(), 'bob\nbob');
});

test('a pg.Pool with the password function authenticates every new connection by itself', async () => {
  const { creds } = await login('bob');
  const pool = new pg.Pool({ ...tokenConn(), password: creds.passwordFunction(), max: 3, idleTimeoutMillis: 1 });
  try {
    for (let i = 0; i < 10; i++) {
      const c = await pool.connect();
      assert.is(await whoAmI(c as unknown as pg.Client), 'bob');
      c.release(true); // a new connection, and so a new nonce, each time
    }
  } finally {
    await pool.end();
  }
});

test('replayed nonce and a nonce far ahead are NONCEFAIL (28P01); unknown session is AUTHFAIL', async () => {
  const { session, creds } = await login('alice');
  const password = creds.asPassword();
  (await connect(tokenConn({ password }))).end();
  await new Promise((r) => setTimeout(r, 100));
  const replay = await rejection(connect(tokenConn({ password })));
  assert.is(replay.code, '28P01');
  assert.match(replay.message, 'NONCEFAIL');
  const ahead = await rejection(connect(tokenConn({ password: `${session.id}:500:${authentToken(session.token, 500)}` })));
  assert.is(ahead.code, '28P01');
  assert.match(ahead.message, 'NONCEFAIL');
  const unknown = await rejection(connect(tokenConn({ password: `12345:3:${authentToken(session.token, 3)}` })));
  assert.is(unknown.code, '28P01');
  assert.match(unknown.message, 'AUTHFAIL');
  const garbage = await rejection(connect(tokenConn({ password: 'not-a-session' })));
  assert.is(garbage.code, '28P01');
});

test('an expired session is EXPIRED (28000); the sixth bad token is LOCKED (28000)', async () => {
  const expired = await login('alice');
  await cluster.query(`update tessera.sessions set expires_at = now() - interval '1 second' where session_id = $1`, [expired.session.id], DB);
  const e = await rejection(connect(tokenConn({ password: expired.creds.asPassword() })));
  assert.is(e.code, '28000');
  assert.match(e.message, 'EXPIRED');

  const { session } = await login('bob');
  for (let nonce = 2; nonce <= 6; nonce++) {
    const bad = await rejection(connect(tokenConn({ password: `${session.id}:${nonce}:${authentToken('wrong', nonce)}` })));
    assert.match(bad.message, 'AUTHFAIL');
  }
  const locked = await rejection(connect(tokenConn({ password: `${session.id}:7:${authentToken('wrong', 7)}` })));
  assert.is(locked.code, '28000');
  assert.match(locked.message, 'LOCKED');
  // Locked for good: even the right token is refused.
  const right = await rejection(connect(tokenConn({ password: `${session.id}:8:${authentToken(session.token, 8)}` })));
  assert.match(right.message, 'LOCKED');
});

test('pool_size 1: alice and bob alternating 200 times on one backend never see each other; a plain connection then sees nothing', async () => {
  const alice = await login('alice');
  const bob = await login('bob');
  const pids = new Set<number>();
  for (let i = 0; i < 100; i++) {
    for (const [who, s] of [['alice', alice], ['bob', bob]] as const) {
      const c = await connect(tokenConn({ password: s.creds.asPassword() }));
      const { rows } = await c.query('select pg_backend_pid() as pid, tessera.current_accessor() as who, array(select distinct owner from demo.notes) as owners');
      pids.add(rows[0].pid);
      assert.is(rows[0].who, who);
      assert.equal(rows[0].owners, [who]);
      await c.end();
    }
  }
  assert.is(pids.size, 1, 'one backend served all 200 logins');
  const plain = await connect(tokenConn({ database: 'plain' }));
  try {
    assert.is(await whoAmI(plain), null);
    assert.equal(await notes(plain), []);
  } finally {
    await plain.end();
  }
});

test('pool_size 1: whatever session state alice leaves on the backend is gone when bob gets it', async () => {
  // Tessera resets session-token backends with DISCARD ALL's parts except DISCARD PLANS: each part
  // must still leave bob nothing of alice's.
  await cluster.query('create sequence if not exists public.shared_seq; grant usage on sequence public.shared_seq to tessera_app', [], DB);
  const alice = await login('alice');
  const bob = await login('bob');
  const a = await connect(tokenConn({ password: alice.creds.asPassword() }));
  const alicePid = (await a.query('select pg_backend_pid() as pid')).rows[0].pid;
  for (const sql of [
    `set work_mem = '7MB'`,
    `select set_config('app.secret', 'alice', false)`,
    `prepare alice_stmt as select 1`,
    `begin; declare alice_cur cursor with hold for select 1; commit`,
    `create temp table alice_tmp (x int)`,
    `listen alice_channel`,
    `select pg_advisory_lock(4242)`,
    `select nextval('public.shared_seq')`,
    `set role tessera_user`,
  ]) {
    await a.query(sql);
  }
  await a.end();
  const b = await connect(tokenConn({ password: bob.creds.asPassword() }));
  try {
    const { rows } = await b.query(`select pg_backend_pid() as pid, current_user as role,
        current_setting('work_mem') as work_mem,
        coalesce(current_setting('app.secret', true), '') as secret,
        (select count(*) from pg_prepared_statements)::int as statements,
        (select count(*) from pg_cursors)::int as cursors,
        to_regclass('pg_temp.alice_tmp') as temp_table,
        (select count(*) from pg_listening_channels())::int as channels,
        (select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid())::int as advisory_locks`);
    assert.equal(rows[0], {
      pid: alicePid, role: 'tessera_app', work_mem: '4MB', secret: '',
      statements: 0, cursors: 0, temp_table: null, channels: 0, advisory_locks: 0,
    });
    const lastval = await rejection(b.query('select lastval()'));
    assert.match(lastval.message, 'not yet defined');
    assert.is(await whoAmI(b), 'bob');
    assert.equal(await notes(b), ['bob']);
  } finally {
    await b.end();
  }
});

test('from inside alice\'s connection, attempts to become bob all fail', async () => {
  const alice = await login('alice');
  const bob = await login('bob');
  const c = await connect(tokenConn({ password: alice.creds.asPassword() }));
  try {
    // Each attempt either is refused (42501) or does nothing that matters; after each the
    // connection is still alice's, and the probes themselves must succeed (a failed probe fails).
    const attempts: [sql: string, outcome: 'ok' | '42501'][] = [
      [`set tessera.session_id = '${bob.session.id}'`, 'ok'],
      [`select set_config('tessera.accessor', 'bob', false)`, 'ok'],
      [`set role postgres`, '42501'],
      [`set session authorization postgres`, '42501'],
      [`insert into tessera.bindings values (pg_backend_pid(), now(), ${bob.session.id})`, '42501'],
      [`update tessera.sessions set accessor_id = (select accessor_id from tessera.accessors where username = 'bob')`, '42501'],
      [`create temp table bindings (pid int, backend_start timestamptz, session_id bigint)`, 'ok'],
      [`discard all`, 'ok'],
    ];
    for (const [sql, expected] of attempts) {
      const outcome = await c.query(sql).then(() => 'ok', (e: { code?: string }) => e.code);
      assert.is(outcome, expected, sql);
      assert.is(await whoAmI(c), 'alice', `current_accessor() after ${sql}`);
      assert.equal(await notes(c), ['alice'], `rows visible after ${sql}`);
    }
    // open_connection with a wrong token for bob's session: refused, and never bob.
    const { rows } = await c.query('select success, errmsg from tessera.open_connection($1, 5, $2)', [bob.session.id, 'guess']);
    assert.equal(rows[0], { success: false, errmsg: 'AUTHFAIL' });
    assert.is.not(await whoAmI(c), 'bob');
  } finally {
    await c.end();
  }
});

test('200 clients logging in at once all succeed', async () => {
  const t200 = await startTessera({
    session_tokens: { max_failures: 1000 },
    max_client_conn: 300,
    databases: { app: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: APP.user, password: APP.password, pool_size: 20 }) },
  });
  try {
    // 40 users' sessions, 5 connections each (one session's nonces stay within its 64-wide window).
    const users = await Promise.all(Array.from({ length: 40 }, (_, i) => login(i % 2 ? 'alice' : 'bob')));
    const results = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const { creds } = users[i % 40];
        const c = await connect({ ...tokenConn({ password: creds.asPassword() }), port: t200.port });
        try {
          return await whoAmI(c);
        } finally {
          await c.end();
        }
      }),
    );
    assert.is(results.length, 200);
    results.forEach((who, i) => assert.is(who, i % 2 ? 'alice' : 'bob'));
  } finally {
    await t200.stop();
  }
});

test('an address with too many failed session logins in a minute is refused for a while', async () => {
  const strict = await startTessera({
    session_tokens: { max_failures: 3, ban_seconds: 60 },
    databases: { app: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: APP.user, password: APP.password }) },
  });
  try {
    const { creds } = await login('alice');
    for (let i = 0; i < 4; i++) await rejection(connect({ ...tokenConn({ password: `1:${i}:x` }), port: strict.port }));
    const banned = await rejection(connect({ ...tokenConn({ password: creds.asPassword() }), port: strict.port }));
    assert.is(banned.code, '28000');
    assert.match(banned.message, 'too many failed session logins');
  } finally {
    await strict.stop();
  }
});

test('no session token or authent_token appears in the proxy log', async () => {
  assert.ok(secrets.length > 5);
  const log = capturedLogs.join('\n');
  for (const secret of secrets) {
    assert.not.ok(log.includes(secret), 'a session token is in the log');
    for (const nonce of [2, 3, 4]) assert.not.ok(log.includes(authentToken(secret, nonce)), 'an authent_token is in the log');
  }
  assert.not.ok(log.includes('alice-password'));
});

test.run();
