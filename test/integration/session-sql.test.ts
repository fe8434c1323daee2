// sql/tessera.sql and sql/demo.sql against a real PostgreSQL, driven the way an
// application (or Tessera) drives them: as tessera_app, the demo's non-superuser login
// role, through node-postgres. Runs in its own database so it disturbs no other test.
import pg from 'pg';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { sharedCluster, type Cluster } from '../support/cluster.js';
import { psqlFile as installSql } from '../support/sql.js';
import { SessionDb, OK, fail, APP, who, sqlState } from '../support/session-db.js';
import { authentToken, SessionCredentials } from '../../src/client/index.js';

const DB = 'tessera_sql_test';
/** A role that runs the protocol but is not the pool: may not pass client addresses. */
const PLAIN = { user: 'tessera_sql_test_plain', password: 'plain-password' };

let cluster: Cluster;
let sdb: SessionDb;

/** Runs a .sql file the way the README says: psql -v ON_ERROR_STOP=1 -f, as the superuser. */
const psqlFile = (file: string): Promise<string> => installSql(cluster, DB, file);
const su = (sql: string, params?: unknown[]) => sdb.su(sql, params);
const connectAs = (who: { user: string; password: string }) => sdb.connectAs(who);
const app = () => sdb.app();
const createSession = (c: pg.Client, user: string) => sdb.createSession(c, user);
const open = (c: pg.Client, id: string, nonce: number, token: string | null, addr?: string) => sdb.open(c, id, nonce, token, addr);
const login = (c: pg.Client, user: 'alice' | 'bob') => sdb.login(c, user);
const cont = (c: pg.Client, creds: SessionCredentials) => sdb.cont(c, creds);

async function owners(c: pg.Client): Promise<string[]> {
  return (await c.query('select owner from demo.notes order by owner')).rows.map((r) => r.owner);
}

test.before(async () => {
  cluster = await sharedCluster();
  sdb = new SessionDb(cluster, DB);
  await cluster.query(`drop database if exists ${DB} with (force)`);
  await cluster.query(`create database ${DB}`);
});

test.after(async () => {
  await sdb.closeAll();
  await cluster.query(`drop database if exists ${DB} with (force)`).catch(() => {});
  await cluster.query(`drop role if exists ${PLAIN.user}`).catch(() => {});
});

