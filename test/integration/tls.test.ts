// TLS on both sides: clients upgrading after SSLRequest (psql, node-postgres) or with PostgreSQL
// 17's direct TLS, client certificates (auth_type cert, hba cert), require mode, the cleartext
// rule for non-loopback clients, certificate reload, and Tessera reaching a hostssl-only
// PostgreSQL with server_tls_sslmode=verify-full. Certificates come from `tessera cert`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { serialize } from 'pg-protocol';
import { ROLES, TEST_DB, sharedCluster, startCluster, type Cluster } from '../support/cluster.js';
import { needing, testUnless, tool } from '../support/tools.js';
import { startTessera, clusterEntry, connect, rejection, run, ROOT, type RunningTessera } from '../support/tessera.js';
import { demoDatabase } from '../support/sql.js';
import { WireClient, authCode, errorCodes, errorFields } from '../support/wire.js';
import { writeDevCerts, type DevCerts } from '../../src/tls/cert-command.js';
import { SessionCredentials } from '../../src/client/index.js';

let cluster: Cluster;
let certs: DevCerts;
/** Another CA with a client certificate for the same user name: must never be trusted. */
let otherCerts: DevCerts;
let tmp: string;
const running: RunningTessera[] = [];
/** A non-loopback address of this machine, to be a "remote" client honestly; undefined if it has none. */
const remoteIp = Object.values(os.networkInterfaces())
  .flat()
  .find((i) => i && !i.internal && i.family === 'IPv4')?.address;
const NO_REMOTE_ADDRESS = remoteIp ? undefined : 'this machine has no non-loopback IPv4 address';

function tlsFiles(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { client_tls_key_file: certs.serverKey, client_tls_cert_file: certs.serverCert, ...extra };
}

async function tessera(settings: Record<string, unknown>, userlist?: string): Promise<RunningTessera> {
  const t = await startTessera({ databases: { '*': clusterEntry(cluster) }, ...settings }, userlist);
  running.push(t);
  return t;
}

/** node-postgres over TLS, trusting the development CA. */
function sslConn(t: RunningTessera, user: string, extra: Omit<Partial<pg.ClientConfig>, 'ssl'> & { ssl?: tls.ConnectionOptions } = {}): pg.ClientConfig {
  const { ssl, ...rest } = extra;
  return { ...t.conn(user), ...rest, ssl: { ca: fs.readFileSync(certs.ca), ...ssl } };
}

async function scalar(config: pg.ClientConfig, sql: string): Promise<unknown> {
  const c = await connect(config);
  try {
    return Object.values((await c.query(sql)).rows[0])[0];
  } finally {
    await c.end();
  }
}

/** Writes bytes on a fresh connection and collects what comes back until `done` or the close. */
function psql(conninfo: string, ...commands: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const args = ['-X', '-At', conninfo, ...commands.flatMap((c) => ['-c', c])];
  return run(tool('psql'), args, { env: { PGCONNECT_TIMEOUT: '10', PGGSSENCMODE: 'disable' } });
}

test.before(async () => {
  cluster = await sharedCluster();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-tls-'));
  certs = writeDevCerts(path.join(tmp, 'ca'), { clients: [ROLES.trust.user, ROLES.md5.user], hosts: remoteIp ? [remoteIp] : [] });
  otherCerts = writeDevCerts(path.join(tmp, 'other'), { clients: [ROLES.trust.user] });
});

