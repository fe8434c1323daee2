// What application code imports (`tessera/client`): turns a session id and session
// token from tessera.create_session() into the credentials of each new connection.
//
// Every connection must present a fresh nonce and the matching authent_token,
// base64(sha1(session_token || lower-case hex of nonce)), which is Veil2's formula and
// what tessera.open_connection() checks. The server accepts each nonce once, and at most
// 64 above the highest it has seen, so nonces are handed out 1, 2, 3, ... one per call.
import { createHash } from 'node:crypto';
import { inspect } from 'node:util';

const MAX_NONCE = 0x7fffffff; // open_connection's nonce is a PostgreSQL integer

/** base64(sha1(sessionToken + nonce in lower-case hex, no padding)), as tessera.open_connection expects. */
export function authentToken(sessionToken: string, nonce: number): string {
  checkNonce(nonce);
  return createHash('sha1').update(sessionToken + nonce.toString(16), 'utf8').digest('base64');
}

export interface NextCredentials {
  sessionId: string;
  nonce: number;
  authentToken: string;
}

/** Startup parameter and `-c` option names Tessera reads. */
export { PARAM_SESSION_ID, PARAM_NONCE, PARAM_AUTHENT_TOKEN } from '../protocol/options.js';
import { PARAM_SESSION_ID, PARAM_NONCE, PARAM_AUTHENT_TOKEN, escapeOption } from '../protocol/options.js';
export { escapeOption };

/**
 * One session's credentials. Each call of next(), asStartupParams(), asOptions(),
 * asPassword() or the passwordFunction() uses up the next nonce, so every call is
 * good for exactly one connection.
 *
 * The first open_connection() of a session is made with the user's password; if the
 * application made it with nonce 1 itself, start here with `{ firstNonce: 2 }`.
 *
 * Neither the session token nor the session id appears in toString(), JSON or
 * util.inspect output.
 */
export class SessionCredentials {
  readonly #sessionId: string;
  readonly #sessionToken: string;
  #nextNonce: number;

  constructor(sessionId: string | bigint, sessionToken: string, opts: { firstNonce?: number } = {}) {
    const id = typeof sessionId === 'bigint' ? sessionId.toString() : String(sessionId).trim();
    // A positive bigint: what tessera.create_session returns (node-postgres gives it as a string).
    if (!/^[1-9][0-9]{0,18}$/.test(id) || BigInt(id) > 0x7fffffffffffffffn) {
      throw new TypeError('SessionCredentials: sessionId must be a positive 64-bit integer');
    }
    if (typeof sessionToken !== 'string' || sessionToken.length === 0) {
      throw new TypeError('SessionCredentials: sessionToken must be a non-empty string');
    }
    const first = opts.firstNonce ?? 1;
    checkNonce(first);
    this.#sessionId = id;
    this.#sessionToken = sessionToken;
    this.#nextNonce = first;
  }

  /** The nonce the next call will use. */
  get nextNonce(): number {
    return this.#nextNonce;
  }

  /** Uses up the next nonce and returns it with its authent_token. */
  next(): NextCredentials {
    const nonce = this.#nextNonce;
    checkNonce(nonce); // throws once the integer range is exhausted, rather than reuse a nonce
    this.#nextNonce = nonce + 1;
    return { sessionId: this.#sessionId, nonce, authentToken: authentToken(this.#sessionToken, nonce) };
  }

  /** For drivers that send custom startup parameters. */
  asStartupParams(): Record<string, string> {
    const c = this.next();
    return {
      [PARAM_SESSION_ID]: c.sessionId,
      [PARAM_NONCE]: String(c.nonce),
      [PARAM_AUTHENT_TOKEN]: c.authentToken,
    };
  }

  /** The `options` startup parameter (PGOPTIONS, node-postgres's `options`, JDBC, psycopg). */
  asOptions(): string {
    const p = this.asStartupParams();
    return Object.entries(p)
      .map(([k, v]) => `-c ${escapeOption(`${k}=${v}`)}`)
      .join(' ');
  }

  /** `<session_id>:<nonce>:<authent_token>`, for any client at all. */
  asPassword(): string {
    const c = this.next();
    return `${c.sessionId}:${c.nonce}:${c.authentToken}`;
  }

  /** For pg.Pool's `password` option: each new connection gets the next nonce. */
  passwordFunction(): () => string {
    return () => this.asPassword();
  }

  toString(): string {
    return `SessionCredentials { nextNonce: ${this.#nextNonce} }`;
  }

  toJSON(): { nextNonce: number } {
    return { nextNonce: this.#nextNonce };
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

function checkNonce(nonce: number): void {
  if (!Number.isInteger(nonce) || nonce < 0 || nonce > MAX_NONCE) {
    throw new RangeError(`nonce must be an integer from 0 to ${MAX_NONCE}`);
  }
}
