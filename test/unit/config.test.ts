import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load.js';
import { configJsonSchema } from '../../src/config/schema.js';
import { errorOf } from '../support/config-error.js';
import { writeDevCerts } from '../../src/tls/cert-command.js';
import { tlsVersions } from '../../src/tls/contexts.js';

const FILE = 'proxy.config.json';
const dir = mkdtempSync(join(tmpdir(), 'tessera-config-'));
writeFileSync(join(dir, 'userlist.txt'), '"alice" "secret"\n');

// A minimal valid config, with overrides.
const parse = (json: Record<string, unknown>) => parseConfig({ auth_file: 'userlist.txt', ...json }, FILE, dir);


test('defaults are applied', () => {
  const config = parse({ databases: { app: { host: 'db' } } });
  assert.is(config.listen_addr, '127.0.0.1');
  assert.is(config.listen_port, 6432);
  assert.is(config.pool_mode, 'session');
  assert.is(config.default_pool_size, 20);
  assert.is(config.max_client_conn, 100);
  assert.is(config.auth_type, 'md5');
  assert.is(config.server_reset_query, 'DISCARD ALL');
  assert.is(config.server_lifetime, 3600);
  assert.is(config.tcp_keepalive, true);
  assert.is(config.log_level, 'info');
  assert.is(config.shutdown_timeout, 30);
  assert.equal(config.admin_users, []);
  assert.equal(config.users, {});
  assert.equal(config.databases.app, { host: 'db', port: 5432, embedded: false });
});

test('an empty object is valid with auth_type trust', () => {
  const config = parseConfig({ auth_type: 'trust' }, FILE, dir);
  assert.equal(config.databases, {});
  assert.is(config.auth_file, undefined);
});

test('embedded entry has no host or port', () => {
  const config = parse({ databases: { '*': { embedded: true, pool_size: 5 } } });
  assert.equal(config.databases['*'], { embedded: true, pool_size: 5 });
});

test('unknown keys are rejected, naming the path', () => {
  assert.is(errorOf(() => parse({ colour: 'red' })), `${FILE}: colour: unknown setting`);
  assert.is(
    errorOf(() => parse({ databases: { app: { host: 'db', colour: 'red' } } })),
    `${FILE}: databases.app.colour: unknown setting`,
  );
  assert.is(errorOf(() => parse({ users: { bob: { pool_sise: 3 } } })), `${FILE}: users.bob.pool_sise: unknown setting`);
});

test('wrong types name the path and the expectation', () => {
  assert.is(
    errorOf(() => parse({ databases: { app: { host: 'db', port: 'abc' } } })),
    `${FILE}: databases.app.port: expected integer from 1 to 65535 or comma-separated list of ports, got "abc"`,
  );
  assert.is(errorOf(() => parse({ pool_mode: 'statement' })), `${FILE}: pool_mode: expected one of "session", "transaction", got "statement"`);
  assert.is(errorOf(() => parse({ tcp_keepalive: 1 })), `${FILE}: tcp_keepalive: expected true or false, got 1`);
  assert.is(errorOf(() => parse({ default_pool_size: 2.5 })), `${FILE}: default_pool_size: expected integer >= 0, got 2.5`);
  assert.is(errorOf(() => parse({ databases: [] })), `${FILE}: databases: expected object, got an array`);
  assert.is(
    errorOf(() => parse({ databases: { 'my.db': { host: 'db', port: 0 } } })),
    `${FILE}: databases["my.db"].port: expected integer from 1 to 65535 or comma-separated list of ports, got 0`,
  );
});

test('connect_query needs session mode, and says which key to change', () => {
  const entry = { host: 'db', connect_query: 'select tessera.hello()' };
  assert.is(parse({ databases: { app: entry } }).databases.app!.connect_query, 'select tessera.hello()');
  assert.is(
    errorOf(() => parse({ pool_mode: 'transaction', databases: { app: entry } })),
    `${FILE}: databases.app.pool_mode: must be "session" with connect_query (it runs once per client login, on the server the client keeps)`,
  );
  assert.match(errorOf(() => parse({ databases: { app: { ...entry, pool_mode: 'transaction' } } })), 'databases.app.pool_mode: must be "session"');
  assert.is(parse({ pool_mode: 'transaction', databases: { app: { ...entry, pool_mode: 'session' } } }).databases.app!.pool_mode, 'session');
  assert.is(
    errorOf(() => parse({ databases: { app: { ...entry, user: 'reports' } }, users: { reports: { pool_mode: 'transaction' } } })),
    `${FILE}: users.reports.pool_mode: must be "session": databases.app has a connect_query`,
  );
  assert.match(errorOf(() => parse({ databases: { app: { ...entry, connect_query: '' } } })), 'databases.app.connect_query: expected non-empty string');
});

