/**
 * Which statements leave state beyond their transaction (so a transaction-mode client running one
 * keeps its backend), and which re-bind a backend's session. Pure: text in, answer out. A false
 * positive only pins; it never breaks anything.
 */

/** Each trigger README promises, with the reason SHOW CLIENTS and the logs give. */
const TRIGGERS: readonly { reason: string; pattern: RegExp }[] = [
  { reason: 'listen', pattern: /\blisten\b/i },
  { reason: 'advisory_lock', pattern: /\b(pg_advisory_lock|pg_advisory_lock_shared|pg_try_advisory_lock|pg_try_advisory_lock_shared)\b/i },
  { reason: 'with_hold_cursor', pattern: /\bwith\s+hold\b/i },
  { reason: 'temp_object', pattern: /\bcreate\s+(global\s+|local\s+)?(temp|temporary)\s+(table|view|sequence)\b/i },
  // SET LOCAL, SET TRANSACTION and SET CONSTRAINTS are transaction-scoped; reported parameters
  // follow the client to each backend anyway.
  {
    reason: 'set_unreported',
    pattern:
      /(?:^|;)\s*set\s+(session\s+)?(?!(local|transaction|constraints|session\s+characteristics|application_name|datestyle|timezone|time\s+zone|client_encoding|intervalstyle|standard_conforming_strings)\b)[a-z_]/i,
  },
];

/** SET search_path, which needs no pin where the server reports it (PostgreSQL 18 and later). */
const SETS_SEARCH_PATH = /(?:^|;)\s*set\s+(session\s+)?search_path\b/gi;

/**
 * Why `text` outlives its transaction, or null. `searchPathReported`: the server reports
 * search_path, so a SET of it follows the client like any reported parameter.
 */
export function outlivesTransaction(text: string, searchPathReported: boolean): string | null {
  const scanned = searchPathReported ? text.replace(SETS_SEARCH_PATH, ';') : text;
  for (const { reason, pattern } of TRIGGERS) if (pattern.test(scanned)) return reason;
  return null;
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
