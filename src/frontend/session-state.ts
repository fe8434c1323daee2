/**
 * What a transaction-mode client's statement leaves beyond its transaction, read from its text.
 * Pure: text in, answer out. Three answers:
 * - outlivesTransaction: state no other backend can be given (a pin, with the reason SHOW CLIENTS
 *   and the logs give). A false positive only pins; it never breaks anything.
 * - changesSettings: the statement may change session settings (SET, RESET, set_config, DISCARD
 *   ALL), which follow the client instead: the relay reads them back from the server once the
 *   transaction is over. A false positive costs one small query.
 * - resetsToStartup: the settings a RESET (or SET ... TO DEFAULT, RESET ALL, DISCARD ALL) returns
 *   to their session-start values, which for a client on a shared backend are its own startup
 *   values, not the backend's: the relay puts those back right after the statement.
 */

/** The pin reason of temporary objects: such a backend is closed on release, never reused. */
export const TEMP_OBJECTS = 'temp_objects';

/** Each trigger README promises, with the reason SHOW CLIENTS and the logs give. */
const PINS: readonly { reason: string; pattern: RegExp }[] = [
  { reason: 'listen', pattern: /\blisten\b/i },
  { reason: 'advisory_lock', pattern: /\b(pg_advisory_lock|pg_advisory_lock_shared|pg_try_advisory_lock|pg_try_advisory_lock_shared)\b/i },
  { reason: 'with_hold_cursor', pattern: /\bwith\s+hold\b/i },
  // A temp table, or anything that names pg_temp (a search_path through it creates the backend's
  // temp namespace, which outlives DISCARD ALL): the backend is closed when the client leaves.
  { reason: TEMP_OBJECTS, pattern: /\bcreate\s+(or\s+replace\s+)?(global\s+|local\s+)?(temp|temporary)\b|\bpg_temp\b/i },
  // Superuser only, and not a setting set_config can carry back.
  { reason: 'session_authorization', pattern: /(?:^|;)\s*set\s+(session\s+)?session\s+authorization\b/i },
];

/** Why `text` leaves state that cannot follow its client to another backend, or null. */
export function outlivesTransaction(text: string): string | null {
  for (const { reason, pattern } of PINS) if (pattern.test(text)) return reason;
  return null;
}

/**
 * A statement that can change a session setting. SET LOCAL, SET TRANSACTION, SET CONSTRAINTS
 * and SET SESSION CHARACTERISTICS... are transaction-scoped or read back like any other (the
 * last one sets default_transaction_*), so only the first three are left out.
 */
const CHANGES_SETTINGS = /(?:^|;)\s*(set\s+(?!(local|transaction|constraints)\b)[a-z_"]|reset\b|discard\s+all\b)|\bset_config\s*\(/i;

export function changesSettings(text: string): boolean {
  return CHANGES_SETTINGS.test(text);
}

/** RESET name / RESET ALL / SET [SESSION] name {TO | =} DEFAULT / DISCARD ALL, statement by statement. */
const RESETS = /(?:^|;)\s*(?:reset\s+(all\b|time\s+zone\b|[a-z_][a-z0-9_.]*|"[^"]+")|discard\s+(all)\b|set\s+(?:session\s+)?(?:([a-z_][a-z0-9_.]*|"[^"]+")\s*(?:to|=)\s*default|(time\s+zone)\s+(?:default|local))\s*(?=;|$))/gi;

/** What a RESET-like statement returns to its session-start value: 'all', the names (lower case), or null. */
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

/**
 * Calls that change which session a backend is bound to. A client running one itself leaves the
 * binding unknown, so the backend's next transaction redeems a ticket first (a false positive
 * costs one redemption).
 */
const REBINDS = /\b(open_connection|close_connection|redeem_ticket|hello)\s*\(/i;

export function rebindsSession(text: string): boolean {
  return REBINDS.test(text);
}
