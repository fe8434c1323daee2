// Session tokens in transaction mode: tessera.issue_ticket / redeem_ticket / revoke_tickets at the
// SQL level, then through Tessera — alice and bob sharing two backends transaction by transaction,
// tickets revoked when clients leave, and a session ended under a connected client.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, until, capturedLogs, type RunningTessera } from '../support/tessera.js';
import { demoDatabase } from '../support/sql.js';
import { SessionCredentials } from '../../src/client/index.js';

const DB = 'tessera_ticket_test';
const APP = { user: 'tessera_app', password: 'tessera-app-password' };
const PASSWORDS = { alice: 'alice-password', bob: 'bob-password' } as const;
type Who = keyof typeof PASSWORDS;

let cluster: Cluster;
let t: RunningTessera;
const direct: pg.Client[] = [];

async function app(): Promise<pg.Client> {
  const c = new pg.Client({ host: cluster.host, port: cluster.port, database: DB, ...APP });
  c.on('error', () => {});
  await c.connect();
  direct.push(c);
  return c;
}

const su = (sql: string, params?: unknown[]) => cluster.query(sql, params, DB);

/** A session authenticated with the password, as the application does once per user. */
async function session(c: pg.Client, user: Who): Promise<{ id: string; token: string }> {
  const { rows } = await c.query('select session_id, session_token from tessera.create_session($1)', [user]);
  const s = { id: rows[0].session_id as string, token: rows[0].session_token as string };
  const r = await c.query('select * from tessera.open_connection($1, 1, $2)', [s.id, PASSWORDS[user]]);
  assert.ok(r.rows[0].success, `password login of ${user}`);
  return s;
}

async function who(c: pg.Client): Promise<string | null> {
  return (await c.query('select tessera.current_accessor() as a')).rows[0].a;
}

async function redeem(c: pg.Client, ticket: string): Promise<boolean> {
  return (await c.query('select tessera.redeem_ticket($1) as ok', [ticket])).rows[0].ok;
}

test.before(async () => {
  cluster = await sharedCluster();
  await demoDatabase(cluster, DB);
  t = await startTessera({
    pool_mode: 'transaction',
    session_tokens: { max_failures: 1000 },
    databases: {
      app: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: APP.user, password: APP.password, pool_size: 2 }),
      one: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: APP.user, password: APP.password, pool_size: 1 }),
    },
  });
});

test.after(async () => {
  await Promise.all(direct.map((c) => c.end().catch(() => {})));
  await t?.stop();
});

// ---- the SQL protocol ----

test('issue_ticket needs a bound backend; a ticket binds another backend to the same session', async () => {
  const a = await app();
  const err = await rejection(a.query('select tessera.issue_ticket()'));
  assert.is(err.code, '28000');

  const s = await session(a, 'alice');
  const ticket = (await a.query('select tessera.issue_ticket() as t')).rows[0].t as string;
  assert.match(ticket, /^[0-9a-f]{64}$/);
  // Only its hash is stored: a dump of the table yields nothing redeemable.
  const stored = await su('select encode(ticket_hash, $$hex$$) as h from tessera.tickets where session_id = $1', [s.id]);
  assert.is(stored.rows.length, 1);
  assert.is.not(stored.rows[0].h, ticket);

  const b = await app();
  assert.is(await who(b), null);
  assert.is(await redeem(b, ticket), true);
  assert.is(await who(b), 'alice');
});

test('a forged ticket fails from a relayed connection, and unbinds it rather than keeping its session', async () => {
  const a = await app();
  await session(a, 'bob');
  assert.is(await who(a), 'bob');
  assert.is(await redeem(a, randomBytes(32).toString('hex')), false);
  assert.is(await who(a), null);
  assert.is(await redeem(a, ''), false);
  assert.is((await a.query('select count(*)::int as n from demo.notes')).rows[0].n, 0);
});

test('a stale ticket (revoked, or its session ended) fails', async () => {
  const a = await app();
  const s = await session(a, 'alice');
  const revoked = (await a.query('select tessera.issue_ticket() as t')).rows[0].t as string;
  const kept = (await a.query('select tessera.issue_ticket() as t')).rows[0].t as string;
  assert.is((await a.query('select tessera.revoke_tickets($1::text[]) as n', [[revoked]])).rows[0].n, 1);
  const b = await app();
  assert.is(await redeem(b, revoked), false);
  assert.is(await redeem(b, kept), true);
  // The session ends (logout deletes it): its tickets go with it.
  await su('delete from tessera.sessions where session_id = $1', [s.id]);
  assert.is(await redeem(b, kept), false);
  assert.is(await who(b), null);
  // Expired sessions' tickets do not bind either.
  const s2 = await session(a, 'alice');
  const t2 = (await a.query('select tessera.issue_ticket() as t')).rows[0].t as string;
  await su(`update tessera.sessions set expires_at = now() - interval '1 second' where session_id = $1`, [s2.id]);
  assert.is(await redeem(b, t2), false);
});

test('only the pool role may issue, redeem or revoke tickets', async () => {
  const role = 'tessera_ticket_plain';
  await su(`do $$ begin if not exists (select from pg_roles where rolname = '${role}') then create role ${role} login password 'plain-password' in role tessera_user; end if; end $$`);
  const c = new pg.Client({ host: cluster.host, port: cluster.port, database: DB, user: role, password: 'plain-password' });
  await c.connect();
  direct.push(c);
  for (const sql of ['select tessera.issue_ticket()', `select tessera.redeem_ticket('x')`, `select tessera.revoke_tickets('{x}')`]) {
    assert.is((await rejection(c.query(sql))).code, '42501', sql);
  }
});