test('tessera.sql and demo.sql install, and install again harmlessly', async () => {
  for (let i = 0; i < 2; i++) {
    await psqlFile('sql/tessera.sql');
    await psqlFile('sql/demo.sql');
  }
  const accessors = await su('select username from tessera.accessors order by username');
  assert.equal(accessors.rows.map((r) => r.username), ['alice', 'bob']);
  const notes = await su('select owner, count(*)::int as n from demo.notes group by owner order by owner');
  assert.equal(notes.rows, [{ owner: 'alice', n: 2 }, { owner: 'bob', n: 2 }]);

  // Every function of ours is SECURITY DEFINER with the pinned search_path.
  const fns = await su(`
    select p.oid::regprocedure::text as sig, p.prosecdef, p.proconfig
      from pg_proc p
     where p.pronamespace = 'tessera'::regnamespace
       and not exists (select from pg_depend d where d.objid = p.oid and d.deptype = 'e')
     order by 1`);
  assert.equal(
    fns.rows.map((r) => r.sig),
    [
      'tessera.check_proof(bigint,integer,text,inet)',
      'tessera.close_connection()',
      'tessera.create_accessor(text,text)',
      'tessera.create_session(text,text)',
      'tessera.current_accessor()',
      'tessera.current_session_id()',
      'tessera.decrypt_token(bytea,text)',
      'tessera.delete_expired_sessions()',
      'tessera.encrypt_token(text,text)',
      'tessera.end_session(bigint,integer,text)',
      'tessera.end_session(bigint,integer,text,inet)',
      'tessera.end_session_admin(bigint)',
      'tessera.hello()',
      'tessera.issue_ticket()',
      'tessera.key_path()',
      'tessera.open_connection(bigint,integer,text)',
      'tessera.open_connection(bigint,integer,text,inet)',
      'tessera.read_key()',
      'tessera.redeem_ticket(text)',
      'tessera.revoke_tickets(text[])',
      'tessera.rotate_key()',
    ],
  );
  for (const f of fns.rows) {
    assert.ok(f.prosecdef, `${f.sig} is SECURITY DEFINER`);
    assert.equal(f.proconfig, ['search_path=pg_catalog, tessera, pg_temp'], f.sig);
  }

  // The roles: tables neither readable nor writable, only the protocol's functions executable.
  const privs = await su(`
    select r.rolname, c.relname, p.priv
      from pg_roles r, pg_class c,
           unnest(array['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','REFERENCES','TRIGGER']) p(priv)
     where r.rolname in ('tessera_user', 'tessera_pool', 'tessera_admin', 'tessera_app')
       and c.relnamespace = 'tessera'::regnamespace and c.relkind in ('r', 'u', 'p')
       and has_table_privilege(r.oid, c.oid, p.priv)`);
  assert.equal(privs.rows, []);
  const exec = await su(`
    select r.rolname, f.sig, has_function_privilege(r.rolname, f.sig, 'execute') as ok
      from (values ('tessera_user'), ('tessera_pool'), ('tessera_admin')) r(rolname),
           (values ('tessera.create_accessor(text,text)'), ('tessera.delete_expired_sessions()'),
                   ('tessera.open_connection(bigint,integer,text,inet)'), ('tessera.create_session(text,text)'),
                   ('tessera.open_connection(bigint,integer,text)'), ('tessera.current_accessor()'),
                   ('tessera.end_session(bigint,integer,text)'), ('tessera.end_session(bigint,integer,text,inet)'),
                   ('tessera.end_session_admin(bigint)'), ('tessera.hello()'), ('tessera.rotate_key()'),
                   ('tessera.check_proof(bigint,integer,text,inet)'), ('tessera.read_key()'), ('tessera.key_path()'),
                   ('tessera.encrypt_token(text,text)'), ('tessera.decrypt_token(bytea,text)')) f(sig)
     order by 1, 2`);
  const granted = exec.rows.filter((r) => r.ok).map((r) => `${r.rolname} ${r.sig}`);
  assert.equal(granted, [
    'tessera_admin tessera.end_session_admin(bigint)',
    'tessera_pool tessera.end_session(bigint,integer,text,inet)',
    'tessera_pool tessera.open_connection(bigint,integer,text,inet)',
    'tessera_user tessera.create_session(text,text)',
    'tessera_user tessera.current_accessor()',
    'tessera_user tessera.end_session(bigint,integer,text)',
    'tessera_user tessera.hello()',
    'tessera_user tessera.open_connection(bigint,integer,text)',
  ]);
  const role = await su(`select rolsuper, rolbypassrls, rolcanlogin from pg_roles where rolname = 'tessera_app'`);
  assert.equal(role.rows[0], { rolsuper: false, rolbypassrls: false, rolcanlogin: true });

  await su(`drop role if exists ${PLAIN.user}`);
  await su(`create role ${PLAIN.user} login password '${PLAIN.password}' in role tessera_user`);
});

