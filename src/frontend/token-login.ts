/**
 * A session-token client's part of the session protocol (see DESIGN.md): its credentials are
 * checked by open_connection on the pooled backend it will use, before it sees AuthenticationOk;
 * in transaction mode that backend issues a ticket, which binds each further backend to the
 * session (redeem_ticket) before the client's statements run there, and which is revoked when the
 * client leaves. TokenLogin owns the credentials until they are used, the session id and the
 * ticket. The ticket is Tessera's alone: never sent to the client, never logged.
 */
import * as msg from '../protocol/messages.js';
import { PgError, SqlState } from '../protocol/messages.js';
import { extendedQuery, decodeDataRow, type ServerConnection } from '../pool/server-connection.js';
import type { Pool } from '../pool/pool.js';
import { Expect } from '../pool/response-queue.js';
import type { SessionCredentials } from './client-auth.js';
import { log } from '../log.js';
import { boundParameters, withoutValues } from '../pool/session-sql.js';

/** What a ticket must look like to be kept (and later put in a text[] literal unquoted). */
const TICKET = /^[A-Za-z0-9+/=_-]{16,512}$/;

/** What the token login needs of its client. */
export interface TokenLoginClient {
  readonly id: number;
  readonly user: string;
  readonly database: string;
  readonly remoteAddress: string;
  readonly closed: boolean;
  /** The login is over with this server (refused, or the client left meanwhile). */
  loginDoneWith(server: ServerConnection): void;
  /** The session is open: session mode keeps `server`; transaction mode has released it already (null). */
  sessionOpened(server: ServerConnection | null, status: ReadonlyMap<string, string>): void;
  /** Told of every token login's outcome (the per-address failure limit). */
  onSessionLogin(ok: boolean): void;
  /** Learns who the session's end user is (once per session, on `server`), then calls `done`. */
  identifySession(sessionId: string, server: ServerConnection, done: () => void): void;
  /** Refuses the login: counted by `reason`, then FATAL. */
  refuse(reason: string, err: PgError): void;
  /** Bytes for `server` ahead of the client's own, in the same write. */
  queueForServer(server: ServerConnection, bytes: Buffer, readies: number): void;
}

export class TokenLogin {
  /** The session the client logged in with (an id, not a secret): KILL_SESSION finds it. */
  sessionId: string | null = null;
  /** Transaction mode: binds further backends to the session. */
  private ticket: string | null = null;
  /** A redemption failed (the session ended): the server's replies are no longer the client's. */
  lost = false;
  /** Waiting for open_connection; dropped as soon as it has run. */
  private credentials: SessionCredentials | null;

  constructor(
    private readonly client: TokenLoginClient,
    private readonly pool: Pool,
    credentials: SessionCredentials,
    /** The query that checks the credentials ($1 id, $2 nonce, $3 token, $4 address). */
    private readonly openConnectionSql: string,
  ) {
    this.credentials = credentials;
  }

  /** Still waiting for a server to check the credentials on. */
  get pending(): boolean {
    return this.credentials !== null;
  }

  get holdsTicket(): boolean {
    return this.ticket !== null;
  }

  /**
   * Malformed values would make the SQL cast fail with the value in its message: they are
   * answered as the wrong credentials they are, without asking the server.
   */
  get wellFormed(): boolean {
    const c = this.credentials!;
    return /^[0-9]{1,19}$/.test(c.sessionId) && /^-?[0-9]{1,10}$/.test(c.nonce) && c.authentToken.length <= 1024;
  }

  /** Refuses the credentials in PostgreSQL's words for a failed login; errmsg says which check failed. */
  refuse(errmsg: string): void {
    this.client.onSessionLogin(false);
    const code = errmsg === 'EXPIRED' || errmsg === 'LOCKED' ? SqlState.InvalidAuthorization : SqlState.InvalidPassword;
    this.client.refuse(`session_${errmsg.toLowerCase()}`, PgError.fatal(code, `session authentication failed for user "${this.client.user}": ${errmsg}`));
  }

