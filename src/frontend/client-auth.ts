/**
 * Authenticating a client to Tessera, per auth_type, against the auth_file's secrets. The
 * exchange is a small state machine fed the body of each password message ('p') the client sends.
 */
import { randomBytes } from 'node:crypto';
import * as msg from '../protocol/messages.js';
import { PgError, SqlState } from '../protocol/messages.js';
import { BodyReader } from '../protocol/framing.js';
import { extractSettings, PARAM_SESSION_ID, PARAM_NONCE, PARAM_AUTHENT_TOKEN } from '../protocol/options.js';
import type { StoredSecret } from '../auth/secret.js';
import { verifyMd5Response, verifyPlainPassword } from '../auth/md5.js';
import { ScramServer, ScramError } from '../auth/scram.js';

export type AuthType = 'trust' | 'plain' | 'md5' | 'scram-sha-256';

/** What a session-token client presented: checked by open_connection on a pooled backend. */
export interface SessionCredentials {
  sessionId: string;
  nonce: string;
  authentToken: string;
}

export type AuthStep =
  | { kind: 'send'; message: Buffer }
  | { kind: 'fail'; error: PgError }
  /** The next step is not known yet (a secret is being looked up with auth_query). */
  | { kind: 'later'; next: Promise<AuthStep> }
  /** Credentials collected; the login completes only if open_connection accepts them. */
  | { kind: 'session'; credentials: SessionCredentials; serverParams: ReadonlyMap<string, string> }
  /** Authenticated. `scramClientKey` is set when the client proved SCRAM keys (for pass-through). */
  | { kind: 'ok'; serverParams: ReadonlyMap<string, string>; scramClientKey?: Buffer; /** sent before AuthenticationOk */ before?: Buffer };

export interface Authenticator {
  start(): AuthStep;
  receive(body: Buffer): AuthStep;
}

/** An authenticator that refuses at once (unknown database, too many clients, ...). */
export function refuse(error: PgError): Authenticator {
  return { start: () => ({ kind: 'fail', error }), receive: () => ({ kind: 'fail', error }) };
}

const SCRAM = 'SCRAM-SHA-256';
/** Until an md5 exchange draws its salt: shared, never written to. */
const NO_SALT = Buffer.alloc(0);

export class PasswordAuthenticator implements Authenticator {
  private stage: 'start' | 'cleartext' | 'md5' | 'scram-first' | 'scram-final' | 'done' = 'start';
  private salt = NO_SALT;
  private scram: ScramServer | null = null;

  constructor(
    private readonly authType: AuthType,
    private readonly user: string,
    /** undefined when the user is not in auth_file: the exchange still runs, then fails. */
    private readonly secret: StoredSecret | undefined,
    private readonly serverParams: ReadonlyMap<string, string>,
  ) {}

  start(): AuthStep {
    switch (this.authType) {
      case 'trust':
        return this.ok();
      case 'plain':
        this.stage = 'cleartext';
        return { kind: 'send', message: msg.authCleartext() };
      case 'md5':
        // PgBouncer's rule: a SCRAM secret cannot answer an md5 challenge, so it gets SCRAM.
        if (this.secret?.kind === 'scram') return this.startScram();
        this.stage = 'md5';
        this.salt = randomBytes(4);
        return { kind: 'send', message: msg.authMD5(this.salt) };
      case 'scram-sha-256':
        return this.startScram();
    }
  }

  receive(body: Buffer): AuthStep {
    try {
      const r = new BodyReader(body);
      switch (this.stage) {
        case 'cleartext': {
          const password = r.cstring();
          const ok = this.secret !== undefined && verifyPlainPassword(this.secret, this.user, password);
          return ok ? this.ok() : this.wrongPassword();
        }
        case 'md5': {
          const response = r.cstring();
          const ok = this.secret !== undefined && verifyMd5Response(this.secret, this.user, this.salt, response);
          return ok ? this.ok() : this.wrongPassword();
        }
        case 'scram-first': {
          const mechanism = r.cstring();
          if (mechanism !== SCRAM) {
            return this.protocolError('client selected an invalid SASL authentication mechanism');
          }
          const len = r.int32();
          const data = r.bytes(len < 0 ? 0 : len);
          this.stage = 'scram-final';
          return { kind: 'send', message: msg.authSASLContinue(this.scram!.serverFirst(data)) };
        }
        case 'scram-final': {
          const result = this.scram!.serverFinal(r.rest());
          if (!result.ok) return this.wrongPassword();
          this.stage = 'done';
          return { kind: 'ok', serverParams: this.serverParams, scramClientKey: result.clientKey, before: msg.authSASLFinal(result.message) };
        }
        default:
          return this.protocolError('unexpected password message');
      }
    } catch (err) {
      if (err instanceof ScramError) return this.protocolError(`malformed SCRAM message (${err.message})`);
      return this.protocolError('invalid password packet');
    }
  }

  private startScram(): AuthStep {
    this.stage = 'scram-first';
    this.scram = new ScramServer(this.secret, this.user);
    return { kind: 'send', message: msg.authSASL([SCRAM]) };
  }

