// Client authentication to Tessera (auth_type, auth_file) and Tessera's own login to PostgreSQL
// (SCRAM, md5 and cleartext as the server asks), plus the errors a client sees at login.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { serialize } from 'pg-protocol';
import { ROLES, TEST_DB, sharedCluster, freePort, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, type RunningTessera } from '../support/tessera.js';
import { WireClient, authCode, errorCodes, errorFields, negotiatedVersion } from '../support/wire.js';
import { md5Secret } from '../../src/auth/md5.js';
import { scramSecret } from '../../src/auth/scram.js';
import { formatSecret } from '../../src/auth/secret.js';

let cluster: Cluster;
const running: RunningTessera[] = [];
const userlistPlain = [ROLES.scram, ROLES.md5, ROLES.plain].map((r) => `"${r.user}" "${r.password}"`).join('\n') + '\n';

async function tessera(settings: Record<string, unknown>, userlist?: string): Promise<RunningTessera> {
  const t = await startTessera({ databases: { '*': clusterEntry(cluster) }, ...settings }, userlist);
  running.push(t);
  return t;
}

async function whoami(t: RunningTessera, user: string, password?: string): Promise<string> {
  const c = await connect(t.conn(user, password));
  try {
    return (await c.query('select current_user as u')).rows[0].u;
  } finally {
    await c.end();
  }
}

test.before(async () => {
  cluster = await sharedCluster();
});

test.after(async () => {
  for (const t of running) await t.stop();
});

for (const authType of ['plain', 'md5', 'scram-sha-256'] as const) {
  test(`auth_type ${authType}: every server auth method works and a wrong password is 28P01`, async () => {
    const t = await tessera({ auth_type: authType }, userlistPlain);
    // The server asks for SCRAM, md5 and cleartext respectively (pg_hba.conf of the test cluster).
    for (const role of [ROLES.scram, ROLES.md5, ROLES.plain]) {
      assert.is(await whoami(t, role.user, role.password), role.user);
    }
    const err = await rejection(connect(t.conn(ROLES.scram.user, 'wrong')));
    assert.is(err.code, '28P01');
    assert.match(err.message, `password authentication failed for user "${ROLES.scram.user}"`);
    const unknown = await rejection(connect(t.conn('nobody', 'x')));
    assert.is(unknown.code, '28P01');
  });
}

test('auth_file secrets in md5 and SCRAM form authenticate clients', async () => {
  const list = [
    `"${ROLES.md5.user}" "${md5Secret(ROLES.md5.password, ROLES.md5.user)}"`,
    `"${ROLES.plain.user}" "${formatSecret(scramSecret(ROLES.plain.password))}"`,
  ].join('\n');
  const md5 = await tessera({ auth_type: 'md5' }, list);
  // md5 secret: md5 challenge, and Tessera logs in to the server with the same md5 secret.
  assert.is(await whoami(md5, ROLES.md5.user, ROLES.md5.password), ROLES.md5.user);
  assert.is((await rejection(connect(md5.conn(ROLES.md5.user, 'nope')))).code, '28P01');
  // A SCRAM secret gets a SCRAM exchange even under auth_type md5.
  const scram = await rejection(connect(md5.conn(ROLES.plain.user, 'nope')));
  assert.is(scram.code, '28P01');
});

test('SCRAM pass-through: a SCRAM secret copied from pg_authid logs the client in to the server as itself', async () => {
  const { rows } = await cluster.query(`select rolpassword from pg_authid where rolname = $1`, [ROLES.scram.user]);
  const t = await tessera({ auth_type: 'scram-sha-256' }, `"${ROLES.scram.user}" "${rows[0].rolpassword}"\n`);
  // No plaintext anywhere: the server login uses the keys the client's proof revealed.
  assert.is(await whoami(t, ROLES.scram.user, ROLES.scram.password), ROLES.scram.user);
  assert.is((await rejection(connect(t.conn(ROLES.scram.user, 'wrong')))).code, '28P01');
});

test('a forced user in the database entry logs in to the server as that user', async () => {
  const t = await startTessera(
    { auth_type: 'trust', databases: { forced: clusterEntry(cluster, { dbname: TEST_DB, user: ROLES.md5.user, password: ROLES.md5.password }) } },
  );
  running.push(t);
  const c = await connect(t.conn('anyone', undefined, 'forced'));
  try {
    assert.is((await c.query('select current_user as u')).rows[0].u, ROLES.md5.user);
  } finally {
    await c.end();
  }
});

