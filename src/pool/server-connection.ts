/**
 * One connection from Tessera to PostgreSQL: connect, log in (SCRAM, md5 or cleartext, as the
 * server asks), then either relay for a linked client or run Tessera's own housekeeping queries
 * (rollback, server_reset_query). The pool owns the list it sits on (`state`, written only by
 * Pool.move()); this class owns the socket and the ledger: what the server still owes, where the
 * client's input stands, and what session state it carries. The pool's release decision reads
 * only the ledger.
 *
 * Longer than most files on purpose: login, Tessera's own queries and the relay all read the one
 * framer and socket of a connection; the authentication exchange itself is in server-auth.ts.
 */
import net from 'node:net';
import tls from 'node:tls';
import { serialize } from 'pg-protocol';
import { Framer, BodyReader, type FrameSink } from '../protocol/framing.js';
import { Backend, PgError, SqlState } from '../protocol/messages.js';
import { ServerAuthenticator, type ServerCredentials } from './server-auth.js';
import { applySocketOptions, type SocketOptions } from '../net/socket-options.js';
import { ServerStatements, wholeMessage } from './prepared.js';
import { ResponseQueue, TRACKED_RESPONSES } from './response-queue.js';
import { observeDuration, zeroDurationCounts, type DurationCounts } from './histogram.js';
import { idSequence } from '../net/worker-identity.js';
import { resumeReading } from '../net/suspension.js';
import { ALPN, type ServerTls } from '../tls/contexts.js';
import { SSL_REQUEST } from '../protocol/startup.js';

/** Where and as whom to connect. `params` are the startup parameters the server session runs with. */
export interface ServerTarget {
  host: string;
  port: number;
  database: string;
  user: string;
  /** How to prove who we are: a plaintext password, a stored md5 secret, or SCRAM keys. */
  credentials: ServerCredentials;
  params: ReadonlyMap<string, string>;
  connectTimeoutMs: number;
  socket: SocketOptions;
  tls: ServerTls;
}

export type { ServerCredentials };

/** The pool list a server is on (PgBouncer's SV_* lists); Pool.move() changes it. */
export const enum ServerState {
  /** Connecting and logging in. */
  Login = 'login',
  Idle = 'idle',
  /** Handed to a client (linked, or running a login's session SQL for it). */
  Active = 'active',
  /** Running Tessera's own queries (rollback, reset, check, revoke, drain) before reuse. */
  Cleanup = 'cleanup',
  /** Clean, but a cancel request for it is still on its way: nobody may use it yet. */
  Canceling = 'canceling',
  Closed = 'closed',
}

/**
 * How the link to a client ended, as the release decision needs it. null: released at a
 * transaction boundary by a client that stays connected (the server stays bound to its session).
 */
export type LinkEnd = null | 'terminated' | 'left';

/** Why a server was closed (SHOW SERVERS, logs, metrics: every one has a series from the start). */
export const CLOSE_REASONS = [
  'client_left_mid_message',
  'unsynced_extended_batch',
  'protocol_broken',
  'abandoned_query_timeout',
  'reset_failed',
  'check_failed',
  'revoke_failed',
  'session_sql_failed',
  'session_state_disturbed',
  'release_check_failed',
  'idle_timeout',
  'lifetime',
  'reconnect',
  'made_room',
  'paused',
  'pool_closed',
  'server_closed',
  'login_failed',
  'temp_objects',
  /** Its host's role no longer fits the entry's target_session_attrs (pool/hosts.ts). */
  'wrong_role',
  /** Its host, a standby, is further behind than max_replica_lag. */
  'replica_lag',
  /** prefer-standby: on a primary while a standby can serve again. */
  'standby_available',
] as const;
export type CloseReason = (typeof CLOSE_REASONS)[number];

