import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import { isIniPath, loadAnyConfig, loadIni } from '../../src/config/ini.js';
import { errorOf } from '../support/config-error.js';
import { writeDevCerts } from '../../src/tls/cert-command.js';

const dir = mkdtempSync(join(tmpdir(), 'tessera-ini-'));
const PASSWORD = "s3cret pass'word";
writeFileSync(join(dir, 'userlist.txt'), '"postgres" "md5abc"\n"svc" "secret"\n');

/** Writes name under the test folder and returns its path. */
function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}


// Shaped after PgBouncer's own etc/pgbouncer.ini, with both comment kinds.
const MAIN = file(
  'pgbouncer.ini',
  `;; database name = connect string
;;
;; connect string params:
;;   dbname= host= port= user= password= auth_user=
[databases]
appdb = host=127.0.0.1 port=5432 dbname=app
; access to the destination database goes with a single user
forcedb = host=10.0.0.5 port=6543 dbname=forced user=svc password='s3cret pass''word' pool_size=5 pool_mode=Session
# fallback connect string
* = host=127.0.0.1

%include databases.d/more.ini

[pgbouncer]
logfile = /var/log/pgbouncer/pgbouncer.log
pidfile = /var/run/pgbouncer/pgbouncer.pid
listen_addr = 127.0.0.1
listen_port = 6432
    ; indented comment
auth_type = md5
auth_file = userlist.txt
admin_users = postgres, admin
stats_users = stats
pool_mode = transaction
server_reset_query = DISCARD ALL
server_reset_query_always = 0
max_client_conn = 500
default_pool_size = 25
reserve_pool_timeout = 2.5
server_idle_timeout = 300
tcp_keepalive = yes
ignore_startup_parameters = extra_float_digits
syslog = 1
syslog_ident = pgbouncer
syslog_facility = LOCAL3

[users]
alice = pool_mode=session max_user_connections=3
`,
);
mkdirSync(join(dir, 'databases.d'));
file(
  'databases.d/more.ini',
  `# included from pgbouncer.ini; still in [databases]
reports = host=/var/run/postgresql dbname=reports pool_size=2
sockdb =
`,
);

// What the same setup looks like as proxy.config.json.
const EQUIVALENT_JSON = {
  logfile: '/var/log/pgbouncer/pgbouncer.log',
  pidfile: '/var/run/pgbouncer/pgbouncer.pid',
  listen_addr: '127.0.0.1',
  listen_port: 6432,
  auth_type: 'md5',
  auth_file: 'userlist.txt',
  admin_users: ['postgres', 'admin'],
  stats_users: 'stats',
  pool_mode: 'transaction',
  server_reset_query: 'DISCARD ALL',
  server_reset_query_always: false,
  max_client_conn: 500,
  default_pool_size: 25,
  reserve_pool_timeout: 2.5,
  server_idle_timeout: 300,
  tcp_keepalive: true,
  syslog: true,
  syslog_ident: 'pgbouncer',
  syslog_facility: 'local3',
  databases: {
    appdb: { host: '127.0.0.1', port: 5432, dbname: 'app' },
    forcedb: { host: '10.0.0.5', port: 6543, dbname: 'forced', user: 'svc', password: PASSWORD, pool_size: 5, pool_mode: 'session' },
    '*': { host: '127.0.0.1' },
    reports: { host: '/var/run/postgresql', dbname: 'reports', pool_size: 2 },
    sockdb: { host: '/tmp' },
  },
  users: { alice: { pool_mode: 'session', max_user_connections: 3 } },
};

test('a PgBouncer ini gives the same Config as the equivalent proxy.config.json', () => {
  const { config, warnings } = loadAnyConfig(MAIN);
  assert.equal(config, parseConfig(EQUIVALENT_JSON, 'proxy.config.json', dir));
  assert.is(config.auth_file, join(dir, 'userlist.txt'));
  assert.ok(Object.isFrozen(config));
  assert.ok(warnings.length > 0);
});

test('loadIni converts types and makes auth_file absolute', () => {
  const { json } = loadIni(MAIN);
  assert.is(json.listen_port, 6432);
  assert.is(json.reserve_pool_timeout, 2.5);
  assert.is(json.tcp_keepalive, true);
  assert.is(json.server_reset_query_always, false);
  assert.is(json.admin_users, 'postgres, admin');
  assert.is(json.auth_file, join(dir, 'userlist.txt'));
  assert.equal((json.databases as Record<string, unknown>).forcedb, EQUIVALENT_JSON.databases.forcedb);
});

