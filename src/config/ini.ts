// Reads a PgBouncer pgbouncer.ini into the object proxy.config.json holds, so
// `tessera --config /etc/pgbouncer/pgbouncer.ini` works with the same files.
// Syntax follows PgBouncer (libusual's cfparser and loader.c): whole-line `;`/`#`
// comments only, `%include file`, raw values (no unquoting) in [pgbouncer], and
// libpq-style `key=value key='quoted'' value'` strings in [databases] and [users].
// Which settings map is read off the schema, so a setting added there is
// picked up here; anything else is a warning naming file:line, never dropped
// silently. Errors and warnings never show a value that may hold a password.
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { Kind, type TSchema } from '@sinclair/typebox';
import { ConfigError, loadConfig, parseConfig } from './load.js';
import { ConfigSchema, DatabaseSchema, TLS_FILE_SETTINGS, UserSchema, type Config } from './schema.js';

type Json = Record<string, unknown>;

// PgBouncer's own settings (config.md, 1.25); those the schema lacks get "not supported".
const PGBOUNCER_SETTINGS = new Set(
  `logfile pidfile listen_addr listen_port unix_socket_dir unix_socket_mode unix_socket_group user pool_mode
  max_client_conn default_pool_size min_pool_size reserve_pool_size reserve_pool_timeout max_db_connections
  max_db_client_connections max_user_connections max_user_client_connections server_round_robin
  track_extra_parameters ignore_startup_parameters peer_id disable_pqexec application_name_add_host conffile
  service_name job_name stats_period max_prepared_statements scram_iterations auth_type auth_hba_file
  auth_ident_file auth_file auth_user auth_query auth_dbname auth_ldap_options syslog syslog_ident
  syslog_facility log_connections log_disconnections log_pooler_errors log_stats verbose admin_users stats_users
  server_reset_query server_reset_query_always server_check_delay server_check_query server_fast_close
  server_lifetime server_idle_timeout server_connect_timeout server_login_retry client_login_timeout
  autodb_idle_timeout pool_idle_timeout dns_max_ttl dns_nxdomain_ttl dns_zone_check_period resolv_conf
  query_wait_notify login_notify_message client_tls_sslmode client_tls_key_file client_tls_cert_file
  client_tls_ca_file client_tls_protocols client_tls_ciphers client_tls13_ciphers client_tls_ecdhcurve
  client_tls_dheparams server_tls_sslmode server_tls_ca_file server_tls_key_file server_tls_cert_file
  server_tls_protocols server_tls_ciphers server_tls13_ciphers query_timeout query_wait_timeout
  cancel_wait_timeout client_idle_timeout idle_transaction_timeout transaction_timeout pkt_buf max_packet_size
  listen_backlog sbuf_loopcnt so_reuseport tcp_defer_accept tcp_socket_buffer tcp_keepalive tcp_keepcnt
  tcp_keepidle tcp_keepintvl tcp_user_timeout`.split(/\s+/),
);
// Connection-string keys PgBouncer knows; any other key makes PgBouncer refuse the entry, and us too.
const DATABASE_PARAMS = new Set(
  `dbname host port user password auth_user auth_query auth_dbname pool_size min_pool_size reserve_pool
  reserve_pool_size connect_query pool_mode max_db_connections max_db_client_connections server_lifetime
  client_encoding datestyle timezone application_name load_balance_hosts target_session_attrs
  query_wait_timeout`.split(/\s+/),
);
const USER_PARAMS = new Set(
  `pool_mode pool_size reserve_pool_size max_user_connections max_user_client_connections query_timeout
  query_wait_timeout idle_transaction_timeout transaction_timeout client_idle_timeout`.split(/\s+/),
);
// File settings: relative paths resolve against the folder of the ini that names them.
const PATH_SETTINGS = new Set(['auth_file', 'auth_hba_file', 'auth_ident_file', ...TLS_FILE_SETTINGS]);
// The sections the object form keeps elsewhere; they cannot be a single [pgbouncer] line.
const NOT_SETTINGS = new Set(['$schema', 'databases', 'users', 'peers']);
const SECTIONS = ['pgbouncer', 'databases', 'users', 'peers'];
const BOOLEANS: Record<string, boolean> = { yes: true, on: true, true: true, no: false, off: false, false: false };
// PgBouncer's compiled-in unix_socket_dir; distributions that use another set it in the ini.
const DEFAULT_SOCKET_DIR = '/tmp';