/** What a linked client must provide to receive the server's bytes. */
export interface ServerPeer {
  /** Bytes from the server, in order; returns false when the client's socket buffer is full. */
  writeFromServer(chunk: Buffer): boolean;
  /** Waits for the client's socket to drain, then calls resume. */
  onceDrained(resume: () => void): void;
  /** A ParameterStatus the client saw (its own SET, in transaction mode). */
  onParameterStatus?(name: string, value: string): void;
  /**
   * The server's ErrorResponse (`body`) to a Bind or Describe Tessera rewrote to `statement`:
   * the bytes the client gets instead (its own statement's name in the text), or null when the
   * relay retries the batch and the client gets nothing.
   */
  onStatementError?(server: ServerConnection, statement: { readonly key: string; readonly serverName: string }, error: PgError, body: Buffer): Buffer | null;
  /** Called after a chunk that contained at least one ReadyForQuery. */
  onServerReady(server: ServerConnection): void;
  /**
   * The client's transaction ended (a ReadyForQuery back to idle that the client sees, not one
   * Tessera swallowed) after `us` microseconds, with `errors` ErrorResponses relayed in it.
   */
  onTransactionEnded?(server: ServerConnection, us: number, errors: number): void;
  /** The server connection is gone; `error` is the server's own ErrorResponse when it sent one. */
  onServerLost(server: ServerConnection, error: PgError | null): void;
}

const READY_IDLE = 0x49; // 'I'
/** A backend carrying no client's session settings (fresh, or after RESET ALL). Never changed. */
export const NO_SESSION_SETTINGS: ReadonlyMap<string, string> = new Map();

/** The part of a pool's totals that a server adds to itself. */
export interface ServerCounters {
  xacts: number;
  /** Microseconds in transactions / running queries (SHOW STATS xact_time, query_time). */
  xactUs: number;
  queryUs: number;
  /** Transactions by duration (histogram buckets, see histogram.ts). */
  xactTimes: DurationCounts;
}
const nextServerId = idSequence();
const SSL_REQUEST_PACKET = Buffer.alloc(8);
SSL_REQUEST_PACKET.writeInt32BE(8, 0);
SSL_REQUEST_PACKET.writeInt32BE(SSL_REQUEST, 4);

export class ServerConnection implements FrameSink {
  readonly id = nextServerId();
  readonly createdAt = Date.now();
  lastUsedAt = Date.now();
  private listState: ServerState = ServerState.Login;
  /** The server's ParameterStatus values, kept current as it reports changes. */
  readonly status = new Map<string, string>();
  pid = 0;
  secret = 0;
  /** Transaction status from the last ReadyForQuery: I, T or E. */
  txStatus = READY_IDLE;
  /** ReadyForQuery messages still owed for queries and Syncs sent. */
  outstanding = 0;
  /** When the oldest unanswered query was sent, and when the last ReadyForQuery came (timeouts). */
  queryStartedAt = 0;
  /** When the open transaction's first query was sent; 0 outside a transaction (xact_time). */
  xactStartedAt = 0;
  lastReadyAt = 0;
  peer: ServerPeer | null = null;
  /** CancelRequests sent for this server that PostgreSQL has not finished with (SHOW POOLS sv_being_canceled). */
  cancelsInFlight = 0;
  private afterCancels: (() => void) | null = null;
  /** Set when the server must not be reused (protocol confusion, lost sync). */
  broken = false;

