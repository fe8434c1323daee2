/**
 * What Tessera needs to know about the session SQL it is configured with (open_connection,
 * close_connection, kill_session, ...) and about what a client ran next to it. Pure functions:
 * the callers decide what to do with the answers.
 */

/**
 * The highest $n the query references (0 for none), outside string literals, quoted
 * identifiers and comments. PostgreSQL's unnamed statement takes exactly that many parameters,
 * so Tessera binds only those: Veil2's three-argument open_connection and Tessera's four-argument
 * one both work with the same four values on offer.
 */
export function highestParameter(sql: string): number {
  let highest = 0;
  const n = sql.length;
  for (let i = 0; i < n; ) {
    const ch = sql[i];
    if (ch === "'") i = skipQuoted(sql, i, "'", isEscapeString(sql, i));
    else if (ch === '"') i = skipQuoted(sql, i, '"', false);
    else if (ch === '-' && sql[i + 1] === '-') i = lineEnd(sql, i);
    else if (ch === '/' && sql[i + 1] === '*') i = commentEnd(sql, i);
    else if (ch === '$') {
      const digits = /^\$([0-9]+)/.exec(sql.slice(i, i + 12));
      if (digits && !isIdentifierChar(sql[i - 1])) {
        highest = Math.max(highest, Number(digits[1]));
        i += digits[0].length;
        continue;
      }
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i, i + 66));
      if (tag && !isIdentifierChar(sql[i - 1])) {
        const close = sql.indexOf(tag[0], i + tag[0].length);
        i = close < 0 ? n : close + tag[0].length;
      } else i++;
    } else i++;
  }
  return highest;
}

/** The values a query references ($1 .. its highest $n), of the ones Tessera has on offer. */
export function boundParameters<T>(sql: string, offered: readonly T[]): T[] {
  return offered.slice(0, highestParameter(sql));
}

/**
 * Schemas whose functions the session SQL calls (`veil2` for "select veil2.open_connection(...)"),
 * lower-cased, pg_catalog left out: a client calling into them may change the session SQL's state.
 */