  private ok(): AuthStep {
    this.stage = 'done';
    return { kind: 'ok', serverParams: this.serverParams };
  }

  private wrongPassword(): AuthStep {
    this.stage = 'done';
    return { kind: 'fail', error: PgError.fatal(SqlState.InvalidPassword, `password authentication failed for user "${this.user}"`) };
  }

  private protocolError(message: string): AuthStep {
    this.stage = 'done';
    return { kind: 'fail', error: PgError.fatal(SqlState.ProtocolViolation, message) };
  }
}

/** What the credentials' `-c` names start with (options.ts's PARAM_*). */
const CREDENTIAL_PREFIX = 'tessera.';

/**
 * Takes session-token credentials out of the startup parameters (directly, or as `-c tessera.*`
 * inside `options`). They never reach PostgreSQL, whatever kind of database the client asked for.
 */
export function takeSessionCredentials(params: ReadonlyMap<string, string>): {
  credentials: SessionCredentials | null;
  serverParams: Map<string, string>;
} {
  // One pass that copies what is not a credential (a Map copied whole, then pruned, costs more).
  const serverParams = new Map<string, string>();
  let sessionId: string | undefined;
  let nonce: string | undefined;
  let authentToken: string | undefined;
  for (const [name, value] of params) {
    if (name === PARAM_SESSION_ID) sessionId = value;
    else if (name === PARAM_NONCE) nonce = value;
    else if (name === PARAM_AUTHENT_TOKEN) authentToken = value;
    else serverParams.set(name, value);
  }
  const options = serverParams.get('options');
  if (options !== undefined && options.toLowerCase().includes(CREDENTIAL_PREFIX)) {
    // Inside `options` they win over top-level ones; every tessera.* setting is taken out.
    const { settings, rest } = extractSettings(options, CREDENTIAL_PREFIX);
    sessionId = settings.get(PARAM_SESSION_ID) ?? sessionId;
    nonce = settings.get(PARAM_NONCE) ?? nonce;
    authentToken = settings.get(PARAM_AUTHENT_TOKEN) ?? authentToken;
    if (rest === undefined) serverParams.delete('options');
    else serverParams.set('options', rest);
  }
  const credentials = sessionId !== undefined && nonce !== undefined && authentToken !== undefined ? { sessionId, nonce, authentToken } : null;
  return { credentials, serverParams };
}

/**
 * Session-token logins: the credentials come as startup parameters, inside `options`, or as the
 * cleartext password `<session_id>:<nonce>:<authent_token>`; open_connection decides whether
 * they are good.
 */
export class SessionTokenAuthenticator implements Authenticator {
  constructor(
    private readonly credentials: SessionCredentials | null,
    private readonly serverParams: ReadonlyMap<string, string>,
  ) {}

  start(): AuthStep {
    if (this.credentials) return { kind: 'session', credentials: this.credentials, serverParams: this.serverParams };
    // Any client can send a password: ask for <session_id>:<nonce>:<authent_token>.
    return { kind: 'send', message: msg.authCleartext() };
  }

  receive(body: Buffer): AuthStep {
    let password: string;
    try {
      password = new BodyReader(body).cstring();
    } catch {
      return { kind: 'fail', error: PgError.fatal(SqlState.ProtocolViolation, 'invalid password packet') };
    }
    const first = password.indexOf(':');
    const second = password.indexOf(':', first + 1);
    // A malformed password is just a wrong one: open_connection answers AUTHFAIL for it.
    const credentials =
      first > 0 && second > first
        ? { sessionId: password.slice(0, first), nonce: password.slice(first + 1, second), authentToken: password.slice(second + 1) }
        : { sessionId: '0', nonce: '0', authentToken: '' };
    return { kind: 'session', credentials, serverParams: this.serverParams };
  }
}

/**
 * Looks the user's secret up first (auth_query), then authenticates as PasswordAuthenticator
 * would. Password messages cannot arrive before the first request, so nothing is lost meanwhile.
 */
export class LookupAuthenticator implements Authenticator {
  private inner: Authenticator | null = null;

  constructor(
    private readonly lookup: Promise<StoredSecret | undefined>,
    private readonly make: (secret: StoredSecret | undefined) => Authenticator,
    private readonly onSecret: (secret: StoredSecret | undefined) => void,
  ) {}

  start(): AuthStep {
    const next = this.lookup.then(
      (secret) => {
        this.onSecret(secret);
        this.inner = this.make(secret);
        return this.inner.start();
      },
      (err: PgError): AuthStep => ({ kind: 'fail', error: err instanceof PgError ? err : PgError.fatal(SqlState.InvalidAuthorization, 'authentication lookup failed') }),
    );
    return { kind: 'later', next };
  }

  receive(body: Buffer): AuthStep {
    return this.inner ? this.inner.receive(body) : { kind: 'fail', error: PgError.fatal(SqlState.ProtocolViolation, 'unexpected password message') };
  }
}