interface State {
  json: Json & { databases: Record<string, Json>; users: Record<string, Json> };
  warnings: string[];
  /** Key path (as load.ts prints it) → "file:line", to place schema errors on their line. */
  where: Map<string, string>;
  section?: string;
  /** Files being read, outermost first: real paths to find loops, names to show them. */
  stack: { real: string; shown: string }[];
  socketDir: { value: string; dir: string };
  hostless: { name: string; loc: string }[];
}

/** Reads a pgbouncer.ini (and its %include files) into proxy.config.json's shape. */
export function loadIni(path: string): { json: Record<string, unknown>; warnings: string[] } {
  const { json, warnings } = readIni(path);
  return { json, warnings };
}

/** Loads either config format: a pgbouncer.ini (see isIniPath) or proxy.config.json. */
export function loadAnyConfig(path: string): { config: Readonly<Config>; warnings: string[] } {
  if (!isIniPath(path)) return { config: loadConfig(path), warnings: [] };
  const state = readIni(path);
  try {
    return { config: parseConfig(state.json, path, dirname(resolve(path))), warnings: state.warnings };
  } catch (err) {
    throw onItsLine(err, path, state.where);
  }
}

/** An ini by extension (.ini) or, failing that, by content: the first non-comment line is a [section] or %include. */
export function isIniPath(path: string, text?: string): boolean {
  if (extname(path).toLowerCase() === '.ini') return true;
  if (text === undefined) {
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      return false; // loadConfig reports the unreadable file
    }
  }
  for (const raw of text.replace(/^\uFEFF/, '').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith(';') || line.startsWith('#')) continue;
    // A JSON array would start with `[` too, but never with `[name]`.
    return /^\[\s*[A-Za-z]\w*\s*\]/.test(line) || /^%include\s/.test(line);
  }
  return false;
}

function readIni(path: string): State {
  const state: State = {
    json: { databases: {}, users: {} },
    warnings: [],
    where: new Map(),
    stack: [],
    socketDir: { value: DEFAULT_SOCKET_DIR, dir: '/' },
    hostless: [],
  };
  readFile(state, path, path);
  finish(state, path);
  return state;
}

function readFile(state: State, path: string, shown: string, from?: string): void {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new ConfigError(from ? `${from}: cannot read included file ${shown} (${code})` : `${shown}: cannot read file (${code})`);
  }
  const real = realpathSync(path);
  if (state.stack.some((f) => f.real === real)) {
    throw new ConfigError(`${from}: %include loop: ${[...state.stack.map((f) => f.shown), shown].join(' -> ')}`);
  }
  state.stack.push({ real, shown });
  const dir = dirname(resolve(path));
  text.replace(/^\uFEFF/, '').split('\n').forEach((raw, i) => readLine(state, raw.trim(), `${shown}:${i + 1}`, dir, shown));
  state.stack.pop();
}

