/**
 * Tessera's side of a server's authentication exchange: the answer to each Authentication request
 * PostgreSQL sends (cleartext, md5, SCRAM-SHA-256), from the credentials the pool holds. Knows
 * nothing of sockets: it turns a request into the bytes to send back, or an error.
 */
import { serialize } from 'pg-protocol';
import { BodyReader, ProtocolViolation } from '../protocol/framing.js';
import { AuthCode, PgError, SqlState } from '../protocol/messages.js';
import { md5Response, md5Secret } from '../auth/md5.js';
import { ScramClient, type ScramCredentials } from '../auth/scram.js';

export type ServerCredentials =
  | { kind: 'none' }
  | { kind: 'password'; password: string }
  | { kind: 'md5'; hash: string }
  | { kind: 'scram-keys'; clientKey: Buffer; serverKey: Buffer };

export class ServerAuthenticator {
  private scram: ScramClient | null = null;

  constructor(
    private readonly user: string,
    private readonly credentials: ServerCredentials,
  ) {}

  /**
   * The answer to one Authentication message's body; null when nothing is to be sent
   * (AuthenticationOk, SASLFinal verified). Throws a PgError (or ProtocolViolation) to fail the login.
   */
  answer(body: Buffer): Buffer | null {
    const r = new BodyReader(body);
    const code = r.int32();
    const creds = this.credentials;
    switch (code) {
      case AuthCode.Ok:
        return null;
      case AuthCode.CleartextPassword:
        if (creds.kind !== 'password') throw this.noPassword('cleartext');
        return serialize.password(creds.password);
      case AuthCode.MD5Password: {
        const salt = r.bytes(4);
        let hash: string;
        if (creds.kind === 'password') hash = md5Secret(creds.password, this.user);
        else if (creds.kind === 'md5') hash = creds.hash;
        else throw this.noPassword('md5');
        return serialize.password(md5Response(hash, salt));
      }
      case AuthCode.SASL: {
        const mechanisms: string[] = [];
        for (let m = r.cstring(); m !== ''; m = r.cstring()) mechanisms.push(m);
        if (!mechanisms.includes('SCRAM-SHA-256')) throw unsupported(`SASL mechanisms ${mechanisms.join(', ')}`);
        let scramCreds: ScramCredentials;
        if (creds.kind === 'password') scramCreds = { password: creds.password };
        else if (creds.kind === 'scram-keys') scramCreds = { clientKey: creds.clientKey, serverKey: creds.serverKey };
        else throw this.noPassword('SCRAM-SHA-256');
        this.scram = new ScramClient(scramCreds);
        return serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', this.scram.clientFirst());
      }
      case AuthCode.SASLContinue:
        if (!this.scram) throw new ProtocolViolation('SASLContinue without SASL');
        return serialize.sendSCRAMClientFinalMessage(this.scram.clientFinal(r.rest().toString('utf8')));
      case AuthCode.SASLFinal:
        if (!this.scram) throw new ProtocolViolation('SASLFinal without SASL');
        this.scram.verifyServerFinal(r.rest().toString('utf8'));
        return null;
      default:
        throw unsupported(`authentication request ${code}`);
    }
  }

  private noPassword(method: string): PgError {
    return PgError.fatal(SqlState.InvalidAuthorization, `server login failed: no password known for user "${this.user}" to answer ${method} authentication`);
  }
}

function unsupported(what: string): PgError {
  return PgError.fatal(SqlState.FeatureNotSupported, `server login failed: unsupported ${what}`);
}
