/**
 * `tessera token`: prints the shell lines a psql user needs to log in through Tessera with a
 * session: PGOPTIONS (the options form) and PGPASSWORD (the password form), each with its own
 * nonce, since a nonce is good once.
 */
import { SessionCredentials } from './token.js';

export const TOKEN_USAGE = `Usage: tessera token --session-id ID --nonce N [--session-token TOKEN]

Prints PGOPTIONS and PGPASSWORD lines for psql, using nonce N and N+1. The session token is read
from --session-token or, better (it stays out of shell history), from TESSERA_SESSION_TOKEN.
  eval "$(TESSERA_SESSION_TOKEN=... tessera token --session-id 42 --nonce 2)"
`;

export function tokenCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): { out: string; code: number } {
  const args = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') return { out: TOKEN_USAGE, code: 0 };
    const [key, inline] = a.split(/=(.*)/s, 2);
    if (!['--session-id', '--nonce', '--session-token'].includes(key)) return { out: `tessera token: unknown argument "${a}"\n${TOKEN_USAGE}`, code: 2 };
    const value = inline ?? argv[++i];
    if (value === undefined) return { out: `tessera token: ${key} needs a value\n${TOKEN_USAGE}`, code: 2 };
    args.set(key, value);
  }
  const sessionId = args.get('--session-id');
  const nonce = Number(args.get('--nonce') ?? '');
  const token = args.get('--session-token') ?? env.TESSERA_SESSION_TOKEN;
  if (!sessionId || !/^[0-9]+$/.test(sessionId)) return { out: `tessera token: --session-id must be a session id (digits)\n${TOKEN_USAGE}`, code: 2 };
  if (!Number.isInteger(nonce) || nonce < 1) return { out: `tessera token: --nonce must be a positive integer\n${TOKEN_USAGE}`, code: 2 };
  if (!token) return { out: `tessera token: no session token (--session-token or TESSERA_SESSION_TOKEN)\n${TOKEN_USAGE}`, code: 2 };
  const creds = new SessionCredentials(sessionId, token, { firstNonce: nonce });
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const out = [
    `# nonce ${nonce} (options form) and ${nonce + 1} (password form); next free nonce: ${nonce + 2}`,
    `export PGOPTIONS=${quote(creds.asOptions())}`,
    `export PGPASSWORD=${quote(creds.asPassword())}`,
    '',
  ].join('\n');
  return { out, code: 0 };
}