export function schemasCalled(sqls: readonly string[]): string[] {
  const found = new Set<string>();
  const call = /("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)\s*\.\s*("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)\s*\(/g;
  for (const sql of sqls) {
    for (const m of sql.matchAll(call)) {
      const schema = m[1].startsWith('"') ? m[1].slice(1, -1).replace(/""/g, '"') : m[1].toLowerCase();
      if (schema !== 'pg_catalog') found.add(schema);
    }
  }
  return [...found].sort();
}

/** Blanks, or comments, between two words of a statement. */
const GAP = String.raw`(?:\s|/\*[\s\S]*?\*/|--[^\n]*(?:\n|$))+`;
const DISTURBANCES: [RegExp, string][] = [
  [new RegExp(String.raw`\bdiscard\b`, 'i'), 'DISCARD'],
  [new RegExp(String.raw`\breset${GAP}(all|role|session${GAP}authorization)\b`, 'i'), 'RESET'],
  [new RegExp(String.raw`\bset${GAP}(?:(?:session|local)${GAP})?(?:role|session${GAP}authorization)\b`, 'i'), 'SET ROLE / SESSION AUTHORIZATION'],
  [/\bset_config\s*\(\s*'(role|session_authorization)'/i, 'SET ROLE / SESSION AUTHORIZATION'],
];

/**
 * The "can another session reuse this backend" rule, as a function of what a client ran (Query
 * text or a Parse's statement): the name of the first thing in `sql` that can disturb the
 * session SQL's own state (DISCARD of any kind, RESET ALL/ROLE/SESSION AUTHORIZATION, SET ROLE or
 * SESSION AUTHORIZATION, a call into one of `schemas`), or null. Words inside literals count
 * too (a DO block's EXECUTE 'discard temp'), so it errs on the side of closing the backend; SQL
 * built from pieces at run time can still hide from it, which is why a release check, where the
 * session SQL offers one, is the certain rule.
 */
export function sessionStateDisturbance(sql: string, schemas: readonly string[]): string | null {
  for (const [pattern, what] of DISTURBANCES) if (pattern.test(sql)) return what;
  for (const schema of schemas) if (callsInto(sql, schema)) return `a call into schema ${schema}`;
  return null;
}

function callsInto(sql: string, schema: string): boolean {
  const name = schema.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(String.raw`(?:\b${name}|"${name}")\s*\.`, 'i').test(sql);
}

/**
 * A server's error text with every parameter value Tessera bound blanked out: a cast failure
 * quotes its input ("invalid input syntax for type integer: \"<token>\""), and session values
 * are secrets or ids that must not reach a log.
 */
export function withoutValues(text: string, values: readonly (string | null)[]): string {
  let out = text;
  for (const v of values) if (v !== null && v.length > 0) out = out.split(v).join('…');
  return out;
}

function isIdentifierChar(ch: string | undefined): boolean {
  return ch !== undefined && /[A-Za-z0-9_$]/.test(ch);
}

/** E'...' (or e'...'): backslash escapes apply. */
function isEscapeString(sql: string, quoteAt: number): boolean {
  return (sql[quoteAt - 1] === 'E' || sql[quoteAt - 1] === 'e') && !isIdentifierChar(sql[quoteAt - 2]);
}

/** Past the closing quote of a literal or quoted identifier starting at `start` ('' and "" are escapes). */
function skipQuoted(sql: string, start: number, quote: string, backslashes: boolean): number {
  for (let i = start + 1; i < sql.length; i++) {
    if (backslashes && sql[i] === '\\') i++;
    else if (sql[i] === quote) {
      if (sql[i + 1] === quote) i++;
      else return i + 1;
    }
  }
  return sql.length;
}

function lineEnd(sql: string, start: number): number {
  const end = sql.indexOf('\n', start);
  return end < 0 ? sql.length : end + 1;
}

/** Past a block comment; PostgreSQL's nest. */
function commentEnd(sql: string, start: number): number {
  let depth = 0;
  for (let i = start; i < sql.length - 1; i++) {
    if (sql[i] === '/' && sql[i + 1] === '*') {
      depth++;
      i++;
    } else if (sql[i] === '*' && sql[i + 1] === '/') {
      depth--;
      i++;
      if (depth === 0) return i + 1;
    }
  }
  return sql.length;
}

/** When a backend that ran session SQL may serve another session (see releaseRule). */
export interface ReleaseRule {
  /** Run after close_connection and the reset; the backend is reused only if it answers true. '' for none. */
  check: string;
  /**
   * Without a check: the schemas whose calls (like DISCARD and the rest of
   * sessionStateDisturbance's list) close a client's backend instead of reusing it; null when
   * the unbinding is certain whatever the client ran.
   */
  watch: readonly string[] | null;
}

/**
 * The release rule for a pool running `sessionSql` (open_connection, close_connection,
 * connect_query, release_query): a configured check is the certain way; tessera.sql's functions
 * keep each binding in a row keyed by the backend that close_connection always deletes, so
 * nothing a client runs can keep one; any other session SQL may keep state a client can
 * disturb (Veil2's is cleared only while its temp table exists), so a client that ran something
 * that could disturb it has its backend closed.
 */
export function releaseRule(sessionSql: readonly string[], check: string): ReleaseRule {
  if (check !== '') return { check, watch: null };
  const schemas = schemasCalled(sessionSql);
  if (schemas.length === 1 && schemas[0] === 'tessera') return { check: '', watch: null };
  return { check: '', watch: schemas };
}

/** A pool's release settings: none without session SQL, else releaseRule's. */
export function sessionRelease(sessionSql: readonly string[], hasSessionSql: boolean, check: string): { releaseCheck: string; watchSchemas: readonly string[] | null } {
  if (!hasSessionSql) return { releaseCheck: '', watchSchemas: null };
  const rule = releaseRule(sessionSql.filter((q) => q !== ''), check);
  return { releaseCheck: rule.check, watchSchemas: rule.watch };
}