test.after(async () => {
  for (const t of running) await t.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

needing('psql')('psql with sslmode=verify-full trusts Tessera by the development CA; SHOW CLIENTS names the TLS version', async () => {
  const t = await tessera({ client_tls_sslmode: 'prefer', admin_users: ROLES.trust.user, ...tlsFiles() });
  const conninfo = `host=localhost port=${t.port} user=${ROLES.trust.user} dbname=${TEST_DB} sslmode=verify-full sslrootcert=${certs.ca}`;
  const r = await psql(conninfo, 'select current_user', '\\conninfo');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^trust_user$/m);
  assert.match(r.stdout, /SSL connection \(protocol: TLSv1\.3/);
  // The wrong CA: psql refuses Tessera's certificate.
  const wrong = await psql(`${conninfo.replace(certs.ca, otherCerts.ca)}`, 'select 1');
  assert.is.not(wrong.code, 0);
  assert.match(wrong.stderr, /certificate verify failed/);
  // Seen from the admin console: this client's own row says TLS.
  const admin = await connect(sslConn(t, ROLES.trust.user, { database: 'pgbouncer' }));
  try {
    const rows = (await admin.query('SHOW CLIENTS')).rows as { tls: string; database: string }[];
    assert.match(rows.find((r) => r.database === 'pgbouncer')!.tls, /^TLSv1\.3\/TLS_/);
  } finally {
    await admin.end();
  }
});

test('node-postgres with ssl logs in over TLS, and plaintext still works in prefer mode', async () => {
  const t = await tessera({ client_tls_sslmode: 'prefer', ...tlsFiles() });
  assert.is(await scalar(sslConn(t, ROLES.trust.user), 'select current_user'), ROLES.trust.user);
  assert.is(await scalar(t.conn(ROLES.trust.user), 'select current_user'), ROLES.trust.user);
  // Trusting another CA, node-postgres refuses Tessera's certificate.
  const err = await rejection(connect(sslConn(t, ROLES.trust.user, { ssl: { ca: fs.readFileSync(otherCerts.ca) } })));
  assert.match(err.message, /certificate/);
});

test('require mode refuses a plaintext client with SSL required (28000)', async () => {
  const t = await tessera({ client_tls_sslmode: 'require', ...tlsFiles() });
  const err = await rejection(connect(t.conn(ROLES.trust.user)));
  assert.is(err.code, '28000');
  assert.is(err.message, 'SSL required');
  assert.is(await scalar(sslConn(t, ROLES.trust.user), 'select 1 as one'), 1);
});

test('auth_type cert: the client certificate CN is the user; another user, another CA or no certificate is refused', async () => {
  const t = await tessera({ auth_type: 'cert', client_tls_sslmode: 'verify-full', client_tls_ca_file: certs.ca, ...tlsFiles() });
  const mine = certs.clients[ROLES.trust.user];
  const withCert = (c: { cert: string; key: string }) => ({ cert: fs.readFileSync(c.cert), key: fs.readFileSync(c.key) });
  assert.is(await scalar(sslConn(t, ROLES.trust.user, { ssl: withCert(mine) }), 'select current_user'), ROLES.trust.user);
  const otherUser = await rejection(connect(sslConn(t, ROLES.md5.user, { ssl: withCert(mine) })));
  assert.is(otherUser.code, '28000');
  assert.is(otherUser.message, `certificate authentication failed for user "${ROLES.md5.user}"`);
  const wrongCa = await rejection(connect(sslConn(t, ROLES.trust.user, { ssl: withCert(otherCerts.clients[ROLES.trust.user]) })));
  assert.is(wrongCa.code, '28000');
  assert.is(wrongCa.message, 'connection requires a valid client certificate');
  const none = await rejection(connect(sslConn(t, ROLES.trust.user)));
  assert.is(none.code, '28000');
  const plain = await rejection(connect(t.conn(ROLES.trust.user)));
  assert.is(plain.message, 'SSL required');
});

needing('psql')('auth_type cert: psql logs in with its client certificate (sslcert/sslkey)', async () => {
  const t = await tessera({ auth_type: 'cert', client_tls_sslmode: 'verify-full', client_tls_ca_file: certs.ca, ...tlsFiles() });
  const mine = certs.clients[ROLES.trust.user];
  const r = await psql(`host=127.0.0.1 port=${t.port} user=${ROLES.trust.user} dbname=${TEST_DB} sslmode=verify-full sslrootcert=${certs.ca} sslcert=${mine.cert} sslkey=${mine.key}`, 'select current_user');
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout.trim(), ROLES.trust.user);
});

test('auth_type hba: hostssl and hostnossl see the real TLS state, and method cert works', async () => {
  const hba = path.join(tmp, 'hba.conf');
  fs.writeFileSync(
    hba,
    [
      `hostssl all ${ROLES.md5.user} 127.0.0.1/32 cert`,
      `hostssl all all 127.0.0.1/32 trust`,
      `hostnossl all all 127.0.0.1/32 reject`,
    ].join('\n') + '\n',
  );
  const userlist = `"${ROLES.md5.user}" "${ROLES.md5.password}"\n`;
  const t = await tessera({ auth_type: 'hba', auth_hba_file: hba, client_tls_sslmode: 'prefer', client_tls_ca_file: certs.ca, ...tlsFiles() }, userlist);
  assert.is(await scalar(sslConn(t, ROLES.trust.user), 'select current_user'), ROLES.trust.user);
  const plain = await rejection(connect(t.conn(ROLES.trust.user)));
  assert.is(plain.code, '28000');
  assert.match(plain.message, 'pg_hba.conf rejects connection for host "127.0.0.1", user "trust_user", database "tessera_test", no encryption');
  // cert: md5_user's own certificate logs it in with no password (auth_file's serves the server login).
  const md5 = certs.clients[ROLES.md5.user];
  assert.is(await scalar(sslConn(t, ROLES.md5.user, { ssl: { cert: fs.readFileSync(md5.cert), key: fs.readFileSync(md5.key) } }), 'select current_user'), ROLES.md5.user);
  const noCert = await rejection(connect(sslConn(t, ROLES.md5.user)));
  assert.is(noCert.message, 'connection requires a valid client certificate');
});

test('garbage after SSLRequest gets an error, not a crash: unencrypted bytes before the handshake, or no TLS after S', async () => {
  const t = await tessera({ client_tls_sslmode: 'prefer', ...tlsFiles() });
  // Bytes sent with the SSLRequest were not encrypted: a man in the middle could have put them there.
  const injected = await WireClient.connect(t.port);
  injected.send(serialize.requestSsl(), serialize.startup({ user: ROLES.trust.user, database: TEST_DB }));
  const refused = await injected.next();
  assert.is(refused.type, 'E');
  assert.is(errorFields(refused).C, '08P01');
  assert.is(errorFields(refused).M, 'received unencrypted data after SSL request');
  await injected.closed;
  // 'S', then plaintext instead of a ClientHello: the handshake fails and only this connection closes.
  const afterS = await WireClient.connect(t.port);
  afterS.send(serialize.requestSsl());
  assert.is(await afterS.readByte(), 'S');
  afterS.send(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await afterS.closed;
  assert.is(await scalar(sslConn(t, ROLES.trust.user), 'select 1 as one'), 1);
  // Without TLS configured: 'N', and a second SSLRequest is a protocol violation, as in PostgreSQL.
  const plain = await tessera({});
  const twice = await WireClient.connect(plain.port);
  twice.send(serialize.requestSsl(), serialize.requestSsl());
  assert.is(await twice.readByte(), 'N');
  const second = await twice.next();
  assert.is(second.type, 'E');
  assert.is(errorFields(second).C, '08P01');
  await twice.closed;
});

test('PostgreSQL 17 direct TLS: a ClientHello first, with ALPN "postgresql"; without ALPN it is refused', async () => {
  const t = await tessera({ client_tls_sslmode: 'require', ...tlsFiles() });
  const direct = async (alpn: string[] | undefined) => {
    const c = await WireClient.connectTls({ host: '127.0.0.1', port: t.port, ca: fs.readFileSync(certs.ca), ALPNProtocols: alpn });
    c.send(serialize.startup({ user: ROLES.trust.user, database: TEST_DB }));
    return c;
  };
  const ok = await direct(['postgresql']);
  const login = await ok.readUntil('Z');
  assert.is(authCode(login[0]), 0); // AuthenticationOk
  assert.equal(errorCodes(login), []);
  ok.end();
  const noAlpn = await direct(undefined);
  const err = await noAlpn.next();
  assert.is(err.type, 'E');
  assert.is(errorFields(err).C, '08P01');
  assert.match(errorFields(err).M, 'without ALPN');
  await noAlpn.closed;
});

test('RELOAD picks up a new certificate; established TLS connections keep going', async () => {
  const t = await tessera({ client_tls_sslmode: 'require', admin_users: ROLES.trust.user, ...tlsFiles() });
  const before = await connect(sslConn(t, ROLES.trust.user));
  const admin = await connect(sslConn(t, ROLES.trust.user, { database: 'pgbouncer' }));
  try {
    const config = JSON.parse(fs.readFileSync(t.file, 'utf8'));
    fs.writeFileSync(t.file, JSON.stringify({ ...config, client_tls_key_file: otherCerts.serverKey, client_tls_cert_file: otherCerts.serverCert }));
    await admin.query('RELOAD');
    assert.is((await before.query('select 2 as two')).rows[0].two, 2);
    assert.is((await admin.query('SHOW VERSION')).rows.length, 1);
    const oldCa = await rejection(connect(sslConn(t, ROLES.trust.user)));
    assert.match(oldCa.message, /certificate/);
    assert.is(await scalar(sslConn(t, ROLES.trust.user, { ssl: { ca: fs.readFileSync(otherCerts.ca) } }), 'select 3 as three'), 3);
    // A key that does not match its certificate: RELOAD fails, the running certificate stays.
    fs.writeFileSync(t.file, JSON.stringify({ ...config, client_tls_key_file: certs.serverKey, client_tls_cert_file: otherCerts.serverCert }));
    const bad = (await rejection(admin.query('RELOAD'))) as Error & { detail?: string };
    assert.match(bad.message, 'RELOAD failed');
    assert.match(bad.detail ?? '', /client_tls_key_file: cannot use it/);
    assert.is(await scalar(sslConn(t, ROLES.trust.user, { ssl: { ca: fs.readFileSync(otherCerts.ca) } }), 'select 4 as four'), 4);
  } finally {
    await before.end();
    await admin.end();
  }
});

testUnless(NO_REMOTE_ADDRESS)('cleartext secrets need TLS from a non-loopback address: plain password and session-token logins', async () => {
  const userlist = `"${ROLES.plain.user}" "${ROLES.plain.password}"\n`;
  const t = await tessera({ listen_addr: `127.0.0.1,${remoteIp}`, auth_type: 'plain', client_tls_sslmode: 'prefer', ...tlsFiles() }, userlist);
  const remote = (extra: Partial<pg.ClientConfig> = {}) => ({ ...t.conn(ROLES.plain.user, ROLES.plain.password), host: remoteIp, ...extra });
  const refused = await rejection(connect(remote()));
  assert.is(refused.code, '28000');
  assert.match(refused.message, /^TLS required: /);
  // Over TLS from the same address, and in plaintext over loopback, the same login works.
  assert.is(await scalar(remote({ ssl: { ca: fs.readFileSync(certs.ca) } }), 'select current_user'), ROLES.plain.user);
  assert.is(await scalar(t.conn(ROLES.plain.user, ROLES.plain.password), 'select current_user'), ROLES.plain.user);
  // md5 and SCRAM never send the password: no TLS needed.
  const md5 = await tessera({ listen_addr: `127.0.0.1,${remoteIp}`, auth_type: 'md5' }, `"${ROLES.md5.user}" "${ROLES.md5.password}"\n`);
  assert.is(await scalar({ ...md5.conn(ROLES.md5.user, ROLES.md5.password), host: remoteIp }, 'select current_user'), ROLES.md5.user);
  // The escape hatch, for a network that is trusted some other way.
  const allowed = await tessera({ listen_addr: `127.0.0.1,${remoteIp}`, auth_type: 'plain', allow_cleartext_without_tls: true }, userlist);
  assert.is(await scalar({ ...allowed.conn(ROLES.plain.user, ROLES.plain.password), host: remoteIp }, 'select current_user'), ROLES.plain.user);
});

/** A Tessera with a session_token database `app` (over TLS when asked), and one session of alice. */
async function sessionTokenTessera(db: string) {
  const APP = { user: 'tessera_app', password: 'tessera-app-password' };
  await demoDatabase(cluster, db);
  const t = await tessera({
    listen_addr: remoteIp ? `127.0.0.1,${remoteIp}` : '127.0.0.1',
    client_tls_sslmode: 'prefer',
    ...tlsFiles(),
    databases: { app: clusterEntry(cluster, { dbname: db, auth_type: 'session_token', user: APP.user, password: APP.password, pool_size: 1 }) },
  });
  const app = new pg.Client({ host: cluster.host, port: cluster.port, database: db, ...APP });
  await app.connect();
  const { rows } = await app.query(`select session_id, session_token from tessera.create_session('alice')`);
  await app.end();
  const creds = new SessionCredentials(rows[0].session_id, rows[0].session_token, { firstNonce: 2 });
  const over = (host: string, password: string, ssl: boolean) => ({ host, port: t.port, database: 'app', user: 'web', password, ssl: ssl ? { ca: fs.readFileSync(certs.ca) } : undefined });
  return { firstTicket: `${rows[0].session_id}:1:alice-password`, creds, over };
}

test('a session-token login over TLS', async () => {
  const { firstTicket, creds, over } = await sessionTokenTessera('tessera_tls_token');
  const host = remoteIp ?? '127.0.0.1';
  assert.is(await scalar(over(host, firstTicket, true), 'select tessera.current_accessor()'), 'alice');
  assert.is(await scalar(over(host, creds.asPassword(), true), 'select tessera.current_accessor()'), 'alice');
});

testUnless(NO_REMOTE_ADDRESS)('a session-token login without TLS from a non-loopback address is refused', async () => {
  const { firstTicket, over } = await sessionTokenTessera('tessera_tls_token_remote');
  const refused = await rejection(connect(over(remoteIp!, firstTicket, false)));
  assert.is(refused.code, '28000');
  assert.match(refused.message, /^TLS required: a session-token login/);
  // The same ticket is still good over TLS: the refusal did not spend it.
  assert.is(await scalar(over(remoteIp!, firstTicket, true), 'select tessera.current_accessor()'), 'alice');
});

test('server_tls_sslmode=verify-full reaches a hostssl-only PostgreSQL; disable and a wrong CA fail clearly', async () => {
  const sslCluster = await startCluster({
    hba: 'local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n',
    ssl: { certFile: certs.serverCert, keyFile: certs.serverKey },
  });
  try {
    const entry = clusterEntry(sslCluster, { dbname: TEST_DB, user: ROLES.scram.user, password: ROLES.scram.password });
    const t = await tessera({ admin_users: ROLES.trust.user, server_tls_sslmode: 'verify-full', server_tls_ca_file: certs.ca, databases: { app: entry } });
    assert.is(await scalar(t.conn('anyone', undefined, 'app'), 'select ssl from pg_stat_ssl where pid = pg_backend_pid()'), true);
    const admin = await connect(t.conn(ROLES.trust.user, undefined, 'pgbouncer'));
    try {
      const servers = (await admin.query('SHOW SERVERS')).rows as { tls: string }[];
      assert.ok(servers.length > 0);
      assert.match(servers[0].tls, /^TLSv1\.3\/TLS_[A-Z0-9_]+\/ECDH=/);
    } finally {
      await admin.end();
    }
    // prefer (the default) uses TLS when the server offers it.
    const preferred = await tessera({ databases: { app: entry } });
    assert.is(await scalar(preferred.conn('anyone', undefined, 'app'), 'select ssl from pg_stat_ssl where pid = pg_backend_pid()'), true);
    // Without TLS the server's own refusal reaches the client.
    const plain = await tessera({ server_tls_sslmode: 'disable', databases: { app: entry } });
    const refused = await rejection(connect(plain.conn('anyone', undefined, 'app')));
    assert.is(refused.code, '28000');
    assert.match(refused.message, /no pg_hba\.conf entry .* no encryption/);
    const wrongCa = await tessera({ server_tls_sslmode: 'verify-full', server_tls_ca_file: otherCerts.ca, databases: { app: entry } });
    const untrusted = await rejection(connect(wrongCa.conn('anyone', undefined, 'app')));
    assert.is(untrusted.code, '08006');
    assert.match(untrusted.message, /server TLS connection failed: .*certificate/);
  } finally {
    await sslCluster.stop();
  }
  // require against a server without TLS (the shared test cluster) fails, never falls back.
  const required = await tessera({ server_tls_sslmode: 'require' });
  const noTls = await rejection(connect(required.conn(ROLES.trust.user)));
  assert.is(noTls.code, '08006');
  assert.match(noTls.message, 'server does not support TLS, and server_tls_sslmode is "require"');
});

test('`tessera cert DIR` writes a CA, a key (mode 0600) and a certificate for localhost, and prints the settings', async () => {
  const dir = path.join(tmp, 'cli');
  const r = await run(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli.ts'), 'cert', dir]);
  assert.is(r.code, 0, r.stderr);
  for (const f of ['ca.crt', 'ca.key', 'server.crt', 'server.key']) assert.ok(fs.existsSync(path.join(dir, f)), f);
  assert.is(fs.statSync(path.join(dir, 'server.key')).mode & 0o777, 0o600);
  assert.match(r.stdout, '"client_tls_sslmode": "require"');
  assert.match(r.stdout, `"client_tls_key_file": "${path.join(dir, 'server.key')}"`);
  assert.match(r.stdout, `"client_tls_cert_file": "${path.join(dir, 'server.crt')}"`);
  const v = await run('openssl', ['verify', '-CAfile', path.join(dir, 'ca.crt'), path.join(dir, 'server.crt')]);
  assert.is(v.code, 0, v.stderr);
});

test.run();
