/**
 * One client of Tessera, from its first byte to its close: it owns the socket, the phase, the
 * link to a server and the login flow, and hands each concern to its part: negotiate.ts (before
 * the startup packet), client-auth.ts (authentication), token-login.ts (session tokens and
 * tickets), held-input.ts (what arrives while no server is linked), transaction-relay.ts
 * (transaction mode), session-state.ts (what pins). The session relay is here: it forwards the
 * client's bytes as received, framing them by header only to count the ReadyForQuery messages
 * owed, to see where an extended-protocol batch ends, and to keep the client's Terminate from
 * reaching a pooled server. It tells the server's ledger where its input stands; the pool decides
 * the release from that ledger.
 *
 * Longer than most files on purpose: it is the one implementer of the interfaces its parts need
 * (RelayLink, NegotiatingClient, TokenLoginClient, PoolClient, ServerPeer), each a few lines.
 */
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { Framer, ProtocolViolation, type FrameSink } from '../protocol/framing.js';
import * as msg from '../protocol/messages.js';
import { Backend, Frontend, PgError, SqlState } from '../protocol/messages.js';
import { wholeMessage, type Statement } from '../pool/prepared.js';
import type { ServerConnection, ServerPeer } from '../pool/server-connection.js';
import { shareParams, type Pool, type PoolClient } from '../pool/pool.js';
import type { Authenticator, AuthStep, SessionCredentials } from './client-auth.js';
import type { StoredSecret } from '../auth/secret.js';
import { TransactionRelay, type RelayLink } from './transaction-relay.js';
import { Negotiation, type NegotiatingClient } from './negotiate.js';
import { TokenLogin, type TokenLoginClient } from './token-login.js';
import { HeldInput } from './held-input.js';
import { splitStartupParameters } from '../pool/startup-parameters.js';
import { checkStartup, knownStartup, loginStatusBlock, type Settings } from './session-settings.js';
import { NO_SESSION_SETTINGS } from '../pool/server-connection.js';
import { sessionStateDisturbance } from '../pool/session-sql.js';
import type { ClientTls } from '../tls/contexts.js';
import { log } from '../log.js';
import { clientClosed, clientLoggedIn, loginRefused, poolerError } from '../log/events.js';
import { resumeReading } from '../net/suspension.js';
import { idSequence, newCancelKey } from '../net/worker-identity.js';
import type { ClientAccount } from '../metrics/accessors.js';

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
  /** Counts an error Tessera itself sends a logged-in client (metrics). */
  onClientError(client: ClientConnection, err: PgError): void;
  /** A client finished logging in: its end user's account (session token, connect_query), else null. */
  openAccount(client: ClientConnection): ClientAccount | null;
  /** A session-token login succeeded on `server`: learn the session's accessor, then `done`. */
  identifySession(sessionId: string, server: ServerConnection, done: () => void): void;
  cancel(pid: number, secret: number): void;
  /** This instance's peer_id (0: no peering); cancel keys carry it. */
  readonly peerId: number;
  /** The admin console (database "pgbouncer"): the welcome ParameterStatus set, or a refusal. */
  adminLogin(client: ClientConnection): ReadonlyMap<string, string>;
  adminQuery(client: ClientConnection, sql: string): Promise<Buffer>;
  onClientClosed(client: ClientConnection): void;
}

const READY_IDLE = 0x49;
const READY_IDLE_MESSAGE = msg.readyForQuery(READY_IDLE);
const nextClientId = idSequence();
/** Shared empty list of early chunks: never pushed to. */
const NOTHING_EARLY: readonly Buffer[] = [];

const ignore = (): void => {};
const uncorkTick = (client: ClientConnection): void => client.uncorkTick();
const NO_PARAMS: ReadonlyMap<string, string> = new Map();

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

function sameEntries(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [name, value] of a) if (b.get(name) !== value) return false;
  return true;
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

