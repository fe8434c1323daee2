/**
 * session_tokens.preset: the session SQL of a system Tessera knows, as one setting. "tessera"
 * (the default) is sql/tessera.sql; "veil2" is Veil2's shared sessions (veil2.open_connection,
 * veil2.close_connection), which has no tickets and no function that ends a session. Settings
 * written in session_tokens override the preset's.
 */
import { highestParameter } from '../pool/session-sql.js';
import { DISCARD_ALL_KEEPING_PLANS } from '../pool/pool.js';
import { PgError, SqlState } from '../protocol/messages.js';

export type PresetName = 'tessera' | 'veil2';

/** The session_tokens settings a preset gives values to. */
export interface SessionSql {
  open_connection: string;
  close_connection: string;
  issue_ticket: string;
  redeem_ticket: string;
  revoke_tickets: string;
  kill_session: string;
  release_check: string;
}

interface Preset extends SessionSql {
  /**
   * What a server_reset_query of DISCARD ALL (the default) runs as on this preset's databases:
   * everything DISCARD ALL resets, less what would make each login pay for re-creating the
   * session SQL's own state.
   */
  reset: string;
  /** Functions the pool role must be able to execute (checked at start-up), and the grant that allows it. */
  functions: readonly string[];
  grant: string;
}

const TICKET_KEYS = ['issue_ticket', 'redeem_ticket', 'revoke_tickets'] as const;
/** Queries about the sessions open_connection opens: the preset's fit only the preset's open_connection. */
const SESSION_BOUND_KEYS: readonly string[] = [...TICKET_KEYS, 'kill_session'];

/**
 * DISCARD ALL's parts (as DISCARD_ALL_KEEPING_PLANS) with DISCARD TEMP replaced by dropping the
 * client's temporary objects one by one, all but Veil2's own veil2_ancestor_privileges (the one
 * owned by veil2's owner: a client's table of that name goes too). Veil2's close_connection
 * creates that table when it is missing instead of clearing the backend's privileges, so
 * dropping it would cost every login catalog writes.
 */
const VEIL2_RESET = DISCARD_ALL_KEEPING_PLANS.replace(
  'DISCARD TEMP',
  `DO $tessera$
DECLARE o record;
BEGIN
  FOR o IN SELECT c.oid::pg_catalog.regclass AS name, c.relkind FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.pg_my_temp_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
              AND NOT (c.relname = 'veil2_ancestor_privileges'
                       AND c.relowner = (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'veil2')) LOOP
    EXECUTE pg_catalog.format('DROP %s IF EXISTS %s CASCADE',
      CASE o.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                     WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END, o.name);
  END LOOP;
  FOR o IN SELECT p.oid::pg_catalog.regprocedure AS name FROM pg_catalog.pg_proc p
            WHERE p.pronamespace = pg_catalog.pg_my_temp_schema() LOOP
    EXECUTE pg_catalog.format('DROP ROUTINE IF EXISTS %s CASCADE', o.name);
  END LOOP;
  FOR o IN SELECT t.oid::pg_catalog.regtype AS name FROM pg_catalog.pg_type t
            WHERE t.typnamespace = pg_catalog.pg_my_temp_schema() AND t.typtype IN ('e', 'd', 'r') LOOP
    EXECUTE pg_catalog.format('DROP TYPE IF EXISTS %s CASCADE', o.name);
  END LOOP;
END
$tessera$`,
);

export const PRESETS: Readonly<Record<PresetName, Readonly<Preset>>> = {
  tessera: {
    open_connection: 'select success, errmsg from tessera.open_connection($1::bigint, $2::integer, $3::text, $4::inet)',
    close_connection: 'select tessera.close_connection()',
    issue_ticket: 'select tessera.issue_ticket()',
    redeem_ticket: 'select tessera.redeem_ticket($1::text)',
    revoke_tickets: 'select tessera.revoke_tickets($1::text[])',
    kill_session: 'select tessera.end_session_admin($1::bigint)',
    release_check: '',
    reset: DISCARD_ALL_KEEPING_PLANS,
    functions: ['tessera.open_connection(bigint,integer,text,inet)', 'tessera.close_connection()'],
    grant: 'grant tessera_pool, tessera_user to',
  },
  veil2: {
    open_connection: 'select success, errmsg from veil2.open_connection($1::bigint, $2::integer, $3::text)',
    close_connection: 'select veil2.close_connection()',
    issue_ticket: '',
    redeem_ticket: '',
    revoke_tickets: '',
    kill_session: '',
    // Veil2's privileges live in backend memory; this shows none are loaded after close_connection.
    release_check: 'select not exists (select from veil2.session_privileges())',
    reset: VEIL2_RESET,
    functions: ['veil2.open_connection(bigint,integer,text)', 'veil2.close_connection()', 'veil2.session_privileges()'],
    grant: 'grant veil_user to',
  },
};

/**
 * The session_tokens settings as written, completed from the preset. Ticket queries and
 * kill_session come from the preset only along with its own open_connection: they act on the
 * sessions open_connection opens, so a custom open_connection has them only if they are written
 * too (no tickets: session mode only; no kill_session: KILL_SESSION only disconnects clients).
 */
