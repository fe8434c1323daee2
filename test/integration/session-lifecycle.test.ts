// The session lifecycle through Tessera: logout reaching connections already open, the admin
// console's KILL_SESSION, and dedicated sessions (users with their own database credentials,
// connect_query = select tessera.hello()) getting the same per-user context as token sessions.
import fs from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, until, capturedLogs, type RunningTessera } from '../support/tessera.js';
import { demoDatabase } from '../support/sql.js';
import { SessionCredentials, authentToken } from '../../src/client/index.js';

const DB = 'tessera_lifecycle_test';
const APP = { user: 'tessera_app', password: 'tessera-app-password' };
/** Users with database credentials of their own, and accessors of the same names. */
const ANN = { user: 'tessera_ded_ann', password: 'ann-db-password' };
const BEN = { user: 'tessera_ded_ben', password: 'ben-db-password' };
/** A login role with no accessor. */
const DAVE = { user: 'tessera_ded_dave', password: 'dave-db-password' };
const DEDICATED = [ANN, BEN, DAVE];
const ADMIN = { user: 'admin', password: 'admin-console-password' };
const WATCHER = { user: 'watcher', password: 'watcher-password' };
const HELLO = 'select tessera.hello()';

let cluster: Cluster;
let t: RunningTessera;
const secrets: string[] = [];

interface Login {
  id: string;
  token: string;
  creds: SessionCredentials;
}

function su(sql: string, params?: unknown[]): Promise<pg.QueryResult> {
  return cluster.query(sql, params, DB);
}

/** create_session as the application would, then the password login (nonce 1) through Tessera. */
async function login(user: 'alice' | 'bob'): Promise<Login> {
  const c = await connect({ host: cluster.host, port: cluster.port, database: DB, ...APP });
  try {
    const { rows } = await c.query('select session_id, session_token from tessera.create_session($1)', [user]);
    const id = rows[0].session_id as string;
    const token = rows[0].session_token as string;
    secrets.push(token);
    (await connect(tokenConn(`${id}:1:${user}-password`))).end();
    return { id, token, creds: new SessionCredentials(id, token, { firstNonce: 2 }) };
  } finally {
    await c.end();
  }
}

function tokenConn(password: string): pg.ClientConfig {
  return { host: '127.0.0.1', port: t.port, database: 'app', user: 'web', password };
}
const viaTessera = (creds: SessionCredentials) => connect(tokenConn(creds.asPassword()));
const dedicated = (who: { user: string; password: string }, database = 'reports') => connect(t.conn(who.user, who.password, database));
const console_ = (who = ADMIN) => connect(t.conn(who.user, who.password, 'pgbouncer'));

async function whoAmI(c: pg.Client): Promise<string | null> {
  return (await c.query('select tessera.current_accessor() as who')).rows[0].who;
}
async function owners(c: pg.Client): Promise<string[]> {
  return [...new Set((await c.query('select owner from demo.notes order by owner')).rows.map((r) => r.owner as string))];
}
async function backendPid(c: pg.Client): Promise<number> {
  return (await c.query('select pg_backend_pid() as pid')).rows[0].pid;
}

/** Errors a client receives outside any query (a FATAL sent to it), in order. */
function errorsOf(c: pg.Client): (Error & { code?: string })[] {
  const errors: (Error & { code?: string })[] = [];
  c.on('error', (e) => errors.push(e));
  return errors;
}

test.before(async () => {
  cluster = await sharedCluster();
  await demoDatabase(cluster, DB);
  for (const r of DEDICATED) {
    await cluster.query(`drop role if exists ${r.user}`);
    await cluster.query(`create role ${r.user} login password '${r.password}' in role tessera_user`);
    await su(`grant usage on schema demo to ${r.user}`);
    await su(`grant select on demo.notes to ${r.user}`);
  }
  for (const r of [ANN, BEN]) {
    await su(`select tessera.create_accessor($1, 'accessor-password')`, [r.user]);
    await su(`insert into demo.notes values ($1, $1 || ': a note'), ($1, $1 || ': another')`, [r.user]);
  }
  const userlist = [...DEDICATED, ADMIN, WATCHER].map((r) => `"${r.user}" "${r.password}"`).join('\n') + '\n';
  t = await startTessera(
    {
      auth_type: 'scram-sha-256',
      admin_users: ADMIN.user,
      stats_users: WATCHER.user,
      session_tokens: { max_failures: 1000 },
      databases: {
        app: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: APP.user, password: APP.password, pool_size: 10 }),
        reports: clusterEntry(cluster, { dbname: DB, connect_query: HELLO, pool_size: 1 }),
        broken: clusterEntry(cluster, { dbname: DB, connect_query: 'select 1/0' }),
      },
    },
    userlist,
  );
});