test('alice: password first, then tokens; she sees her notes only', async () => {
  const c = await app();
  assert.equal(await owners(c), [], 'unbound: the policy shows nothing');
  assert.is(await who(c), null);

  const s = await createSession(c, 'alice');
  assert.match(s.id, /^[1-9][0-9]*$/);
  assert.ok(BigInt(s.id) > 0n && BigInt(s.id) < 2n ** 63n);
  assert.match(s.token, /^[0-9a-f]{64}$/);

  assert.equal(await open(c, s.id, 1, 'alice-password'), OK);
  assert.is(await who(c), 'alice');
  assert.is((await c.query('select tessera.current_session_id() as id')).rows[0].id, s.id);
  assert.equal(await owners(c), ['alice', 'alice']);

  // The client module computes what PostgreSQL computes.
  const pgToken = await su(`select encode(tessera.digest($1 || to_hex($2::int), 'sha1'), 'base64') as t`, [s.token, 2]);
  assert.is(authentToken(s.token, 2), pgToken.rows[0].t);

  // A continuation on another backend.
  const c2 = await app();
  assert.equal(await open(c2, s.id, 2, authentToken(s.token, 2)), OK);
  assert.is(await who(c2), 'alice');
  assert.equal(await owners(c2), ['alice', 'alice']);

  // A second session id is different and unrelated.
  const other = await createSession(c, 'alice');
  assert.is.not(other.id, s.id);
  assert.is.not(other.token, s.token);
});

test('nonces: used once, at most 64 ahead, never below the lowest kept; every attempt uses one', async () => {
  const c = await app();
  const { s } = await login(c, 'alice'); // nonce 1 used
  const tok = (n: number) => authentToken(s.token, n);

  assert.equal(await open(c, s.id, 2, tok(2)), OK);
  assert.equal(await open(c, s.id, 2, tok(2)), fail('NONCEFAIL'), 'replayed');
  assert.is(await who(c), null, 'a failed attempt unbinds');
  assert.equal(await open(c, s.id, 102, tok(102)), fail('NONCEFAIL'), '100 ahead');
  assert.equal(await open(c, s.id, 0, tok(0)), fail('NONCEFAIL'), 'below the lowest kept');
  assert.equal(await open(c, s.id, -1, 'x'), fail('NONCEFAIL'), 'negative');

  // Out of order within the window is fine, once each.
  assert.equal(await open(c, s.id, 5, tok(5)), OK);
  assert.equal(await open(c, s.id, 3, tok(3)), OK);
  assert.equal(await open(c, s.id, 4, tok(4)), OK);
  assert.equal(await open(c, s.id, 4, tok(4)), fail('NONCEFAIL'));

  // A wrong token uses its nonce up: the right one then comes too late.
  assert.equal(await open(c, s.id, 6, 'wrong'), fail('AUTHFAIL'));
  assert.equal(await open(c, s.id, 6, tok(6)), fail('NONCEFAIL'));

  // Exactly 64 ahead is allowed; the window (64 nonces ending at the highest) moves with it:
  // unused ones inside it stay good, older ones are gone.
  assert.equal(await open(c, s.id, 70, tok(70)), OK);
  assert.equal(await open(c, s.id, 6, tok(6)), fail('NONCEFAIL'));
  assert.equal(await open(c, s.id, 7, tok(7)), OK);
  assert.equal(await open(c, s.id, 69, tok(69)), OK);
  assert.is(await who(c), 'alice');
  assert.equal(await open(c, s.id, 135, tok(135)), fail('NONCEFAIL'), '65 ahead');

  // The password works only the first time; afterwards it is just a wrong token.
  assert.equal(await open(c, s.id, 71, 'alice-password'), fail('AUTHFAIL'));
});

test('many connections of one session at once, nonces in any order', async () => {
  const c = await app();
  const { creds } = await login(c, 'bob');
  const conns = await Promise.all(Array.from({ length: 12 }, () => app()));
  const got = await Promise.all(conns.map((k) => cont(k, creds)));
  assert.equal(got, conns.map(() => OK));
  assert.equal(await Promise.all(conns.map(who)), conns.map(() => 'bob'));
  await Promise.all(conns.map((k) => k.end()));
});

