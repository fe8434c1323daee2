// Stored password secrets in the three forms PostgreSQL (and PgBouncer's auth_file) use.
import { timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';

export type StoredSecret =
  | { kind: 'plain'; password: string }
  | { kind: 'md5'; hash: string } // 'md5' + 32 lowercase hex, as PostgreSQL stores it
  | { kind: 'scram'; iterations: number; salt: Buffer; storedKey: Buffer; serverKey: Buffer };
export type ScramSecret = Extract<StoredSecret, { kind: 'scram' }>;

// PostgreSQL only accepts lowercase hex here; anything else is treated as a plain password.
const MD5_RE = /^md5[0-9a-f]{32}$/;
const SCRAM_RE = /^SCRAM-SHA-256\$([0-9]+):([^$:]+)\$([^$:]+):([^$:]+)$/;
// Buffer.from(_, 'base64') silently skips junk, so check the alphabet and padding first.
const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict base64 decode: null for anything that is not canonical padded base64. */
export function decodeBase64(text: string): Buffer | null {
  return B64_RE.test(text) ? Buffer.from(text, 'base64') : null;
}

/**
 * Make a secret safe to log: toString, JSON and util.inspect show only its kind.
 * The added properties are non-enumerable, so the object still compares and spreads as plain data.
 */
export function sealSecret<T extends StoredSecret>(secret: T): T {
  const shown = `[StoredSecret ${secret.kind}]`;
  const hide = { value: () => shown, enumerable: false, configurable: true };
  Object.defineProperties(secret, { toString: hide, toJSON: hide, [inspect.custom]: hide });
  return secret;
}

/**
 * Classify a stored secret the way PostgreSQL's get_password_type() does: a well-formed
 * md5 or SCRAM-SHA-256 secret is that kind, anything else (including a malformed SCRAM
 * string) is a plaintext password. Never throws.
 */
export function parseSecret(text: string): StoredSecret {
  if (MD5_RE.test(text)) return sealSecret({ kind: 'md5', hash: text });
  const m = SCRAM_RE.exec(text);
  if (m) {
    const iterations = Number(m[1]);
    const salt = decodeBase64(m[2]);
    const storedKey = decodeBase64(m[3]);
    const serverKey = decodeBase64(m[4]);
    if (
      Number.isSafeInteger(iterations) && iterations >= 1 &&
      salt && salt.length > 0 &&
      storedKey?.length === 32 && serverKey?.length === 32
    ) {
      return sealSecret({ kind: 'scram', iterations, salt, storedKey, serverKey });
    }
  }
  return sealSecret({ kind: 'plain', password: text });
}

/** The text form of a secret: for scram, exactly what PostgreSQL stores in pg_authid.rolpassword. */
export function formatSecret(secret: StoredSecret): string {
  switch (secret.kind) {
    case 'plain':
      return secret.password;
    case 'md5':
      return secret.hash;
    case 'scram':
      return `SCRAM-SHA-256$${secret.iterations}:${secret.salt.toString('base64')}` +
        `$${secret.storedKey.toString('base64')}:${secret.serverKey.toString('base64')}`;
  }
}

/** Constant-time equality for secrets; unequal lengths are simply unequal (the length is public). */
export function constantTimeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