test('unknown database is 3D000; a database the server lacks gets the server\'s FATAL', async () => {
  const t = await startTessera({ databases: { only: clusterEntry(cluster, { dbname: TEST_DB }), ghost: clusterEntry(cluster, { dbname: 'no_such_db' }) } });
  running.push(t);
  const err = await rejection(connect(t.conn(ROLES.trust.user, undefined, 'elsewhere')));
  assert.is(err.code, '3D000');
  assert.match(err.message, 'database "elsewhere" does not exist');
  const ghost = await rejection(connect(t.conn(ROLES.trust.user, undefined, 'ghost')));
  assert.is(ghost.code, '3D000');
  assert.match(ghost.message, 'no_such_db');
});

test('max_client_conn: the client past the limit gets 53300, the others keep working', async () => {
  const t = await tessera({ max_client_conn: 3 });
  const clients = await Promise.all([1, 2, 3].map(() => connect(t.conn(ROLES.trust.user))));
  try {
    const err = await rejection(connect(t.conn(ROLES.trust.user)));
    assert.is(err.code, '53300');
    assert.match(err.message, 'max_client_conn');
    for (const c of clients) assert.is((await c.query('select 1 as x')).rows[0].x, 1);
  } finally {
    for (const c of clients) await c.end();
  }
  // Once they leave, a new client gets in.
  assert.is(await whoami(t, ROLES.trust.user), ROLES.trust.user);
});

test('SSLRequest and GSSENCRequest are answered N, then the login proceeds in plaintext', async () => {
  const t = await tessera({});
  const startup = serialize.startup({ user: ROLES.trust.user, database: TEST_DB });
  const ssl = await WireClient.connect(t.port);
  ssl.send(serialize.requestSsl(), startup);
  assert.is(await ssl.readByte(), 'N');
  const login = await ssl.readUntil('Z');
  assert.is(authCode(login[0]), 0); // AuthenticationOk
  assert.equal(errorCodes(login), []);
  ssl.end();
  const gss = Buffer.alloc(8);
  gss.writeInt32BE(8, 0);
  gss.writeInt32BE(80877104, 4);
  const gssenc = await WireClient.connect(t.port);
  gssenc.send(gss, startup);
  assert.is(await gssenc.readByte(), 'N');
  assert.is(authCode((await gssenc.readUntil('Z'))[0]), 0);
  gssenc.end();
});

test('a client asking for protocol 3.2 with _pq_ options gets NegotiateProtocolVersion, not a hang', async () => {
  const t = await tessera({});
  const body = Buffer.from(`user\0${ROLES.trust.user}\0database\0${TEST_DB}\0_pq_.something\0on\0\0`);
  const packet = Buffer.alloc(8 + body.length);
  packet.writeInt32BE(packet.length, 0);
  packet.writeInt32BE((3 << 16) | 2, 4);
  body.copy(packet, 8);
  const c = await WireClient.connect(t.port);
  c.send(packet);
  const login = await c.readUntil('Z');
  c.end();
  // The newest version we speak, 3.0, and the option we do not know.
  assert.equal(negotiatedVersion(login[0]), { version: 0x30000, unrecognised: ['_pq_.something'] });
  assert.is(authCode(login[1]), 0);
});

test('garbage instead of a startup packet is closed without a reply, as PostgreSQL does, and Tessera keeps serving', async () => {
  const t = await tessera({});
  const junk = Buffer.from([0, 0, 0, 3, 1, 2, 3, 4]);
  const got = await new Promise<Buffer>((resolve) => {
    const chunks: Buffer[] = [];
    const s = net.connect(t.port, '127.0.0.1', () => s.write(junk));
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(chunks)));
  });
  assert.is(got.length, 0, got.toString('latin1'));
  assert.is(await whoami(t, ROLES.trust.user), ROLES.trust.user);
});

test('auth_type hba: pg_hba.conf rules choose the method per user, database and address', async () => {
  const fs = await import('node:fs');
  const path = await import('node:path');
  const os = await import('node:os');
  const hbaFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-hba-')), 'hba.conf');
  fs.writeFileSync(
    hbaFile,
    [
      `host ${TEST_DB} ${ROLES.scram.user} 127.0.0.1/32 scram-sha-256`,
      `host all ${ROLES.md5.user} 127.0.0.0/8 md5`,
      `host all ${ROLES.plain.user} 127.0.0.1 255.255.255.255 password`,
      `host all ${ROLES.trust.user} all trust`,
      'host all blocked all reject',
    ].join('\n'),
  );
  const t = await tessera({ auth_type: 'hba', auth_hba_file: hbaFile }, userlistPlain);
  for (const role of [ROLES.scram, ROLES.md5, ROLES.plain]) assert.is(await whoami(t, role.user, role.password), role.user);
  assert.is(await whoami(t, ROLES.trust.user), ROLES.trust.user);
  assert.is((await rejection(connect(t.conn(ROLES.md5.user, 'wrong')))).code, '28P01');
  const none = await rejection(connect(t.conn('nobody', 'x')));
  assert.is(none.code, '28000');
  assert.match(none.message, 'no pg_hba.conf entry for host "127.0.0.1", user "nobody"');
  const rejected = await rejection(connect(t.conn('blocked', 'x')));
  assert.match(rejected.message, 'pg_hba.conf rejects connection');
});