test.after(async () => {
  await t?.stop();
  await cluster.query(`drop database if exists ${DB} with (force)`).catch(() => {});
  for (const r of DEDICATED) await cluster.query(`drop role if exists ${r.user}`).catch(() => {});
});

test('dedicated sessions: a user logging in with its own password sees exactly its own rows', async () => {
  for (const [me, other] of [[ANN, BEN], [BEN, ANN]]) {
    const c = await dedicated(me);
    try {
      assert.is((await c.query('select session_user as u')).rows[0].u, me.user, 'its own role, not a pool role');
      assert.is(await whoAmI(c), me.user);
      assert.equal(await owners(c), [me.user]);
      assert.not.ok((await owners(c)).includes(other.user));
    } finally {
      await c.end();
    }
  }
  // No accessor of that name: the login works and the policy shows nothing.
  const dave = await dedicated(DAVE);
  try {
    assert.is(await whoAmI(dave), null);
    assert.equal(await owners(dave), []);
  } finally {
    await dave.end();
  }
});

test('dedicated sessions: the binding is gone before the backend serves anyone else', async () => {
  const ann = await dedicated(ANN);
  const pid = await backendPid(ann);
  assert.is(await whoAmI(ann), ANN.user);
  await ann.end();
  // Released: close_connection() ran before the backend went back to the pool.
  await until('the backend to be unbound', async () => (await su('select count(*)::int as n from tessera.bindings where pid = $1', [pid])).rows[0].n === 0);

  // The next user of that very backend (pool_size 1) without connect_query sees nothing.
  const cfg = JSON.parse(fs.readFileSync(t.file, 'utf8'));
  const original = JSON.stringify(cfg, null, 2);
  delete cfg.databases.reports.connect_query;
  fs.writeFileSync(t.file, JSON.stringify(cfg, null, 2));
  await t.proxy.reload();
  try {
    const next = await dedicated(ANN);
    try {
      assert.is(await backendPid(next), pid, 'the same backend');
      assert.is(await whoAmI(next), null);
      assert.equal(await owners(next), []);
    } finally {
      await next.end();
    }
  } finally {
    fs.writeFileSync(t.file, original);
    await t.proxy.reload();
  }
  const again = await dedicated(ANN);
  assert.is(await whoAmI(again), ANN.user, 'connect_query applies again after the reload');
  await again.end();
});

test('a failing connect_query refuses the login with the server\'s error, FATAL, at once', async () => {
  const err = await rejection(dedicated(ANN, 'broken'));
  assert.is(err.code, '22012');
  assert.is(err.severity, 'FATAL');
  assert.match(err.message, 'division by zero');
  // The pool is none the worse for it.
  const c = await dedicated(ANN);
  assert.is(await whoAmI(c), ANN.user);
  await c.end();
});

test('logout through end_session reaches a connection already open through Tessera', async () => {
  const alice = await login('alice');
  const open = await viaTessera(alice.creds);
  assert.is(await whoAmI(open), 'alice');
  assert.equal(await owners(open), ['alice']);

  // The application logs alice out over a connection of bob's, through Tessera too.
  const bob = await login('bob');
  const other = await viaTessera(bob.creds);
  const n = alice.creds.next();
  const { rows } = await other.query('select tessera.end_session($1, $2, $3) as ok', [n.sessionId, n.nonce, n.authentToken]);
  assert.is(rows[0].ok, true);
  assert.is(await whoAmI(other), 'bob', 'only alice\'s session ended');

  assert.is(await whoAmI(open), null, 'from the next statement on');
  assert.equal(await owners(open), []);
  const again = await rejection(viaTessera(alice.creds));
  assert.is(again.code, '28P01');
  assert.match(again.message, 'AUTHFAIL');
  await open.end();
  await other.end();
});