function readLine(state: State, line: string, loc: string, dir: string, shown: string): void {
  // PgBouncer: ";" and "#" start a comment only at the start of a line.
  if (line === '' || line.startsWith(';') || line.startsWith('#')) return;

  if (line.startsWith('%include')) {
    const name = /^%include[ \t]+(.+)$/.exec(line)?.[1];
    if (!name) throw new ConfigError(`${loc}: expected a file name after %include`);
    // PgBouncer takes a relative name from its working folder; a name next to the
    // including file is what people mean when they move the files, so that goes first.
    const besideUs = resolve(dir, name);
    const fromCwd = !isAbsolute(name) && !existsSync(besideUs) && existsSync(resolve(name));
    if (fromCwd) readFile(state, resolve(name), name, loc);
    else readFile(state, besideUs, isAbsolute(name) ? name : join(dirname(shown), name), loc);
    return;
  }

  if (line.startsWith('[')) {
    const section = /^\[([^\]]*)\]\s*(?:[;#].*)?$/.exec(line)?.[1]?.trim();
    if (section === undefined) throw new ConfigError(`${loc}: expected a section header like [pgbouncer]`);
    if (!SECTIONS.includes(section)) throw new ConfigError(`${loc}: unknown section [${section}] (expected [pgbouncer], [databases], [users] or [peers])`);
    state.section = section;
    return;
  }

  // A name is [A-Za-z0-9_.*-] or quoted: "SQL ""identifier""" as config.md says, or 'x' as libusual also takes.
  const m = /^(?:"((?:[^"]|"")+)"|'([^']+)'|([\w.*-]+))[ \t]*=[ \t]*(.*)$/.exec(line);
  if (!m) throw new ConfigError(`${loc}: expected "name = value", a [section] or %include`);
  const key = m[1]?.replace(/""/g, '"') ?? m[2] ?? m[3]!;
  const value = m[4]!;
  switch (state.section) {
    case undefined:
      throw new ConfigError(`${loc}: "${key}" comes before any [section]`);
    case 'pgbouncer':
      return setting(state, key, value, loc, dir);
    case 'databases':
      return database(state, key, value, loc);
    case 'users':
      return user(state, key, value, loc);
    case 'peers':
      return peer(state, key, value, loc);
  }
}

function setting(state: State, key: string, value: string, loc: string, dir: string): void {
  const schema = (ConfigSchema.properties as Record<string, TSchema>)[key];
  if (key === 'unix_socket_dir') state.socketDir = { value, dir };
  if (!schema || NOT_SETTINGS.has(key)) {
    state.warnings.push(`${loc}: ${unsupported(key)}`);
    return;
  }
  if (PATH_SETTINGS.has(key)) {
    if (value === '') return; // PgBouncer's "not set"
    value = resolve(dir, value.replace(/^~(?=\/|$)/, homedir()));
  }
  const converted = convert(schema, value, loc, key);
  if (converted === undefined) {
    state.warnings.push(`${loc}: setting "${key}" cannot be written in a pgbouncer.ini (use proxy.config.json) and is ignored`);
    return;
  }
  state.json[key] = converted;
  state.where.set(keyPath([key]), loc);
}

function unsupported(key: string): string {
  if (key === 'ignore_startup_parameters') return 'setting "ignore_startup_parameters" is not needed: Tessera honours every startup parameter; ignored';
  if (PGBOUNCER_SETTINGS.has(key)) return `setting "${key}" is not supported by Tessera and is ignored`;
  return `setting "${key}" is not a PgBouncer or Tessera setting (a typo?) and is ignored`;
}

