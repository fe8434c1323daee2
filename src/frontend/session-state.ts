/**
 * Statement classification for transaction pooling: does a statement leave session state behind
 * on its backend (so the client must keep that backend: it is pinned), and does it change which
 * Tessera session the backend is bound to. Pure functions of the statement text; no sockets, no
 * pools. The triggers are README's list (LISTEN, session advisory locks, WITH HOLD cursors, temp
 * objects, SET of settings the server does not report); test/unit/session-state.test.ts holds a
 * case for each, and for what must not pin.
 *
 * A match is looked for anywhere in the text (a false positive only costs a pinned client, a
 * false negative leaks state to the next client); quoted text and comments are not parsed.
 */

/** Why a statement's effect outlives its transaction; kept on the pinned client for SHOW CLIENTS. */
export type PinReason = 'listen' | 'advisory_lock' | 'with_hold_cursor' | 'temp_object' | 'set_unreported';

/**
 * SET forms that last only for the transaction (LOCAL, TRANSACTION, CONSTRAINTS), and settings
 * the server reports in ParameterStatus, which Tessera re-applies on each backend: a SET of one
 * of these needs no pin. (SET SESSION CHARACTERISTICS sets session defaults: it pins.)
 */
const SET_WITHOUT_PIN = 'local|transaction|constraints|application_name|datestyle|timezone|time\\s+zone|client_encoding|intervalstyle|standard_conforming_strings';

/** In the order they are reported when a statement has several. */
const TRIGGERS: readonly (readonly [PinReason, RegExp])[] = [
  ['listen', /\blisten\b/i],
  // Session-level only: the pg_advisory_xact_lock family ends with the transaction.
  ['advisory_lock', /\b(pg_advisory_lock|pg_advisory_lock_shared|pg_try_advisory_lock|pg_try_advisory_lock_shared)\b/i],
  ['with_hold_cursor', /\bwith\s+hold\b/i],
  ['temp_object', /\bcreate\s+(global\s+|local\s+)?(temp|temporary)\s+(table|view|sequence)\b/i],
  // SET [SESSION] name at the start of a statement, unless name is in SET_WITHOUT_PIN (looked
  // for past SESSION too, so SET SESSION application_name does not pin).
  ['set_unreported', new RegExp(`(?:^|;)\\s*set\\s+(?!(session\\s+)?(${SET_WITHOUT_PIN})\\b)[a-z_]`, 'i')],
];

/** SET search_path, which needs no pin where the server reports it (PostgreSQL 18 and later). */
const SETS_SEARCH_PATH = /(?:^|;)\s*set\s+(session\s+)?search_path\b/i;

/**
 * Every trigger in one pattern: the common statement, which has none, costs one test (this runs
 * for every statement in transaction mode); only a match looks for which one.
 */
const ANY_TRIGGER = new RegExp(TRIGGERS.map(([, re]) => `(?:${re.source})`).join('|'), 'i');

function firstTrigger(text: string): PinReason | null {
  if (!ANY_TRIGGER.test(text)) return null;
  // Indexed: no iterator per call.
  for (let i = 0; i < TRIGGERS.length; i++) if (TRIGGERS[i][1].test(text)) return TRIGGERS[i][0];
  return null;
}

/**
 * Why `text` leaves session state on its backend that outlives the transaction, or null.
 * `searchPathReported`: the server reports search_path, so Tessera carries it to each backend
 * and a SET search_path alone is no reason to pin.
 */
export function outlivesTransaction(text: string, searchPathReported: boolean): PinReason | null {
  const reason = firstTrigger(text);
  if (reason === null) return null;
  // A reported parameter follows the client to each backend (parameter restore), unless the
  // statement also does something else that outlives the transaction.
  if (searchPathReported && SETS_SEARCH_PATH.test(text)) return firstTrigger(text.replace(SETS_SEARCH_PATH, ';'));
  return reason;
}

/** Calls of the functions in sql/tessera.sql that bind or unbind a backend's session. */
const REBINDS = /\b(open_connection|close_connection|redeem_ticket|hello)\s*\(/i;

/**
 * Whether `text` calls one of the functions that change which session a backend is bound to.
 * A client running one itself leaves the binding unknown, so the backend's next transaction
 * redeems a ticket first (a false positive costs one redemption).
 */
export function rebindsSession(text: string): boolean {
  return REBINDS.test(text);
}