test('unknown session and unknown user: AUTHFAIL, yet create_session always answers', async () => {
  const c = await app();
  assert.equal(await open(c, '1234567890123', 1, 'alice-password'), fail('AUTHFAIL'));

  const ghost = await createSession(c, 'nobody-by-this-name');
  assert.match(ghost.token, /^[0-9a-f]{64}$/);
  assert.equal(await open(c, ghost.id, 1, ''), fail('AUTHFAIL'));
  assert.equal(await open(c, ghost.id, 2, 'nobody-password'), fail('AUTHFAIL'));
  assert.equal(await open(c, ghost.id, 3, authentToken(ghost.token, 3)), fail('AUTHFAIL'));
  assert.equal(await open(c, ghost.id, 3, authentToken(ghost.token, 3)), fail('NONCEFAIL'), 'it keeps nonces like a real one');
  assert.is(await who(c), null);

  assert.is(await sqlState(c.query(`select * from tessera.create_session('alice', 'plaintext')`)), '22023');
});

test('expiry: EXPIRED, and it takes effect on a connection already bound', async () => {
  const c = await app();
  const { s, creds } = await login(c, 'bob');
  assert.is(await who(c), 'bob');
  const before = await su('select expires_at - now() as left from tessera.sessions where session_id = $1', [s.id]);
  assert.ok(before.rows[0].left.minutes >= 19, 'twenty minutes by default');

  await su(`update tessera.sessions set expires_at = now() - interval '1 second' where session_id = $1`, [s.id]);
  assert.is(await who(c), null);
  assert.equal(await owners(c), []);
  const c2 = await app();
  assert.equal(await cont(c2, creds), fail('EXPIRED'));
  assert.is(await who(c2), null);
});

test('the sixth bad token locks the session for good, also for connections already bound', async () => {
  const bound = await app();
  const { s, creds } = await login(bound, 'alice');
  const c = await app();
  for (let i = 1; i <= 5; i++) {
    assert.equal(await open(c, s.id, creds.next().nonce, 'not-the-token'), fail('AUTHFAIL'), `bad token ${i}`);
  }
  assert.is(await who(bound), 'alice', 'five failures do not lock');
  assert.equal(await open(c, s.id, creds.next().nonce, 'not-the-token'), fail('LOCKED'), 'sixth');
  assert.equal(await cont(c, creds), fail('LOCKED'), 'even the right token');
  assert.is(await who(bound), null);
  assert.equal(await owners(bound), []);

  // Wrong passwords count too.
  const p = await createSession(c, 'bob');
  for (let n = 1; n <= 5; n++) assert.equal(await open(c, p.id, n, 'guess'), fail('AUTHFAIL'));
  assert.equal(await open(c, p.id, 6, 'guess'), fail('LOCKED'));
  assert.equal(await open(c, p.id, 7, 'bob-password'), fail('LOCKED'));
});

test('close_connection unbinds; one backend alternates between alice and bob', async () => {
  const c = await app();
  const alice = await login(c, 'alice');
  const bob = await login(await app(), 'bob');
  assert.is(await who(c), 'alice');
  await c.query('select tessera.close_connection()');
  assert.is(await who(c), null);
  assert.is((await c.query('select tessera.current_session_id() as id')).rows[0].id, null);
  assert.equal(await owners(c), []);

  for (let i = 0; i < 10; i++) {
    const [name, creds] = i % 2 === 0 ? (['bob', bob.creds] as const) : (['alice', alice.creds] as const);
    assert.equal(await cont(c, creds), OK);
    assert.is(await who(c), name);
    assert.equal(await owners(c), [name, name]);
    await c.query('select tessera.close_connection()');
    assert.is(await who(c), null, 'the reused backend sees nobody');
    assert.equal(await owners(c), []);
  }
  // Closing an unbound backend is harmless.
  await c.query('select tessera.close_connection()');
});