test('KILL_SESSION: disconnects every client of the session and ends it; others carry on', async () => {
  await cluster.query('grant tessera_admin to tessera_app');
  try {
    const alice = await login('alice');
    const bob = await login('bob');
    const a1 = await viaTessera(alice.creds);
    const a2 = await viaTessera(alice.creds);
    const b = await viaTessera(bob.creds);
    const errors = [errorsOf(a1), errorsOf(a2)];
    assert.is(await whoAmI(a1), 'alice');

    const admin = await console_();
    try {
      await admin.query(`KILL_SESSION ${alice.id}`); // an error would reject
    } finally {
      await admin.end();
    }
    for (const errs of errors) {
      await until('the client to be told', async () => errs.length > 0);
      assert.is(errs[0].code, '57P01');
      assert.match(errs[0].message, 'session ended');
    }
    assert.is(await whoAmI(b), 'bob');
    assert.equal(await owners(b), ['bob']);
    assert.is((await su('select count(*)::int as n from tessera.sessions where session_id = $1', [alice.id])).rows[0].n, 0);
    const again = await rejection(viaTessera(alice.creds));
    assert.match(again.message, 'AUTHFAIL');
    await b.end();

    const admin2 = await console_();
    try {
      const unknown = await rejection(admin2.query(`KILL_SESSION ${alice.id}`));
      assert.match(unknown.message, 'session not found');
    } finally {
      await admin2.end();
    }
  } finally {
    await cluster.query('revoke tessera_admin from tessera_app');
  }
});

test('KILL_SESSION: bad ids, stats users, and a pool role not allowed to end sessions', async () => {
  const admin = await console_();
  const watcher = await console_(WATCHER);
  try {
    const bad = await rejection(admin.query('KILL_SESSION abc'));
    assert.match(bad.message, 'invalid session id');

    const alice = await login('alice');
    const c = await viaTessera(alice.creds);
    const errs = errorsOf(c);
    const refused = await rejection(watcher.query(`KILL_SESSION ${alice.id}`));
    assert.match(refused.message, 'admin access needed');
    assert.is(await whoAmI(c), 'alice', 'a stats user changes nothing');

    // Without tessera_admin the database refuses: the clients are still cut off, and the
    // console says the session itself lives on.
    const denied = await rejection(admin.query(`KILL_SESSION ${alice.id}`));
    assert.is(denied.code, '42501');
    assert.match(denied.message, 'disconnected 1 client(s) but could not end the session');
    assert.match((denied as { hint?: string }).hint ?? '', 'grant tessera_admin');
    await until('the client to be told', async () => errs.length > 0);
    assert.is(errs[0].code, '57P01');
    const still = await viaTessera(alice.creds);
    assert.is(await whoAmI(still), 'alice');
    await still.end();
  } finally {
    await admin.end();
    await watcher.end();
  }
});

test('relayed connections, pooled or dedicated, cannot read the key', async () => {
  const oid = (await su('select oid from pg_database where datname = current_database()')).rows[0].oid;
  const file = `tessera_${oid}.key`;
  assert.ok(fs.existsSync(`${cluster.dataDir}/${file}`));
  const { creds } = await login('bob');
  for (const c of [await viaTessera(creds), await dedicated(BEN)]) {
    try {
      for (const sql of [`select pg_read_file('${file}')`, `select pg_read_binary_file('${file}')`, 'select tessera.read_key()', 'select tessera.rotate_key()', 'select * from tessera.sessions']) {
        const err = await rejection(c.query(sql));
        assert.is(err.code, '42501', sql);
      }
    } finally {
      await c.end();
    }
  }
});

test('no session token, authent_token or password appears in the proxy log', async () => {
  const log = capturedLogs.join('\n');
  assert.ok(secrets.length >= 4);
  for (const secret of secrets) {
    assert.not.ok(log.includes(secret), 'a session token is in the log');
    for (const nonce of [1, 2, 3, 4, 5]) assert.not.ok(log.includes(authentToken(secret, nonce)), 'an authent_token is in the log');
  }
  for (const r of [...DEDICATED, ADMIN]) assert.not.ok(log.includes(r.password), `${r.user}'s password is in the log`);
});

test.run();
