// sql/tessera.sql's session lifecycle against a real PostgreSQL: logout (end_session,
// end_session_admin) taking effect on bound backends too, dedicated sessions (hello()),
// and secrets at rest (tokens encrypted under a key file no connected role can read; a
// pg_dump holds no usable token; rotate_key keeps sessions working). Driven as
// tessera_app, the demo's login role, in a database of its own.
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { sharedCluster, type Cluster } from '../support/cluster.js';
import { needing, tool } from '../support/tools.js';
import { demoDatabase } from '../support/sql.js';
import { SessionDb, OK, fail, who, sqlState } from '../support/session-db.js';
import { run } from '../support/tessera.js';
import { authentToken, SessionCredentials } from '../../src/client/index.js';

const DB = 'tessera_lifecycle_sql_test';
/** A user with database credentials of its own (a dedicated session), and its accessor. */
const CAROL = { user: 'tessera_lc_carol', password: 'carol-db-password' };
/** A login role with no accessor of the same name. */
const DAVE = { user: 'tessera_lc_dave', password: 'dave-db-password' };
/** A login role that is not a tessera_user member. */
const EVE = { user: 'tessera_lc_eve', password: 'eve-db-password' };
/** Given tessera_admin: may end any session. */
const OPS = { user: 'tessera_lc_ops', password: 'ops-db-password' };
const ROLES = [CAROL, DAVE, EVE, OPS];

let cluster: Cluster;
let sdb: SessionDb;

const su = (sql: string, params?: unknown[]) => sdb.su(sql, params);
const connectAs = (who: { user: string; password: string }) => sdb.connectAs(who);
const app = () => sdb.app();
const createSession = (c: pg.Client, user: string) => sdb.createSession(c, user);
const open = (c: pg.Client, id: string, nonce: number, token: string) => sdb.open(c, id, nonce, token);
const login = (c: pg.Client, user: 'alice' | 'bob') => sdb.login(c, user);
const cont = (c: pg.Client, creds: SessionCredentials) => sdb.cont(c, creds);
async function endSession(c: pg.Client, creds: SessionCredentials): Promise<boolean> {
  const n = creds.next();
  return (await c.query('select tessera.end_session($1, $2, $3) as ok', [n.sessionId, n.nonce, n.authentToken])).rows[0].ok;
}

async function owners(c: pg.Client): Promise<string[]> {
  return [...new Set((await c.query('select owner from demo.notes order by owner')).rows.map((r) => r.owner as string))];
}

/** The key file as the server wrote it (the tests run as root and may look). */
async function keyFile(): Promise<{ file: string; key: string }> {
  const oid = (await su('select oid from pg_database where datname = current_database()')).rows[0].oid;
  const file = path.join(cluster.dataDir, `tessera_${oid}.key`);
  return { file, key: fs.readFileSync(file, 'utf8').trim() };
}

test.before(async () => {
  cluster = await sharedCluster();
  sdb = new SessionDb(cluster, DB);
  await demoDatabase(cluster, DB);
  for (const r of ROLES) {
    await cluster.query(`drop role if exists ${r.user}`);
    await cluster.query(`create role ${r.user} login password '${r.password}'`);
  }
  await cluster.query(`grant tessera_user to ${CAROL.user}, ${DAVE.user}`);
  await cluster.query(`grant tessera_admin to ${OPS.user}`);
  await su(`grant usage on schema demo to ${CAROL.user}, ${DAVE.user}, ${EVE.user}`);
  await su(`grant select on demo.notes to ${CAROL.user}, ${DAVE.user}, ${EVE.user}`);
  await su(`select tessera.create_accessor($1, 'carol-accessor-password')`, [CAROL.user]);
  await su(`insert into demo.notes values ($1, 'carol: water the plants')`, [CAROL.user]);
});

test.after(async () => {
  await sdb.closeAll();
  await cluster.query(`drop database if exists ${DB} with (force)`).catch(() => {});
  for (const r of ROLES) await cluster.query(`drop role if exists ${r.user}`).catch(() => {});
});