  // ---- the ledger of the current link, told by the client as it sends (see noteClientInput) ----
  /** The client's bytes sent so far end inside a message: the server waits for the rest. */
  midMessage = false;
  /** Extended-protocol messages were sent without their Sync (an implicit transaction is open). */
  unsyncedExtended = false;
  /**
   * Why this backend carries a client's session state (session mode, a pin, a client that left
   * state behind); null when clean. Such a backend is reset before anyone else gets it.
   */
  sessionState: string | null = null;
  /** How the link ended; read by the release decision. */
  linkEnd: LinkEnd = null;
  /**
   * What the client ran after which no reset makes the backend safe for another session (it can
   * disturb the session SQL's own state): the backend is closed when released, never reused.
   */
  disturbedBy: string | null = null;
  /**
   * A client created temporary objects here (or the temp namespace, which outlives DISCARD ALL):
   * the backend is closed when released, never reused.
   */
  holdsTempObjects = false;
  /** Set when the pool closed it: why. */
  closeReason: CloseReason | null = null;
  /** Prepared statements Tessera made on this backend (transaction-mode prepared statements). */
  readonly statements = new ServerStatements();
  /**
   * Transaction mode: the session settings this backend carries beyond its startup values
   * (lower-case name -> value), as Tessera last set or read them; null when unknown (a client
   * may have changed them and they were not read back). Owned by the linked client's relay while
   * linked; the pool sets it after a reset.
   */
  sessionSettings: ReadonlyMap<string, string> | null = NO_SESSION_SETTINGS;
  /**
   * Session-token pools: the session this backend is bound to, as far as Tessera knows (set by
   * open_connection or a redeemed ticket, cleared by close_connection); null when unbound or unsure.
   */
  boundSession: string | null = null;
  /** ErrorResponses relayed to the linked client in its current transaction (reported at its end). */
  private errorsRelayed = 0;
  /** What this backend owes while a client's extended protocol is being rewritten; else null. */
  responses: ResponseQueue | null = null;

  // Tracked relay state for one incoming chunk (see relayTracked()).
  private out: Buffer[] = [];
  private outFrom = 0;
  private chunk: Buffer = Buffer.alloc(0);
  private heldPending: Buffer | null = null;
  private dropping = false;
  /**
   * Answers Tessera gave the client's batch itself while this server still owes the rest of it:
   * they go out in front of the server's next bytes, in the same write (see answerAhead()).
   */
  private ahead: Buffer[] | null = null;

  /** The TCP or Unix socket, replaced by its TLS layer when the server accepts SSLRequest. */
  socket: net.Socket;
  /** Waiting for the one-byte answer to our SSLRequest. */
  private negotiating = false;
  private readonly onDataBound = (chunk: Buffer) => this.onData(chunk);
  private readonly onErrorBound = (err: Error) => {
    this.lastError ??= PgError.fatal(SqlState.ConnectionFailure, `server connection failed: ${err.message}`);
  };
  private readonly onCloseBound = () => this.handleClose();
  private readonly framer = new Framer(this);
  private sawReady = false;
  /** The socket is closed or closing (the pool moves it to its Closed state). */
  private closed = false;
  private lastError: PgError | null = null;
  private loginDone: ((err: PgError | null) => void) | null = null;
  /** The authentication exchange, while logging in. */
  private auth: ServerAuthenticator | null = null;
  private internalDone: ((err: PgError | null) => void) | null = null;
  private internalError: PgError | null = null;
  /** Rows of Tessera's own parameterised query while it runs (see query()). */
  private internalRows: (string | null)[][] | null = null;
  private readonly onClosed: (server: ServerConnection) => void;

  constructor(
    readonly target: ServerTarget,
    /** Pool key for exact reuse: clients only get servers started with their own parameters. */
    readonly variant: string,
    onClosed: (server: ServerConnection) => void,
    /** The pool's totals, where each finished query and transaction of a linked client is added. */
    private readonly counters: ServerCounters = { xacts: 0, xactUs: 0, queryUs: 0, xactTimes: zeroDurationCounts() },
  ) {
    this.onClosed = onClosed;
    this.socket = new net.Socket();
    this.socket.on('data', this.onDataBound);
    this.socket.on('error', this.onErrorBound);
    this.socket.on('close', this.onCloseBound);
  }

  /** The socket is closed or closing. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** The pool list it is on. */
  get state(): ServerState {
    return this.listState;
  }

  /** @internal Pool.move() only: the pool's lists and counters must stay in step with it. */
  setListState(state: ServerState): void {
    this.listState = state;
  }