// ---- through Tessera, transaction mode ----

async function loginThroughTessera(user: Who, database = 'app'): Promise<{ id: string; creds: SessionCredentials }> {
  const s = await session(await app(), user);
  return { id: s.id, creds: new SessionCredentials(s.id, s.token, { firstNonce: 2 }) };
}

function through(creds: SessionCredentials, database = 'app'): Promise<pg.Client> {
  return connect({ host: '127.0.0.1', port: t.port, database, user: 'web', password: creds.asPassword() });
}

test('alice and bob interleave 1,000 transactions each over pool_size 2 and never see each other', async () => {
  const users: Who[] = ['alice', 'alice', 'bob', 'bob'];
  const clients = await Promise.all(users.map(async (u) => through((await loginThroughTessera(u)).creds)));
  const pids: Record<Who, Set<number>> = { alice: new Set(), bob: new Set() };
  try {
    await Promise.all(
      clients.map(async (c, i) => {
        const user = users[i];
        for (let n = 0; n < 500; n++) {
          let row: { who: string | null; pid: number; owners: string[] };
          if (n % 10 === 0) {
            // A transaction of several statements stays on one backend, bound throughout.
            await c.query('begin');
            const first = (await c.query('select tessera.current_accessor() as who, pg_backend_pid() as pid')).rows[0];
            row = (await c.query('select tessera.current_accessor() as who, pg_backend_pid() as pid, array(select distinct owner from demo.notes order by 1) as owners')).rows[0];
            await c.query('commit');
            assert.is(first.pid, row.pid);
            assert.is(first.who, user);
          } else {
            // Named (prepared) for one client of each user, plain for the other.
            const text = 'select tessera.current_accessor() as who, pg_backend_pid() as pid, array(select distinct owner from demo.notes order by 1) as owners';
            row = (await c.query(i % 2 === 0 ? { name: 'whoami', text } : text)).rows[0];
          }
          assert.is(row.who, user, `transaction ${n} of ${user}`);
          assert.equal(row.owners, [user]);
          pids[user].add(row.pid);
        }
      }),
    );
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
  // Both users were served by both backends: backends really did move between sessions.
  assert.is(pids.alice.size, 2);
  assert.is(pids.bob.size, 2);
});

test('a client\'s ticket is revoked when it disconnects, and never reaches the client or the log', async () => {
  const { id, creds } = await loginThroughTessera('bob');
  const c = await through(creds);
  const count = async () => (await su('select count(*)::int as n from tessera.tickets where session_id = $1', [id])).rows[0].n as number;
  assert.is(await who(c), 'bob');
  assert.is(await count(), 1);
  await c.end();
  await until('ticket revoked', async () => (await count()) === 0);
  // The ticket itself is not known to the test; what is known is that no hex ticket-like string is logged.
  assert.not.ok(capturedLogs.some((l) => /[0-9a-f]{64}/.test(l)), 'a ticket-like secret in the log');
});

test('a session ended while its client is connected: its next transaction on another backend fails with 28000', async () => {
  const alice = await loginThroughTessera('alice', 'one');
  const bob = await loginThroughTessera('bob', 'one');
  const a = await through(alice.creds, 'one');
  a.on('error', () => {});
  const b = await through(bob.creds, 'one');
  try {
    assert.is(await who(a), 'alice');
    assert.is(await who(b), 'bob'); // the one backend is now bound to bob
    await su('delete from tessera.sessions where session_id = $1', [alice.id]); // alice logs out
    const err = await rejection(a.query('select * from demo.notes'));
    assert.is(err.code, '28000');
    assert.match(err.message, /session of user "web" has ended/);
    // Bob goes on, on the same backend.
    assert.is(await who(b), 'bob');
    assert.equal((await b.query('select distinct owner from demo.notes')).rows, [{ owner: 'bob' }]);
  } finally {
    await a.end().catch(() => {});
    await b.end();
  }
});

test('through Tessera: a forged or stale ticket redeemed by a client binds nothing', async () => {
  // A stale ticket: issued for bob's session, then revoked (as Tessera does when its client leaves).
  const a = await app();
  await session(a, 'bob');
  const stale = (await a.query('select tessera.issue_ticket() as t')).rows[0].t as string;
  await a.query('select tessera.revoke_tickets($1::text[])', [[stale]]);

  const { creds } = await loginThroughTessera('alice', 'one');
  const c = await through(creds, 'one');
  try {
    for (const ticket of [stale, randomBytes(32).toString('hex')]) {
      await c.query('begin');
      assert.is(await redeem(c, ticket), false);
      const r = (await c.query('select tessera.current_accessor() as who, (select count(*)::int from demo.notes) as n')).rows[0];
      await c.query('commit');
      assert.equal(r, { who: null, n: 0 });
      // Tessera saw the call and re-binds the backend to alice's session before her next transaction.
      assert.is(await who(c), 'alice');
    }
  } finally {
    await c.end();
  }
});

test('a client that unbinds its own backend gets it re-bound at its next transaction', async () => {
  const { creds } = await loginThroughTessera('alice', 'one');
  const c = await through(creds, 'one');
  try {
    await c.query('select tessera.close_connection()');
    assert.is(await who(c), 'alice');
  } finally {
    await c.end();
  }
});

test.run();
