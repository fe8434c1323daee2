/**
 * Statement classification for transaction pooling: does a statement leave session state behind
 * on its backend that cannot follow the client (so the client must keep that backend: it is
 * pinned), does it change session settings (which follow the client instead: the relay reads
 * them back from the server after the transaction; a false positive costs one small query),
 * what does a RESET return to the client's own startup values, and does it change which Tessera
 * session the backend is bound to. Pure functions of the statement text; no sockets, no pools.
 * The triggers are README's list (LISTEN, session advisory locks, WITH HOLD cursors, temp
 * objects, SET SESSION AUTHORIZATION); test/unit/session-state.test.ts holds a case for each,
 * and for what must not pin.
 *
 * A match is looked for anywhere in the text (a false positive only costs a pinned client, a
 * false negative leaks state to the next client); quoted text and comments are not parsed.
 */

/** Why a statement's effect outlives its transaction; kept on the pinned client for SHOW CLIENTS. */
export type PinReason = 'listen' | 'advisory_lock' | 'with_hold_cursor' | 'temp_object' | 'session_authorization';

/** The pin of temporary objects: such a backend is closed on release, never reused. */
export const TEMP_OBJECTS: PinReason = 'temp_object';

/** In the order they are reported when a statement has several. */
const TRIGGERS: readonly (readonly [PinReason, RegExp])[] = [
  ['listen', /\blisten\b/i],
  // Session-level only: the pg_advisory_xact_lock family ends with the transaction.
  ['advisory_lock', /\b(pg_advisory_lock|pg_advisory_lock_shared|pg_try_advisory_lock|pg_try_advisory_lock_shared)\b/i],
  ['with_hold_cursor', /\bwith\s+hold\b/i],
  // A temp table, or anything that names pg_temp (a search_path through it creates the backend's
  // temp namespace, which outlives DISCARD ALL): the backend is closed when the client leaves.
  ['temp_object', /\bcreate\s+(or\s+replace\s+)?(global\s+|local\s+)?(temp|temporary)\s+(table|view|sequence)\b|\bpg_temp\b/i],
  // Superuser only, and not a setting set_config can carry.
  ['session_authorization', /(?:^|;)\s*set\s+(session\s+)?session\s+authorization\b/i],
];

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

/** Why `text` leaves session state on its backend that cannot follow the client, or null. */
export function outlivesTransaction(text: string): PinReason | null {
  return firstTrigger(text);
}

/**
 * A statement that can change a session setting. SET LOCAL, SET TRANSACTION and SET CONSTRAINTS
 * are transaction-scoped; everything else (SET SESSION CHARACTERISTICS sets default_transaction_*)
 * is read back.
 */
