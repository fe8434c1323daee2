/**
 * One client of Tessera, from its first byte to its close: the startup packet, authentication,
 * the login reply, then the relay. The relay forwards the client's bytes as received; it frames
 * them by header only to count the ReadyForQuery messages owed, to see where an extended-protocol
 * batch ends, and to keep the client's Terminate from reaching a pooled server.
 */
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { Framer, ProtocolViolation, type FrameSink } from '../protocol/framing.js';
import { StartupReader, type StartupPacket } from '../protocol/startup.js';
import * as msg from '../protocol/messages.js';
import { Frontend, PgError, SqlState } from '../protocol/messages.js';
import { type ServerConnection, type ServerPeer, extendedQuery, decodeDataRow } from '../pool/server-connection.js';
import { shareParams, type Pool, type PoolClient } from '../pool/pool.js';
import type { Authenticator, AuthStep, SessionCredentials } from './client-auth.js';
import type { StoredSecret } from '../auth/secret.js';
import { readParse, readBind, readTarget, statementFor, parseMessage, bindMessage, describeStatement, closeStatement, wholeMessage, dropsAllStatements, PARSE_COMPLETE, CLOSE_COMPLETE, type Statement } from '../pool/prepared.js';
import { Expect, type Entry } from '../pool/response-queue.js';
import { ALPN, clientCertVerified, type ClientTls } from '../tls/contexts.js';
import { log } from '../log.js';
import { outlivesTransaction, rebindsSession, type PinReason } from '../frontend/session-state.js';
import { resumeReading } from './suspension.js';
import { idSequence, newCancelKey } from '../workers/identity.js';

export const enum ClientPhase {
  Startup = 'startup',
  Auth = 'auth',
  /** Authenticated; waiting for a server's ParameterStatus values to finish the login. */
  Login = 'login',
  Ready = 'ready',
  Closed = 'closed',
}

/** What a client needs from the proxy around it. */
export interface ClientHost {
  /** Resolves the startup packet into an authenticator and, after auth, a pool. */
  beginLogin(client: ClientConnection, params: Map<string, string>): Authenticator;
  poolFor(client: ClientConnection): Pool;
  /** The current client TLS context (rebuilt on RELOAD), or null when client_tls_sslmode is disable. */
  readonly clientTls: ClientTls | null;
  /** The query that checks session-token credentials ($1 id, $2 nonce, $3 token, $4 address). */
  readonly openConnectionSql: string;
  /** Told of every session-token login's outcome (the per-address failure limit). */
  onSessionLogin(client: ClientConnection, ok: boolean): void;
  /** Counts a refused login by reason (metrics). */
  onLoginFailed(client: ClientConnection, reason: string): void;
  cancel(pid: number, secret: number): void;
  /** The admin console (database "pgbouncer"): the welcome ParameterStatus set, or a refusal. */
  adminLogin(client: ClientConnection): ReadonlyMap<string, string>;
  adminQuery(client: ClientConnection, sql: string): Promise<Buffer>;
  onClientClosed(client: ClientConnection): void;
}

const READY_IDLE = 0x49;
const READY_IDLE_MESSAGE = msg.readyForQuery(READY_IDLE);
/** The one-byte answers to SSLRequest and GSSENCRequest. */
const NO_ENCRYPTION = Buffer.from('N');
const ENCRYPTION_FOLLOWS = Buffer.from('S');
/** First byte of a TLS handshake record: PostgreSQL 17's direct TLS starts with it, not a startup packet. */
const TLS_HANDSHAKE = 0x16;
const STATEMENT = 0x53; // 'S' in Describe/Close
/** What a ticket must look like to be kept (and later put in a text[] literal unquoted). */
const TICKET = /^[A-Za-z0-9+/=_-]{16,512}$/;

/** Reported parameters no session can set. */
const SERVER_ONLY_PARAMETERS = new Set(['server_version', 'server_encoding', 'is_superuser', 'session_authorization', 'integer_datetimes', 'in_hot_standby', 'default_transaction_read_only', 'scram_iterations']);

