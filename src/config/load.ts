// Loads proxy.config.json: parse, validate against ConfigSchema, apply
// defaults, normalise, check files, freeze. Every problem becomes one
// ConfigError line: `<file>: <key path>: <what was expected>`.
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Kind, type TSchema } from '@sinclair/typebox';
import { Value, ValueErrorType } from '@sinclair/typebox/value';
import { ConfigSchema, DatabaseSchema, TLS_FILE_SETTINGS, type Config, type DatabaseConfig } from './schema.js';
import { clientTlsFrom, serverTlsFrom, TlsSettingError } from '../tls/contexts.js';
import { resolveSessionSql, sessionSqlProblem, hasTickets } from './session-presets.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(path: string): Readonly<Config> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return parseConfig(parseJson(text.replace(/^\uFEFF/, ''), path), path, dirname(resolve(path)));
}

/** Same as loadConfig but from an already-parsed value; relative paths resolve against baseDir. */
export function parseConfig(json: unknown, file: string, baseDir: string): Readonly<Config> {
  const fail = (key: string, problem: string): never => {
    throw new ConfigError(key ? `${file}: ${key}: ${problem}` : `${file}: ${problem}`);
  };

  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    fail('', `expected a JSON object at the top level, got ${got('', json)}`);
  }
  const first = Value.Errors(ConfigSchema, json).First();
  if (first) fail(keyPath(first.path), problem(first.type, first.schema, first.path, first.value));

  // Validation passed, so the input has the schema's shape. Clone: never mutate the caller's object.
  const config = Value.Default(ConfigSchema, Value.Clone(json)) as Record<string, any>;
  delete config.$schema;

  // The preset fills in the session SQL not written; Default then the rest (max_failures, ...).
  // (From the input as written: Default above may already have put tessera's SQL in.)
  const written = ((json as Record<string, unknown>).session_tokens ?? {}) as Parameters<typeof resolveSessionSql>[0];
  const sessionSql = resolveSessionSql(written);
  config.session_tokens = Value.Default(ConfigSchema.properties.session_tokens, { ...written, ...sessionSql });
  const sqlProblem = sessionSqlProblem(sessionSql);
  if (sqlProblem) fail(...sqlProblem);

  // Entries are still as written here: TypeBox's Default skips record entries whose schema has no default.
  for (const [name, entry] of Object.entries(config.databases as Record<string, Record<string, unknown>>)) {
    const where = joinKeys(['databases', name]);
    const embedded = entry.embedded === true;
    if (embedded && entry.host !== undefined) fail(where, 'expected host or "embedded": true, not both');
    if (!embedded && entry.host === undefined) fail(where, 'expected host or "embedded": true');
    // The embedded server picks its own port; a port here would be silently ignored.
    if (embedded && entry.port !== undefined) fail(`${where}.port`, 'not used with "embedded": true');
    if (entry.auth_type === 'session_token') {
      // The client's own user name is only a label: the backend role must come from the entry.
      if (entry.user === undefined) fail(`${where}.user`, 'expected the pool role (required with "auth_type": "session_token")');
      // Caught here, not at the first login, which would spend the client's nonce first.
      const [modeKey, mode] = poolModeOf(config, entry, where);
      if (mode === 'transaction' && !hasTickets(sessionSql)) {
        fail(modeKey, `must be "session": transaction mode re-binds each backend with a ticket, and the session SQL has none (${sessionSql.preset === 'veil2' && sessionSql.issue_ticket === '' ? 'Veil2 has no tickets' : 'set session_tokens.issue_ticket, redeem_ticket and revoke_tickets'})`);
      }
    }
    if (entry.connect_query !== undefined && entry.auth_type !== 'session_token') {
      // It runs once per client login and its release_query once per release: a transaction-mode
      // client changes servers between the two.
      const mode = entry.pool_mode ?? (config.pool_mode as string);
      if (mode !== 'session') fail(`${where}.pool_mode`, 'must be "session" with connect_query (it runs once per client login, on the server the client keeps)');
      const roleMode = entry.user === undefined ? undefined : (config.users as Record<string, { pool_mode?: string }>)[entry.user as string]?.pool_mode;
      if (roleMode !== undefined && roleMode !== 'session') fail(joinKeys(['users', entry.user as string, 'pool_mode']), `must be "session": ${where} has a connect_query`);
    }
    const resolved = Value.Default(DatabaseSchema, entry) as Record<string, unknown>;
    if (embedded) delete resolved.port;
    config.databases[name] = resolved as DatabaseConfig;
  }

  config.admin_users = userList(config.admin_users);
  config.stats_users = userList(config.stats_users);

  // Session-token databases authenticate through the database, not auth_file.
  const needsAuthFile = Object.values(config.databases as Record<string, DatabaseConfig>).some((d) => d.auth_type !== 'session_token') || Object.keys(config.databases).length === 0;
  if (config.auth_type === 'hba') {
    if (config.auth_hba_file === undefined) fail('auth_hba_file', 'expected a file path (required when auth_type is "hba")');
    config.auth_hba_file = resolve(baseDir, config.auth_hba_file);
    const reason = unreadable(config.auth_hba_file);
    if (reason) fail('auth_hba_file', `${reason} (${config.auth_hba_file})`);
  }
  if (config.auth_type === 'any') {
    // PgBouncer's rule: the client's user name is ignored, so every database must name its own.
    for (const [name, d] of Object.entries(config.databases as Record<string, DatabaseConfig>)) {
      if (d.user === undefined) fail(joinKeys(['databases', name, 'user']), 'expected a user (required when auth_type is "any")');
    }
  }
  if (config.auth_file === undefined) {
    // cert: the certificate proves who the client is; server logins need no client secret either.
    if (config.auth_type !== 'trust' && config.auth_type !== 'any' && config.auth_type !== 'cert' && needsAuthFile) fail('auth_file', `expected a file path (required when auth_type is "${config.auth_type}")`);
  } else {
    config.auth_file = resolve(baseDir, config.auth_file);
    const reason = unreadable(config.auth_file);
    if (reason) fail('auth_file', `${reason} (${config.auth_file})`);
  }

  // Written, not read: only its path is resolved here (the audit log opens it, and says why it cannot).
  if (config.audit_log !== '') config.audit_log = resolve(baseDir, config.audit_log);
  for (const key of TLS_FILE_SETTINGS) {
    if (config[key] === undefined) continue;
    config[key] = resolve(baseDir, config[key]);
    const reason = unreadable(config[key]);
    if (reason) fail(key, `${reason} (${config[key]})`);
  }
  if (config.auth_type === 'cert') {
    // The certificate is the only proof: TLS must be on and a CA must vouch for it.
    if (config.client_tls_sslmode === 'disable') fail('client_tls_sslmode', 'expected TLS turned on (auth_type "cert" logs clients in by their TLS certificate)');
    if (config.client_tls_ca_file === undefined) fail('client_tls_ca_file', 'expected a file path (required when auth_type is "cert")');
  }
  // Build the TLS contexts once here, so an unusable key, certificate or cipher list is a
  // config error at start (and a refused RELOAD), never a failure at the first client.
  try {
    clientTlsFrom(config as Config);
    serverTlsFrom(config as Config);
  } catch (err) {
    if (err instanceof TlsSettingError) fail(err.key, err.message);
    throw err;
  }

  return deepFreeze(config as Config);
}