  /** Checks the credentials on `server` with open_connection, then (transaction mode) takes a ticket. */
  open(server: ServerConnection, transactional: boolean): void {
    const c = this.credentials!;
    const client = this.client;
    this.credentials = null;
    const address = client.remoteAddress.startsWith('::ffff:') ? client.remoteAddress.slice(7) : client.remoteAddress;
    // Only the parameters the configured SQL uses: Veil2's open_connection takes three.
    const params = boundParameters(this.openConnectionSql, [c.sessionId, c.nonce, c.authentToken, address === 'unix' ? null : address]);
    server.query(this.openConnectionSql, params).then(
      (rows) => {
        const [success, errmsg] = rows[0] ?? [];
        if (client.closed || success !== 't') {
          client.loginDoneWith(server);
          if (!client.closed) this.refuse(errmsg ?? 'AUTHFAIL');
          return;
        }
        client.onSessionLogin(true);
        // Canonical (no leading zeros), as the server reads the bigint; wellFormed checked the digits.
        const sessionId = (this.sessionId = c.sessionId.length > 1 && c.sessionId[0] === '0' ? BigInt(c.sessionId).toString() : c.sessionId);
        server.boundSession = sessionId;
        // Once per session: its accessor (SHOW SESSIONS, per-accessor metrics, audit_log).
        client.identifySession(sessionId, server, () => {
          if (client.closed) return client.loginDoneWith(server);
          if (transactional) return this.takeTicket(server);
          client.sessionOpened(server, server.status);
        });
      },
      (err: PgError) => {
        client.loginDoneWith(server);
        this.sessionSqlFailed('open_connection', err, params);
      },
    );
  }

  /**
   * Transaction mode: the backend that checked the credentials issues the ticket that binds the
   * client's later backends to its session, then goes back to the pool still bound to it.
   */
  private takeTicket(server: ServerConnection): void {
    const { client, pool } = this;
    server.query(pool.settings.tickets!.issue, []).then(
      (rows) => {
        const ticket = rows[0]?.[0];
        const usable = typeof ticket === 'string' && TICKET.test(ticket);
        if (client.closed || !usable) {
          client.loginDoneWith(server);
          if (usable) pool.revokeTicket(ticket);
          else client.refuse('session_sql', PgError.fatal(SqlState.InvalidAuthorization, 'session login failed: the issue_ticket query returned no usable ticket'));
          return;
        }
        this.ticket = ticket;
        const status = new Map(server.status);
        // Still bound to the session: the client's next transaction may well land here again.
        pool.release(server);
        client.sessionOpened(null, status);
      },
      (err: PgError) => {
        client.loginDoneWith(server);
        this.sessionSqlFailed('issue_ticket', err, []);
      },
    );
  }

  /**
   * The session SQL itself failed (a wrong signature, a missing schema, a grant): PostgreSQL's
   * words go to Tessera's log, without the values bound (secrets, or ids a cast error quotes);
   * the client learns which setting failed and where to look.
   */
  private sessionSqlFailed(key: string, err: PgError, values: readonly (string | null)[]): void {
    const f = err.fields;
    log.warn(
      { client: this.client.id, code: err.code, reason: withoutValues(err.message, values), detail: f.detail && withoutValues(f.detail, values), hint: f.hint },
      `session_tokens.${key} failed on the server`,
    );
    this.client.refuse('session_sql', PgError.fatal(SqlState.InvalidAuthorization, `session login failed: session_tokens.${key} raised SQLSTATE ${err.code} (the server's message is in Tessera's log)`));
  }

  /**
   * Before the client's messages on a newly linked backend not bound to its session: redeem the
   * ticket, pipelined. redeem_ticket unbinds first, so whatever happens the client's statements
   * never run under another session; if it did not bind, the client is told its session has ended.
   */
  redeemOn(server: ServerConnection): void {
    if (this.ticket === null || server.boundSession === this.sessionId) return;
    server.boundSession = this.sessionId;
    let bound = false;
    this.client.queueForServer(server, extendedQuery(this.pool.settings.tickets!.redeem, [this.ticket]), 1);
    server.responses?.push({
      expect: Expect.Ready,
      swallowAll: true,
      inspect: (type, body) => {
        if (type === msg.Backend.DataRow) bound = decodeDataRow(body)[0] === 't';
        else if (type === msg.Backend.ReadyForQuery && !bound) this.onLost(server);
      },
    });
  }

  private onLost(server: ServerConnection): void {
    const client = this.client;
    server.boundSession = null;
    // Replies to the client's statements (run unbound, so they saw nothing of anyone) are dropped.
    this.lost = true;
    log.info({ client: client.id, user: client.user, db: client.database }, 'session ended: its ticket no longer binds a backend');
    // Not from inside the server's read loop: the client's teardown gives the server back.
    queueMicrotask(() => client.refuse('session_ended', PgError.fatal(SqlState.InvalidAuthorization, `session of user "${client.user}" has ended (logged out, expired or locked)`)));
  }

  /** The client has gone: its ticket can never bind a backend again. */
  revoke(): void {
    if (this.ticket === null) return;
    this.pool.revokeTicket(this.ticket);
    this.ticket = null;
  }
}
