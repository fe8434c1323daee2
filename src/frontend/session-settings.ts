/**
 * A transaction-mode client's session settings, which follow it from backend to backend instead
 * of pinning it: its startup values (application_name, DateStyle, `-c` options, ...: see
 * pool/startup-parameters.ts), then whatever its SET / RESET / set_config left, as the server
 * itself reports them after the transaction (pg_settings, source 'session'). Owned by the client's
 * TransactionRelay; a backend's own copy (ServerConnection.sessionSettings) says what it carries.
 *
 * Maps are never changed once made, so "this backend already has this client's settings" is one
 * identity test, and clients with the same startup values share one map.
 */
import { NO_SESSION_SETTINGS, decodeDataRow, type ServerConnection } from '../pool/server-connection.js';
import { Backend, parameterStatusBlock } from '../protocol/messages.js';

export type Settings = ReadonlyMap<string, string>;

/** Settings that are not carried: transaction-scoped, or the server's own to report. */
const NOT_CARRIED = new Set(['transaction_isolation', 'transaction_read_only', 'transaction_deferrable', 'session_authorization', 'is_superuser', 'in_hot_standby', 'server_version', 'server_encoding', 'integer_datetimes', 'scram_iterations']);

const NAME = /^[a-z_][a-z0-9_.$]*$/;

/** A SQL string literal (standard_conforming_strings on; E'' when a backslash needs escaping). */
export function quoteLiteral(value: string): string {
  const body = value.replace(/'/g, "''");
  return value.includes('\\') ? `E'${body.replace(/\\/g, '\\\\')}'` : `'${body}'`;
}

const setConfig = (name: string, value: string) => `SELECT pg_catalog.set_config('${name}', ${quoteLiteral(value)}, false)`;

/** One map per distinct set of values (bounded: a stream of unique names cannot grow it). */
const shared = new Map<string, Settings>();
const SHARED_LIMIT = 1000;

export function sharedSettings(settings: ReadonlyMap<string, string>): Settings {
  if (settings.size === 0) return NO_SESSION_SETTINGS;
  const key = JSON.stringify([...settings].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const known = shared.get(key);
  if (known) return known;
  const mine = new Map(settings);
  if (shared.size < SHARED_LIMIT) shared.set(key, mine);
  return mine;
}

/**
 * The statements that turn a backend carrying `has` (null: unknown) into one carrying `want`,
 * or null when it already does. What `want` lacks goes back to the backend's own default.
 */
export function restoreSql(has: Settings | null, want: Settings): string | null {
  if (has === want) return null;
  const statements: string[] = [];
  // RESET ALL leaves the role alone.
  if (has === null) statements.push('RESET ALL', 'RESET role');
  const from = has ?? NO_SESSION_SETTINGS;
  for (const [name, value] of want) if (from.get(name) !== value && NAME.test(name)) statements.push(setConfig(name, value));
  for (const name of from.keys()) if (!want.has(name) && NAME.test(name)) statements.push(`RESET ${name}`);
  return statements.length > 0 ? statements.join('; ') : null;
}

/**
 * At login: checks each startup value as PostgreSQL would (an invalid one fails with the server's
 * own error) and learns its canonical spelling (what SHOW gives), without keeping it: set_config
 * with is_local runs inside the query's own transaction.
 */
export const CHECK_STARTUP_SQL = 'SELECT t.n, pg_catalog.set_config(t.n, t.v, true) FROM unnest($1::text[], $2::text[]) AS t(n, v)';

/** A text[] literal of `values`, every element quoted. */
export function textArray(values: readonly string[]): string {
  return `{${values.map((v) => `"${v.replace(/[\\"]/g, (c) => `\\${c}`)}"`).join(',')}}`;
}

/**
 * Per pool: the startup values checked there (`name\0value` -> canonical value), and the canonical
 * settings already worked out for a client's whole set (by `name\0value\0...` in the order sent),
 * so that a login like many before it costs one lookup. Both bounded.
 */
interface CheckedStartup {
  values: Map<string, string>;
  sets: Map<string, Settings>;
}
const checked = new WeakMap<object, CheckedStartup>();
const CHECKED_LIMIT = 10000;

/** The canonical form of every startup value, if each was checked on this pool before; else null. */
export function knownStartup(pool: object, startup: Settings): Settings | null {
  if (startup.size === 0) return NO_SESSION_SETTINGS;
  const known = checked.get(pool);
  if (!known) return null;
  let key = '';
  for (const [name, value] of startup) key += `${name}\0${value}\0`;
  const seen = known.sets.get(key);
  if (seen !== undefined) return seen;
  const canonical = new Map<string, string>();
  for (const [name, value] of startup) {
    const c = known.values.get(`${name}\0${value}`);
    if (c === undefined) return null;
    canonical.set(name, c);
  }
  const settings = sharedSettings(canonical);
  if (known.sets.size < CHECKED_LIMIT) known.sets.set(key, settings);
  return settings;
}