export function resolveSessionSql(written: Partial<SessionSql> & { preset?: PresetName }): SessionSql & { preset: PresetName } {
  const preset = written.preset ?? 'tessera';
  const base = PRESETS[preset];
  const ownOpen = written.open_connection === undefined || written.open_connection === base.open_connection;
  const noTicketsWritten = TICKET_KEYS.every((k) => written[k] === undefined);
  const foreign = (key: keyof SessionSql) => !ownOpen && SESSION_BOUND_KEYS.includes(key) && (key === 'kill_session' || noTicketsWritten);
  const pick = (key: keyof SessionSql): string => written[key] ?? (foreign(key) ? '' : base[key]);
  return {
    preset,
    open_connection: pick('open_connection'),
    close_connection: pick('close_connection'),
    issue_ticket: pick('issue_ticket'),
    redeem_ticket: pick('redeem_ticket'),
    revoke_tickets: pick('revoke_tickets'),
    kill_session: pick('kill_session'),
    release_check: pick('release_check'),
  };
}

/** The parameters Tessera binds for each session query, by number. */
const BOUND: Record<keyof SessionSql, readonly string[]> = {
  open_connection: ['session id', 'nonce', 'authent_token', 'client address'],
  close_connection: [],
  issue_ticket: [],
  redeem_ticket: ['the ticket'],
  revoke_tickets: ['the tickets'],
  kill_session: ['session id'],
  release_check: [],
};

/**
 * A problem with the session SQL that would fail every login (or every use), as [key, problem]:
 * a query that references a parameter Tessera does not bind, or ticket queries that would get
 * their ticket from nowhere. Null when there is none.
 */
export function sessionSqlProblem(sql: SessionSql): [string, string] | null {
  for (const key of Object.keys(BOUND) as (keyof SessionSql)[]) {
    const bound = BOUND[key];
    const highest = highestParameter(sql[key]);
    if (highest > bound.length) {
      const offered = bound.length === 0 ? 'Tessera binds no parameters to it' : `Tessera binds only ${bound.map((what, i) => `$${i + 1} (${what})`).join(', ')}`;
      return [`session_tokens.${key}`, `references $${highest}, but ${offered}`];
    }
    if (bound.length > 0 && key !== 'open_connection' && key !== 'kill_session' && sql[key] !== '' && highest === 0) {
      return [`session_tokens.${key}`, `must use $1 (${bound[0]})`];
    }
  }
  const set = TICKET_KEYS.filter((k) => sql[k] !== '');
  if (set.length > 0 && set.length < TICKET_KEYS.length) {
    const missing = TICKET_KEYS.find((k) => sql[k] === '')!;
    return [`session_tokens.${missing}`, `expected a query: tickets need all of issue_ticket, redeem_ticket and revoke_tickets`];
  }
  return null;
}

/** Transaction mode re-binds each backend with a ticket: it needs the three ticket queries. */
export function hasTickets(sql: SessionSql): boolean {
  return TICKET_KEYS.every((k) => sql[k] !== '');
}

/** What server_reset_query of DISCARD ALL runs as on a pool with session SQL of `preset`. */
export function sessionReset(preset: PresetName): string {
  return PRESETS[preset].reset;
}

/**
 * The start-up check of a session-token pool role: one row (superuser, bypassrls, the preset's
 * functions it cannot execute, comma-separated, or null) from `query` with `$1` the list.
 * Only while open_connection is the preset's own: other SQL calls other functions.
 */
export function poolRoleCheck(sql: SessionSql & { preset: PresetName }): { query: string; functions: string; grant: string } {
  const preset = PRESETS[sql.preset];
  const functions = sql.open_connection === preset.open_connection ? preset.functions : [];
  return {
    query: `select r.rolsuper, r.rolbypassrls,
                   (select pg_catalog.string_agg(f, ', ') from pg_catalog.unnest($1::text[]) f
                     where not exists (
                       select from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                        where n.nspname || '.' || p.proname || '(' || pg_catalog.replace(pg_catalog.oidvectortypes(p.proargtypes), ' ', '') || ')' = f
                          and pg_catalog.has_schema_privilege(n.oid, 'usage') and pg_catalog.has_function_privilege(p.oid, 'execute')))
              from pg_catalog.pg_roles r where r.rolname = current_user`,
    functions: `{${functions.map((f) => `"${f}"`).join(',')}}`,
    grant: preset.grant,
  };
}

/** KILL_SESSION's answer where session_tokens.kill_session is empty: the clients go, the session stays. */
export function killSessionUnset(preset: PresetName): PgError {
  const why = preset === 'veil2' ? 'Veil2 has no function that ends a session' : 'session_tokens.kill_session is empty';
  return new PgError({
    severity: 'ERROR',
    code: SqlState.FeatureNotSupported,
    message: `${why}, so it lives on until it expires`,
    hint: preset === 'veil2' ? 'To end it now, expire it as a superuser: update veil2.sessions set expires = now() where session_id = ...' : 'Set session_tokens.kill_session to a query that ends session $1.',
  });
}
