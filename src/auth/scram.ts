// SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it: no channel binding, and the
// username in client-first is ignored (the startup packet's user is the one that counts).
//
// SASLprep: PostgreSQL runs passwords through SASLprep, which leaves pure-ASCII passwords
// unchanged. We skip it and use the password's UTF-8 bytes, so only non-ASCII passwords that
// SASLprep would change (NFKC compatibility forms, odd spaces, soft hyphens…) can disagree.
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { constantTimeEqual, decodeBase64, sealSecret, type ScramSecret, type StoredSecret } from './secret.js';

/** A SCRAM protocol violation. Messages never contain keys, proofs or passwords. */
export class ScramError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScramError';
  }
}

const KEY_LEN = 32;
const DEFAULT_ITERATIONS = 4096; // PostgreSQL's and PgBouncer's default scram_iterations
const hmac = (key: Buffer, data: string | Buffer) => createHmac('sha256', key).update(data).digest();
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest();

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i];
  return out;
}

/**
 * ClientKey and ServerKey derived before, by a digest of (iterations, salt, password): the
 * PBKDF2 rounds are paid once per secret, not at every login of the same user with the same
 * password (a client verified against a plaintext auth_file password, Tessera logging in to
 * PostgreSQL with one), as PgBouncer 1.25 caches them. A changed password, salt or iteration
 * count has another digest and misses. The digest is an HMAC under a key drawn at start, so the
 * cache holds no password and nothing a guess could be checked against outside this process.
 * Only configured or verified passwords are kept, never a client's mere guess. Module-private,
 * never logged or shown; bounded, the oldest entry going first.
 */
export interface ScramKeys {
  readonly clientKey: Buffer;
  readonly serverKey: Buffer;
}
const derivedKeys = new Map<string, ScramKeys>();
const DERIVED_KEYS_LIMIT = 1000;
const derivedKeysKey = randomBytes(32);

function derivedKeysId(password: string, salt: Buffer, iterations: number): string {
  // The salt's length first, so that no (salt, password) pair can run into another's.
  return createHmac('sha256', derivedKeysKey).update(`${iterations}:${salt.length}:`).update(salt).update(password, 'utf8').digest('base64');
}

/**
 * ClientKey and ServerKey for a password (SaltedPassword never leaves this function); the Buffers
 * may be shared with earlier callers, so they are never written to. `remember`: the password is
 * a configured one, whose keys are kept for the next login; false for a client's cleartext
 * password, kept only once it verified (rememberScramKeys).
 */
export function scramKeys(password: string, salt: Buffer, iterations: number, remember = true): ScramKeys {
  const id = derivedKeysId(password, salt, iterations);
  const known = derivedKeys.get(id);
  if (known) return known;
  const salted = pbkdf2Sync(Buffer.from(password, 'utf8'), salt, iterations, KEY_LEN, 'sha256');
  const keys = { clientKey: hmac(salted, 'Client Key'), serverKey: hmac(salted, 'Server Key') };
  salted.fill(0);
  if (remember) keep(id, keys);
  return keys;
}

/** Keeps the keys of a password that verified against its secret (see scramKeys). */
export function rememberScramKeys(password: string, salt: Buffer, iterations: number, keys: ScramKeys): void {
  keep(derivedKeysId(password, salt, iterations), keys);
}

function keep(id: string, keys: ScramKeys): void {
  if (derivedKeys.size >= DERIVED_KEYS_LIMIT) derivedKeys.delete(derivedKeys.keys().next().value!);
  derivedKeys.set(id, keys);
}

/** A SCRAM secret in PostgreSQL's format (formatSecret() gives the rolpassword text). */
export function scramSecret(password: string, iterations = DEFAULT_ITERATIONS, salt = randomBytes(16)): ScramSecret {
  if (!Number.isSafeInteger(iterations) || iterations < 1) throw new RangeError('SCRAM iterations must be a positive integer');
  if (salt.length === 0) throw new RangeError('SCRAM salt must not be empty');
  const { clientKey, serverKey } = scramKeys(password, salt, iterations);
  return sealSecret({ kind: 'scram', iterations, salt, storedKey: sha256(clientKey), serverKey });
}

/** Split 'a=1,b=2' into attributes, in order. Values never contain ',' in SCRAM. */
function parseAttrs(msg: string): Array<{ name: string; value: string }> {
  return msg.split(',').map((part) => {
    if (!/^[A-Za-z]=/.test(part)) throw new ScramError('malformed SCRAM message');
    return { name: part[0], value: part.slice(2) };
  });
}