test('logfile and pidfile are read; ignore_startup_parameters is a kinder warning naming file:line', () => {
  const { json, warnings } = loadIni(MAIN);
  assert.is(json.logfile, '/var/log/pgbouncer/pgbouncer.log');
  assert.is(json.pidfile, '/var/run/pgbouncer/pgbouncer.pid');
  const ignore = warnings.find((w) => w.includes('ignore_startup_parameters'));
  assert.ok(ignore?.startsWith(`${MAIN}:32: `));
  assert.match(ignore!, /not needed: Tessera honours every startup parameter/);
  assert.is(warnings.length, 1, warnings.join('\n'));
});

test('warnings for database and user parameters Tessera lacks; host lists and [peers] are read', () => {
  const path = file(
    'warn.ini',
    `[pgbouncer]
listen_addr = *
auth_type = trust
dns_max_ttl = 15
max_cilent_conn = 5
[databases]
db = host=a.example,b.example auth_user=pgb connect_query='SELECT 1' client_encoding=UTF8 datestyle=ISO timezone=UTC password=topsecret
[users]
bob = pool_size=4 query_timeout=10 query_wait_timeout=5
[peers]
1 = host=/tmp/pgbouncer-1
`,
  );
  const { config, warnings } = loadAnyConfig(path);
  assert.is(config.databases.db!.host, 'a.example,b.example');
  assert.equal(config.peers, { 1: { host: '/tmp/pgbouncer-1' } });
  assert.is(config.databases.db!.connect_query, 'SELECT 1');
  assert.equal(config.users.bob, { pool_size: 4, query_timeout: 10 });
  const expected = [
    `${path}:4: setting "dns_max_ttl" is not supported by Tessera and is ignored`,
    `${path}:5: setting "max_cilent_conn" is not a PgBouncer or Tessera setting (a typo?) and is ignored`,
    `${path}:7: database "db": parameter "client_encoding" is not supported by Tessera and is ignored`,
    `${path}:7: database "db": parameter "datestyle" is not supported by Tessera and is ignored`,
    `${path}:7: database "db": parameter "timezone" is not supported by Tessera and is ignored`,
    `${path}:9: user "bob": parameter "query_wait_timeout" is not supported by Tessera and is ignored`,
  ];
  assert.equal(warnings, expected);
  assert.not.ok(warnings.join('\n').includes('topsecret'));
});

test('listen_addr unset means the Unix socket only, as in PgBouncer', () => {
  const { json, warnings } = loadIni(file('nolisten.ini', '[pgbouncer]\nauth_type = trust\n'));
  assert.is(json.listen_addr, '');
  assert.equal(warnings, []);
});

test('comments only at the start of a line; values are taken raw, CRLF is fine', () => {
  const { json } = loadIni(file('raw.ini', '# top\r\n[pgbouncer]\r\n  ; indented\r\nserver_reset_query = DEALLOCATE ALL ; not a comment\r\nlisten_addr=*\r\n'));
  assert.is(json.server_reset_query, 'DEALLOCATE ALL ; not a comment');
  assert.is(json.listen_addr, '*');
});

test('booleans take 0/1, yes/no, on/off, true/false', () => {
  for (const [text, value] of [['1', true], ['0', false], ['yes', true], ['No', false], ['on', true], ['OFF', false], ['true', true], ['false', false]] as const) {
    const { json } = loadIni(file('bool.ini', `[pgbouncer]\ntcp_keepalive = ${text}\n`));
    assert.is(json.tcp_keepalive, value, text);
  }
});

test('a database without host uses unix_socket_dir, even when set further down', () => {
  const path = file('sock.ini', '[databases]\nfoodb =\n[pgbouncer]\nunix_socket_dir = /var/run/postgresql\nauth_type = trust\nlisten_addr = *\n');
  const { config, warnings } = loadAnyConfig(path);
  assert.equal(config.databases.foodb, { host: '/var/run/postgresql', port: 5432, embedded: false });
  assert.equal(warnings, []);
  assert.is(config.unix_socket_dir, '/var/run/postgresql');
  const off = file('nosock.ini', '[databases]\nfoodb =\n[pgbouncer]\nunix_socket_dir =\n');
  assert.is(errorOf(() => loadIni(off)), `${off}:2: database "foodb": no host, and unix_socket_dir is empty (Unix sockets disabled)`);
});