const CHANGES_SETTINGS = /(?:^|;)\s*(set\s+(?!(local|transaction|constraints)\b)[a-z_"]|reset\b|discard\s+all\b)|\bset_config\s*\(/i;

export function changesSettings(text: string): boolean {
  return CHANGES_SETTINGS.test(text);
}

/** RESET name / RESET ALL / SET [SESSION] name {TO | =} DEFAULT / SET TIME ZONE {DEFAULT | LOCAL} / DISCARD ALL. */
const RESETS = /(?:^|;)\s*(?:reset\s+(all\b|time\s+zone\b|[a-z_][a-z0-9_.]*|"[^"]+")|discard\s+(all)\b|set\s+(?:session\s+)?(?:([a-z_][a-z0-9_.]*|"[^"]+")\s*(?:to|=)\s*default|(time\s+zone)\s+(?:default|local))\s*(?=;|$))/gi;

/**
 * What a RESET-like statement returns to its session-start value, which for a client on a shared
 * backend is its own startup value, not the backend's: 'all', the names (lower case), or null.
 */
export function resetsToStartup(text: string): 'all' | string[] | null {
  let names: string[] | null = null;
  for (const m of text.matchAll(RESETS)) {
    const word = m[1] ?? m[2] ?? m[3] ?? m[4];
    if (/^all$/i.test(word) && m[3] === undefined) return 'all';
    const name = (word.startsWith('"') ? word.slice(1, -1) : word).toLowerCase();
    (names ??= []).push(/^time\s+zone$/.test(name) ? 'timezone' : name);
  }
  return names;
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

const SEMICOLON = 0x3b;
const ASCII_LOWER = 0x20;

/**
 * What each byte can be to mayAffectSession: 0 nothing (most bytes, passed over with one table
 * read), or the letter (lower case) a keyword starts with, or ';'.
 */
const KEYWORD_START = new Uint8Array(256);
for (const letter of 'achlst') {
  KEYWORD_START[letter.charCodeAt(0)] = letter.charCodeAt(0);
  KEYWORD_START[letter.toUpperCase().charCodeAt(0)] = letter.charCodeAt(0);
}
KEYWORD_START[SEMICOLON] = SEMICOLON;

/** The bytes \s may be, and more: ASCII white space, and every byte that is not ASCII. */
const isSpaceOrNonAscii = (b: number): boolean => b === 0x20 || (b >= 0x09 && b <= 0x0d) || b >= 0x80;

/**
 * The hot path's look before decoding a statement: false when none of outlivesTransaction,
 * changesSettings, rebindsSession, nor a LISTEN relayed to a listening client (/listen/i), can
 * match the text of sql[0, end), so that text need not be made at all (most statements: plain
 * SELECTs and DML). It reads bytes only and answers true for more than those do: each pattern's
 * keyword (ASCII letters in any case; the patterns' /i matches no other character to them)
 * anywhere, ignoring word boundaries, and SET / RESET / DISCARD where a statement may begin (the
 * start, or after a ';', past bytes that are white space or not ASCII, which \s may be).
 * test/unit/session-state.test.ts checks it never says false where the full checks say yes.
 */
export function mayAffectSession(sql: Buffer, end: number): boolean {
  if (statementStartsWithSetting(sql, 0, end)) return true;
  for (let i = 0; i < end; i++) {
    const k = KEYWORD_START[sql[i]];
    if (k === 0) continue;
    // The second letter is compared here: most letters start no keyword.
    const second = sql[i + 1] | ASCII_LOWER;
    switch (k) {
      case SEMICOLON:
        if (statementStartsWithSetting(sql, i + 1, end)) return true;
        break;
      case 0x61: // a
        if (second === 0x64 && wordAt(sql, i, end, 'advisory_lock')) return true;
        break;
      case 0x63: // c
        if (second === 0x6f && wordAt(sql, i, end, 'connection')) return true; // open_connection, close_connection
        break;
      case 0x68: // h
        if ((second === 0x6f && wordAt(sql, i, end, 'hold')) || (second === 0x65 && wordAt(sql, i, end, 'hello'))) return true;
        break;
      case 0x6c: // l
        if (second === 0x69 && wordAt(sql, i, end, 'listen')) return true;
        break;
      case 0x73: // s
        if (second === 0x65 && wordAt(sql, i, end, 'set_config')) return true;
        break;
      case 0x74: // t
        // temp, temporary, pg_temp; redeem_ticket
        if ((second === 0x65 && wordAt(sql, i, end, 'temp')) || (second === 0x69 && wordAt(sql, i, end, 'ticket'))) return true;
        break;
    }
  }
  return false;
}

/** Past white space (or bytes that may be), does the statement at `at` begin with SET, RESET or DISCARD? */
function statementStartsWithSetting(sql: Buffer, at: number, end: number): boolean {
  let i = at;
  while (i < end && isSpaceOrNonAscii(sql[i])) i++;
  return wordAt(sql, i, end, 'set') || wordAt(sql, i, end, 'reset') || wordAt(sql, i, end, 'discard');
}

/** Does sql[at, end) begin with `word` (lower-case ASCII letters and '_'), letters in any case? Decodes nothing. */
export function wordAt(sql: Buffer, at: number, end: number, word: string): boolean {
  if (end - at < word.length) return false;
  for (let k = 0; k < word.length; k++) {
    const b = sql[at + k];
    const c = b >= 0x41 && b <= 0x5a ? b | ASCII_LOWER : b;
    if (c !== word.charCodeAt(k)) return false;
  }
  return true;
}