/** Remembers the rows CHECK_STARTUP_SQL returned; gives the client's canonical startup values. */
export function rememberStartup(pool: object, startup: Settings, rows: (string | null)[][]): Settings {
  let known = checked.get(pool);
  if (!known) checked.set(pool, (known = { values: new Map(), sets: new Map() }));
  const canonical = new Map<string, string>();
  const values = [...startup.values()];
  rows.forEach((row, i) => {
    const value = row[1] ?? '';
    canonical.set(row[0]!, value);
    if (known.values.size < CHECKED_LIMIT) known.values.set(`${row[0]}\0${values[i]}`, value);
  });
  return sharedSettings(canonical);
}

/** The login's ParameterStatus values: the backend's, with the client's own startup values over them. */
export function loginStatus(status: ReadonlyMap<string, string>, startup: Settings): ReadonlyMap<string, string> {
  if (startup.size === 0) return status;
  const mine = new Map(status);
  for (const name of status.keys()) {
    const value = startup.get(name.toLowerCase());
    if (value !== undefined) mine.set(name, value);
  }
  return mine;
}

/** ParameterStatus blocks by cached status map, then by the client's startup settings (both never changed). */
const loginBlocks = new WeakMap<ReadonlyMap<string, string>, WeakMap<Settings, Buffer>>();

/**
 * The login reply's ParameterStatus messages (loginStatus, encoded). `unchanging`: `status` is a
 * pool's cached copy, never modified, so the bytes for it and these startup settings are built
 * once and shared by every such login.
 */
export function loginStatusBlock(status: ReadonlyMap<string, string>, startup: Settings, unchanging: boolean): Buffer {
  if (!unchanging) return parameterStatusBlock(loginStatus(status, startup));
  let byStartup = loginBlocks.get(status);
  if (byStartup === undefined) loginBlocks.set(status, (byStartup = new WeakMap()));
  let block = byStartup.get(startup);
  if (block === undefined) byStartup.set(startup, (block = parameterStatusBlock(loginStatus(status, startup))));
  return block;
}

/**
 * Reading a client's settings back after a transaction that may have changed them. First puts back
 * the startup values a RESET returned to the backend's defaults; the last row (a null name) says
 * the backend has a temp namespace.
 */
export function readBackSql(startup: Settings, resets: 'all' | ReadonlySet<string>): string {
  const statements: string[] = [];
  for (const [name, value] of startup) if ((resets === 'all' || resets.has(name)) && NAME.test(name)) statements.push(setConfig(name, value));
  statements.push(
    // role is hidden from pg_settings (and untouched by RESET ALL), yet a SET ROLE must follow its client.
    "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' UNION ALL SELECT 'role', pg_catalog.current_setting('role') WHERE pg_catalog.current_setting('role') <> 'none' UNION ALL SELECT NULL, NULL WHERE pg_catalog.pg_my_temp_schema() <> 0",
  );
  return statements.join('; ');
}

/** Collects the answer to readBackSql, response by response (Tessera swallows them all). */
export class SettingsReader {
  private readonly found = new Map<string, string>();
  private failed = false;
  tempNamespace = false;

  /** One swallowed response; at ReadyForQuery, the settings (null when the query failed). */
  onResponse(type: number, body: Buffer): Settings | null | undefined {
    // Two columns: a row of the settings (the set_config rows before them have one).
    if (type === Backend.DataRow && body.readInt16BE(0) === 2) {
      const [name, value] = decodeDataRow(body);
      if (name === null) this.tempNamespace = true;
      else if (!NOT_CARRIED.has(name.toLowerCase())) this.found.set(name.toLowerCase(), value ?? '');
    } else if (type === Backend.ErrorResponse) {
      this.failed = true;
    } else if (type === Backend.ReadyForQuery) {
      return this.failed ? null : sharedSettings(this.found);
    }
    return undefined;
  }
}

/** A reported parameter the client saw change: its settings with that value. */
export function withReported(settings: Settings, name: string, value: string): Settings {
  const lower = name.toLowerCase();
  if (NOT_CARRIED.has(lower) || settings.get(lower) === value) return settings;
  return sharedSettings(new Map(settings).set(lower, value));
}

/** Checks a client's startup values on `server` (CHECK_STARTUP_SQL); resolves with their canonical form. */
export async function checkStartup(server: ServerConnection, pool: object, startup: Settings): Promise<Settings> {
  const rows = await server.query(CHECK_STARTUP_SQL, [textArray([...startup.keys()]), textArray([...startup.values()])]);
  return rememberStartup(pool, startup, rows);
}