test('quoted database names and the reserve_pool alias', () => {
  const { json } = loadIni(file('quoted.ini', `[databases]\n"my ""odd"" db" = host=h reserve_pool=3\n'other db' = host=h\n`));
  assert.equal(json.databases, { 'my "odd" db': { host: 'h', reserve_pool_size: 3 }, 'other db': { host: 'h' } });
});

test('each malformed line is a ConfigError naming file:line, never showing a password', () => {
  const cases: [string, string][] = [
    ['[pgbouncer]\nlisten_port 6432\n', ':2: expected "name = value", a [section] or %include'],
    ['[pgbouncer]\n[bouncer]\n', ':2: unknown section [bouncer] (expected [pgbouncer], [databases], [users] or [peers])'],
    ['[pgbouncer\n', ':1: expected a section header like [pgbouncer]'],
    ['listen_port = 1\n', ':1: "listen_port" comes before any [section]'],
    ['[databases]\na = host=h password=topsecret bogus\n', ':2: database "a": expected key=value pairs in the connection string'],
    ["[databases]\na = host=h password='topsecret\n", ':2: database "a": unterminated quote in the value of "password"'],
    ["[databases]\na = host=h password='top'secret\n", ':2: database "a": expected a space after the closing quote of "password"'],
    ["[databases]\na = host='' password=topsecret\n", ':2: database "a": "host" has an empty value'],
    ['[databases]\na = host=h port=abc password=topsecret\n', ':2: database "a": port: expected an integer or a comma list of them, got "abc"'],
    ['[databases]\na = host=h colour=red password=topsecret\n', ':2: database "a": unknown parameter "colour"'],
    ['[databases]\npgbouncer = host=h\n', ':2: database "pgbouncer": the name is reserved for the admin console'],
    ['[databases]\na = host=@pgsock\n', ':2: database "a": host: expected a host name, address or socket folder (abstract "@" sockets are not supported)'],
    ['[users]\nbob = pool_mode=session colour=red\n', ':2: user "bob": unknown parameter "colour"'],
    ['[pgbouncer]\nlisten_port = abc\n', ':2: listen_port: expected an integer, got "abc"'],
    ['[pgbouncer]\nserver_lifetime = 30s\n', ':2: server_lifetime: expected a number of seconds, without a unit, got "30s"'],
    ['[pgbouncer]\ntcp_keepalive = maybe\n', ':2: tcp_keepalive: expected 0 or 1 (or yes/no, on/off, true/false), got "maybe"'],
    ['[pgbouncer]\n%include\n', ':2: expected a file name after %include'],
  ];
  cases.forEach(([text, expected], i) => {
    const path = file(`bad${i}.ini`, text);
    const message = errorOf(() => loadIni(path));
    assert.is(message, path + expected);
    assert.not.ok(message.includes('topsecret'), message);
  });
});

test('schema errors from the converted config land on their ini line', () => {
  const mode = file('mode.ini', '[pgbouncer]\nauth_type = trust\n\npool_mode = statement\n');
  assert.is(errorOf(() => loadAnyConfig(mode)), `${mode}:4: pool_mode: expected one of "session", "transaction", got "statement"`);
  const port = file('port.ini', '[pgbouncer]\nauth_type = trust\n[databases]\napp = host=h port=70000 password=topsecret\n');
  assert.is(errorOf(() => loadAnyConfig(port)), `${port}:4: databases.app.port: expected integer from 1 to 65535 or comma-separated list of ports, got 70000`);
  const auth = file('auth.ini', '[pgbouncer]\nauth_file = missing.txt\n');
  assert.is(errorOf(() => loadAnyConfig(auth)), `${auth}:2: auth_file: file not found (${join(dir, 'missing.txt')})`);
  const hba = file('hba.ini', '[pgbouncer]\nauth_type = pam\n');
  assert.match(errorOf(() => loadAnyConfig(hba)), `${hba}:2: auth_type: expected one of`);
  const facility = file('facility.ini', '[pgbouncer]\nauth_type = trust\nsyslog = 1\nsyslog_facility = local9\n');
  assert.match(errorOf(() => loadAnyConfig(facility)), `${facility}:4: syslog_facility: expected one of "auth", "authpriv", "daemon"`);
});