test('from inside alice\'s connection, nothing makes current_accessor() say bob', async () => {
  const c = await app();
  const alice = await login(c, 'alice');
  const bob = await login(await app(), 'bob');
  const expectAlice = async (what: string) => {
    const w = await who(c);
    assert.is(w, 'alice', what);
    assert.equal(await owners(c), ['alice', 'alice'], what);
  };

  // GUCs, of any name.
  for (const name of ['tessera.accessor', 'tessera.current_accessor', 'tessera.session_id', 'veil2.accessor_id']) {
    await c.query(`set "${name}" = 'bob'`);
  }
  await c.query(`select set_config('tessera.current_session_id', $1, false)`, [bob.s.id]);
  await expectAlice('after SET');

  // Temp tables shadowing the schema's, even with pg_temp first in search_path.
  await c.query(`create temp table bindings (pid int, backend_start timestamptz, session_id bigint, bound_at timestamptz)`);
  await c.query(`insert into bindings select pg_backend_pid(), now(), $1, now()`, [bob.s.id]);
  await c.query(`create temp table sessions as select $1::bigint as session_id, 2 as accessor_id, now() + interval '1 hour' as expires_at, false as locked`, [bob.s.id]);
  await c.query(`create temp table accessors as select 1 as accessor_id, 'bob'::text as username`);
  await c.query(`set search_path = pg_temp, tessera, public`);
  await expectAlice('after temp tables');
  await c.query(`reset search_path`);

  // The tables themselves: not readable, not writable.
  const denied = [
    `select * from tessera.sessions`,
    `select * from tessera.accessors`,
    `select * from tessera.bindings`,
    `insert into tessera.bindings values (pg_backend_pid(), now(), ${bob.s.id}, now())`,
    `update tessera.bindings set session_id = ${bob.s.id}`,
    `delete from tessera.bindings`,
    `update tessera.accessors set username = 'bob'`,
    `update tessera.sessions set accessor_id = accessor_id`,
    `insert into tessera.parameters values ('session_timeout', '100 years')`,
    `truncate tessera.bindings`,
    `select tessera.create_accessor('eve', 'eve-password')`,
    `select tessera.delete_expired_sessions()`,
    `create table tessera.evil (x int)`,
    `create function tessera.current_accessor(int) returns text language sql as $$ select 'bob' $$`,
  ];
  for (const sql of denied) assert.is(await sqlState(c.query(sql)), '42501', sql);
  assert.is(await sqlState(c.query('set session authorization postgres')), '42501');
  await expectAlice('after writes');

  // Roles the connection may assume change nothing either.
  await c.query('set role tessera_user');
  assert.is(await who(c), 'alice');
  await c.query('reset role');

  // DISCARD ALL clears GUCs, temp tables and prepared statements, not the binding:
  // that is close_connection's job (which the pooler calls).
  await c.query('discard all');
  await expectAlice('after DISCARD ALL');

  // Wrong token for bob's session, then alice's token (as if stolen) against bob's id.
  assert.equal(await open(c, bob.s.id, bob.creds.next().nonce, 'guess'), fail('AUTHFAIL'));
  assert.is(await who(c), null, 'a failed attempt leaves the backend unbound, never bob');
  assert.equal(await cont(c, alice.creds), OK);
  const n = bob.creds.next().nonce;
  assert.equal(await open(c, bob.s.id, n, authentToken(alice.s.token, n)), fail('AUTHFAIL'));
  assert.is(await who(c), null);
  assert.equal(await cont(c, alice.creds), OK);

  // A rolled-back attempt leaves alice's binding as it was, not bob's.
  await c.query('begin');
  await open(c, bob.s.id, bob.creds.next().nonce, 'guess');
  await c.query('rollback');
  await expectAlice('after a rolled-back attempt');
});