  get isIdleInTransaction(): boolean {
    return this.txStatus !== READY_IDLE;
  }

  /**
   * Nothing owed and outside any transaction or batch: the linked client may let it go as it
   * stands (transaction mode).
   */
  get atTransactionBoundary(): boolean {
    return this.outstanding === 0 && this.txStatus === READY_IDLE && !this.unsyncedExtended && !this.midMessage && (this.responses === null || this.responses.empty);
  }

  /** A linked client's ReadyForQuery: query and transaction times for SHOW STATS and the metrics. */
  private accountReady(): void {
    const c = this.counters;
    if (this.outstanding === 0) c.queryUs += (this.lastReadyAt - this.queryStartedAt) * 1000;
    if (this.txStatus === READY_IDLE) {
      const us = (this.lastReadyAt - (this.xactStartedAt || this.queryStartedAt)) * 1000;
      c.xacts++;
      c.xactUs += us;
      observeDuration(c.xactTimes, us);
      this.xactStartedAt = 0;
      const errors = this.errorsRelayed;
      this.errorsRelayed = 0;
      this.peer!.onTransactionEnded?.(this, us, errors);
    } else if (this.xactStartedAt === 0) {
      this.xactStartedAt = this.queryStartedAt;
    }
  }

  /** Counts the ReadyForQuery messages the bytes just sent will be answered with. */
  owe(readies: number): void {
    if (readies === 0) return;
    if (this.outstanding === 0) this.queryStartedAt = Date.now();
    this.outstanding += readies;
  }

  /** Where the client's input stands after what was just sent (the release decision reads it). */
  noteClientInput(midMessage: boolean, unsyncedExtended: boolean): void {
    this.midMessage = midMessage;
    this.unsyncedExtended = unsyncedExtended;
  }

  /** The client ran something whose effect outlives its transaction here. */
  markSessionState(reason: string): void {
    this.sessionState ??= reason;
  }

  /** The client is done with this server (it left, or the login that used it is over). */
  endLink(how: 'terminated' | 'left'): void {
    this.linkEnd = how;
  }

  /** Clean again after a release: the ledger starts empty for the next client. */
  clearLedger(): void {
    this.midMessage = false;
    this.unsyncedExtended = false;
    this.sessionState = null;
    this.linkEnd = null;
    this.disturbedBy = null;
    this.holdsTempObjects = false;
  }