function database(state: State, name: string, value: string, loc: string): void {
  const label = `database "${name}"`;
  if (name === 'pgbouncer') throw new ConfigError(`${loc}: ${label}: the name is reserved for the admin console`);
  const entry: Json = {};
  for (let [key, raw] of connString(value, loc, label)) {
    if (key === 'reserve_pool') key = 'reserve_pool_size'; // PgBouncer's older name
    const schema = (DatabaseSchema.properties as Record<string, TSchema>)[key];
    if (key === 'host') {
      // A comma list (a primary and its standbys) stays one string; pool/hosts.ts reads it.
      const hosts = raw.split(',').map((h) => h.trim());
      const bad = hosts.find((h) => h === '' || h.startsWith('@'));
      if (bad !== undefined) throw new ConfigError(`${loc}: ${label}: host: expected a host name, address or socket folder${bad ? ' (abstract "@" sockets are not supported)' : ''}`);
      raw = hosts.join(',');
    }
    if (key === 'port') {
      // One port is a number; a list (one per host) stays text for the loader to pair with the hosts.
      if (!/^\d+(,\d+)*$/.test(raw)) throw new ConfigError(`${loc}: ${label}: port: expected an integer or a comma list of them, got ${JSON.stringify(raw)}`);
      if (/^\d+$/.test(raw)) raw = String(Number(raw));
      entry.port = raw.includes(',') ? raw : Number(raw);
    } else if (schema) entry[key] = convert(schema, raw, loc, `${label}: ${key}`, key === 'password');
    else if (DATABASE_PARAMS.has(key)) state.warnings.push(`${loc}: ${label}: parameter "${key}" is not supported by Tessera and is ignored`);
    else throw new ConfigError(`${loc}: ${label}: unknown parameter "${key}"`);
    state.where.set(keyPath(['databases', name, key]), loc);
  }
  // No host: PgBouncer connects over the Unix socket in unix_socket_dir, which may be set further down.
  if (entry.host === undefined && entry.embedded !== true) state.hostless.push({ name, loc });
  state.json.databases[name] = entry; // a repeated name replaces the entry, as in PgBouncer
  state.where.set(keyPath(['databases', name]), loc);
}

function user(state: State, name: string, value: string, loc: string): void {
  const label = `user "${name}"`;
  const entry: Json = {};
  for (const [key, raw] of connString(value, loc, label)) {
    const schema = (UserSchema.properties as Record<string, TSchema>)[key];
    if (schema) entry[key] = convert(schema, raw, loc, `${label}: ${key}`);
    else if (USER_PARAMS.has(key)) state.warnings.push(`${loc}: ${label}: parameter "${key}" is not supported by Tessera and is ignored`);
    else throw new ConfigError(`${loc}: ${label}: unknown parameter "${key}"`);
    state.where.set(keyPath(['users', name, key]), loc);
  }
  state.json.users[name] = entry;
  state.where.set(keyPath(['users', name]), loc);
}

/** `[peers]`: `2 = host=10.0.0.2 port=6432`, PgBouncer's form (its pool_size is not used here). */
function peer(state: State, id: string, value: string, loc: string): void {
  const label = `peer "${id}"`;
  if (!/^[1-9]\d*$/.test(id)) throw new ConfigError(`${loc}: ${label}: expected a peer_id, a number from 1 to 16383`);
  const entry: Json = {};
  for (const [key, raw] of connString(value, loc, label)) {
    if (key === 'host') entry.host = raw;
    else if (key === 'port') entry.port = /^\d+$/.test(raw) ? Number(raw) : raw;
    else if (key === 'pool_size') state.warnings.push(`${loc}: ${label}: parameter "pool_size" is not needed (Tessera opens one connection per forwarded cancel) and is ignored`);
    else throw new ConfigError(`${loc}: ${label}: unknown parameter "${key}"`);
  }
  (state.json.peers ??= {}) as Json;
  (state.json.peers as Json)[id] = entry;
  state.where.set(keyPath(['peers', id]), loc);
}

/** Splits `key=value key2='it''s quoted'` as PgBouncer's loader does; errors never quote the text. */
function connString(text: string, loc: string, label: string): [string, string][] {
  const fail = (problem: string): never => {
    throw new ConfigError(`${loc}: ${label}: ${problem}`);
  };
  const pairs: [string, string][] = [];
  const space = (c: string | undefined) => c === ' ' || c === '\t';
  let i = 0;
  for (;;) {
    while (space(text[i])) i++;
    if (i >= text.length) return pairs;
    const start = i;
    while (i < text.length && text[i] !== '=' && !space(text[i])) i++;
    const key = text.slice(start, i);
    while (space(text[i])) i++;
    if (text[i] !== '=' || key === '') fail('expected key=value pairs in the connection string');
    i++;
    while (space(text[i])) i++;
    let value = '';
    if (text[i] === "'") {
      for (i++; ; i++) {
        if (i >= text.length) fail(`unterminated quote in the value of "${key}"`);
        if (text[i] === "'") {
          if (text[i + 1] !== "'") break;
          i++; // '' is one quote
        }
        value += text[i];
      }
      i++;
      if (i < text.length && !space(text[i])) fail(`expected a space after the closing quote of "${key}"`);
    } else {
      const begin = i;
      while (i < text.length && !space(text[i])) i++;
      value = text.slice(begin, i);
    }
    if (value === '') fail(`"${key}" has an empty value`);
    pairs.push([key, value]);
  }
}

