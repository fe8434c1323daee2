/** The startup parameters (or `-c` settings) that carry session-token credentials. */
export const PARAM_SESSION_ID = 'tessera.session_id';
export const PARAM_NONCE = 'tessera.nonce';
export const PARAM_AUTHENT_TOKEN = 'tessera.authent_token';

/**
 * The `options` startup parameter, split and joined as PostgreSQL does (pg_split_opts): words
 * separated by white space, a backslash taking the next character literally.
 */

export function splitOptions(options: string): string[] {
  // Runs of plain characters are sliced, not added one by one: a session-token login's options
  // (three long -c settings) are split at every login.
  const words: string[] = [];
  let word = ''; // the current word, up to `from`
  let from = -1; // where the current word's unescaped run starts; -1: between words
  for (let i = 0; i < options.length; i++) {
    const code = options.charCodeAt(i);
    if (code === BACKSLASH && i + 1 < options.length) {
      if (from < 0) from = i;
      word += options.slice(from, i) + options[i + 1];
      from = ++i + 1;
    } else if (isSpace(code)) {
      if (from >= 0) words.push(word + options.slice(from, i));
      word = '';
      from = -1;
    } else if (from < 0) from = i;
  }
  if (from >= 0) words.push(word + options.slice(from));
  return words;
}

const BACKSLASH = 0x5c;
/** White space as /\s/ has it (ASCII answered without a regular expression). */
const isSpace = (code: number): boolean => code === 0x20 || (code >= 0x09 && code <= 0x0d) || (code > 0x7f && /\s/.test(String.fromCharCode(code)));

/** Escapes one word so the server reads it back whole: whitespace and backslashes get a backslash. */
export function escapeOption(word: string): string {
  return word.replace(/[\\\s]/g, (c) => `\\${c}`);
}

export function joinOptions(words: string[]): string {
  return words.map(escapeOption).join(' ');
}

/**
 * Takes the `-c name=value` / `--name=value` settings whose name starts with `prefix` out of an
 * options string: returns them, and the options without them (undefined when nothing is left).
 */
export function extractSettings(options: string, prefix: string): { settings: Map<string, string>; rest: string | undefined } {
  const words = splitOptions(options);
  const settings = new Map<string, string>();
  const kept: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    let setting: string | undefined;
    let consumed = [w];
    if (w === '-c' && i + 1 < words.length) {
      setting = words[i + 1];
      consumed = [w, words[i + 1]];
    } else if (w.startsWith('-c') && w.length > 2) setting = w.slice(2);
    else if (w.startsWith('--')) setting = w.slice(2);
    const eq = setting?.indexOf('=') ?? -1;
    if (setting !== undefined && eq > 0 && setting.slice(0, eq).toLowerCase().startsWith(prefix)) {
      settings.set(setting.slice(0, eq).toLowerCase(), setting.slice(eq + 1));
      i += consumed.length - 1;
      continue;
    }
    kept.push(...consumed);
    i += consumed.length - 1;
  }
  return { settings, rest: kept.length > 0 ? joinOptions(kept) : undefined };
}