export class ClientConnection implements FrameSink, ServerPeer, PoolClient, RelayLink, NegotiatingClient, TokenLoginClient {
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
  /**
   * Transaction mode: the startup values a session can set, applied per client on shared backends
   * (canonical once checked at login); `uncheckedStartup` until a backend has checked them.
   */
  startupSettings: Settings = NO_SESSION_SETTINGS;
  private uncheckedStartup: Settings | null = null;
  waitingSince = 0;
  /** Last time the client sent anything or got an answer (client_idle_timeout). */
  lastActiveAt = Date.now();
  pool: Pool | null = null;
  private terminated = false;
  /** Logged in to the admin console rather than a database. */
  admin = false;
  /** The secret auth_query found for this client (a user not in auth_file). */
  lookedUpSecret: StoredSecret | undefined;
  /** A session-token client's part of the session protocol (credentials, session id, ticket). */
  private token: TokenLogin | null = null;
  /** Session-token and connect_query logins: the end user's counts (see metrics/accessors.ts). */
  account: ClientAccount | null = null;
  /** Session SQL a client can disturb (releaseRule): the schemas to watch, until something does. */
  private watchSchemas: readonly string[] | null = null;
  /** What this client ran that can disturb the session SQL's state: its backend is closed, not reused. */
  private disturbedBy: string | null = null;
  /** ClientKey proven by the client's SCRAM exchange: lets Tessera log in to the server as it. */
  scramClientKey: Buffer | undefined;
  server: ServerConnection | null = null;
  /** The TLS layer once the client upgraded (SSLRequest or direct TLS); null in plaintext. */
  tlsSocket: tls.TLSSocket | null = null;
  /** CN of a client certificate that verified against client_tls_ca_file (auth_type cert). */
  certificateName: string | null = null;

  /** SSL/GSSENC/direct TLS/cancel before the startup packet; dropped once it has come. */
  private negotiation: Negotiation | null;
  private readonly framer = new Framer(this);
  private auth: Authenticator | null = null;
  /** SCRAM's SASLFinal, held to go out with the rest of the login reply (msg.loginReply). */
  private saslFinal: Buffer | null = null;
  /** Waiting for the server its database's connect_query runs on, which it then keeps. */
  private connectPending = false;
  private waiting = false;
  /** Bytes received while no server was linked, forwarded once one is. */
  private readonly held = new HeldInput();
  /** Per-chunk scan results (fields, not a returned object, to keep the relay allocation-free). */
  private scanReadies = 0;
  private scanTerminateAt = -2;
  /** An extended-protocol batch was sent without its Sync yet: the server must stay linked. */
  private extendedOpen = false;

  /** Transaction mode: the relay that reads the client's messages one by one; null in session mode. */
  private txRelay: TransactionRelay | null = null;
  /** Destroys the socket if the client never finishes closing (see close()). */
  private closeTimer: NodeJS.Timeout | null = null;
  /** Why a logged-in client's connection ends, for its log line; unset: it went away. */
  private closeReason: { reason: string; byPooler: boolean; code?: string } | null = null;
  /** Shutting down: the FATAL a transaction-mode client is closed with as its transaction ends (leaveAtTransactionEnd). */
  private leaveWith: PgError | null = null;
  /** Leaving: this tick's writes are corked, to go out together (see writeFromServer). */
  private corkedForTick = false;

  constructor(
    /** The client's socket: the TCP or Unix socket, replaced by its TLS layer on upgrade. */
    public socket: Socket,
    private readonly host: ClientHost,
    readonly remoteAddress: string,
  ) {
    this.negotiation = new Negotiation(this, host.clientTls);
    this.rekey();
    listenTo(socket, this);
    socket.on('error', ignore); // 'close' follows; a reset client is not worth a stack trace
  }

  /** A fresh random cancel key (the proxy draws again when a pid is already taken). */
  rekey(): void {
    ({ pid: this.pid, secret: this.secret } = newCancelKey(this.host.peerId));
  }

  get isWaiting(): boolean {
    return this.waiting;
  }

  /**
   * A transaction-mode client between its transactions: no server, nothing sent or held that
   * waits for one. Closing it now fails nothing (a rolling restart closes clients here).
   */
  get betweenTransactions(): boolean {
    return this.phase === ClientPhase.Ready && !this.admin && this.server === null && !this.waiting && this.held.empty && this.framer.atBoundary && this.pool?.settings.mode === 'transaction';
  }

  get mode(): 'session' | 'transaction' {
    return this.pool!.settings.mode;
  }

  /**
   * Shutting down (a rolling restart): a transaction-mode client is closed with `notice` at its
   * next transaction boundary, not mid-transaction, so it reconnects (through its load balancer)
   * elsewhere.
   */
  leaveAtTransactionEnd(notice: PgError): void {
    this.leaveWith = notice;
  }

