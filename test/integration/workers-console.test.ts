// `workers: 2` and the admin console's session command: KILL_SESSION ends a session-token session
// and disconnects its clients on every worker, as it does in a single process (README: every
// command runs on every worker).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { sharedCluster, type Cluster } from '../support/cluster.js';
import { spawnTessera, clusterEntry, connect, rejection, until, type TesseraProcess } from '../support/tessera.js';
import { demoDatabase } from '../support/sql.js';
import { SessionDb } from '../support/session-db.js';
import { SessionCredentials } from '../../src/client/index.js';

const DB = 'tessera_workers_console_test';
const ADMIN = { user: 'admin', password: 'admin-console-password' };

let cluster: Cluster;
let sessions: SessionDb;
let t: TesseraProcess;

test.before(async () => {
  cluster = await sharedCluster();
  await demoDatabase(cluster, DB);
  sessions = new SessionDb(cluster, DB);
  // The pool role may end sessions (tessera.end_session_admin).
  await cluster.query('grant tessera_admin to tessera_app');
  t = await spawnTessera(
    {
      workers: 2,
      auth_type: 'scram-sha-256',
      admin_users: ADMIN.user,
      session_tokens: { max_failures: 1000 },
      databases: { app: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: 'tessera_app', password: 'tessera-app-password', pool_size: 60 }) },
    },
    `"${ADMIN.user}" "${ADMIN.password}"\n`,
  );
  await until('both workers to listen', async () => (t.output().match(/"msg":"listening"/g) ?? []).length >= 2);
});

test.after(async () => {
  await t?.stop();
  await sessions?.closeAll();
  await cluster.query('revoke tessera_admin from tessera_app').catch(() => {});
  await cluster.query(`drop database if exists ${DB} with (force)`).catch(() => {});
});

const tokenConn = (password: string): pg.ClientConfig => ({ host: '127.0.0.1', port: t.port, database: 'app', user: 'web', password });
const console_ = () => connect({ host: '127.0.0.1', port: t.port, database: 'pgbouncer', ...ADMIN });

/** A session logged in with its password (nonce 1, through Tessera); later logins use its tokens. */
async function login(user: 'alice' | 'bob'): Promise<{ id: string; creds: SessionCredentials }> {
  const s = await sessions.createSession(await sessions.app(), user);
  (await connect(tokenConn(`${s.id}:1:${user}-password`))).end();
  return { id: s.id, creds: new SessionCredentials(s.id, s.token, { firstNonce: 2 }) };
}

async function whoAmI(c: pg.Client): Promise<string | null> {
  return (await c.query('select tessera.current_accessor() as who')).rows[0].who;
}

test('KILL_SESSION ends the session and disconnects its clients on both workers', async () => {
  const alice = await login('alice');
  const bob = await login('bob');
  const admin = await console_();
  const clients: pg.Client[] = [];
  const errors = new Map<pg.Client, (Error & { code?: string })[]>();
  try {
    // Alice's clients until both workers hold some (ids are odd on worker 0, even on worker 1).
    // Each keeps a server (session mode), and the kernel may hand one worker many in a row: the
    // pool (pool_size 60, 30 per worker) must not run dry before the other worker gets one.
    for (let i = 0; ; i++) {
      if (i === 100) throw new Error('100 connections all landed on one worker');
      const c = await connect(tokenConn(alice.creds.asPassword()));
      const errs: (Error & { code?: string })[] = [];
      c.on('error', (e) => errs.push(e));
      errors.set(c, errs);
      clients.push(c);
      const ids = (await admin.query('SHOW CLIENTS')).rows.filter((r) => r.database === 'app').map((r) => Number(r.id));
      if (ids.some((id) => id % 2 === 1) && ids.some((id) => id % 2 === 0)) break;
    }
    assert.is(await whoAmI(clients[0]), 'alice');
    const b = await connect(tokenConn(bob.creds.asPassword()));

    await admin.query(`KILL_SESSION ${alice.id}`); // an error (0A000 before the fix) rejects
    for (const c of clients) {
      const errs = errors.get(c)!;
      await until('every client of the session to be told', async () => errs.length > 0);
      assert.is(errs[0].code, '57P01');
      assert.match(errs[0].message, 'session ended');
    }
    assert.is((await sessions.su('select count(*)::int as n from tessera.sessions where session_id = $1', [alice.id])).rows[0].n, 0);
    const again = await rejection(connect(tokenConn(alice.creds.asPassword())));
    assert.match(again.message, 'AUTHFAIL');
    // Bob's session, on whichever worker, carries on.
    assert.is(await whoAmI(b), 'bob');
    await b.end();
    const unknown = await rejection(admin.query(`KILL_SESSION ${alice.id}`));
    assert.match(unknown.message, 'session not found');
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await admin.end();
  }
});

test.run();
