// How PostgreSQL's pg_split_opts reads the startup packet's `options`, written character by
// character as plainly as possible: the tests' reference for src/protocol/options.ts (which must
// split the same) and for src/client's escaping (which must come back word for word).

/** Words split at white space (/\s/); a backslash takes the next character as it is. */
export function splitLikePostgres(options: string): string[] {
  const out: string[] = [];
  let word = '';
  let inWord = false;
  for (let i = 0; i < options.length; i++) {
    const ch = options[i]!;
    if (ch === '\\' && i + 1 < options.length) {
      word += options[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) out.push(word);
      word = '';
      inWord = false;
    } else {
      word += ch;
      inWord = true;
    }
  }
  if (inWord) out.push(word);
  return out;
}