test('TLS settings from a pgbouncer.ini: file paths beside the ini, modes in any case, the rest named', () => {
  const certs = writeDevCerts(join(dir, 'tls/certs'));
  const ini = file(
    'tls/pgbouncer.ini',
    [
      '[pgbouncer]',
      'auth_type = cert',
      'client_tls_sslmode = verify-full',
      'client_tls_key_file = certs/server.key',
      'client_tls_cert_file = certs/server.crt',
      'client_tls_ca_file = certs/ca.crt',
      'client_tls_protocols = tlsv1.2,tlsv1.3',
      'client_tls_ciphers = default',
      'client_tls_ecdhcurve = auto',
      'server_tls_sslmode = Verify-Full',
      'server_tls_ca_file = certs/ca.crt',
      '[databases]',
      '* = host=127.0.0.1',
      '',
    ].join('\n'),
  );
  const { config, warnings } = loadAnyConfig(ini);
  assert.is(config.auth_type, 'cert');
  assert.is(config.client_tls_sslmode, 'verify-full');
  assert.is(config.client_tls_key_file, certs.serverKey);
  assert.is(config.client_tls_ca_file, certs.ca);
  assert.is(config.server_tls_sslmode, 'verify-full');
  assert.is(config.server_tls_ca_file, certs.ca);
  assert.equal(warnings, [`${ini}:9: setting "client_tls_ecdhcurve" is not supported by Tessera and is ignored`]);
  const missing = file('tls/nokey.ini', '[pgbouncer]\nauth_type = trust\nclient_tls_sslmode = require\n');
  // The missing key has no line of its own: the error names the file and the key.
  assert.is(errorOf(() => loadAnyConfig(missing)), `${missing}: client_tls_key_file: expected a file path (required when client_tls_sslmode is "require")`);
});

test('%include: relative to the including file, loops and missing files are errors', () => {
  mkdirSync(join(dir, 'loop'));
  const a = file('loop/a.ini', '[pgbouncer]\n%include b.ini\n');
  file('loop/b.ini', '; b\n%include a.ini\n');
  const b = join(dir, 'loop/b.ini');
  assert.is(errorOf(() => loadIni(a)), `${b}:2: %include loop: ${a} -> ${b} -> ${a}`);
  const missing = file('missing.ini', '[pgbouncer]\n%include nowhere.ini\n');
  assert.is(errorOf(() => loadIni(missing)), `${missing}:2: cannot read included file ${join(dir, 'nowhere.ini')} (ENOENT)`);
  // The same file twice, not nested, is no loop.
  file('twice-part.ini', 'default_pool_size = 7\n');
  assert.is(loadIni(file('twice.ini', '[pgbouncer]\n%include twice-part.ini\n%include twice-part.ini\n')).json.default_pool_size, 7);
});

test('errors inside an included file name that file and line', () => {
  file('databases.d/broken.ini', '\nok = host=h\nbroken\n');
  const path = file('incl.ini', '[databases]\n%include databases.d/broken.ini\n');
  assert.is(errorOf(() => loadIni(path)), `${join(dir, 'databases.d/broken.ini')}:3: expected "name = value", a [section] or %include`);
});

test('isIniPath: by extension, else by the first non-comment line', () => {
  assert.ok(isIniPath('/etc/pgbouncer/pgbouncer.ini', '{}'));
  assert.ok(isIniPath('/etc/pgbouncer/pgbouncer.INI'));
  assert.ok(isIniPath('pgbouncer.conf', '; comment\n\n[databases]\n'));
  assert.ok(isIniPath('pgbouncer.conf', '%include base.conf\n'));
  assert.not.ok(isIniPath('proxy.config.json', '{ "listen_port": 6432 }'));
  assert.not.ok(isIniPath('config', '["not", "a", "section"]'));
  assert.not.ok(isIniPath(join(dir, 'does-not-exist')));
});

test('loadAnyConfig loads proxy.config.json as before', () => {
  const path = file('proxy.config.json', JSON.stringify({ auth_type: 'trust', databases: { app: { host: 'db' } } }));
  const { config, warnings } = loadAnyConfig(path);
  assert.equal(config.databases.app, { host: 'db', port: 5432, embedded: false });
  assert.equal(warnings, []);
});

test.run();