// RFC 5802 nonce: printable ASCII except ','.
const isNonce = (s: string) => /^[\x21-\x2b\x2d-\x7e]+$/.test(s);

// Per-process key for fake salts: stable within a process, so a probe sees the same salt each
// time for the same user, but unrelated to any real secret and unpredictable from outside.
const mockKey = randomBytes(32);
const deterministicSalt = (user: string) => hmac(mockKey, user).subarray(0, 16);

type ServerFinalResult = { ok: true; message: string; clientKey: Buffer } | { ok: false };

/** Server side of SCRAM-SHA-256: Tessera verifying a client that logs in to Tessera. */
export class ScramServer {
  private readonly secret: ScramSecret;
  private readonly doomed: boolean; // mock exchange: looks real, always fails at the end
  private state: 'start' | 'first-sent' | 'done' = 'start';
  private gs2Header = '';
  private nonce = '';
  private authPrefix = ''; // client-first-bare + ',' + server-first + ','

  /**
   * An undefined or md5 secret (SCRAM cannot use md5), or an empty password, gives a mock
   * exchange so unknown users cannot be told apart. A plain password is turned into a SCRAM
   * secret with a per-user deterministic salt so repeated logins see the same salt.
   * @param opts.nonce test hook: fixed server nonce part instead of a random one
   */
  constructor(secret: StoredSecret | undefined, user: string, private readonly opts: { nonce?: string } = {}) {
    if (secret?.kind === 'scram') {
      this.secret = secret;
      this.doomed = false;
    } else if (secret?.kind === 'plain' && secret.password !== '') {
      this.secret = scramSecret(secret.password, DEFAULT_ITERATIONS, deterministicSalt(user));
      this.doomed = false;
    } else {
      this.secret = {
        kind: 'scram', iterations: DEFAULT_ITERATIONS, salt: deterministicSalt(user),
        storedKey: randomBytes(KEY_LEN), serverKey: randomBytes(KEY_LEN),
      };
      this.doomed = true;
    }
  }

  /** Take client-first-message ('n,,n=…,r=…'), return server-first-message ('r=…,s=…,i=…'). */
  serverFirst(clientFirst: Buffer): string {
    if (this.state !== 'start') throw new ScramError('SCRAM messages out of order');
    this.state = 'first-sent';
    // latin1 keeps every byte as-is, so the AuthMessage we hash is exactly what the client sent.
    const text = clientFirst.toString('latin1');
    if (text.startsWith('p=')) throw new ScramError('SCRAM channel binding is not supported');
    // 'y' means the client could do channel binding but thinks we can't — true, so accept it.
    const m = /^([ny]),([^,]*),(.*)$/s.exec(text);
    if (!m) throw new ScramError('malformed SCRAM message: bad GS2 header');
    if (m[2] !== '') throw new ScramError('SCRAM authorization identity is not supported');
    const bare = m[3];
    const attrs = parseAttrs(bare);
    if (attrs[0]?.name === 'm') throw new ScramError('unsupported SCRAM extension');
    if (attrs[0]?.name !== 'n' || attrs[1]?.name !== 'r' || !isNonce(attrs[1].value)) {
      throw new ScramError('malformed SCRAM message: expected n= and r=');
    }
    this.gs2Header = `${m[1]},,`;
    // 18 random bytes → 24 base64 characters, the same size PostgreSQL uses.
    this.nonce = attrs[1].value + (this.opts.nonce ?? randomBytes(18).toString('base64'));
    const { salt, iterations } = this.secret;
    const serverFirst = `r=${this.nonce},s=${salt.toString('base64')},i=${iterations}`;
    this.authPrefix = `${bare},${serverFirst},`;
    return serverFirst;
  }

  /**
   * Take client-final-message ('c=…,r=…,p=…'). A wrong proof gives { ok: false }; a malformed
   * message throws ScramError. On success, `message` is server-final-message and `clientKey`
   * is the key the client proved it holds (for SCRAM pass-through to the server).
   */
  serverFinal(clientFinal: Buffer): ServerFinalResult {
    if (this.state !== 'first-sent') throw new ScramError('SCRAM messages out of order');
    this.state = 'done';
    const text = clientFinal.toString('latin1');
    const p = text.lastIndexOf(',p=');
    if (p < 0) throw new ScramError('malformed SCRAM message: no proof');
    const withoutProof = text.slice(0, p);
    const attrs = parseAttrs(withoutProof);
    if (attrs[0]?.name !== 'c' || attrs[0].value !== Buffer.from(this.gs2Header).toString('base64')) {
      throw new ScramError('unexpected SCRAM channel-binding attribute');
    }
    if (attrs[1]?.name !== 'r' || attrs[1].value !== this.nonce) throw new ScramError('SCRAM nonce mismatch');
    const proof = decodeBase64(text.slice(p + 3));
    if (!proof || proof.length !== KEY_LEN) throw new ScramError('malformed SCRAM proof');

    const authMessage = Buffer.from(this.authPrefix + withoutProof, 'latin1');
    const clientKey = xor(proof, hmac(this.secret.storedKey, authMessage));
    // Always do the full check (even when doomed) so timing doesn't reveal a mock exchange.
    const proofOk = constantTimeEqual(sha256(clientKey), this.secret.storedKey);
    if (!proofOk || this.doomed) return { ok: false };
    const serverSignature = hmac(this.secret.serverKey, authMessage);
    return { ok: true, message: `v=${serverSignature.toString('base64')}`, clientKey };
  }
}