test('the client_addr form: tessera_pool only; records the address and, when asked, enforces it', async () => {
  const plain = await connectAs(PLAIN);
  const ps = await createSession(plain, 'alice');
  assert.is(await sqlState(open(plain, ps.id, 1, 'alice-password', '203.0.113.7')), '42501');
  assert.equal(await open(plain, ps.id, 2, 'alice-password'), OK, 'the plain form is theirs');
  assert.is(await who(plain), 'alice');

  const c = await app();
  // Not tied: recorded, but any address may continue.
  const loose = await createSession(c, 'alice');
  assert.equal(await open(c, loose.id, 1, 'alice-password', '203.0.113.7'), OK);
  const rec = await su('select client_addr::text as a, bind_address from tessera.sessions where session_id = $1', [loose.id]);
  assert.equal(rec.rows[0], { a: '203.0.113.7/32', bind_address: false });
  assert.equal(await open(c, loose.id, 2, authentToken(loose.token, 2), '198.51.100.1'), OK);

  // Tied (bob's accessor asks for it): only the first address may continue.
  await su(`update tessera.accessors set bind_address = true where username = 'bob'`);
  try {
    const tied = await createSession(c, 'bob');
    const flag = await su('select bind_address from tessera.sessions where session_id = $1', [tied.id]);
    assert.is(flag.rows[0].bind_address, true);
    assert.equal(await open(c, tied.id, 1, 'bob-password', '203.0.113.7'), OK);
    assert.equal(await open(c, tied.id, 2, authentToken(tied.token, 2), '203.0.113.7'), OK);
    assert.is(await who(c), 'bob');
    assert.equal(await open(c, tied.id, 3, authentToken(tied.token, 3), '198.51.100.1'), fail('AUTHFAIL'));
    assert.is(await who(c), null);
    assert.equal(await open(c, tied.id, 4, authentToken(tied.token, 4), null as unknown as string), fail('AUTHFAIL'));
    // The plain form uses this connection's own address (127.0.0.1): not the client's.
    assert.equal(await open(c, tied.id, 5, authentToken(tied.token, 5)), fail('AUTHFAIL'));
    assert.equal(await open(c, tied.id, 6, authentToken(tied.token, 6), '203.0.113.7'), OK);
  } finally {
    await su(`update tessera.accessors set bind_address = false where username = 'bob'`);
  }
});

test('a backend that inherits a dead one\'s pid does not inherit its binding', async () => {
  const c = await app();
  const { s } = await login(await app(), 'alice');
  const pid = (await c.query('select pg_backend_pid() as pid')).rows[0].pid;
  // What a backend that exited without close_connection leaves behind: its pid, its start time.
  await su(`insert into tessera.bindings (pid, backend_start, session_id) values ($1, now() - interval '1 hour', $2)`, [pid, s.id]);
  assert.is(await who(c), null);
  assert.equal(await owners(c), []);
  // The same row with this backend's real start time would count: the time is what guards.
  await su(
    `update tessera.bindings set backend_start = (select backend_start from pg_stat_get_activity($1)) where pid = $1`,
    [pid],
  );
  assert.is(await who(c), 'alice');
  await c.query('select tessera.close_connection()');
  assert.is(await who(c), null);
});

test('delete_expired_sessions deletes expired sessions and their bindings, and counts them', async () => {
  await su('select tessera.delete_expired_sessions()'); // whatever earlier tests expired
  const c = await app();
  const live = await login(c, 'alice');
  const doomed = await login(await app(), 'bob');
  const ghost = await createSession(c, 'nobody');
  await su(`update tessera.sessions set expires_at = now() - interval '1 minute' where session_id in ($1, $2)`, [
    doomed.s.id,
    ghost.id,
  ]);
  const r = await su('select tessera.delete_expired_sessions() as n');
  assert.is(r.rows[0].n, 2);
  const left = await su('select session_id from tessera.sessions where session_id in ($1, $2, $3)', [
    live.s.id,
    doomed.s.id,
    ghost.id,
  ]);
  assert.equal(left.rows.map((x) => x.session_id), [live.s.id]);
  const bindings = await su('select count(*)::int as n from tessera.bindings where session_id = $1', [doomed.s.id]);
  assert.is(bindings.rows[0].n, 0);
  assert.is(await who(c), 'alice');
  assert.equal(await cont(c, doomed.creds).catch(() => fail('?')), fail('AUTHFAIL'), 'a deleted session is unknown');
});

test.run();