/** Text to the type the schema wants; undefined when the setting is not a single value. */
/** A top-level setting's value as text (the admin console's SET), typed by the schema. */
export function convertSetting(key: string, raw: string): unknown {
  const schema = (ConfigSchema.properties as Record<string, TSchema>)[key];
  if (!schema || NOT_SETTINGS.has(key)) throw new ConfigError(`SET: ${key}: unknown setting`);
  const converted = convert(schema, raw, 'SET', key);
  if (converted === undefined) throw new ConfigError(`SET: ${key}: cannot be set from a string`);
  return converted;
}

function convert(schema: TSchema, raw: string, loc: string, label: string, secret = false): unknown {
  const fail = (expected: string): never => {
    const got = secret || /password/i.test(label) || raw.length > 60 ? '' : `, got ${JSON.stringify(raw)}`;
    throw new ConfigError(`${loc}: ${label}: expected ${expected}${got}`);
  };
  switch (schema[Kind]) {
    case 'Integer':
      return /^[+-]?\d+$/.test(raw) ? Number(raw) : fail('an integer');
    case 'Number':
      // PgBouncer times are plain seconds (strtod): "30s" or "5min" are errors there too.
      return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(raw) ? Number(raw) : fail('a number of seconds, without a unit');
    case 'Boolean': {
      // PgBouncer's flags are integers (any non-zero is on); the words are for people.
      const word = BOOLEANS[raw.toLowerCase()];
      if (word !== undefined) return word;
      return /^\d+$/.test(raw) ? Number(raw) !== 0 : fail('0 or 1 (or yes/no, on/off, true/false)');
    }
    case 'Union':
      // PgBouncer matches enum words case-insensitively; user lists stay as written.
      return (schema.anyOf as TSchema[]).every((s) => s[Kind] === 'Literal') ? raw.toLowerCase() : raw;
    case 'String':
    case 'Literal':
      return raw;
    default:
      return undefined;
  }
}

function finish(state: State, path: string): void {
  const { value, dir } = state.socketDir;
  for (const { name, loc } of state.hostless) {
    if (value === '') throw new ConfigError(`${loc}: database "${name}": no host, and unix_socket_dir is empty (Unix sockets disabled)`);
    if (value.startsWith('@')) throw new ConfigError(`${loc}: database "${name}": no host, and unix_socket_dir is an abstract "@" socket, which Tessera does not support`);
    state.json.databases[name]!.host = resolve(dir, value);
  }
  // As in PgBouncer: no listen_addr means Unix socket connections only.
  if (state.json.listen_addr === undefined) state.json.listen_addr = '';
}

/** Puts a parseConfig error (`file: key.path: problem`) on the ini line that set that key. */
function onItsLine(err: unknown, file: string, where: Map<string, string>): unknown {
  if (!(err instanceof ConfigError) || !err.message.startsWith(`${file}: `)) return err;
  const rest = err.message.slice(file.length + 2);
  let best = '';
  for (const key of where.keys()) {
    if (key.length > best.length && [':', '.', '['].some((next) => rest.startsWith(key + next))) best = key;
  }
  return best ? new ConfigError(`${where.get(best)}: ${rest}`) : err;
}

/** The key path format of load.ts: dots, and ["quoted"] for keys that would read ambiguously. */
function keyPath(keys: string[]): string {
  return keys.map((key) => (/^[\w$*-]+$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`)).join('').replace(/^\./, '');
}