  /** Connects and logs in; resolves once the server said ReadyForQuery. Rejects with a PgError. */
  login(): Promise<void> {
    const t = this.target;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.lastError = PgError.fatal(SqlState.ConnectionFailure, `server connection timed out (server_connect_timeout) connecting to ${t.host}:${t.port}`);
        this.socket.destroy();
      }, t.connectTimeoutMs);
      this.loginDone = (err) => {
        clearTimeout(timer);
        this.loginDone = null;
        if (err) reject(err);
        else resolve();
      };
      const onConnect = () => {
        applySocketOptions(this.socket, t.socket);
        // TLS is asked for over TCP only (a Unix socket never leaves the machine), as in PgBouncer.
        if (t.tls.context && !t.host.startsWith('/')) {
          this.negotiating = true;
          this.socket.write(SSL_REQUEST_PACKET);
        } else {
          this.sendStartup();
        }
      };
      if (t.host.startsWith('/')) this.socket.connect({ path: `${t.host}/.s.PGSQL.${t.port}` }, onConnect);
      else this.socket.connect({ host: t.host, port: t.port }, onConnect);
    });
  }

  private sendStartup(): void {
    const t = this.target;
    const startup: Record<string, string> = { user: t.user, database: t.database };
    for (const [k, v] of t.params) startup[k] = v;
    this.socket.write(serialize.startup(startup));
  }

  /** The server's one-byte answer to SSLRequest: 'S' upgrades, 'N' goes on in plaintext if allowed. */
  private onSslAnswer(chunk: Buffer): void {
    this.negotiating = false;
    const { mode, context } = this.target.tls;
    const fail = (message: string) => {
      this.lastError = PgError.fatal(SqlState.ConnectionFailure, message);
      this.socket.destroy();
    };
    // Anything after the answer came before the handshake, unencrypted: libpq refuses it too.
    if (chunk.length > 1) return fail('server sent unencrypted data after its answer to the SSL request');
    if (chunk[0] === 0x4e /* N */) {
      if (mode === 'prefer') return this.sendStartup();
      return fail(`server does not support TLS, and server_tls_sslmode is "${mode}"`);
    }
    if (chunk[0] !== 0x53 /* S */) return fail('server sent an invalid answer to the SSL request');
    const raw = this.socket;
    raw.off('data', this.onDataBound);
    raw.off('close', this.onCloseBound);
    const host = this.target.host;
    const secure = tls.connect({
      socket: raw,
      secureContext: context!,
      // The name verify-full checks; SNI only for names, never addresses.
      host,
      servername: net.isIP(host) ? undefined : host,
      ALPNProtocols: ALPN,
      rejectUnauthorized: mode === 'verify-ca' || mode === 'verify-full',
      checkServerIdentity: mode === 'verify-full' ? tls.checkServerIdentity : () => undefined,
    });
    this.socket = secure;
    secure.on('data', this.onDataBound);
    secure.on('error', (err) => {
      this.lastError ??= PgError.fatal(SqlState.ConnectionFailure, `server TLS connection failed: ${err.message}`);
    });
    secure.on('close', this.onCloseBound);
    secure.once('secureConnect', () => this.sendStartup());
  }

  /** Links the server to a client; `track` when the client's messages are rewritten. */
  attach(peer: ServerPeer, track = false): void {
    this.peer = peer;
    this.lastUsedAt = Date.now();
    this.errorsRelayed = 0;
    this.responses = track ? new ResponseQueue() : null;
    this.ahead = null;
  }

  /**
   * Tessera's own answers to the client that are due now, while the server owes responses to
   * what followed them: sent ahead of the server's next bytes, so a batch Tessera partly
   * answered (a known Parse) still reaches the client in one write, as directly.
   */
  answerAhead(parts: readonly Buffer[]): void {
    (this.ahead ??= []).push(...parts);
  }

  detach(): void {
    // Responses still owed to a rewritten batch would leave our statement bookkeeping unsure.
    if (this.responses && !this.responses.empty) this.broken = true;
    this.responses = null;
    this.ahead = null;
    this.peer = null;
    this.lastUsedAt = Date.now();
    // Reading may have been paused for a client that was slow to read and then left: its 'drain'
    // never comes, and a paused server would never deliver the ReadyForQuery its cleanup awaits.
    resumeReading(this.socket);
  }

  /** Writes client bytes to the server; false when the server's socket buffer is full. */
  write(chunk: Buffer): boolean {
    return this.socket.write(chunk);
  }

  /** Several pieces in one send: small ones joined, large ones corked (one writev). */
  writeAll(chunks: Buffer[]): boolean {
    let total = 0;
    for (const c of chunks) total += c.length;
    if (chunks.length === 1 || total <= 65536) return this.socket.write(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, total));
    this.socket.cork();
    let ok = true;
    for (const c of chunks) ok = this.socket.write(c) && ok;
    this.socket.uncork();
    return ok;
  }

  onceDrained(resume: () => void): void {
    this.socket.once('drain', resume);
  }

  /**
   * Runs Tessera's own simple queries, pipelined, and waits for all their ReadyForQuerys.
   * Rejects with the first ErrorResponse (the rest still run to completion first).
   */
  runInternal(queries: string[]): Promise<void> {
    this.outstanding += queries.length;
    this.internalError = null;
    return new Promise((resolve, reject) => {
      this.internalDone = (err) => {
        this.internalDone = null;
        if (err) reject(err);
        else resolve();
      };
      this.socket.write(Buffer.concat(queries.map((q) => serialize.query(q))));
    });
  }

  /**
   * Runs one parameterised statement of Tessera's own (extended protocol, unnamed statement, so
   * values are never spliced into SQL) and returns its rows as text. Rejects with the server's
   * ErrorResponse.
   */
  query(sql: string, params: (string | null)[]): Promise<(string | null)[][]> {
    this.outstanding++;
    this.internalError = null;
    const rows: (string | null)[][] = [];
    this.internalRows = rows;
    return new Promise((resolve, reject) => {
      this.internalDone = (err) => {
        this.internalDone = null;
        this.internalRows = null;
        if (err) reject(err);
        else resolve(rows);
      };
      this.socket.write(extendedQuery(sql, params));
    });
  }

  /**
   * A client left while this server still owed it ReadyForQuery: wait until every one has arrived,
   * so the server is quiet before anyone else gets it. `cancel` first when the client vanished
   * (its query is abandoned); not when it said Terminate after pipelining a query, which
   * PostgreSQL would have run to completion. Rejects after `timeoutMs`.
   */
  drain(cancel: boolean, timeoutMs: number): Promise<void> {
    if (cancel) this.cancel();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.internalDone = null;
        reject(PgError.fatal(SqlState.QueryCanceled, 'server did not finish the abandoned query in time'));
      }, timeoutMs);
      this.internalError = null;
      this.internalDone = (err) => {
        clearTimeout(timer);
        this.internalDone = null;
        // The cancelled query's own error (57014) is expected; only a closed server is a failure.
        if (err && this.closed) reject(err);
        else resolve();
      };
      if (this.outstanding === 0) this.internalDone(null);
    });
  }

  /**
   * Sends a CancelRequest for this server's current query over a fresh connection. Until
   * PostgreSQL has closed that connection (it has signalled the backend by then), the server is
   * "being canceled" and must not serve anyone else: a late cancel would hit their query.
   */
  cancel(): void {
    const t = this.target;
    const conn = t.host.startsWith('/') ? net.connect({ path: `${t.host}/.s.PGSQL.${t.port}` }) : net.connect({ host: t.host, port: t.port });
    this.cancelsInFlight++;
    conn.setTimeout(t.connectTimeoutMs, () => conn.destroy());
    conn.on('error', () => conn.destroy());
    conn.on('connect', () => conn.end(serialize.cancel(this.pid, this.secret)));
    conn.on('close', () => {
      if (--this.cancelsInFlight > 0) return;
      const waiting = this.afterCancels;
      this.afterCancels = null;
      waiting?.();
    });
  }

  /** Runs `then` once no cancel request for this server is in flight (at once if none is). */
  whenNotBeingCanceled(then: () => void): void {
    if (this.cancelsInFlight === 0) then();
    else this.afterCancels = then;
  }

  /** Closes politely (Terminate) unless already gone. The pool calls it through closeServer(). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.socket.writable) this.socket.end(serialize.end());
    else this.socket.destroy();
    // A server that ignores Terminate must not hold the socket open.
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }


  // ---- receiving ----

  private onData(chunk: Buffer): void {
    if (this.negotiating) return this.onSslAnswer(chunk);
    this.sawReady = false;
    if (this.responses && this.peer) return this.relayTracked(chunk);
    if (!this.frame(chunk)) return;
    const peer = this.peer;
    if (peer) {
      if (!peer.writeFromServer(chunk)) {
        this.socket.pause();
        peer.onceDrained(() => resumeReading(this.socket));
      }
      if (this.sawReady) peer.onServerReady(this);
    }
  }

  /** Feeds the framer; a server that sends garbage is closed (false). */
  private frame(chunk: Buffer): boolean {
    try {
      this.framer.push(chunk);
      return true;
    } catch (err) {
      this.broken = true;
      this.lastError = PgError.fatal(SqlState.ProtocolViolation, `server sent invalid data: ${(err as Error).message}`);
      this.socket.destroy();
      return false;
    }
  }

  /**
   * The relay while a client's messages are rewritten: responses Tessera caused itself (to an
   * injected Parse or Close) are cut out, and responses Tessera makes up are spliced in where the
   * server's own would have been. A trailing partial header is held back until its message is
   * known, so nothing that might be cut has been sent already.
   */
  private relayTracked(chunk: Buffer): void {
    this.heldPending = this.framer.heldHeaderBytes > 0 ? this.framer.heldHeader() : null;
    this.out = this.ahead ?? [];
    this.ahead = null;
    this.outFrom = 0;
    this.chunk = chunk;
    if (!this.frame(chunk)) return;
    this.emitUpTo(chunk.length - this.framer.heldHeaderBytes);
    const peer = this.peer;
    if (!peer) return;
    const out = this.out;
    this.out = [];
    // One write for the chunk: a part per write would be a system call each.
    const ok = out.length === 0 || peer.writeFromServer(out.length === 1 ? out[0] : Buffer.concat(out));
    if (!ok) {
      this.socket.pause();
      peer.onceDrained(() => resumeReading(this.socket));
    }
    if (this.sawReady) peer.onServerReady(this);
  }

  /** Queues this chunk's bytes up to `end` (after any held header bytes) for the client. */
  private emitUpTo(end: number): void {
    if (this.heldPending) {
      this.out.push(this.heldPending);
      this.heldPending = null;
    }
    if (end > this.outFrom) this.out.push(this.chunk.subarray(this.outFrom, end));
    this.outFrom = Math.max(this.outFrom, end);
  }

  onHeader(type: number, _length?: number, _chunk?: Buffer, start?: number): boolean {
    if (this.closed) return false;
    if (this.loginDone) return true; // login reads every message
    if (this.internalDone) {
      // Tessera's own queries, or an abandoned query's results streaming past: only the end,
      // errors and our own rows matter.
      return (
        type === Backend.ReadyForQuery ||
        type === Backend.ParameterStatus ||
        type === Backend.ErrorResponse ||
        (type === Backend.DataRow && this.internalRows !== null)
      );
    }
    if (this.peer) {
      if (this.responses) {
        if (this.responses.swallows(type) || (type === Backend.ErrorResponse && this.responses.reviewsError())) {
          // Cut this message: send what came before it, skip it (its body ends the message).
          if (start === -1) this.heldPending = null;
          else this.emitUpTo(start!);
          this.dropping = true;
          return true;
        }
        return TRACKED_RESPONSES.has(type) || type === Backend.ParameterStatus;
      }
      // Relay: only ReadyForQuery, ParameterStatus and (rare) errors matter to the pool. A FATAL
      // seen here is already relayed, so the client is not told a second time when we close.
      return type === Backend.ReadyForQuery || type === Backend.ParameterStatus || type === Backend.ErrorResponse;
    }
    return true; // idle reads every message
  }

  onBody(type: number, body: Buffer): void {
    let dropped = false;
    if (this.responses && this.peer) {
      // First, so that answers Tessera makes up right after it see the status it reports.
      if (type === Backend.ReadyForQuery) this.txStatus = body[0];
      if (this.dropping) {
        dropped = true;
        this.dropping = false;
        this.outFrom = this.framer.offset;
      }
      if (dropped) this.responses.inspect(type, body);
      const due = this.responses.onResponse(type);
      if (due.length > 0) {
        this.emitUpTo(this.framer.offset);
        this.out.push(...due);
      }
    }
    switch (type) {
      case Backend.ReadyForQuery:
        this.txStatus = body[0];
        if (this.outstanding > 0) this.outstanding--;
        this.lastReadyAt = Date.now();
        this.sawReady = true;
        if (this.loginDone) this.finishLogin(null);
        else if (this.internalDone) {
          if (this.outstanding === 0) this.internalDone(this.internalError);
        } else if (this.peer && !dropped) this.accountReady(); // not Tessera's own injected queries
        return;
      case Backend.ParameterStatus: {
        const r = new BodyReader(body);
        const name = r.cstring();
        const value = r.cstring();
        this.status.set(name, value);
        // A client's SET of a reported parameter (transaction mode remembers it for the client).
        // (A dropped one answers Tessera's own restoring query: it sets what should be there.)
        if (this.peer && !this.internalDone && !dropped) this.peer.onParameterStatus?.(name, value);
        return;
      }
      case Backend.ErrorResponse: {
        const err = PgError.fromServer(body);
        if (this.loginDone) return this.finishLogin(err);
        if (this.internalDone) this.internalError ??= err;
        else if (dropped && this.responses?.failed?.statement !== undefined) {
          // Cut at its header (reviewsError): the client's relay says what the client gets.
          const peer = this.peer;
          const instead = peer?.onStatementError ? peer.onStatementError(this, this.responses.failed.statement, err, body) : wholeMessage(Backend.ErrorResponse, body);
          if (instead !== null) {
            this.out.push(instead);
            dropped = false;
          }
        }
        // An error outside any query (admin shutdown of an idle server) comes before a close;
        // a query's own error, relayed to its client, is not the server's last word.
        if (!this.peer || err.fields.severity === 'FATAL') this.lastError = err;
        // The linked client's own error (not one Tessera swallowed): its transaction ended in error.
        else if (!dropped && !this.internalDone) this.errorsRelayed++;
        return;
      }
      case Backend.Authentication:
        if (this.loginDone) this.authenticate(body);
        return;
      case Backend.DataRow:
        this.internalRows?.push(decodeDataRow(body));
        return;
      case Backend.BackendKeyData: {
        const r = new BodyReader(body);
        this.pid = r.int32();
        this.secret = r.int32();
        return;
      }
      default:
        // Notices, NegotiateProtocolVersion and anything else during login/cleanup carry nothing we need.
        return;
    }
  }

  private authenticate(body: Buffer): void {
    try {
      const answer = (this.auth ??= new ServerAuthenticator(this.target.user, this.target.credentials)).answer(body);
      if (answer) this.socket.write(answer);
    } catch (err) {
      this.finishLogin(err instanceof PgError ? err : PgError.fatal(SqlState.ConnectionFailure, `server login failed: ${(err as Error).message}`));
    }
  }

  private finishLogin(err: PgError | null): void {
    const done = this.loginDone;
    if (!done) return;
    if (err) {
      this.lastError = err;
      this.socket.destroy();
    }
    done(err);
  }

  private handleClose(): void {
    const wasLogin = this.loginDone !== null;
    this.closed = true;
    const err = this.lastError;
    if (wasLogin) {
      this.finishLogin(err ?? PgError.fatal(SqlState.ConnectionFailure, 'server closed the connection during login'));
    }
    this.internalDone?.(err ?? PgError.fatal(SqlState.ConnectionFailure, 'server closed the connection unexpectedly'));
    const peer = this.peer;
    this.peer = null;
    peer?.onServerLost(this, err);
    this.onClosed(this);
  }
}

/** A DataRow's columns as text (Tessera's own queries use the text format). */
/** One parameterised statement as Parse/Bind/Execute/Sync on the unnamed statement and portal. */
export function extendedQuery(sql: string, params: (string | null)[]): Buffer {
  return Buffer.concat([serialize.parse({ text: sql }), serialize.bind({ values: params }), serialize.execute(), serialize.sync()]);
}

export function decodeDataRow(body: Buffer): (string | null)[] {
  const r = new BodyReader(body);
  const n = body.readInt16BE(0);
  r.bytes(2);
  const row: (string | null)[] = [];
  for (let i = 0; i < n; i++) {
    const len = r.int32();
    row.push(len < 0 ? null : r.bytes(len).toString('utf8'));
  }
  return row;
}