test('end_session: the holder logs out; bound backends see nobody from the next statement; the id is then unknown', async () => {
  const c = await app();
  const { s, creds } = await login(c, 'alice');
  const other = await app();
  assert.equal(await cont(other, creds), OK);
  assert.is(await who(c), 'alice');
  assert.is(await who(other), 'alice');

  const logout = await app();
  assert.is(await endSession(logout, creds), true);
  for (const bound of [c, other]) {
    assert.is(await who(bound), null);
    assert.equal(await owners(bound), []);
    assert.is((await bound.query('select tessera.current_session_id() as id')).rows[0].id, null);
  }
  // Just like a session that never existed.
  assert.equal(await cont(await app(), creds), fail('AUTHFAIL'));
  assert.equal(await open(await app(), '1234567890123', 5, authentToken(s.token, 5)), fail('AUTHFAIL'));
  assert.is(await endSession(logout, creds), false, 'a second logout finds nothing');
});

test('end_session needs the same proof as open_connection; every failure is just false', async () => {
  const c = await app();
  const { s, creds } = await login(c, 'bob');
  const n = () => creds.next().nonce;
  const end = async (id: string, nonce: number, token: string) =>
    (await c.query('select tessera.end_session($1, $2, $3) as ok', [id, nonce, token])).rows[0].ok as boolean;

  assert.is(await end(s.id, n(), 'not-the-token'), false, 'wrong token');
  assert.is(await end(s.id, 1, authentToken(s.token, 1)), false, 'used nonce');
  assert.is(await end(s.id, 500, authentToken(s.token, 500)), false, 'nonce far ahead');
  const alice = await createSession(c, 'alice');
  const k = n();
  assert.is(await end(s.id, k, authentToken(alice.token, k)), false, "another session's token");
  assert.is(await end('1234567890123', 2, authentToken(s.token, 2)), false, 'unknown session');
  assert.is(await who(c), 'bob', 'failed logouts leave the session alone');

  // Each attempt used its nonce up, as a connection attempt would.
  const used = n();
  assert.is(await end(s.id, used, 'wrong'), false);
  assert.equal(await open(c, s.id, used, authentToken(s.token, used)), fail('NONCEFAIL'));

  // A session never authenticated is ended with the password, as it would be opened.
  const fresh = await createSession(c, 'alice');
  assert.is(await end(fresh.id, 1, 'bob-password'), false);
  assert.is(await end(fresh.id, 2, 'alice-password'), true);
  assert.equal(await open(c, fresh.id, 3, 'alice-password'), fail('AUTHFAIL'));

  // Expired: false, and (as any expired session) nobody bound to it sees anything.
  const expiring = await login(c, 'alice');
  await su(`update tessera.sessions set expires_at = now() - interval '1 second' where session_id = $1`, [expiring.s.id]);
  assert.is(await who(c), null);
  assert.is(await endSession(await app(), expiring.creds), false);
});

test('wrong end_session proofs count towards the lock like wrong logins', async () => {
  const c = await app();
  const { s, creds } = await login(c, 'alice');
  for (let i = 0; i < 6; i++) {
    const k = creds.next().nonce;
    assert.is((await c.query('select tessera.end_session($1, $2, $3) as ok', [s.id, k, 'guess'])).rows[0].ok, false);
  }
  assert.equal(await cont(c, creds), fail('LOCKED'));
  assert.is(await endSession(c, creds), false, 'a locked session cannot be ended by its holder either');
});

test('end_session_admin: superuser and tessera_admin members only; ends any session', async () => {
  const c = await app();
  const { s, creds } = await login(c, 'bob');
  assert.is(await sqlState(c.query('select tessera.end_session_admin($1)', [s.id])), '42501');
  assert.is(await sqlState((await connectAs(CAROL)).query('select tessera.end_session_admin($1)', [s.id])), '42501');
  assert.is(await who(c), 'bob');

  const ops = await connectAs(OPS);
  assert.is((await ops.query('select tessera.end_session_admin($1) as ok', [s.id])).rows[0].ok, true);
  assert.is(await who(c), null);
  assert.equal(await owners(c), []);
  assert.equal(await cont(await app(), creds), fail('AUTHFAIL'));
  assert.is((await ops.query('select tessera.end_session_admin($1) as ok', [s.id])).rows[0].ok, false, 'already gone');

  const t = await login(c, 'alice');
  assert.is((await su('select tessera.end_session_admin($1) as ok', [t.s.id])).rows[0].ok, true);
  assert.is(await who(c), null);
});