  /** @internal the end of a tick whose writes were corked (writeFromServer) */
  uncorkTick(): void {
    this.corkedForTick = false;
    this.socket.uncork();
  }

  /** Sends an ErrorResponse; FATAL errors close the connection after it is written. */
  fail(err: PgError): void {
    if (this.phase === ClientPhase.Closed) return;
    const fatal = err.fields.severity === 'FATAL' || err.fields.severity === 'PANIC';
    if (this.phase !== ClientPhase.Ready) loginRefused(this, err);
    else {
      if (!this.admin) this.host.onClientError(this, err);
      if (fatal) this.closeReason ??= { reason: err.message, byPooler: true, code: err.code };
      else poolerError(this, err);
    }
    if (this.socket.writable) this.socket.write(err.toMessage());
    if (fatal) this.close();
  }

  /** The client said Terminate: queries it sent before are finished, not cancelled. */
  terminate(): void {
    this.terminated = true;
    this.closeReason ??= { reason: 'client close request', byPooler: false };
    if (this.phase !== ClientPhase.Closed && this.tlsSocket === null && this.socket.writableLength === 0) {
      // Nothing left to send and no TLS session to end: closed at once, as PostgreSQL and
      // PgBouncer close theirs, without a half-close and a wait for the client's FIN.
      this.socket.destroy();
      this.teardown();
      return;
    }
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
          return this.negotiation!.push(chunk);
        case ClientPhase.Auth:
          return this.framer.push(chunk);
        case ClientPhase.Login:
          // A pipelining client may send its first query before our ReadyForQuery; keep it.
          this.held.holdChunk(chunk);
          this.socket.pause();
          return;
        case ClientPhase.Ready:
          return this.admin ? this.framer.push(chunk) : this.relay(chunk);
        default:
          return;
      }
    } catch (err) {
      if (err instanceof PgError) return this.fail(err);
      if (err instanceof ProtocolViolation) return this.fail(PgError.fatal(err.sqlstate, err.message));
      log.error({ client: this.id, err }, 'unexpected error handling client data');
      this.fail(PgError.fatal('XX000', 'internal error in the pooler'));
    }
  }

  // ---- NegotiatingClient: what negotiation tells the client ----

  get closed(): boolean {
    return this.phase === ClientPhase.Closed;
  }

  unlistenPlaintext(): void {
    this.socket.off('data', onClientData);
    this.socket.off('close', onClientClose);
  }

  useTls(secure: tls.TLSSocket): void {
    this.socket = secure;
    this.tlsSocket = secure;
    listenTo(secure, this);
  }

  setCertificateName(name: string | null): void {
    this.certificateName = name;
  }

  /** Not a startup packet at all: closed without a reply, as PostgreSQL does (negotiate logs it). */
  drop(): void {
    this.socket.destroy();
    this.teardown();
  }

  onCancelRequest(pid: number, secret: number): void {
    this.host.cancel(pid, secret);
    this.socket.end();
    this.teardown();
  }

  onStartup(params: Map<string, string>, leftover: Buffer): void {
    this.negotiation = null;
    this.phase = ClientPhase.Auth;
    this.auth = this.host.beginLogin(this, params);
    this.onAuthStep(this.auth.start());
    if (leftover.length > 0 && !this.closed) this.onData(leftover);
  }

  // ---- authentication ----

  onHeader(type: number, _length: number, chunk: Buffer, start: number): boolean {
    if (this.phase === ClientPhase.Auth) {
      if (type !== Frontend.Password) throw new ProtocolViolation(`expected password response, got message type "${String.fromCharCode(type)}"`);
      return true;
    }
    if (this.admin) {
      if (type === Frontend.Query) return true;
      // As a database client's: logged as "client close request", not as an unexpected EOF.
      if (type === Frontend.Terminate) this.terminate();
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
    if (!this.txRelay && this.watchSchemas !== null && (type === Frontend.Query || type === Frontend.Parse)) return true;
    if (this.txRelay) {
      // Transaction relay: every message is read whole and handled in onBody.
      this.txRelay.onHeader(chunk, start);
      return true;
    }
    return false;
  }

  onBody(type: number, body: Buffer): void {
    // Password messages (authentication), admin console queries, and in tracking mode everything.
    if (this.phase === ClientPhase.Auth) return this.onAuthStep(this.auth!.receive(body));
    if (this.phase !== ClientPhase.Ready) return;
    if (this.txRelay) return this.txRelay.onMessage(type, body, this.framer.offset);
    if (!this.admin) return this.noteSessionState(body);
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
        this.saslFinal = step.before ?? null;
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
    this.enterPool(serverParams, true);
    if (this.pool!.settings.connectQuery) {
      this.connectPending = true;
      return this.requestServer();
    }
    const cached = this.pool!.statusCache.get(this.variant);
    if (cached && this.uncheckedStartup === null) this.finishLogin(cached, true);
    else this.requestServer();
  }

  /** `perClientSettings`: in transaction mode, what a session can set is left out of the pool key. */
  private enterPool(serverParams: ReadonlyMap<string, string>, perClientSettings = false): void {
    const pool = (this.pool = this.host.poolFor(this));
    if (perClientSettings && pool.settings.mode === 'transaction') {
      const split = splitStartupParameters(serverParams);
      serverParams = split.server;
      const known = knownStartup(pool, split.session);
      if (known) this.startupSettings = known;
      else this.uncheckedStartup = split.session;
    }
    ({ params: this.serverParams, variant: this.variant } = shareParams(serverParams));
    this.phase = ClientPhase.Login;
    this.watchSchemas = pool.settings.watchSchemas;
    if (pool.settings.mode === 'transaction') {
      this.txRelay = new TransactionRelay(this, pool);
      this.txRelay.startWith(this.startupSettings);
    }
    // Rewritten (or watched) messages are read whole, so the limit is the protocol's own.
    if (this.txRelay || this.watchSchemas !== null) this.framer.maxWantedBody = 0x40000000;
  }

  /** Session-token login: TokenLogin checks the credentials on the backend the client will use. */
  private beginTokenSession(credentials: SessionCredentials, serverParams: ReadonlyMap<string, string>): void {
    this.enterPool(serverParams);
    const token = (this.token = new TokenLogin(this, this.pool!, credentials, this.host.openConnectionSql));
    if (!token.wellFormed) return token.refuse('AUTHFAIL');
    this.requestServer();
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
      server.markSessionState('session mode');
      this.finishLoginWith(server.status);
    };
    if (!sql) return link();
    server.runInternal([sql]).then(
      () => {
        if (this.phase === ClientPhase.Closed) this.loginDoneWith(server);
        else link();
      },
      (err: PgError) => {
        // The release query (close_connection) still runs, so nothing connect_query did lingers.
        this.loginDoneWith(server);
        if (this.phase === ClientPhase.Closed) return;
        log.warn({ client: this.id, code: err.code }, 'connect_query failed');
        this.host.onLoginFailed(this, 'connect_query');
        this.fail(new PgError({ ...err.fields, severity: 'FATAL' }));
      },
    );
  }

  get watchingSessionSql(): boolean {
    return this.watchSchemas !== null;
  }

  /** What a client ran, where a client can disturb the session SQL's state (see releaseRule). */
  noteSessionState(sql: Buffer): void {
    const reason = sessionStateDisturbance(sql.toString('utf8'), this.watchSchemas!);
    if (reason === null) return;
    this.disturbedBy = reason;
    this.watchSchemas = null; // decided: the backend is closed when the client leaves
    // Transaction mode: so that no other client has the backend meanwhile.
    if (this.txRelay && this.server) this.txRelay.pinTo(this.server, 'session_sql_state');
  }

  // ---- TokenLoginClient ----

  sessionOpened(server: ServerConnection | null, status: ReadonlyMap<string, string>): void {
    if (server) this.keepServer(server);
    else this.finishLoginWith(status);
  }

  onSessionLogin(ok: boolean): void {
    this.host.onSessionLogin(this, ok);
  }

  identifySession(sessionId: string, server: ServerConnection, done: () => void): void {
    this.host.identifySession(sessionId, server, done);
  }

  refuse(reason: string, err: PgError): void {
    this.host.onLoginFailed(this, reason);
    this.fail(err);
  }

  queueForServer(server: ServerConnection, bytes: Buffer, readies: number): void {
    this.txRelay!.queue(server, bytes, readies);
  }

  /**
   * Sends the whole login reply in one write. `status`: the server's ParameterStatus values, the
   * client's startup settings over them; `unchanging`: `status` is a pool's cached copy, whose
   * encoded bytes are reused.
   */
  private finishLogin(status: ReadonlyMap<string, string>, unchanging = false): void {
    this.socket.write(msg.loginReply(this.saslFinal, loginStatusBlock(status, this.startupSettings, unchanging), this.pid, this.secret));
    this.saslFinal = null;
    this.phase = ClientPhase.Ready;
    if (!this.admin) this.account = this.host.openAccount(this);
    clientLoggedIn(this);
    const early = this.held.empty ? NOTHING_EARLY : this.held.takeChunks().chunks;
    if (this.admin) this.socket.resume();
    else resumeReading(this.socket);
    for (const chunk of early) this.onData(chunk);
  }

  /**
   * Finishes the login with a server's own ParameterStatus values: the pool's cached copy when
   * they say the same (most logins: the release put the backend back as it was), so that its
   * encoded block is reused instead of built again.
   */
  private finishLoginWith(status: ReadonlyMap<string, string>): void {
    const cached = this.pool!.statusCache.get(this.variant);
    if (cached !== undefined && sameEntries(cached, status)) this.finishLogin(cached, true);
    else this.finishLogin(status);
  }

  // ---- the relay ----

  /** Client bytes in the Ready phase: scan headers, then forward to the linked server or hold. */
  private relay(chunk: Buffer): void {
    this.lastActiveAt = Date.now();
    this.pool!.counters.received += chunk.length;
    if (this.txRelay) return this.txRelay.relayChunk(chunk, this.framer);
    const heldBefore = this.framer.heldHeaderBytes;
    const heldCopy = heldBefore > 0 ? this.framer.heldHeader() : null;
    this.scanReadies = 0;
    this.scanTerminateAt = -2;
    this.framer.push(chunk);
    this.pool!.counters.queries += this.scanReadies;
    if (this.account !== null) this.account.noteQueries(this.scanReadies);

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
      else this.held.readies += this.scanReadies; // only header bytes so far
    }
    if (terminate) this.terminate();
  }

  private send(bytes: Buffer, readies: number): void {
    const server = this.server;
    if (!server) {
      if (this.held.holdChunk(bytes, readies)) this.socket.pause();
      this.requestServer();
      return;
    }
    server.owe(readies);
    this.sendToServer(server, bytes);
  }

  /** Sends what arrived while no server was linked, in order, now that one is. */
  private forwardHeld(server: ServerConnection): void {
    if (this.txRelay) return this.txRelay.forwardHeld(server, this.held.takeMessages());
    const { chunks, readies } = this.held.takeChunks();
    server.owe(readies);
    for (const bytes of chunks) this.sendToServer(server, bytes);
  }

  private requestServer(): void {
    if (this.waiting) return;
    this.waiting = true;
    this.pool!.acquire(this);
  }

  // ---- RelayLink: what the transaction relay needs of its client ----

  get holdsTicket(): boolean {
    return this.token?.holdsTicket ?? false;
  }

  /** The session a session-token client logged in with (an id, not a secret): KILL_SESSION finds it. */
  get sessionId(): string | null {
    return this.token?.sessionId ?? null;
  }

  /** Why the client keeps its backend (SHOW CLIENTS); null when it is pooled per transaction. */
  get pinReason(): string | null {
    return this.txRelay?.pinReason ?? null;
  }

  get holding(): boolean {
    return !this.held.empty;
  }

  holdMessage(type: number, body: Buffer, raw: Buffer): void {
    if (this.held.holdMessage({ type, body, raw })) this.socket.pause();
    this.requestServer();
  }

  /** Bytes for the server, now; the client stops being read while the server's socket is full. */
  sendToServer(server: ServerConnection, bytes: Buffer | Buffer[]): void {
    // The server's ledger says where the client's input stands (its release reads it).
    server.noteClientInput(!this.framer.atBoundary, this.extendedOpen);
    if (!(Array.isArray(bytes) ? server.writeAll(bytes) : server.write(bytes))) {
      this.socket.pause();
      server.onceDrained(() => resumeReading(this.socket));
    }
  }

  onParameterStatus(name: string, value: string): void {
    this.txRelay?.onParameterStatus(name, value);
  }

  onStatementError(server: ServerConnection, statement: Statement, err: PgError, body: Buffer): Buffer | null {
    return this.txRelay ? this.txRelay.onStatementError(server, statement, err, body) : wholeMessage(Backend.ErrorResponse, body);
  }

  /**
   * A client that sent queries and then Terminate while waiting for a server: PostgreSQL would
   * have run them, so they go to the server now; giveBack() then waits for them to finish.
   */
  private runOrphaned(server: ServerConnection): void {
    if (this.held.empty) return;
    this.server = server;
    server.attach(this, this.txRelay !== null);
    this.token?.redeemOn(server);
    this.forwardHeld(server);
    // Nobody reads the replies; the pool drains them by ReadyForQuery alone.
    server.responses = null;
    this.server = null;
  }

  /** A server that served only the login (its session SQL) goes back: the login is over with it. */
  loginDoneWith(server: ServerConnection): void {
    server.endLink('left');
    this.pool!.release(server);
  }

  // ---- PoolClient: the pool answers requestServer() ----

  get wantsStatusOnly(): boolean {
    return this.phase === ClientPhase.Login && !this.token?.pending && !this.connectPending && this.uncheckedStartup === null;
  }

  onStatusKnown(status: ReadonlyMap<string, string>): void {
    this.waiting = false;
    // The pool's cached copy (see Pool.launch).
    if (this.phase === ClientPhase.Login) this.finishLogin(status, true);
  }

  onServerAssigned(server: ServerConnection): void {
    this.waiting = false;
    if (this.phase === ClientPhase.Closed) {
      this.runOrphaned(server);
      server.noteClientInput(false, this.extendedOpen);
      server.endLink('terminated');
      this.pool!.release(server);
      this.token?.revoke();
      return;
    }
    if (this.phase === ClientPhase.Login && this.token?.pending) {
      this.token.open(server, this.txRelay !== null);
      return;
    }
    if (this.phase === ClientPhase.Login && this.connectPending) {
      this.connectPending = false;
      this.keepServer(server);
      return;
    }
    if (this.phase === ClientPhase.Login && this.uncheckedStartup !== null) return this.checkStartupOn(server, this.uncheckedStartup);
    if (this.phase === ClientPhase.Login) {
      // Only its ParameterStatus values were needed; a server is taken again at the first query
      // (in session mode too, as PgBouncer does, so idle logins do not hold servers).
      const status = server.status;
      this.pool!.release(server);
      this.finishLoginWith(status);
      return;
    }
    this.server = server;
    const relay = this.txRelay;
    server.attach(this, relay !== null);
    if (!relay) server.markSessionState('session mode');
    else {
      if (relay.pinReason) server.markSessionState(relay.pinReason);
      this.token?.redeemOn(server);
      relay.restoreParameters(server);
    }
    // Resume first, so a full server socket's pause (sendNow) is the one that stands.
    resumeReading(this.socket);
    this.forwardHeld(server);
  }

  /** Startup values a session can set are checked as PostgreSQL would at login, on any backend. */
  private checkStartupOn(server: ServerConnection, startup: Settings): void {
    checkStartup(server, this.pool!, startup).then(
      (canonical) => {
        this.pool!.release(server);
        if (this.phase !== ClientPhase.Login) return;
        this.uncheckedStartup = null;
        this.startupSettings = canonical;
        this.txRelay?.startWith(canonical);
        this.finishLogin(server.status);
      },
      (err: PgError) => {
        this.pool!.release(server);
        if (this.phase !== ClientPhase.Login) return;
        this.host.onLoginFailed(this, 'startup_parameter');
        this.fail(new PgError({ ...err.fields, severity: 'FATAL' }));
      },
    );
  }

  onServerFailed(error: PgError): void {
    this.waiting = false;
    // Whatever the server said, the client cannot go on without one: FATAL, as PgBouncer does.
    this.fail(new PgError({ ...error.fields, severity: 'FATAL' }, error.fields.severity === 'FATAL' ? error.raw : undefined));
  }

  // ---- ServerPeer: the linked server's bytes ----

  writeFromServer(chunk: Buffer): boolean {
    if (this.token?.lost) return true;
    this.pool!.counters.sent += chunk.length;
    // Leaving at the transaction's end: the close notice must reach the driver in the same read as
    // the ReadyForQuery it follows (see endTransaction), so this tick's writes go out as one.
    if (this.leaveWith !== null && !this.corkedForTick) {
      this.corkedForTick = true;
      this.socket.cork();
      process.nextTick(uncorkTick, this);
    }
    return this.socket.write(chunk);
  }

  onceDrained(resume: () => void): void {
    this.socket.once('drain', resume);
  }

  /**
   * The linked server answered up to a ReadyForQuery: in transaction mode, a client between
   * transactions lets it go. The pool mode is read now, not at login, so a RELOAD applies at
   * once; but a client whose messages were not tracked since its login (it logged in under
   * session mode) keeps its backend, since its session state there is unknown.
   */
  onServerReady(server: ServerConnection): void {
    if (this.token?.lost) return; // kept linked until teardown gives it back for a reset
    this.lastActiveAt = server.lastReadyAt;
    const relay = this.txRelay;
    if (!relay) return;
    if (relay.pinned) {
      if (server.atTransactionBoundary) relay.onIdle();
      return;
    }
    if (this.mode !== 'transaction') {
      server.markSessionState('session mode');
      return;
    }
    if (server.atTransactionBoundary && this.held.empty && this.held.readies === 0) {
      // Settings this transaction may have changed are read back first; released at that answer.
      if (relay.readBackSettings(server)) return;
      this.endTransaction(relay);
    }
  }

  onTransactionEnded(server: ServerConnection, us: number, errors: number): void {
    if (this.account !== null) this.account.transactionEnded(server.lastReadyAt, us, errors);
  }

  onServerLost(_server: ServerConnection, error: PgError | null): void {
    this.server = null;
    // The server's own FATAL (57P01 and friends) was already relayed when it arrived in a chunk;
    // if it came with nothing, say what happened.
    if (!error) return this.fail(PgError.fatal(SqlState.ConnectionFailure, 'server closed the connection unexpectedly'));
    this.closeReason ??= { reason: `server connection lost: ${error.message}`, byPooler: true, code: error.code };
    this.close();
  }

  /** Transaction mode, at a boundary: the server goes back, and a client asked to leave leaves now. */
  private endTransaction(relay: TransactionRelay): void {
    const server = this.server!;
    this.server = null;
    this.pool!.release(server);
    relay.onIdle();
    // The FATAL goes out in one write with the ReadyForQuery just relayed: a driver that handles a
    // whole read before its application goes on (node-postgres) learns the connection is over
    // before anything more can be sent here, and its pool replaces it. A FATAL sent on its own a
    // moment later lost that race to a busy pool's next BEGIN in a quarter or more of closes. Drivers
    // that read only when they send (libpq, JDBC) meet it on their next statement (README).
    if (this.leaveWith !== null && this.betweenTransactions) this.fail(this.leaveWith);
  }

  // ---- leaving ----

  /** @internal the socket's 'close' (see listenTo) */
  onSocketClosed(): void {
    if (this.closeTimer) clearTimeout(this.closeTimer);
    this.teardown();
  }

  private teardown(): void {
    if (this.phase === ClientPhase.Closed) return;
    if (this.phase === ClientPhase.Ready) {
      const why = this.closeReason ?? { reason: 'client unexpected eof', byPooler: false };
      clientClosed(this, why.reason, why.byPooler, why.code);
    }
    this.phase = ClientPhase.Closed;
    this.txRelay?.close();
    // Queries sent before Terminate still run (runOrphaned); otherwise stop waiting.
    const orphaned = this.terminated && !this.held.empty;
    if (this.waiting && !orphaned) this.pool?.cancelWait(this);
    // Orphaned queries still need the ticket; they revoke it once they have run.
    if (!orphaned) this.token?.revoke();
    const server = this.server;
    this.server = null;
    if (server && this.pool) {
      // Mid-message, mid-query or mid-transaction: the pool cleans or closes it; nobody inherits it.
      server.noteClientInput(!this.framer.atBoundary || this.held.readies > 0, this.extendedOpen);
      server.disturbedBy ??= this.disturbedBy;
      server.endLink(this.terminated ? 'terminated' : 'left');
      this.pool!.release(server);
    }
    this.host.onClientClosed(this);
  }
}