test('fractional seconds are allowed', () => {
  assert.is(parse({ query_wait_timeout: 0.5 }).query_wait_timeout, 0.5);
});

test('ports out of range are rejected', () => {
  assert.is(errorOf(() => parse({ listen_port: 70000 })), `${FILE}: listen_port: expected integer from 1 to 65535, got 70000`);
  assert.match(errorOf(() => parse({ databases: { app: { host: 'db', port: 0 } } })), 'databases.app.port: expected integer from 1 to 65535');
});

test('a database entry needs exactly one of host or embedded', () => {
  assert.is(
    errorOf(() => parse({ databases: { app: { host: 'db', embedded: true } } })),
    `${FILE}: databases.app: expected host or "embedded": true, not both`,
  );
  assert.is(errorOf(() => parse({ databases: { app: { dbname: 'x' } } })), `${FILE}: databases.app: expected host or "embedded": true`);
  assert.is(errorOf(() => parse({ databases: { app: { embedded: false } } })), `${FILE}: databases.app: expected host or "embedded": true`);
  assert.is(
    errorOf(() => parse({ databases: { app: { embedded: true, port: 5433 } } })),
    `${FILE}: databases.app.port: not used with "embedded": true`,
  );
});

test('auth_file is required unless auth_type is trust', () => {
  assert.is(
    errorOf(() => parseConfig({}, FILE, dir)),
    `${FILE}: auth_file: expected a file path (required when auth_type is "md5")`,
  );
});

test('a missing auth_file is rejected with its absolute path', () => {
  assert.is(errorOf(() => parse({ auth_file: 'nope.txt' })), `${FILE}: auth_file: file not found (${join(dir, 'nope.txt')})`);
  assert.is(errorOf(() => parse({ auth_file: '.' })), `${FILE}: auth_file: not a file (${dir})`);
});

test('relative auth_file resolves against the config folder', () => {
  const sub = join(dir, 'etc');
  mkdirSync(sub, { recursive: true });
  writeFileSync(join(sub, 'users.txt'), '');
  writeFileSync(join(sub, FILE), JSON.stringify({ auth_file: 'users.txt' }));
  assert.is(loadConfig(join(sub, FILE)).auth_file, join(sub, 'users.txt'));
});

test('admin_users and stats_users accept a comma-separated string', () => {
  const config = parse({ admin_users: 'alice, bob,,', stats_users: ['carol'] });
  assert.equal(config.admin_users, ['alice', 'bob']);
  assert.equal(config.stats_users, ['carol']);
});

test('"$schema" is accepted and dropped', () => {
  const config = parse({ $schema: './proxy.config.schema.json' });
  assert.not.ok('$schema' in config);
});

test('the result is deeply frozen and the input untouched', () => {
  const input = { auth_file: 'userlist.txt', databases: { app: { host: 'db' } } };
  const config = parseConfig(input, FILE, dir);
  assert.ok(Object.isFrozen(config));
  assert.ok(Object.isFrozen(config.databases.app));
  assert.ok(Object.isFrozen(config.admin_users));
  assert.throws(() => {
    (config as { listen_port: number }).listen_port = 1;
  });
  assert.equal(input, { auth_file: 'userlist.txt', databases: { app: { host: 'db' } } });
});

test('a password never appears in an error message', () => {
  const secret = 'hunter2-secret';
  const cases: unknown[] = [
    { databases: { app: { host: 'db', password: 12345 } } },
    { databases: { app: { host: 'db', password: secret, colour: 1 } } },
    { databases: { app: { password: secret } } },
    { databases: [{ host: 'db', password: secret }] },
    { databases: { app: { host: 'db', password: secret } }, auth_file: 'nope.txt' },
  ];
  for (const json of cases) {
    const message = errorOf(() => parseConfig(json, FILE, dir));
    assert.not.match(message, secret);
    assert.not.match(message, '12345');
  }
  assert.match(errorOf(() => parseConfig(cases[0], FILE, dir)), 'databases.app.password: expected string, got a number');

  // V8 quotes part of the text in some JSON syntax errors.
  const file = join(dir, 'broken.json');
  for (const text of [`{"databases": {"app": {"password": "${secret}",}}}`, `{"password": "${secret}" x}`, `{"a": tru}`]) {
    writeFileSync(file, text);
    const message = errorOf(() => loadConfig(file));
    assert.match(message, `${file}: invalid JSON`);
    assert.not.match(message, secret);
  }
});

test('JSON syntax errors give line and column', () => {
  const file = join(dir, 'syntax.json');
  writeFileSync(file, '{\n  "listen_port": 6432,\n}\n');
  assert.is(errorOf(() => loadConfig(file)), `${file}: invalid JSON at line 3, column 1: Expected double-quoted property name`);
});

