/**
 * Admin console query parsing, with PgBouncer's rules (admin.c):
 *
 * - One statement per query: `WORD [WORD]` with an optional trailing `;`; whitespace is
 *   space, tab, CR, LF. Anything else (two statements, three words, punctuation) is an
 *   invalid command.
 * - A WORD is letters, digits and `_` (any case), or a double-quoted string where `""` is a
 *   quote. Keywords compare case-insensitively; arguments (database names) keep their case.
 * - `SET key = value` / `SET key TO value`, the value a WORD or a single-quoted string ('' escapes).
 * - Length limits as PgBouncer's buffers: command name < 16, argument and SET key < 64,
 *   SET value < 256 characters (as written, quotes included), else "bad arguments".
 */

const WS0 = '[ \\t\\n\\r]*';
const WS1 = '[ \\t\\n\\r]+';
const WORD = '("(?:[^"]|"")*"|[0-9a-z_]+)';
const STRING = "('(?:[^']|'')*')";
const END = `${WS0}(?:;${WS0})?$`;

const CMD_RX = new RegExp(`^${WS0}${WORD}(?:${WS1}${WORD})?${END}`, 'i');
const SET_WORD_RX = new RegExp(`^${WS0}set${WS1}${WORD}${WS0}(?:=|to)${WS0}${WORD}${END}`, 'i');
const SET_STR_RX = new RegExp(`^${WS0}set${WS1}${WORD}${WS0}(?:=|to)${WS0}${STRING}${END}`, 'i');

const CMD_MAX = 16;
const ARG_MAX = 64;
const VAL_MAX = 256;

export type ParsedQuery =
  | { kind: 'command'; command: string; arg: string }
  | { kind: 'set'; key: string; value: string }
  | { kind: 'invalid' }
  | { kind: 'bad_arguments' };

/** Strips the quotes of a quoted token and undoubles the quote character inside. */
function unquote(token: string, q: string): string {
  if (!token.startsWith(q)) return token;
  return token.slice(1, -1).split(q + q).join(q);
}

export function parseAdminQuery(query: string): ParsedQuery {
  let m = CMD_RX.exec(query);
  if (m) {
    const cmd = m[1];
    const arg = m[2] ?? '';
    if (cmd.length >= CMD_MAX || arg.length >= ARG_MAX) return { kind: 'bad_arguments' };
    return { kind: 'command', command: unquote(cmd, '"'), arg: unquote(arg, '"') };
  }
  m = SET_STR_RX.exec(query);
  if (m) {
    const key = unquote(m[1], '"');
    if (m[1].length >= ARG_MAX || key === '' || m[2].length >= VAL_MAX) return { kind: 'bad_arguments' };
    return { kind: 'set', key, value: unquote(m[2], "'") };
  }
  m = SET_WORD_RX.exec(query);
  if (m) {
    const key = unquote(m[1], '"');
    if (m[1].length >= ARG_MAX || key === '' || m[2].length >= VAL_MAX) return { kind: 'bad_arguments' };
    return { kind: 'set', key, value: unquote(m[2], '"') };
  }
  return { kind: 'invalid' };
}
