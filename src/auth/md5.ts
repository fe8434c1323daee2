// MD5 password auth (PostgreSQL's AuthenticationMD5Password) and cleartext password checks.
import { createHash } from 'node:crypto';
import { constantTimeEqual, type StoredSecret } from './secret.js';
import { rememberScramKeys, scramKeys } from './scram.js';

const md5hex = (data: string | Buffer) => createHash('md5').update(data).digest('hex');
const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest();

/** The stored md5 form: 'md5' + md5hex(password + user). */
export function md5Secret(password: string, user: string): string {
  return 'md5' + md5hex(password + user);
}

/** What a client sends for a 4-byte salt: 'md5' + md5hex(hex part of the stored secret + salt). */
export function md5Response(secretHash: string, salt: Buffer): string {
  if (!/^md5[0-9a-f]{32}$/.test(secretHash)) throw new Error('md5Response: not an md5 secret');
  if (salt.length !== 4) throw new Error('md5Response: salt must be 4 bytes');
  return 'md5' + md5hex(Buffer.concat([Buffer.from(secretHash.slice(3)), salt]));
}

/**
 * Check a client's md5 response. Works with plain and md5 secrets; a scram secret cannot
 * answer an md5 challenge, so it fails. Empty passwords never match, as in PostgreSQL/PgBouncer.
 */
export function verifyMd5Response(secret: StoredSecret, user: string, salt: Buffer, response: string): boolean {
  let stored: string;
  if (secret.kind === 'md5') stored = secret.hash;
  else if (secret.kind === 'plain' && secret.password !== '') stored = md5Secret(secret.password, user);
  else return false;
  return constantTimeEqual(Buffer.from(response), Buffer.from(md5Response(stored, salt)));
}

/** Check a cleartext password (AuthenticationCleartextPassword) against any kind of secret. */
export function verifyPlainPassword(secret: StoredSecret, user: string, password: string): boolean {
  if (password === '') return false; // PgBouncer and PostgreSQL refuse empty passwords
  switch (secret.kind) {
    case 'plain':
      // Compare digests so the comparison is constant-time and doesn't leak the length.
      return secret.password !== '' && constantTimeEqual(sha256(password), sha256(secret.password));
    case 'md5':
      return constantTimeEqual(Buffer.from(md5Secret(password, user)), Buffer.from(secret.hash));
    case 'scram': {
      // A client's guess: its keys are kept only if it turns out right.
      const keys = scramKeys(password, secret.salt, secret.iterations, false);
      // Evaluate both comparisons (no short-circuit) so timing doesn't depend on which one failed.
      const storedOk = constantTimeEqual(sha256(keys.clientKey), secret.storedKey);
      const serverOk = constantTimeEqual(keys.serverKey, secret.serverKey);
      if (storedOk && serverOk) rememberScramKeys(password, secret.salt, secret.iterations, keys);
      return storedOk && serverOk;
    }
  }
}