test('hello(): a user with its own credentials gets the accessor of its own name, and only that', async () => {
  const carol = await connectAs(CAROL);
  assert.equal(await owners(carol), [], 'unbound before hello()');
  assert.is((await carol.query('select tessera.hello() as ok')).rows[0].ok, true);
  assert.is(await who(carol), CAROL.user);
  assert.equal(await owners(carol), [CAROL.user]);
  assert.is((await carol.query('select tessera.current_session_id() as id')).rows[0].id, null, 'no token session');

  // Nothing the user may do changes whose context it is.
  await carol.query('set role tessera_user');
  assert.is(await who(carol), CAROL.user);
  await carol.query('reset role');
  await carol.query('discard all');
  assert.is(await who(carol), CAROL.user, 'DISCARD ALL is not enough: close_connection() is');
  await carol.query('select tessera.close_connection()');
  assert.is(await who(carol), null);
  assert.equal(await owners(carol), []);

  // A token session replaces the dedicated binding, and hello() replaces a token session.
  assert.is((await carol.query('select tessera.hello() as ok')).rows[0].ok, true);
  const bob = await login(await app(), 'bob');
  assert.equal(await cont(carol, bob.creds), OK);
  assert.is(await who(carol), 'bob');
  assert.is((await carol.query('select tessera.hello() as ok')).rows[0].ok, true);
  assert.is(await who(carol), CAROL.user);

  // No accessor of that name: false, and the backend stays unbound.
  const dave = await connectAs(DAVE);
  assert.is((await dave.query('select tessera.hello() as ok')).rows[0].ok, false);
  assert.is(await who(dave), null);
  assert.equal(await owners(dave), []);

  // Not a tessera_user member: not allowed at all.
  assert.is(await sqlState((await connectAs(EVE)).query('select tessera.hello()')), '42501');

  // A pooler's role serves many users: never bound to one, even with an accessor of its name.
  await su(`select tessera.create_accessor('tessera_app', 'x-password')`);
  try {
    const pool = await app();
    assert.is((await pool.query('select tessera.hello() as ok')).rows[0].ok, false);
    assert.is(await who(pool), null);
  } finally {
    await su(`delete from tessera.accessors where username = 'tessera_app'`);
  }
});

test('the key file: in the data directory, one per database, private to the server', async () => {
  const { file, key } = await keyFile();
  assert.match(key, /^[0-9a-f]{64}$/);
  // COPY makes its files 0644; what keeps other OS users out is the data directory, which
  // PostgreSQL refuses to start with unless it is 0700 (or 0750 with group access).
  assert.is(path.dirname(file), cluster.dataDir);
  assert.is(fs.statSync(cluster.dataDir).mode & 0o007, 0, 'others cannot enter the data directory');
  // Installing again keeps the key (live sessions stay usable).
  const c = await app();
  const { creds } = await login(c, 'alice');
  const { psqlFile } = await import('../support/sql.js');
  await psqlFile(cluster, DB, 'sql/tessera.sql');
  assert.is((await keyFile()).key, key);
  assert.equal(await cont(c, creds), OK);
});

test('a relayed connection cannot read the key, and no table holds it', async () => {
  const { file, key } = await keyFile();
  const c = await app();
  await login(c, 'bob');
  const name = path.basename(file);
  const attempts = [
    `select pg_read_file('${name}')`,
    `select pg_read_file('${file}')`,
    `select pg_read_binary_file('${name}')`,
    `select pg_stat_file('${name}')`,
    `select pg_ls_dir('.')`,
    `select lo_import('${file}')`,
    `copy demo.notes (body) from '${file}'`,
    `select tessera.read_key()`,
    `select tessera.key_path()`,
    `select tessera.decrypt_token(session_token_enc) from tessera.sessions`,
    `select tessera.encrypt_token('x', null)`,
    `select tessera.rotate_key()`,
    `select tessera.check_proof(1, 1, 'x', null)`,
    `select current_setting('data_directory')`,
  ];
  for (const sql of attempts) assert.is(await sqlState(c.query(sql)), '42501', sql);
  // The key is no setting either.
  const settings = await c.query(`select string_agg(setting, ' ') as s from pg_settings`);
  assert.not.ok(String(settings.rows[0].s).includes(key));
  // Every text value in the database's tables, as the superuser sees them.
  const tables = await su(`
    select format('%I.%I', n.nspname, c.relname) as t from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'u') and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')`);
  for (const { t } of tables.rows) {
    const hit = await su(`select count(*)::int as n from ${t} x where x::text like '%' || $1 || '%'`, [key]);
    assert.is(hit.rows[0].n, 0, t);
  }
});