test('auth_type any: the user name is ignored, every database logs in as its own user', async () => {
  const t = await startTessera({ auth_type: 'any', databases: { app: clusterEntry(cluster, { dbname: TEST_DB, user: ROLES.md5.user, password: ROLES.md5.password }) } });
  running.push(t);
  const c = await connect(t.conn('whoever', undefined, 'app'));
  try {
    assert.is((await c.query('select current_user as u')).rows[0].u, ROLES.md5.user);
  } finally {
    await c.end();
  }
});

test('auth_user + auth_query: users not in auth_file are checked against pg_authid, then logged in as themselves', async () => {
  // Only the lookup user is in auth_file; md5_user's md5 secret and scram_user's SCRAM secret come
  // from pg_authid, and Tessera logs in to the server with them (SCRAM by pass-through).
  const t = await tessera({ auth_type: 'md5', auth_user: 'postgres' }, `"postgres" "${cluster.superPassword}"\n`);
  assert.is(await whoami(t, ROLES.md5.user, ROLES.md5.password), ROLES.md5.user);
  assert.is(await whoami(t, ROLES.scram.user, ROLES.scram.password), ROLES.scram.user);
  assert.is((await rejection(connect(t.conn(ROLES.scram.user, 'wrong')))).code, '28P01');
  assert.is((await rejection(connect(t.conn(ROLES.md5.user, 'wrong')))).code, '28P01');
  assert.is((await rejection(connect(t.conn('nobody_at_all', 'x')))).code, '28P01');
});

test('SCRAM with a plaintext auth_file password: repeat logins reuse the derived keys, a changed password or salt is never served from them', async () => {
  // A role of its own, so its password can change under this test only.
  const role = 'scram_rotating_user';
  const quoted = (pw: string) => `'${pw}'`;
  await cluster.query(`drop role if exists ${role}`);
  await cluster.query(`create role ${role} login password ${quoted('first-password')}`);
  try {
    const t = await tessera({ auth_type: 'scram-sha-256' }, `"${role}" "first-password"\n`);
    // Client to Tessera (SCRAM against a secret Tessera derives from the password) and Tessera to
    // PostgreSQL (SCRAM with the password, against the role's salt): both, several times.
    for (let i = 0; i < 3; i++) assert.is(await whoami(t, role, 'first-password'), role);
    assert.is((await rejection(connect(t.conn(role, 'second-password')))).code, '28P01');

    // The same password with a new salt on the server: keys derived for the old salt would fail.
    await cluster.query(`alter role ${role} password ${quoted('first-password')}`);
    t.proxy.adminView.reconnect();
    assert.is(await whoami(t, role, 'first-password'), role);

    // A new password on both sides, then RELOAD: the old one is refused, the new one logs in
    // (the client's exchange and, after RECONNECT, a new server login).
    await cluster.query(`alter role ${role} password ${quoted('second-password')}`);
    fs.writeFileSync(path.join(t.dir, 'userlist.txt'), `"${role}" "second-password"\n`);
    await t.proxy.reload();
    t.proxy.adminView.reconnect();
    const refused = await rejection(connect(t.conn(role, 'first-password')));
    assert.is(refused.code, '28P01');
    for (let i = 0; i < 2; i++) assert.is(await whoami(t, role, 'second-password'), role);
  } finally {
    await cluster.query(`drop role if exists ${role}`);
  }
});

test('auth_query with the first host of the list down: the lookup goes to a host that answers, as the pool\'s servers do', async () => {
  const down = await freePort(); // nothing listens there
  const t = await tessera(
    { auth_type: 'md5', auth_user: 'postgres', databases: { '*': { host: `127.0.0.1,${cluster.host}`, port: `${down},${cluster.port}` } } },
    `"postgres" "${cluster.superPassword}"\n`,
  );
  // Twice: before any pool exists, and once the pool has seen the first host fail.
  for (let i = 0; i < 2; i++) assert.is(await whoami(t, ROLES.md5.user, ROLES.md5.password), ROLES.md5.user);
  assert.is((await rejection(connect(t.conn(ROLES.md5.user, 'wrong')))).code, '28P01');
});

test.run();
