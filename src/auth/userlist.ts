// PgBouncer's auth_file (userlist.txt): one `"username" "secret"` per line.
import { readFileSync } from 'node:fs';
import { parseSecret, type StoredSecret } from './secret.js';

/** A problem in an auth file. The message names file:line but never quotes the line (it may hold a secret). */
export class UserlistError extends Error {
  constructor(public file: string, public line: number, message: string) {
    super(`${file}:${line}: ${message}`);
    this.name = 'UserlistError';
  }
}

/**
 * Read one quoted string starting at text[start] (which must be '"'); `""` inside stands for `"`.
 * Returns the value and the index after the closing quote, or null if the quote is never closed.
 */
function readQuoted(text: string, start: number): { value: string; end: number } | null {
  let value = '';
  let i = start + 1;
  for (;;) {
    const q = text.indexOf('"', i);
    if (q < 0) return null;
    value += text.slice(i, q);
    if (text[q + 1] !== '"') return { value, end: q + 1 };
    value += '"';
    i = q + 2;
  }
}

/**
 * Parse auth_file text. Like PgBouncer, text between the two quoted strings and after the
 * second one is ignored, and a later line for the same user replaces an earlier one.
 * Unlike PgBouncer (which logs and stops reading), a malformed line is an error.
 */
export function parseUserlist(text: string, file: string): Map<string, StoredSecret> {
  const users = new Map<string, StoredSecret>();
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((raw, idx) => {
    const lineNo = idx + 1;
    const line = raw.trimStart();
    if (line === '' || line[0] === ';' || line[0] === '#') return;
    if (line[0] !== '"') throw new UserlistError(file, lineNo, 'expected a line of the form "username" "secret"');
    const user = readQuoted(line, 0);
    if (!user) throw new UserlistError(file, lineNo, 'unterminated quoted username');
    if (user.value === '') throw new UserlistError(file, lineNo, 'empty username');
    const open = line.indexOf('"', user.end);
    if (open < 0) throw new UserlistError(file, lineNo, 'missing quoted secret after the username');
    const secret = readQuoted(line, open);
    if (!secret) throw new UserlistError(file, lineNo, 'unterminated quoted secret');
    users.set(user.value, parseSecret(secret.value));
  });
  return users;
}

/** Load and parse an auth file; read failures become a UserlistError with line 0. */
export function loadUserlist(path: string): Map<string, StoredSecret> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const what = code === 'ENOENT' ? 'auth file does not exist'
      : code === 'EACCES' ? 'permission denied reading auth file'
      : `cannot read auth file (${code ?? String(err)})`;
    throw new UserlistError(path, 0, what);
  }
  return parseUserlist(text, path);
}