needing('pg_dump')('pg_dump of the database holds no token of a live session, no proof and no key', async () => {
  const c = await app();
  const live = [await login(c, 'alice'), await login(c, 'bob')];
  const unopened = await createSession(c, 'alice');
  const ghost = await createSession(c, 'nobody-by-this-name');
  for (const l of live) assert.equal(await cont(await app(), l.creds), OK);
  const { key } = await keyFile();

  const dump = await run(tool('pg_dump'), ['-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', '-d', DB], {
    env: { PGPASSWORD: cluster.superPassword },
  });
  assert.is(dump.code, 0, dump.stderr);
  assert.ok(dump.stdout.includes('session_token_enc'), 'the dump has the sessions');
  assert.ok(dump.stdout.includes(live[0].s.id), 'and this session among them');
  for (const token of [...live.map((l) => l.s.token), unopened.token, ghost.token, ...sdb.tokens]) {
    assert.not.ok(dump.stdout.includes(token), 'a session token is in the dump');
    assert.not.ok(dump.stdout.includes(Buffer.from(token).toString('hex')), 'a session token (hex) is in the dump');
    for (let nonce = 1; nonce <= 4; nonce++) assert.not.ok(dump.stdout.includes(authentToken(token, nonce)));
  }
  assert.not.ok(dump.stdout.includes(key), 'the key is in the dump');
  assert.not.ok(dump.stdout.includes('alice-password'));
});

test('rotate_key: a new key, every live session re-encrypted under it and still working', async () => {
  const c = await app();
  const a = await login(c, 'alice');
  const b = await login(await app(), 'bob');
  const before = await keyFile();
  const enc = async (id: string) => (await su('select session_token_enc from tessera.sessions where session_id = $1', [id])).rows[0].session_token_enc as Buffer;
  const encBefore = await enc(a.s.id);

  const r = await su('select tessera.rotate_key() as n');
  assert.ok(r.rows[0].n >= 2, `re-encrypted ${r.rows[0].n}`);
  const after = await keyFile();
  assert.match(after.key, /^[0-9a-f]{64}$/);
  assert.is.not(after.key, before.key);
  assert.is(fs.readFileSync(`${after.file}.new`, 'utf8'), '', 'no second copy of the key is left behind');
  assert.not.ok((await enc(a.s.id)).equals(encBefore));
  // Only the new key opens the stored tokens.
  assert.is(await sqlState(su('select tessera.pgp_sym_decrypt(session_token_enc, $2) from tessera.sessions where session_id = $1', [a.s.id, before.key])), '39000');
  assert.is((await su('select tessera.pgp_sym_decrypt(session_token_enc, $2) as t from tessera.sessions where session_id = $1', [a.s.id, after.key])).rows[0].t, a.s.token);

  assert.is(await who(c), 'alice', 'bound backends stay bound');
  assert.equal(await cont(await app(), a.creds), OK);
  assert.equal(await cont(await app(), b.creds), OK);
  const fresh = await login(c, 'bob');
  assert.equal(await cont(await app(), fresh.creds), OK, 'sessions created after rotation work');
  assert.is(await endSession(await app(), a.creds), true, 'and logout too');
});

test('a token encrypted under another key (a restored dump, a lost key file) only fails to log in', async () => {
  const c = await app();
  const { s, creds } = await login(c, 'alice');
  await su(`update tessera.sessions set session_token_enc = tessera.pgp_sym_encrypt($2, 'some other key', 'cipher-algo=aes256') where session_id = $1`, [s.id, s.token]);
  assert.equal(await cont(await app(), creds), fail('AUTHFAIL'));
  assert.is(await endSession(await app(), creds), false);
});

test.run();