/** A SQL string literal (standard_conforming_strings on; E'' when a backslash needs escaping). */
function quoteLiteral(value: string): string {
  const body = value.replace(/'/g, "''");
  return value.includes('\\') ? `E'${body.replace(/\\/g, '\\\\')}'` : `'${body}'`;
}

/** Queue entries that carry nothing but their kind, shared: one per message would be garbage. */
const PLAIN_ENTRIES: Entry[] = [];
for (const expect of [Expect.Parse, Expect.Bind, Expect.DescribeStatement, Expect.DescribePortal, Expect.Execute, Expect.Close, Expect.Ready]) {
  PLAIN_ENTRIES[expect] = Object.freeze({ expect });
}
const nextClientId = idSequence();
/** Shared by every client that has not received a chunk yet (one Buffer each would be waste). */
const NO_BYTES = Buffer.alloc(0);
/** Shared empty lists, replaced by a real array at the first push (see hold()): never pushed to. */
const NOTHING_HELD: Buffer[] = [];
const NO_MESSAGES_HELD: { type: number; body: Buffer; raw: Buffer }[] = [];

const ignore = (): void => {};
const NO_PARAMS: ReadonlyMap<string, string> = new Map();
/** What a client may send while it waits for a server before it is no longer read. */
const MAX_HELD_BYTES = 256 * 1024;

// One 'data' and one 'close' handler for every client socket, finding the client through the
// socket, instead of two closures (and their context) per client: idle clients are most of a
// pooler's memory.
const CLIENT = Symbol('tessera client');
type ClientSocket = Socket & { [CLIENT]?: ClientConnection };
function onClientData(this: ClientSocket, chunk: Buffer): void {
  this[CLIENT]!.onData(chunk);
}
function onClientClose(this: ClientSocket): void {
  this[CLIENT]!.onSocketClosed();
}
function listenTo(socket: ClientSocket, client: ClientConnection): void {
  socket[CLIENT] = client;
  socket.on('data', onClientData);
  socket.on('close', onClientClose);
}

/** Metric labels for the SQLSTATEs a refused login carries. */
const LOGIN_FAILURE_REASONS: Record<string, string> = {
  [SqlState.InvalidPassword]: 'invalid_password',
  [SqlState.InvalidCatalogName]: 'unknown_database',
  [SqlState.TooManyConnections]: 'max_client_conn',
  [SqlState.InvalidAuthorization]: 'not_authorized',
  [SqlState.ProtocolViolation]: 'protocol_violation',
  [SqlState.CannotConnectNow]: 'shutting_down',
};

export class ClientConnection implements FrameSink, ServerPeer, PoolClient {
  readonly id = nextClientId();
  readonly connectedAt = Date.now();
  /** Tessera's own BackendKeyData for this client: random, so cancel keys cannot be guessed. */
  pid = 0;
  secret = 0;
  phase = ClientPhase.Startup;
  user = '';
  database = '';
  /** The startup parameters the client's server session must run with. */
  serverParams: ReadonlyMap<string, string> = NO_PARAMS;
  variant = '';
  waitingSince = 0;
  /** Last time the client sent anything or got an answer (client_idle_timeout). */
  lastActiveAt = Date.now();
  pool: Pool | null = null;
  private terminated = false;
  /** Logged in to the admin console rather than a database. */
  admin = false;
  /** The secret auth_query found for this client (a user not in auth_file). */
  lookedUpSecret: StoredSecret | undefined;
  /** The session a session-token client logged in with (an id, not a secret): KILL_SESSION finds it. */
  sessionId: string | null = null;
  /**
   * Session-token clients in transaction mode: what binds each further backend to the session
   * (tessera.redeem_ticket). Tessera's alone: never sent to the client; revoked when it leaves.
   */
  private ticket: string | null = null;
  /** A redemption failed (the session ended): the server's replies are no longer this client's. */
  private sessionLost = false;
  /** ClientKey proven by the client's SCRAM exchange: lets Tessera log in to the server as it. */
  scramClientKey: Buffer | undefined;
  server: ServerConnection | null = null;
  /** The TLS layer once the client upgraded (SSLRequest or direct TLS); null in plaintext. */
  tlsSocket: tls.TLSSocket | null = null;
  /** CN of a client certificate that verified against client_tls_ca_file (auth_type cert). */
  certificateName: string | null = null;
  /** An SSLRequest / GSSENCRequest was answered already: each may come once, before the startup packet. */
  private sslAnswered = false;
  private gssAnswered = false;

  private startup: StartupReader | null = new StartupReader();
  private readonly framer = new Framer(this);
  private auth: Authenticator | null = null;
  /** AuthenticationOk (and SASLFinal), held to go out with the rest of the login reply. */
  private replyPrefix: Buffer[] = NOTHING_HELD;
  /** Session-token credentials waiting for open_connection; dropped as soon as it has run. */
  private session: SessionCredentials | null = null;
  /** Waiting for the server its database's connect_query runs on, which it then keeps. */
  private connectPending = false;
  private waiting = false;
  /** Bytes received while no server was linked, forwarded once one is. */
  private pending: Buffer[] = NOTHING_HELD;
  private pendingReadies = 0;
  /** Per-chunk scan results (fields, not a returned object, to keep the relay allocation-free). */
  private scanReadies = 0;
  private scanTerminateAt = -2;
  /** An extended-protocol batch was sent without its Sync yet: the server must stay linked. */
  private extendedOpen = false;

  // Transaction mode: the client's messages are handled one by one (tracking), and protocol-level
  // prepared statements are mapped to per-backend ones unless max_prepared_statements is 0.
  private tracking = false;
  private rewriteStatements = false;
  // Created on first use (as overrides): an idle client should cost as little as possible.
  private statements: Map<string, Statement> | null = null;
  /**
   * Reported parameters (application_name, DateStyle, TimeZone, ...) this client SET to values
   * other than its session's starting ones: re-applied on whichever backend serves it next, and a
   * backend left with another client's values is put back first.
   */
  private overrides: Map<string, string> | null = null;
  /**
   * The client ran something whose effect outlives its transaction (LISTEN, a session advisory
   * lock, a WITH HOLD cursor, a temp table, SET of an unreported setting): it keeps its backend
   * until it disconnects, and the backend is reset before anyone else gets it. Null while not
   * pinned; otherwise the first reason, for SHOW CLIENTS and logs (read through pinReason).
   */
  private pinnedFor: PinReason | null = null;
  /** After Tessera answered a message with an error itself, drop the batch up to its Sync. */
  private discarding = false;
  private pendingMessages: { type: number; body: Buffer; raw: Buffer }[] = NO_MESSAGES_HELD;
  private currentChunk: Buffer = NO_BYTES;
  private msgChunk: Buffer | null = null;
  private msgStart = -1;
  /** Unchanged messages of the current chunk not yet written (see write()). */
  private batch: Buffer | null = null;
  /** Earlier pieces for the server, before `batch`, not yet written (see write()). */
  private queued: Buffer[] | null = null;
  /** Inside relay(): whatever is written to the server goes out once, when the chunk is done. */
  private relaying = false;
  /** Bytes held while waiting for a server (see heldMore()). */
  private heldBytes = 0;
  /** Destroys the socket if the client never finishes closing (see close()). */
  private closeTimer: NodeJS.Timeout | null = null;

  constructor(
    /** The client's socket: the TCP or Unix socket, replaced by its TLS layer on upgrade. */
    public socket: Socket,
    private readonly host: ClientHost,
    readonly remoteAddress: string,
  ) {
    this.rekey();
    listenTo(socket, this);
    socket.on('error', ignore); // 'close' follows; a reset client is not worth a stack trace
  }

  /** A fresh random cancel key (the proxy draws again when a pid is already taken). */
  rekey(): void {
    ({ pid: this.pid, secret: this.secret } = newCancelKey());
  }

  get isWaiting(): boolean {
    return this.waiting;
  }

  get mode(): 'session' | 'transaction' {
    return this.pool!.settings.mode;
  }

  /** Sends an ErrorResponse; FATAL errors close the connection after it is written. */
  fail(err: PgError): void {
    if (this.phase === ClientPhase.Closed) return;
    if (this.socket.writable) this.socket.write(err.toMessage());
    if (err.fields.severity === 'FATAL' || err.fields.severity === 'PANIC') this.close();
  }

  /** The client said Terminate: queries it sent before are finished, not cancelled. */
  private terminate(): void {
    this.terminated = true;
    this.close();
  }

  close(): void {
    if (this.phase === ClientPhase.Closed) return;
    this.socket.end();
    this.teardown();
    // A client that never reads must not keep its socket forever. Cleared at 'close', so that in
    // a connection storm closed clients are not all kept alive (and aged into the old heap) for 5 s.
    this.closeTimer = setTimeout(() => this.socket.destroy(), 5000).unref();
  }

  // ---- input ----

  /** @internal the socket's 'data' (see listenTo) */
  onData(chunk: Buffer): void {
    try {
      switch (this.phase) {
        case ClientPhase.Startup:
          return this.onStartupData(chunk);
        case ClientPhase.Auth:
          return this.framer.push(chunk);
        case ClientPhase.Login:
          // A pipelining client may send its first query before our ReadyForQuery; keep it.
          this.hold(chunk);
          this.socket.pause();
          return;
        case ClientPhase.Ready:
          return this.admin ? this.framer.push(chunk) : this.relay(chunk);
        default:
          return;
      }
    } catch (err) {
      if (err instanceof PgError) return this.fail(err);
      if (err instanceof ProtocolViolation) return this.fail(PgError.fatal(SqlState.ProtocolViolation, err.message));
      log.error({ client: this.id, err }, 'unexpected error handling client data');
      this.fail(PgError.fatal('XX000', 'internal error in the pooler'));
    }
  }

  private onStartupData(chunk: Buffer): void {
    if (chunk[0] === TLS_HANDSHAKE && !this.sslAnswered && !this.gssAnswered && this.startup!.empty && this.host.clientTls && this.remoteAddress !== 'unix') {
      // Direct TLS (PostgreSQL 17, sslnegotiation=direct): the ClientHello is the first byte.
      this.sslAnswered = true;
      return this.upgrade(this.host.clientTls, chunk);
    }
    const packet = this.startup!.push(chunk);
    if (!packet) return;
    const leftover = this.startup!.leftover;
    this.onStartupPacket(packet);
    if (leftover.length > 0 && this.phase !== ClientPhase.Closed) this.onData(leftover);
  }

  private onStartupPacket(packet: StartupPacket): void {
    switch (packet.kind) {
      case 'ssl': {
        // Once only, and never inside TLS: PostgreSQL refuses a second SSLRequest too.
        if (this.sslAnswered) throw new ProtocolViolation(this.tlsSocket ? 'SSLRequest on a connection that is already encrypted' : 'SSLRequest sent twice');
        this.sslAnswered = true;
        const tlsConfig = this.host.clientTls;
        // No TLS on Unix sockets (they never leave the machine), as in PgBouncer.
        if (!tlsConfig || this.remoteAddress === 'unix') {
          this.startup = new StartupReader();
          this.socket.write(NO_ENCRYPTION);
          return;
        }
        if (this.startup!.leftover.length > 0) {
          // Bytes sent before the handshake were not encrypted, and may have been injected by a
          // man in the middle: PostgreSQL refuses them, and so do we.
          throw PgError.fatal(SqlState.ProtocolViolation, 'received unencrypted data after SSL request');
        }
        this.socket.write(ENCRYPTION_FOLLOWS);
        this.upgrade(tlsConfig, null);
        return;
      }
      case 'gssenc':
        // No GSSAPI encryption: 'N' tells the client to go on in plaintext or give up.
        if (this.gssAnswered || this.tlsSocket) throw new ProtocolViolation('unexpected GSSENCRequest');
        this.gssAnswered = true;
        this.startup = new StartupReader();
        this.socket.write(NO_ENCRYPTION);
        return;
      case 'cancel':
        this.host.cancel(packet.pid, packet.secret);
        this.socket.end();
        this.teardown();
        return;
      case 'startup':
        this.startup = null;
        if (!this.tlsSocket && this.remoteAddress !== 'unix' && (this.host.clientTls?.mode === 'require' || this.host.clientTls?.requireCert)) {
          // As PgBouncer words it; SQLSTATE as PostgreSQL's hostssl-only rejection.
          throw PgError.fatal(SqlState.InvalidAuthorization, 'SSL required');
        }
        if (packet.minor > 0 || packet.unknownOptions.length > 0) {
          this.socket.write(msg.negotiateProtocolVersion(0, packet.unknownOptions));
        }
        this.phase = ClientPhase.Auth;
        this.auth = this.host.beginLogin(this, packet.params);
        this.onAuthStep(this.auth.start());
        return;
    }
  }

  // ---- TLS ----

  /**
   * Puts TLS on the client's socket. `first` is a direct-TLS ClientHello already read: it goes
   * back into the socket, where the TLS layer reads it as if it had just arrived.
   */
  private upgrade(config: ClientTls, first: Buffer | null): void {
    const raw = this.socket;
    raw.off('data', onClientData);
    raw.off('close', onClientClose);
    if (first) {
      raw.pause();
      raw.unshift(first);
    }
    const secure = new tls.TLSSocket(raw, {
      isServer: true,
      secureContext: config.context,
      requestCert: config.requestCert,
      // Checked after the handshake instead, so the client gets a PostgreSQL error, not an alert.
      rejectUnauthorized: false,
      ALPNProtocols: ALPN,
    });
    this.socket = secure;
    this.tlsSocket = secure;
    this.startup = new StartupReader();
    listenTo(secure, this);
    let secured = false;
    secure.on('error', (err: NodeJS.ErrnoException) => {
      // A failed handshake (plaintext after 'S', no shared protocol) closes this client only; 'close' follows.
      if (!secured) log.info({ client: this.id, addr: this.remoteAddress, reason: err.code ?? err.message }, 'TLS handshake failed');
    });
    secure.once('secure', () => {
      secured = true;
      this.onSecure(config, secure, first !== null);
    });
  }

  private onSecure(config: ClientTls, secure: tls.TLSSocket, direct: boolean): void {
    if (this.phase === ClientPhase.Closed) return;
    if (direct && secure.alpnProtocol !== 'postgresql') {
      return this.fail(PgError.fatal(SqlState.ProtocolViolation, 'received direct SSL connection request without ALPN protocol negotiation extension'));
    }
    if (config.requestCert && clientCertVerified(secure)) {
      const cn = secure.getPeerCertificate().subject?.CN;
      this.certificateName = typeof cn === 'string' ? cn : null;
    }
    if (config.requireCert && this.certificateName === null) {
      this.fail(PgError.fatal(SqlState.InvalidAuthorization, 'connection requires a valid client certificate'));
    }
  }

  // ---- authentication ----

  onHeader(type: number, _length: number, chunk: Buffer, start: number): boolean {
    if (this.phase === ClientPhase.Auth) {
      if (type !== Frontend.Password) throw new ProtocolViolation(`expected password response, got message type "${String.fromCharCode(type)}"`);
      return true;
    }
    if (this.admin) {
      if (type === Frontend.Query) return true;
      if (type === Frontend.Terminate) this.close();
      else this.fail(PgError.fatal(SqlState.FeatureNotSupported, 'extended query protocol not supported by admin console'));
      return false;
    }
    // Bytes after a Terminate are never forwarded, so they must not count as answers owed either
    // (the server would be drained for ReadyForQuery messages that never come).
    if (this.scanTerminateAt !== -2) return false;
    switch (type) {
      case Frontend.Query:
      case Frontend.FunctionCall:
        this.scanReadies++;
        break;
      case Frontend.Sync:
        this.scanReadies++;
        this.extendedOpen = false;
        break;
      case Frontend.Parse:
      case Frontend.Bind:
      case Frontend.Describe:
      case Frontend.Execute:
      case Frontend.Close:
        this.extendedOpen = true;
        break;
      case Frontend.Terminate:
        if (this.scanTerminateAt === -2) this.scanTerminateAt = start;
        break;
    }
    if (this.tracking) {
      // Rewriting relay: every message is read whole and handled in onBody.
      this.msgChunk = chunk;
      this.msgStart = start;
      return true;
    }
    return false;
  }

  onBody(type: number, body: Buffer): void {
    // Password messages (authentication), admin console queries, and in tracking mode everything.
    if (this.phase === ClientPhase.Auth) return this.onAuthStep(this.auth!.receive(body));
    if (this.phase !== ClientPhase.Ready) return;
    if (this.tracking) {
      // The message's own bytes when it lay whole in this chunk; else rebuilt from its parts.
      const raw = this.msgChunk === this.currentChunk && this.msgStart >= 0 ? this.currentChunk.subarray(this.msgStart, this.framer.offset) : wholeMessage(type, body);
      return this.onClientMessage(type, body, raw);
    }
    const sql = body.toString('utf8', 0, body.length - 1);
    // One command at a time, in order: stop reading until this one is answered.
    this.socket.pause();
    this.host.adminQuery(this, sql).then((answer) => {
      if (this.phase === ClientPhase.Closed) return;
      this.socket.write(Buffer.concat([answer, READY_IDLE_MESSAGE]));
      // The console goes on under SUSPEND: it is where RESUME comes from.
      this.socket.resume();
    });
  }

  private onAuthStep(step: AuthStep): void {
    switch (step.kind) {
      case 'send':
        this.socket.write(step.message);
        return;
      case 'fail':
        this.host.onLoginFailed(this, LOGIN_FAILURE_REASONS[step.error.code] ?? step.error.code);
        this.fail(step.error);
        return;
      case 'ok':
        // Sent with the rest of the login reply: one write per login (connection storms).
        this.replyPrefix = step.before ? [step.before, msg.authOk()] : [msg.authOk()];
        this.auth = null;
        this.scramClientKey = step.scramClientKey;
        this.beginSession(step.serverParams);
        return;
      case 'session':
        this.auth = null;
        this.beginTokenSession(step.credentials, step.serverParams);
        return;
      case 'later':
        step.next.then((next) => {
          if (this.phase === ClientPhase.Auth) this.onAuthStep(next);
        });
        return;
    }
  }

  /** Authenticated: find the pool and the ParameterStatus values the login reply needs. */
  private beginSession(serverParams: ReadonlyMap<string, string>): void {
    if (this.admin) {
      let status: ReadonlyMap<string, string>;
      try {
        status = this.host.adminLogin(this);
      } catch (err) {
        return this.fail(err as PgError);
      }
      this.phase = ClientPhase.Login;
      return this.finishLogin(status);
    }
    this.enterPool(serverParams);
    if (this.pool!.settings.connectQuery) {
      this.connectPending = true;
      return this.requestServer();
    }
    const cached = this.pool!.statusCache.get(this.variant);
    if (cached) this.finishLogin(cached, true);
    else this.requestServer();
  }

  private enterPool(serverParams: ReadonlyMap<string, string>): void {
    ({ params: this.serverParams, variant: this.variant } = shareParams(serverParams));
    this.pool = this.host.poolFor(this);
    this.phase = ClientPhase.Login;
    const s = this.pool.settings;
    this.tracking = s.mode === 'transaction';
    this.rewriteStatements = this.tracking && s.maxPreparedStatements > 0;
    // Rewritten messages are read whole, so the limit is the protocol's own.
    if (this.tracking) this.framer.maxWantedBody = 0x40000000;
  }

  /**
   * Session-token login: the credentials are checked by open_connection on the pooled backend the
   * client will use, before the client sees AuthenticationOk.
   */
  private beginTokenSession(credentials: SessionCredentials, serverParams: ReadonlyMap<string, string>): void {
    this.enterPool(serverParams);
    // Malformed values would make the SQL cast fail with the value in its message: answer them
    // as the wrong credentials they are, without asking the server.
    const wellFormed =
      /^[0-9]{1,19}$/.test(credentials.sessionId) && /^-?[0-9]{1,10}$/.test(credentials.nonce) && credentials.authentToken.length <= 1024;
    if (!wellFormed) return this.tokenLoginFailed('AUTHFAIL');
    this.session = credentials;
    this.requestServer();
  }

  private openTokenSession(server: ServerConnection): void {
    const c = this.session!;
    this.session = null;
    const address = this.remoteAddress.startsWith('::ffff:') ? this.remoteAddress.slice(7) : this.remoteAddress;
    const params = [c.sessionId, c.nonce, c.authentToken, address === 'unix' ? null : address];
    server.query(this.host.openConnectionSql, params).then(
      (rows) => {
        const [success, errmsg] = rows[0] ?? [];
        if (this.phase === ClientPhase.Closed || success !== 't') {
          this.pool!.giveBack(server, { midMessage: false, extendedOpen: false });
          if (this.phase !== ClientPhase.Closed) this.tokenLoginFailed(errmsg ?? 'AUTHFAIL');
          return;
        }
        this.host.onSessionLogin(this, true);
        this.sessionId = BigInt(c.sessionId).toString();
        server.boundSession = this.sessionId;
        this.replyPrefix = [msg.authOk()];
        if (this.tracking) return this.takeTicket(server);
        this.keepServer(server);
      },
      (err: PgError) => {
        this.pool!.giveBack(server, { midMessage: false, extendedOpen: false });
        log.warn({ client: this.id, code: err.code }, 'open_connection failed on the server');
        this.fail(PgError.fatal(SqlState.InvalidAuthorization, `session login failed: open_connection raised SQLSTATE ${err.code}`));
      },
    );
  }

  /**
   * Transaction mode: the backend that checked the credentials issues the ticket that binds the
   * client's later backends to its session, then goes back to the pool still bound to it.
   */
  private takeTicket(server: ServerConnection): void {
    const pool = this.pool!;
    server.query(pool.settings.tickets!.issue, []).then(
      (rows) => {
        const ticket = rows[0]?.[0];
        const usable = typeof ticket === 'string' && TICKET.test(ticket);
        if (this.phase === ClientPhase.Closed || !usable) {
          pool.giveBack(server, { midMessage: false, extendedOpen: false });
          if (usable) pool.revokeTicket(ticket);
          else this.fail(PgError.fatal(SqlState.InvalidAuthorization, 'session login failed: the issue_ticket query returned no usable ticket'));
          return;
        }
        this.ticket = ticket;
        const status = new Map(server.status);
        pool.releaseIdle(server);
        this.finishLogin(status);
      },
      (err: PgError) => {
        pool.giveBack(server, { midMessage: false, extendedOpen: false });
        log.warn({ client: this.id, code: err.code }, 'issue_ticket failed on the server');
        this.fail(PgError.fatal(SqlState.InvalidAuthorization, `session login failed: issue_ticket raised SQLSTATE ${err.code}`));
      },
    );
  }

  /**
   * The login is accepted and the client keeps `server` (session mode): run its database's
   * connect_query there first. Its error refuses the login, in the server's own words.
   */
  private keepServer(server: ServerConnection): void {
    const sql = this.pool!.settings.connectQuery;
    const link = () => {
      this.server = server;
      server.attach(this);
      this.finishLogin(server.status);
    };
    if (!sql) return link();
    server.runInternal([sql]).then(
      () => {
        if (this.phase === ClientPhase.Closed) this.pool!.giveBack(server, { midMessage: false, extendedOpen: false });
        else link();
      },
      (err: PgError) => {
        // The release query (close_connection) still runs, so nothing connect_query did lingers.
        this.pool!.giveBack(server, { midMessage: false, extendedOpen: false });
        if (this.phase === ClientPhase.Closed) return;
        log.warn({ client: this.id, code: err.code }, 'connect_query failed');
        this.host.onLoginFailed(this, 'connect_query');
        this.fail(new PgError({ ...err.fields, severity: 'FATAL' }));
      },
    );
  }

  /**
   * Before this client's messages on a backend not bound to its session: redeem the ticket,
   * pipelined. redeem_ticket unbinds first, so whatever happens the client's statements never run
   * under another session; if it did not bind, the client is told its session has ended.
   */
  private redeemTicket(server: ServerConnection): void {
    server.boundSession = this.sessionId;
    let bound = false;
    this.write(server, extendedQuery(this.pool!.settings.tickets!.redeem, [this.ticket]), 1);
    server.responses?.push({
      expect: Expect.Ready,
      swallowAll: true,
      inspect: (type, body) => {
        if (type === msg.Backend.DataRow) bound = decodeDataRow(body)[0] === 't';
        else if (type === msg.Backend.ReadyForQuery && !bound) this.onSessionLost(server);
      },
    });
  }

  private onSessionLost(server: ServerConnection): void {
    server.boundSession = null;
    // Replies to the client's statements (run unbound, so they saw nothing of anyone) are dropped.
    this.sessionLost = true;
    this.host.onLoginFailed(this, 'session_ended');
    log.info({ client: this.id, user: this.user, db: this.database }, 'session ended: its ticket no longer binds a backend');
    // Not from inside the server's read loop: teardown gives the server back.
    queueMicrotask(() => this.fail(PgError.fatal(SqlState.InvalidAuthorization, `session of user "${this.user}" has ended (logged out, expired or locked)`)));
  }

  private tokenLoginFailed(errmsg: string): void {
    this.host.onSessionLogin(this, false);
    this.host.onLoginFailed(this, `session_${errmsg.toLowerCase()}`);
    // As PostgreSQL words a failed login; the errmsg says which check failed.
    const code = errmsg === 'EXPIRED' || errmsg === 'LOCKED' ? SqlState.InvalidAuthorization : SqlState.InvalidPassword;
    this.fail(PgError.fatal(code, `session authentication failed for user "${this.user}": ${errmsg}`));
  }

  /** `unchanging`: `status` is a pool's cached copy, whose encoded bytes can be reused. */
  private finishLogin(status: ReadonlyMap<string, string>, unchanging = false): void {
    const parts: Buffer[] = this.replyPrefix === NOTHING_HELD ? [] : this.replyPrefix;
    this.replyPrefix = NOTHING_HELD;
    parts.push(msg.parameterStatusBlock(status, unchanging), msg.backendKeyData(this.pid, this.secret), READY_IDLE_MESSAGE);
    this.socket.write(Buffer.concat(parts));
    this.phase = ClientPhase.Ready;
    log.info({ client: this.id, user: this.user, db: this.database, addr: this.remoteAddress }, 'client logged in');
    const early = this.pending;
    this.pending = NOTHING_HELD;
    this.heldBytes = 0;
    if (this.admin) this.socket.resume();
    else resumeReading(this.socket);
    for (const chunk of early) this.onData(chunk);
  }

  // ---- the relay ----

  /** Client bytes in the Ready phase: scan headers, then forward to the linked server or hold. */
  private relay(chunk: Buffer): void {
    this.lastActiveAt = Date.now();
    this.pool!.counters.received += chunk.length;
    if (this.tracking) {
      this.currentChunk = chunk;
      this.relaying = true;
      try {
        this.framer.push(chunk);
      } finally {
        this.relaying = false;
      }
      if (this.server) this.flushBatch(this.server);
      else this.batch = this.queued = null; // the server went away mid-chunk; nothing may follow it
      return;
    }
    const heldBefore = this.framer.heldHeaderBytes;
    const heldCopy = heldBefore > 0 ? this.framer.heldHeader() : null;
    this.scanReadies = 0;
    this.scanTerminateAt = -2;
    this.framer.push(chunk);
    this.pool!.counters.queries += this.scanReadies;

    // Forward everything but a trailing partial header (kept until its type is known) and
    // anything from a Terminate on.
    let forwardLen = heldBefore + chunk.length - this.framer.heldHeaderBytes;
    const terminate = this.scanTerminateAt !== -2;
    if (terminate) forwardLen = this.scanTerminateAt === -1 ? 0 : heldBefore + this.scanTerminateAt;

    if (forwardLen > 0) {
      if (heldCopy) {
        this.send(heldCopy, 0);
        forwardLen -= heldBefore;
      }
      if (forwardLen > 0) this.send(forwardLen === chunk.length ? chunk : chunk.subarray(0, forwardLen), this.scanReadies);
      else this.pendingReadies += this.scanReadies; // only header bytes so far
    }
    if (terminate) this.terminate();
  }

  private send(bytes: Buffer, readies: number): void {
    const server = this.server;
    if (!server) {
      this.hold(bytes);
      this.pendingReadies += readies;
      this.requestServer();
      return;
    }
    this.owe(server, readies);
    this.sendNow(server, bytes);
  }

  /** Keeps client bytes until a server is linked (or the login is finished). */
  private hold(bytes: Buffer): void {
    if (this.pending === NOTHING_HELD) this.pending = [];
    this.pending.push(bytes);
    this.heldMore(bytes.length);
  }

  /**
   * A client waiting for a server is paused only once it has sent more than MAX_HELD_BYTES: most
   * send one batch and wait for its answer, and pausing and resuming every wait costs each
   * transaction a trip through the stream machinery.
   */
  private heldMore(n: number): void {
    this.heldBytes += n;
    if (this.heldBytes > MAX_HELD_BYTES) this.socket.pause();
  }

  /** Counts the ReadyForQuery messages a send will be answered with (and when the query began). */
  private owe(server: ServerConnection, readies: number): void {
    if (readies === 0) return;
    if (server.outstanding === 0) server.queryStartedAt = Date.now();
    server.outstanding += readies;
  }

  /** Sends what arrived while no server was linked, in order, now that one is. */
  private forwardHeld(server: ServerConnection): void {
    this.heldBytes = 0;
    if (this.tracking) {
      const held = this.pendingMessages;
      this.pendingMessages = NO_MESSAGES_HELD;
      for (const m of held) this.forwardTracked(m.type, m.body, m.raw);
      // Assigned while the chunk is read (an idle server): the relay sends it all in one write.
      if (!this.relaying) this.flushBatch(server);
      return;
    }
    const held = this.pending;
    this.pending = NOTHING_HELD;
    this.owe(server, this.pendingReadies);
    this.pendingReadies = 0;
    for (const bytes of held) this.sendNow(server, bytes);
  }

  private requestServer(): void {
    if (this.waiting) return;
    this.waiting = true;
    this.pool!.acquire(this);
  }

  // ---- transaction-mode prepared statements ----

  /** One whole client message in tracking mode: forward it now, or hold it until a server is linked. */
  private onClientMessage(type: number, body: Buffer, raw: Buffer): void {
    if (type === Frontend.Terminate) {
      // What came before the Terminate still goes to the server, as PostgreSQL would run it.
      if (this.server) this.flushBatch(this.server);
      return this.terminate();
    }
    if (!this.server) {
      if (this.pendingMessages === NO_MESSAGES_HELD) this.pendingMessages = [];
      this.pendingMessages.push({ type, body, raw });
      this.heldMore(raw.length);
      this.requestServer();
      return;
    }
    this.forwardTracked(type, body, raw);
  }

  /**
   * Sends one client message to the linked server, with the client's statement names mapped to
   * Tessera's, the statement prepared first on a server that lacks it, and the messages Tessera
   * answers itself (Parse of a statement the server has, Close of a statement) answered in order.
   */
  private forwardTracked(type: number, body: Buffer, raw: Buffer): void {
    const server = this.server!;
    if (this.discarding && type !== Frontend.Sync) return;
    switch (type) {
      case Frontend.Parse: {
        this.pool!.counters.clientParses++;
        const { name, tail } = readParse(body);
        this.noteStatement(server, tail);
        if (name === '' || !this.rewriteStatements) return this.toServer(raw, Expect.Parse);
        if (this.statements?.has(name)) {
          // As PostgreSQL: an error, and the rest of the batch is skipped up to Sync.
          this.discarding = true;
          return this.answer(msg.errorResponse({ severity: 'ERROR', code: '42P05', message: `prepared statement "${name}" already exists` }));
        }
        const st = statementFor(tail);
        (this.statements ??= new Map()).set(name, st);
        const forget = () => this.statements?.get(name) === st && this.statements.delete(name);
        if (server.statements.has(st.key)) {
          server.statements.touch(st.key);
          this.answer(PARSE_COMPLETE, forget);
        } else {
          this.prepareOn(server, st, false, forget);
        }
        return;
      }
      case Frontend.Bind: {
        this.pool!.counters.binds++;
        const { portal, statement, rest } = readBind(body);
        const st = statement === '' ? undefined : this.statements?.get(statement);
        // An unknown name goes through as it is: the server answers 26000 with the client's name.
        if (!st) return this.toServer(raw, Expect.Bind);
        this.ensurePrepared(server, st);
        return this.toServer(bindMessage(portal, st.serverName, rest), Expect.Bind);
      }
      case Frontend.Describe: {
        const { kind, name } = readTarget(body);
        if (kind !== STATEMENT) return this.toServer(raw, Expect.DescribePortal);
        const st = name === '' ? undefined : this.statements?.get(name);
        if (!st) return this.toServer(raw, Expect.DescribeStatement);
        this.ensurePrepared(server, st);
        return this.toServer(describeStatement(st.serverName), Expect.DescribeStatement);
      }
      case Frontend.Close: {
        const { kind, name } = readTarget(body);
        if (kind !== STATEMENT || name === '' || !this.rewriteStatements) return this.toServer(raw, Expect.Close);
        // Shared on the server and kept for other clients; closing a missing name is no error.
        this.statements?.delete(name);
        return this.answer(CLOSE_COMPLETE);
      }
      case Frontend.Execute:
        return this.toServer(raw, Expect.Execute);
      case Frontend.Sync:
        this.discarding = false;
        return this.toServer(raw, Expect.Ready);
      case Frontend.Query:
        if (dropsAllStatements(body)) {
          this.statements?.clear();
          server.statements.clear();
        }
        this.noteStatement(server, body);
        return this.toServer(raw, Expect.Ready);
      case Frontend.FunctionCall:
        return this.toServer(raw, Expect.Ready);
      default:
        // Flush, CopyData, CopyDone, CopyFail: no response of their own.
        this.write(server, raw, 0);
        return;
    }
  }

  private toServer(bytes: Buffer, expect: Expect): void {
    const server = this.server!;
    if (expect === Expect.Ready) this.pool!.counters.queries++;
    this.write(server, bytes, expect === Expect.Ready ? 1 : 0);
    this.deliver(server.responses!.push(PLAIN_ENTRIES[expect]));
  }

  /** A response Tessera gives itself, in its place among the server's. */
  private answer(bytes: Buffer, onSkipped?: () => void): void {
    this.deliver(this.server!.responses!.push({ expect: Expect.Synthetic, synthetic: bytes, onSkipped }));
  }

  private deliver(due: readonly Buffer[]): void {
    for (const b of due) this.writeFromServer(b);
  }

  /**
   * Queues bytes for the server; flushBatch() sends them. Consecutive messages forwarded unchanged
   * from the chunk being read become one slice of it; anything else (a rewritten or injected
   * message) queues behind what came before, so order is kept and a client's batch, with a ticket
   * redemption or parameter restore ahead of it, still leaves in one write.
   */
  private write(server: ServerConnection, bytes: Buffer, readies: number): void {
    this.owe(server, readies);
    const chunk = this.currentChunk;
    const inChunk = bytes.buffer === chunk.buffer && bytes.byteOffset >= chunk.byteOffset && bytes.byteOffset + bytes.length <= chunk.byteOffset + chunk.length;
    const batch = this.batch;
    if (inChunk && batch && batch.byteOffset + batch.length === bytes.byteOffset) {
      this.batch = chunk.subarray(batch.byteOffset - chunk.byteOffset, bytes.byteOffset - chunk.byteOffset + bytes.length);
      return;
    }
    if (batch) (this.queued ??= []).push(batch);
    this.batch = null;
    if (inChunk) this.batch = bytes;
    else (this.queued ??= []).push(bytes);
  }

  private flushBatch(server: ServerConnection): void {
    const batch = this.batch;
    const queued = this.queued;
    this.batch = this.queued = null;
    if (queued === null) {
      if (batch) this.sendNow(server, batch);
      return;
    }
    if (batch) queued.push(batch);
    this.sendNow(server, queued);
  }

  private sendNow(server: ServerConnection, bytes: Buffer | Buffer[]): void {
    if (!(Array.isArray(bytes) ? server.writeAll(bytes) : server.write(bytes))) {
      this.socket.pause();
      server.onceDrained(() => resumeReading(this.socket));
    }
  }

  private ensurePrepared(server: ServerConnection, st: Statement): void {
    if (server.statements.has(st.key)) server.statements.touch(st.key);
    else this.prepareOn(server, st, true);
  }

  /** Prepares a statement on the server (evicting its least recently used one when full). */
  private prepareOn(server: ServerConnection, st: Statement, injected: boolean, forget?: () => void): void {
    const queue = server.responses!;
    if (server.statements.size >= this.pool!.settings.maxPreparedStatements) {
      const old = server.statements.evictOldest();
      if (old) {
        this.write(server, closeStatement(old.name), 0);
        queue.push({ expect: Expect.Close, swallow: true });
      }
    }
    server.statements.add(st);
    this.pool!.counters.serverParses++;
    this.write(server, parseMessage(st), 0);
    const onSkipped = () => {
      server.statements.delete(st.key);
      forget?.();
    };
    this.deliver(queue.push({ expect: Expect.Parse, swallow: injected, onSkipped }));
  }

  /**
   * What a statement (Query text or Parse tail) leaves beyond its transaction: session state pins
   * the client to this backend; a call that re-binds sessions leaves the backend's binding unknown.
   * The text is decoded only when one of the two can still change something.
   */
  private noteStatement(server: ServerConnection, sql: Buffer): void {
    if (this.pinned && this.ticket === null) return;
    const text = sql.toString('utf8', 0, Math.min(sql.length, 8192));
    if (!this.pinned) {
      const reason = outlivesTransaction(text, server.status.has('search_path'));
      if (reason !== null) this.pin(reason);
    }
    if (this.ticket !== null && rebindsSession(text)) server.boundSession = null;
  }

  /** Why the client keeps its backend (transaction mode), or null when it does not. */
  get pinReason(): PinReason | null {
    return this.pinnedFor;
  }

  private get pinned(): boolean {
    return this.pinnedFor !== null;
  }

  private pin(reason: PinReason): void {
    this.pinnedFor = reason;
    log.debug({ client: this.id, reason }, 'client pinned to its server: session state outlives its transaction');
  }

  onParameterStatus(name: string, value: string): void {
    if (!this.tracking) return;
    const baseline = this.pool!.statusCache.get(this.variant)?.get(name);
    if (value === baseline) this.overrides?.delete(name);
    else (this.overrides ??= new Map()).set(name, value);
  }

  /**
   * Before this client's messages: make the backend's reported parameters what this client should
   * see — its own SET values, else its session's starting ones (undoing another client's SET).
   * One injected query, pipelined, whose every reply Tessera swallows.
   */
  private restoreParameters(server: ServerConnection): void {
    // The common case costs one test per transaction: nobody has SET anything.
    const overrides = this.overrides;
    if ((overrides === null || overrides.size === 0) && !server.paramsChanged) return;
    const baseline = this.pool!.statusCache.get(this.variant);
    if (!baseline) return;
    // After this, the server differs from the starting values only by this client's SETs.
    server.paramsChanged = overrides !== null && overrides.size > 0;
    const statements: string[] = [];
    const names = new Set([...(overrides?.keys() ?? []), ...[...server.status.keys()].filter((k) => server.status.get(k) !== baseline.get(k))]);
    for (const name of names) {
      const want = overrides?.get(name) ?? baseline.get(name);
      if (want === undefined || server.status.get(name) === want || !/^[A-Za-z_][A-Za-z0-9_.]*$/.test(name)) continue;
      if (SERVER_ONLY_PARAMETERS.has(name)) continue;
      statements.push(`SELECT pg_catalog.set_config('${name}', ${quoteLiteral(want)}, false)`);
    }
    if (statements.length === 0) return;
    this.write(server, msg.simpleQuery(statements.join('; ')), 1);
    server.responses!.push({ expect: Expect.Ready, swallowAll: true });
  }

  /**
   * A client that sent queries and then Terminate while waiting for a server: PostgreSQL would
   * have run them, so they go to the server now; giveBack() then waits for them to finish.
   */
  private runOrphaned(server: ServerConnection): void {
    if (this.pending.length === 0 && this.pendingMessages.length === 0) return;
    this.server = server;
    server.attach(this, this.tracking);
    if (this.ticket !== null && server.boundSession !== this.sessionId) this.redeemTicket(server);
    this.forwardHeld(server);
    // Nobody reads the replies; the pool drains them by ReadyForQuery alone.
    server.responses = null;
    this.server = null;
  }

  // ---- PoolClient: the pool answers requestServer() ----

  get wantsStatusOnly(): boolean {
    return this.phase === ClientPhase.Login && this.session === null && !this.connectPending;
  }

  onStatusKnown(status: ReadonlyMap<string, string>): void {
    this.waiting = false;
    if (this.phase === ClientPhase.Login) this.finishLogin(status, true);
  }

  onServerAssigned(server: ServerConnection): void {
    this.waiting = false;
    if (this.phase === ClientPhase.Closed) {
      this.runOrphaned(server);
      this.pool!.giveBack(server, { midMessage: false, extendedOpen: this.extendedOpen, terminated: true });
      this.revokeTicket();
      return;
    }
    if (this.phase === ClientPhase.Login && this.session) {
      this.openTokenSession(server);
      return;
    }
    if (this.phase === ClientPhase.Login && this.connectPending) {
      this.connectPending = false;
      this.keepServer(server);
      return;
    }
    if (this.phase === ClientPhase.Login) {
      // Only its ParameterStatus values were needed; a server is taken again at the first query
      // (in session mode too, as PgBouncer does, so idle logins do not hold servers).
      const status = server.status;
      this.pool!.releaseIdle(server);
      this.finishLogin(status);
      return;
    }
    this.server = server;
    server.attach(this, this.tracking);
    if (this.tracking) {
      if (this.ticket !== null && server.boundSession !== this.sessionId) this.redeemTicket(server);
      this.restoreParameters(server);
    }
    // Resume first, so a full server socket's pause (sendNow) is the one that stands.
    resumeReading(this.socket);
    this.forwardHeld(server);
  }

  onServerFailed(error: PgError): void {
    this.waiting = false;
    // Whatever the server said, the client cannot go on without one: FATAL, as PgBouncer does.
    this.fail(new PgError({ ...error.fields, severity: 'FATAL' }, error.fields.severity === 'FATAL' ? error.raw : undefined));
  }

  // ---- ServerPeer: the linked server's bytes ----

  writeFromServer(chunk: Buffer): boolean {
    if (this.sessionLost) return true;
    this.pool!.counters.sent += chunk.length;
    return this.socket.write(chunk);
  }

  onceDrained(resume: () => void): void {
    this.socket.once('drain', resume);
  }

  onServerReady(server: ServerConnection): void {
    if (this.sessionLost) return; // kept linked until teardown gives it back for a reset
    this.lastActiveAt = server.lastReadyAt;
    const counters = this.pool!.counters;
    if (server.outstanding === 0) counters.queryUs += (server.lastReadyAt - server.queryStartedAt) * 1000;
    if (server.txStatus === READY_IDLE) {
      counters.xacts++;
      counters.xactUs += (server.lastReadyAt - (server.xactStartedAt || server.queryStartedAt)) * 1000;
      server.xactStartedAt = 0;
    } else if (server.xactStartedAt === 0) {
      server.xactStartedAt = server.queryStartedAt;
    }
    if (
      this.mode === 'transaction' &&
      server.outstanding === 0 &&
      server.txStatus === READY_IDLE &&
      !this.extendedOpen &&
      this.framer.atBoundary &&
      this.pendingReadies === 0 &&
      this.pendingMessages.length === 0 &&
      !this.pinned &&
      (server.responses === null || server.responses.empty)
    ) {
      this.releaseServer();
    }
  }

  onServerLost(_server: ServerConnection, error: PgError | null): void {
    this.server = null;
    // The server's own FATAL (57P01 and friends) was already relayed when it arrived in a chunk;
    // if it came with nothing, say what happened.
    if (!error) this.fail(PgError.fatal(SqlState.ConnectionFailure, 'server closed the connection unexpectedly'));
    else this.close();
  }

  private revokeTicket(): void {
    if (this.ticket === null) return;
    this.pool!.revokeTicket(this.ticket);
    this.ticket = null;
  }

  private releaseServer(): void {
    const server = this.server!;
    this.server = null;
    this.pool!.releaseIdle(server);
  }

  // ---- leaving ----

  /** @internal the socket's 'close' (see listenTo) */
  onSocketClosed(): void {
    if (this.closeTimer) clearTimeout(this.closeTimer);
    this.teardown();
  }

  private teardown(): void {
    if (this.phase === ClientPhase.Closed) return;
    this.phase = ClientPhase.Closed;
    // Queries sent before Terminate still run (runOrphaned); otherwise stop waiting.
    const orphaned = this.terminated && (this.pending.length > 0 || this.pendingMessages.length > 0);
    if (this.waiting && !orphaned) this.pool?.cancelWait(this);
    // Orphaned queries still need the ticket; they revoke it once they have run.
    if (!orphaned) this.revokeTicket();
    const server = this.server;
    this.server = null;
    if (server && this.pool) {
      // Mid-message, mid-query or mid-transaction: the pool cleans or closes it; nobody inherits it.
      this.pool.giveBack(server, { midMessage: !this.framer.atBoundary || this.pendingReadies > 0, extendedOpen: this.extendedOpen, terminated: this.terminated, dirty: this.pinned });
    }
    this.host.onClientClosed(this);
  }
}