/** An entry's pool mode and the key that set it: its pool role's [users] entry, its own, or the global one. */
function poolModeOf(config: Record<string, any>, entry: Record<string, unknown>, where: string): [string, string] {
  const roleMode = (config.users as Record<string, { pool_mode?: string }>)[entry.user as string]?.pool_mode;
  if (roleMode !== undefined) return [joinKeys(['users', entry.user as string, 'pool_mode']), roleMode];
  if (entry.pool_mode !== undefined) return [`${where}.pool_mode`, entry.pool_mode as string];
  return ['pool_mode', config.pool_mode as string];
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const message = (err as Error).message;
    // V8 quotes part of the input after `, "`; drop it, as it may hold a password.
    const reason = message.split(', "')[0]!.replace(/ in JSON at position \d+.*$/, '');
    const position = /at position (\d+)/.exec(message);
    if (!position) throw new ConfigError(`${file}: invalid JSON: ${reason}`);
    const before = text.slice(0, Number(position[1])).split('\n');
    throw new ConfigError(`${file}: invalid JSON at line ${before.length}, column ${before.at(-1)!.length + 1}: ${reason}`);
  }
}

/** The "what was expected" part for a TypeBox error. */
function problem(type: ValueErrorType, schema: TSchema, path: string, value: unknown): string {
  if (type === ValueErrorType.ObjectAdditionalProperties) return 'unknown setting';
  return `expected ${expected(schema)}, got ${got(path, value)}`;
}

function expected(schema: TSchema): string {
  switch (schema[Kind]) {
    case 'Integer':
    case 'Number': {
      const kind = schema[Kind] === 'Integer' ? 'integer' : 'number';
      if (schema.minimum !== undefined && schema.maximum !== undefined) return `${kind} from ${schema.minimum} to ${schema.maximum}`;
      if (schema.minimum !== undefined) return `${kind} >= ${schema.minimum}`;
      return kind;
    }
    case 'String':
      return schema.minLength ? 'non-empty string' : 'string';
    case 'Boolean':
      return 'true or false';
    case 'Literal':
      return JSON.stringify(schema.const);
    case 'Array':
      return `array of ${expected(schema.items)}s`;
    case 'Union': {
      const options = (schema.anyOf as TSchema[]).map(expected);
      return schema.anyOf.every((s: TSchema) => s[Kind] === 'Literal') ? `one of ${options.join(', ')}` : options.join(' or ');
    }
    default:
      return 'object';
  }
}

/** Describes a bad value; never shows a password or the inside of an object (which may hold one). */
function got(path: string, value: unknown): string {
  const secret = /password/i.test(path.split('/').at(-1) ?? '');
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (secret || (typeof value === 'string' && value.length > 60)) return `a ${typeof value}`;
  return JSON.stringify(value);
}

/** "/databases/my.db/port" → 'databases["my.db"].port' (JSON pointer to a readable key path). */
function keyPath(pointer: string): string {
  return joinKeys(pointer.split('/').slice(1).map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~')));
}

/** Keys joined with dots; a key that would read ambiguously (dots, spaces) is quoted in brackets. */
function joinKeys(keys: string[]): string {
  return keys.map((key) => (/^[\w$*-]+$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`)).join('').replace(/^\./, '');
}

/** PgBouncer takes "alice, bob"; JSON users may write a list. */
function userList(value: string | string[]): string[] {
  const names = typeof value === 'string' ? value.split(',') : value;
  return names.map((name) => name.trim()).filter((name) => name !== '');
}

function unreadable(file: string): string | undefined {
  try {
    if (!statSync(file).isFile()) return 'not a file';
    accessSync(file, constants.R_OK);
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : 'file not readable';
  }
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