test('a missing config file is a ConfigError', () => {
  assert.match(errorOf(() => loadConfig(join(dir, 'absent.json'))), 'cannot read file (ENOENT)');
});

test('TLS: PgBouncer defaults, paths resolved against the config folder, and errors naming the key', () => {
  const config = parse({});
  assert.is(config.client_tls_sslmode, 'disable');
  assert.is(config.server_tls_sslmode, 'prefer');
  assert.is(config.client_tls_protocols, 'secure');
  assert.is(config.allow_cleartext_without_tls, false);
  const certs = writeDevCerts(join(dir, 'certs'));
  const files = { client_tls_key_file: 'certs/server.key', client_tls_cert_file: 'certs/server.crt' };
  const on = parse({ client_tls_sslmode: 'require', ...files });
  assert.is(on.client_tls_key_file, certs.serverKey);
  assert.is(errorOf(() => parse({ client_tls_sslmode: 'require' })), `${FILE}: client_tls_key_file: expected a file path (required when client_tls_sslmode is "require")`);
  assert.is(errorOf(() => parse({ client_tls_sslmode: 'verify-ca', ...files })), `${FILE}: client_tls_ca_file: expected a file path (required when client_tls_sslmode is "verify-ca")`);
  assert.is(errorOf(() => parse({ client_tls_sslmode: 'on', ...files })), `${FILE}: client_tls_sslmode: expected one of "disable", "allow", "prefer", "require", "verify-ca", "verify-full", got "on"`);
  assert.match(errorOf(() => parse({ client_tls_sslmode: 'require', ...files, client_tls_cert_file: 'certs/nope.crt' })), `${FILE}: client_tls_cert_file: file not found`);
  // A key in the certificate's place: the key file is fine, the certificate is not.
  assert.match(errorOf(() => parse({ client_tls_sslmode: 'require', ...files, client_tls_cert_file: 'certs/server.key' })), `${FILE}: client_tls_cert_file: cannot use it: `);
  // A key of another certificate.
  assert.match(errorOf(() => parse({ client_tls_sslmode: 'require', ...files, client_tls_key_file: 'certs/ca.key' })), `${FILE}: client_tls_key_file: cannot use it: `);
  assert.match(errorOf(() => parse({ client_tls_sslmode: 'require', ...files, client_tls_protocols: 'tlsv1.4' })), `${FILE}: client_tls_protocols: expected a comma list`);
  assert.match(errorOf(() => parse({ server_tls_ciphers: 'NOT-A-CIPHER' })), `${FILE}: server_tls_ciphers: cannot use it: `);
  assert.is(errorOf(() => parse({ server_tls_key_file: 'certs/server.key' })), `${FILE}: server_tls_cert_file: expected a file path (server_tls_key_file and server_tls_cert_file go together)`);
  assert.is(errorOf(() => parse({ auth_type: 'cert' })), `${FILE}: client_tls_sslmode: expected TLS turned on (auth_type "cert" logs clients in by their TLS certificate)`);
  assert.is(errorOf(() => parse({ auth_type: 'cert', client_tls_sslmode: 'require', ...files })), `${FILE}: client_tls_ca_file: expected a file path (required when auth_type is "cert")`);
  // Neither an error nor the key file's content: never key material in a message.
  const keyText = readFileSync(certs.serverKey, 'utf8').split('\n')[1];
  assert.not.match(errorOf(() => parse({ client_tls_sslmode: 'require', ...files, client_tls_cert_file: 'certs/server.key' })), keyText);
});

test('tlsVersions: PgBouncer protocol lists as a Node version range', () => {
  assert.equal(tlsVersions('secure', 'k'), { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3' });
  assert.equal(tlsVersions('tlsv1.3', 'k'), { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' });
  assert.equal(tlsVersions('TLSv1.1, tlsv1.2', 'k'), { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.2' });
  assert.equal(tlsVersions('all', 'k'), { minVersion: 'TLSv1', maxVersion: 'TLSv1.3' });
});

test('proxy.config.schema.json is current (regenerate: node --import tsx src/config/write-schema.ts > proxy.config.schema.json)', () => {
  const shipped = readFileSync(fileURLToPath(new URL('../../proxy.config.schema.json', import.meta.url)), 'utf8');
  assert.is(shipped, JSON.stringify(configJsonSchema(), null, 2) + '\n');
});

test('README.md\'s configuration reference matches the schema (regenerate: node --import tsx src/config/reference.ts --write)', async () => {
  const { withReference } = await import('../../src/config/reference.js');
  const readmePath = new URL('../../README.md', import.meta.url);
  const readme = (await import('node:fs')).readFileSync(readmePath, 'utf8');
  assert.ok(readme === withReference(readme), 'README.md config reference is stale');
});

test.run();