/**
 * What Tessera logs in to PostgreSQL with: a password, or the keys a client proved in its own
 * SCRAM exchange with Tessera (PgBouncer's SCRAM pass-through; needs the same salt/iterations).
 */
export type ScramCredentials = { password: string } | { clientKey: Buffer; serverKey: Buffer };

/** Client side of SCRAM-SHA-256: Tessera logging in to PostgreSQL. */
export class ScramClient {
  private readonly nonce: string;
  private readonly firstBare: string;
  private expectedSignature: Buffer | null = null;

  /**
   * @param opts.nonce test hook: fixed client nonce (default: 24 random bytes, base64)
   * @param opts.user test hook: username sent in client-first (default '*'; PostgreSQL ignores it)
   */
  constructor(private readonly creds: ScramCredentials, opts: { nonce?: string; user?: string } = {}) {
    if ('clientKey' in creds && (creds.clientKey.length !== KEY_LEN || creds.serverKey.length !== KEY_LEN)) {
      throw new ScramError('SCRAM clientKey and serverKey must be 32 bytes');
    }
    this.nonce = opts.nonce ?? randomBytes(24).toString('base64');
    if (!isNonce(this.nonce)) throw new ScramError('invalid SCRAM client nonce');
    const user = (opts.user ?? '*').replace(/=/g, '=3D').replace(/,/g, '=2C');
    this.firstBare = `n=${user},r=${this.nonce}`;
  }

  /** client-first-message. The mechanism name 'SCRAM-SHA-256' is the caller's business. */
  clientFirst(): string {
    return `n,,${this.firstBare}`;
  }

  /** Take server-first-message, return client-final-message with the proof. */
  clientFinal(serverFirst: string): string {
    const attrs = parseAttrs(serverFirst);
    if (attrs[0]?.name === 'm') throw new ScramError('unsupported SCRAM extension');
    const [r, s, i] = attrs;
    if (r?.name !== 'r' || s?.name !== 's' || i?.name !== 'i') {
      throw new ScramError('malformed SCRAM message: expected r=, s= and i=');
    }
    if (!r.value.startsWith(this.nonce) || r.value.length <= this.nonce.length || !isNonce(r.value)) {
      throw new ScramError('SCRAM nonce mismatch');
    }
    const salt = decodeBase64(s.value);
    if (!salt || salt.length === 0) throw new ScramError('malformed SCRAM salt');
    const iterations = /^[0-9]+$/.test(i.value) ? Number(i.value) : NaN;
    if (!Number.isSafeInteger(iterations) || iterations < 1) throw new ScramError('invalid SCRAM iteration count');

    const { clientKey, serverKey } = 'password' in this.creds
      ? scramKeys(this.creds.password, salt, iterations)
      : this.creds;
    const withoutProof = `c=biws,r=${r.value}`; // biws = base64('n,,')
    const authMessage = `${this.firstBare},${serverFirst},${withoutProof}`;
    const proof = xor(clientKey, hmac(sha256(clientKey), authMessage));
    this.expectedSignature = hmac(serverKey, authMessage);
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Check server-final-message; throws ScramError on 'e=…' or a wrong server signature. */
  verifyServerFinal(serverFinal: string): void {
    if (!this.expectedSignature) throw new ScramError('SCRAM messages out of order');
    if (serverFinal.startsWith('e=')) throw new ScramError(`SCRAM server error: ${serverFinal.slice(2)}`);
    const attrs = parseAttrs(serverFinal);
    const v = attrs[0]?.name === 'v' ? decodeBase64(attrs[0].value) : null;
    if (!v) throw new ScramError('malformed SCRAM message: expected v=');
    if (!constantTimeEqual(v, this.expectedSignature)) throw new ScramError('server signature mismatch');
  }
}
