/**
 * The transaction-mode relay: the client's messages are read whole, one by one, so that its
 * backend can change between transactions without the client noticing. Its prepared statements
 * are ClientStatements' (client-statements.ts), which send through this relay (StatementWire);
 * the relay puts the client's session settings on each backend (session-settings.ts) and notes
 * what pins the client to its backend (LISTEN/UNLISTEN are relayed without a pin:
 * notifications.ts). What it sends to a backend leaves in one write per incoming chunk.
 *
 * It owns the client's session settings and its pin; the client owns the socket and the server
 * link (see RelayLink).
 */
import * as msg from '../protocol/messages.js';
import { Frontend, Backend, type PgError } from '../protocol/messages.js';
import type { Framer } from '../protocol/framing.js';
import type { ServerConnection } from '../pool/server-connection.js';
import type { Pool } from '../pool/pool.js';
import { readParse, wholeMessage, isStalePlan, isShapeMismatch, stalePlanError, type Statement } from '../pool/prepared.js';
import { ClientStatements, type StatementWire } from './client-statements.js';
import { Expect, type Entry } from '../pool/response-queue.js';
import { log } from '../log.js';
import { outlivesTransaction, changesSettings, resetsToStartup, rebindsSession, mayAffectSession, TEMP_OBJECTS } from './session-state.js';
import { restoreSql, readBackSql, withReported, SettingsReader, type Settings } from './session-settings.js';
import { NO_SESSION_SETTINGS } from '../pool/server-connection.js';
import type { ClientAccount } from '../metrics/accessors.js';
import { ClientNotifications, listenStatements } from './notifications.js';
import { listenerFor } from '../pool/listener.js';

/** What the relay needs from the client it serves. */
export interface RelayLink {
  readonly id: number;
  /** The linked server, if any. */
  readonly server: ServerConnection | null;
  readonly variant: string;
  /** A session-token client with a ticket: statements that re-bind sessions matter. */
  readonly holdsTicket: boolean;
  /** An end user's login (session token, connect_query): its per-accessor counts; else null. */
  readonly account: ClientAccount | null;
  /** Session SQL a client can disturb is watched (see noteSessionState). */
  readonly watchingSessionSql: boolean;
  noteSessionState(sql: Buffer): void;
  /** Bytes for the client, in order. */
  writeFromServer(bytes: Buffer): boolean;
  /** Messages are held for a server not linked yet (anything Tessera answers must wait behind them). */
  readonly holding: boolean;
  /** Bytes for the server, now (pausing the client while the server's socket is full). */
  sendToServer(server: ServerConnection, bytes: Buffer | Buffer[]): void;
  /** No server is linked: keep the message and ask for one. */
  holdMessage(type: number, body: Buffer, raw: Buffer): void;
  /** The client said Terminate. */
  terminate(): void;
}

const STATEMENT = 0x53; // 'S' in Describe/Close
const NO_BYTES = Buffer.alloc(0);

const NO_RESETS: ReadonlySet<string> = new Set();

/** A statement Tessera rewrote (LISTEN/UNLISTEN): its own CommandComplete is replaced. */
const SWALLOWED_EXECUTE: Entry = Object.freeze({ expect: Expect.Execute, swallow: true });
/** A Parse sent again whose client already has its ParseComplete (see resend()). */
const SWALLOWED_PARSE: Entry = Object.freeze({ expect: Expect.Parse, swallow: true });

/** Queue entries that carry nothing but their kind, shared: one per message would be garbage. */
const PLAIN_ENTRIES: Entry[] = [];
for (const expect of [Expect.Parse, Expect.Bind, Expect.DescribeStatement, Expect.DescribePortal, Expect.Execute, Expect.Close, Expect.Ready]) {
  PLAIN_ENTRIES[expect] = Object.freeze({ expect });
}

export class TransactionRelay implements StatementWire {
  /** The client's prepared statements; null when max_prepared_statements = 0 (they pass through). */
  private readonly statements: ClientStatements | null;
  /** The client's startup values a session can set (canonical), what RESET returns to. */
  private startup: Settings = NO_SESSION_SETTINGS;
  /**
   * The session settings this client should see beyond a fresh backend's (its startup values, then
   * what its SETs left): applied on whichever backend serves it next, a backend left with another
   * client's values being put back first.
   */
  private settings: Settings = NO_SESSION_SETTINGS;
  /** A statement may have changed the settings: they are read back when the transaction is over. */
  private settingsUnsure = false;
  /** Startup values a RESET returned to the backend's defaults since the last read-back. */
  private resets: 'all' | Set<string> | null = null;
  /**
   * Why the client keeps its backend until it disconnects (LISTEN, a session advisory lock, a WITH
   * HOLD cursor, temp objects); null while it is pooled per transaction. The backend is reset
   * before anyone else gets it (closed, for temp objects).
   */
  pinReason: string | null = null;
  /** After Tessera answered a message with an error itself, drop the batch up to its Sync. */
  private discarding = false;
  private currentChunk: Buffer = NO_BYTES;
  private msgChunk: Buffer | null = null;
  private msgStart = -1;
  /** Unchanged messages of the current chunk not yet written (see queue()). */
  private batch: Buffer | null = null;
  /** Earlier pieces for the server, before `batch`, not yet written (see queue()). */
  private queued: Buffer[] | null = null;
  /** Inside relayChunk(): whatever is queued for the server goes out once, when the chunk is done. */
  private relaying = false;
  /** Tessera's own answers due while a chunk is read: they leave with the server's reply (see flush()). */
  private dueForClient: Buffer[] | null = null;
  /** The client's channels, from its first LISTEN on (see notifications.ts); null for most clients. */
  private notifications: ClientNotifications | null = null;
  /**
   * Messages held from a LISTEN on until the pool's listener LISTENs on its channels, so that no
   * notification committed after the client's LISTEN is missed; null while nothing waits.
   */
  private gated: { type: number; body: Buffer; raw: Buffer }[] | null = null;
  /** The listener could not LISTEN for the gated message: it runs on the backend, pinned, as before. */
  private bypassListener = false;
  /** auto_prepare: the client's batch as it sent it, while it may have to be sent again (see record()); else null. */
  private recorded: Buffer[] | null = null;
  /** The array `recorded` reuses (made at the first auto_prepare batch). */
  private recording: Buffer[] | null = null;
  /** The statement the recorded batch's Parse was mapped to. */
  private recordedFor: Statement | null = null;
  /** The recorded batch reached its Sync. */
  private recordedWhole = false;

  constructor(
    private readonly link: RelayLink,
    /** The client's pool: its settings, counters and starting parameter values. */
    private readonly pool: Pool,
  ) {
    // The relay is its statements' wire itself: no wire object and closures per client.
    this.statements = pool.settings.maxPreparedStatements > 0 ? new ClientStatements(pool, this) : null;
  }

  get pinned(): boolean {
    return this.pinReason !== null;
  }

  /** The client's checked startup values (login): its settings until it changes them. */
  startWith(startup: Settings): void {
    this.startup = this.settings = startup;
  }

  /** One chunk of client bytes: the client's framer calls back (onHeader, onMessage) per message. */
  relayChunk(chunk: Buffer, framer: Framer): void {
    this.currentChunk = chunk;
    this.relaying = true;
    try {
      framer.push(chunk);
    } finally {
      this.relaying = false;
    }
    const server = this.link.server;
    if (server) this.flush(server);
    else {
      this.batch = this.queued = null; // the server went away mid-chunk; nothing may follow it
      this.answerNow(null);
    }
  }

  /** A message header from the framer: remember where the message starts in the chunk. */
  onHeader(chunk: Buffer, start: number): void {
    this.msgChunk = chunk;
    this.msgStart = start;
  }

  /** One whole client message (`end`: the framer's offset just past it). */
  onMessage(type: number, body: Buffer, end: number): void {
    // The message's own bytes when it lay whole in this chunk; else rebuilt from its parts.
    const raw = this.msgChunk === this.currentChunk && this.msgStart >= 0 ? this.currentChunk.subarray(this.msgStart, end) : wholeMessage(type, body);
    if (type === Frontend.Terminate) {
      // What came before the Terminate still goes to the server, as PostgreSQL would run it.
      const server = this.link.server;
      if (server) this.flush(server);
      return this.link.terminate();
    }
    if (this.gated !== null) {
      this.gated.push({ type, body, raw });
      return;
    }
    if (!this.link.server) {
      // What Tessera can answer itself waits for no server (nor makes anyone else wait).
      if (!this.link.holding && this.statements?.answerAlone(type, body)) return;
      return this.link.holdMessage(type, body, raw);
    }
    this.forward(type, body, raw);
  }

  /**
   * The server's error to a message rewritten to `statement` (see ServerPeer.onStatementError):
   * what the client gets instead, or null when the batch is sent again.
   */
  onStatementError(server: ServerConnection, statement: Statement, err: PgError, body: Buffer): Buffer | null {
    const statements = this.statements;
    if (statements === null) return wholeMessage(Backend.ErrorResponse, body);
    const stale = isStalePlan(err) ? wholeMessage(Backend.ErrorResponse, body) : isShapeMismatch(err) ? stalePlanError() : null;
    if (stale !== null) {
      statements.staled(server, statement, stale);
      if (this.retryBatch(server, statement)) return null;
      return stale;
    }
    return statements.errorFor(statement, body);
  }

  /**
   * auto_prepare turned the client's unnamed statement into a shared one that PostgreSQL now
   * finds stale (a schema change made outside Tessera): where PostgreSQL had parsed the unnamed
   * statement afresh and never failed, Tessera sends the batch again as the client sent it, and
   * the client sees only that answer. Only a recorded batch (see recordBatch) whose Bind failed
   * and after which nothing is owed: nothing in it ran (the error came at its only Bind, the
   * implicit transaction is rolled back), and nothing after it was sent.
   */
  private retryBatch(server: ServerConnection, statement: Statement): boolean {
    const batch = this.recorded;
    this.recorded = null;
    const responses = server.responses;
    if (batch === null || !this.recordedWhole || this.recordedFor !== statement || responses === null || !responses.onlyReadyLeft) return false;
    const again = batch.slice(); // `recording` is reused by the next batch
    batch.length = 0;
    responses.retryAtReady(() => this.resend(server, again));
    return true;
  }

  /** The recorded batch again, its unnamed Parse parsed afresh and its ParseComplete Tessera's own (the client has one). */
  private resend(server: ServerConnection, batch: Buffer[]): void {
    if (this.link.server !== server) return;
    this.statements?.forgetAuto();
    const [parse, ...rest] = batch;
    this.send(server, parse, 0, SWALLOWED_PARSE);
    for (const raw of rest) this.forward(raw[0], raw.subarray(5), raw);
    this.flush(server);
  }

  /**
   * Keeps the client's messages from an auto_prepare Parse that opened a batch on an idle
   * backend up to its Sync, for retryBatch. A batch with more than its one Bind right after the
   * Parse, or anything after its Sync, is not kept (something in it could have run or been sent).
   */
  private record(type: number, raw: Buffer): void {
    const batch = this.recorded!;
    if (this.recordedWhole || (batch.length === 1 && type !== Frontend.Bind) || (batch.length > 1 && type === Frontend.Bind)) {
      this.recorded = null;
      batch.length = 0; // no chunk kept alive for a batch that will not be sent again
      return;
    }
    batch.push(raw);
    if (type === Frontend.Sync) this.recordedWhole = true;
  }

  /** Messages held while no server was linked, now that one is. */
  forwardHeld(server: ServerConnection, held: readonly { type: number; body: Buffer; raw: Buffer }[]): void {
    for (const m of held) {
      if (this.gated !== null) this.gated.push(m);
      else this.forward(m.type, m.body, m.raw);
    }
    // Assigned while the chunk is read (an idle server): relayChunk sends it all in one write.
    if (!this.relaying) this.flush(server);
  }

  /**
   * Sends one client message to the linked server. Prepared statements (their names, what
   * Tessera answers itself) are the client's ClientStatements' business.
   */
  private forward(type: number, body: Buffer, raw: Buffer): void {
    const server = this.link.server!;
    const pool = this.pool;
    if (this.discarding && type !== Frontend.Sync) return;
    if (this.recorded !== null) this.record(type, raw);
    const statements = this.statements;
    switch (type) {
      case Frontend.Parse: {
        pool.counters.clientParses++;
        const { name, tail } = readParse(body);
        this.noteStatement(server, tail, null);
        if (statements === null) return this.forwardExpecting(raw, Expect.Parse);
        statements.parse(server, name, tail, raw);
        if (statements.autoBatch !== null) {
          // One array for the client's life: an auto_prepare batch is recorded in every transaction.
          const batch = (this.recorded = this.recording ??= []);
          batch.length = 0;
          batch.push(raw);
          this.recordedFor = statements.autoBatch;
          this.recordedWhole = false;
        }
        return;
      }
      case Frontend.Bind:
        pool.counters.binds++;
        if (statements === null) return this.forwardExpecting(raw, Expect.Bind);
        return statements.bind(server, body, raw);
      case Frontend.Describe:
        if (statements === null) return this.forwardExpecting(raw, body[0] === STATEMENT ? Expect.DescribeStatement : Expect.DescribePortal);
        return statements.describe(server, body, raw);
      case Frontend.Close:
        if (statements === null) return this.forwardExpecting(raw, Expect.Close);
        return statements.close(body, raw);
      case Frontend.Execute:
        if (statements === null) return this.forwardExpecting(raw, Expect.Execute);
        return statements.execute(server, body, raw);
      case Frontend.Sync:
        this.discarding = false;
        if (statements === null) return this.forwardExpecting(raw, Expect.Ready);
        return statements.sync(server, raw);
      case Frontend.Query:
        if (this.noteStatement(server, body, raw)) return;
        if (statements === null) return this.forwardExpecting(raw, Expect.Ready);
        return statements.query(server, body, raw);
      case Frontend.FunctionCall:
        return this.forwardExpecting(raw, Expect.Ready);
      default:
        // Flush, CopyData, CopyDone, CopyFail: no response of their own.
        this.queue(server, raw, 0);
        return;
    }
  }

  // ---- StatementWire: how ClientStatements (and the relay itself) sends and answers ----

  forwardExpecting(bytes: Buffer, expect: Expect): void {
    const server = this.link.server!;
    if (expect === Expect.Ready) {
      this.pool.counters.queries++;
      const account = this.link.account;
      if (account !== null) account.noteQueries(1);
    }
    this.queue(server, bytes, expect === Expect.Ready ? 1 : 0);
    this.deliver(server.responses!.push(PLAIN_ENTRIES[expect]));
  }

  /** A response Tessera gives itself, in its place among the server's (made when due if a function). */
  answer(bytes: Buffer | (() => Buffer), onSkipped?: () => void): void {
    const entry: Entry = typeof bytes === 'function' ? { expect: Expect.Synthetic, synthesize: bytes, onSkipped } : { expect: Expect.Synthetic, synthetic: bytes, onSkipped };
    this.deliver(this.link.server!.responses!.push(entry));
  }

  /** Bytes for the server, completed by `entry` (Tessera's own, or a client message it watches). */
  send(server: ServerConnection, bytes: Buffer, readies: number, entry: Entry): void {
    this.queue(server, bytes, readies);
    this.deliver(server.responses!.push(entry));
  }

  /** Tessera answered an extended message with an error: drop the batch up to its Sync. */
  skipToSync(): void {
    this.discarding = true;
  }

  writeToClient(bytes: Buffer): void {
    this.link.writeFromServer(bytes);
  }

  /** A statement Tessera may answer without a server: nothing in it can pin or re-bind. */
  needsNoServer(sql: Buffer): boolean {
    if (this.link.watchingSessionSql || this.link.holdsTicket) return false;
    return outlivesTransaction(sql.toString('utf8', 0, Math.min(sql.length, 8192))) === null;
  }

  private deliver(due: readonly Buffer[]): void {
    if (due.length === 0) return;
    if (this.relaying) (this.dueForClient ??= []).push(...due);
    else for (const b of due) this.link.writeFromServer(b);
  }

  /**
   * Tessera's answers held while the chunk was read: ahead of the server's reply when `server`
   * still owes the rest of the batch (one write for the client, as directly), else now.
   */
  private answerNow(server: ServerConnection | null): void {
    const due = this.dueForClient;
    if (due === null) return;
    this.dueForClient = null;
    if (server !== null && server.responses !== null && !server.responses.empty) server.answerAhead(due);
    else this.link.writeFromServer(due.length === 1 ? due[0] : Buffer.concat(due));
  }

  /**
   * Queues bytes for the server (answered by `readies` ReadyForQuery messages); flush() sends
   * them. Consecutive messages forwarded unchanged from the chunk being read become one slice of
   * it; anything else (a rewritten or injected message) queues behind what came before, so order
   * is kept and a client's batch, with a ticket redemption or parameter restore ahead of it, still
   * leaves in one write.
   */
  queue(server: ServerConnection, bytes: Buffer, readies: number): void {
    server.owe(readies);
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

  private flush(server: ServerConnection): void {
    this.answerNow(server);
    const batch = this.batch;
    const queued = this.queued;
    this.batch = this.queued = null;
    if (queued === null) {
      if (batch) this.link.sendToServer(server, batch);
      return;
    }
    if (batch) queued.push(batch);
    this.link.sendToServer(server, queued);
  }

  /**
   * What a statement (Query text or Parse tail) leaves beyond its transaction: session state pins
   * the client to this backend; a call that re-binds sessions leaves the backend's binding unknown.
   * The text is decoded only when one of the two can still change something, or the client has
   * LISTENed, and only when its bytes name something the checks look for (mayAffectSession: not
   * for a plain SELECT). A simple Query (`raw`) of LISTEN/UNLISTEN is relayed here instead (true).
   */
  private noteStatement(server: ServerConnection, sql: Buffer, raw: Buffer | null): boolean {
    const account = this.link.account;
    if (account !== null && account.wantsStatements) account.noteStatement(sql);
    if (this.link.watchingSessionSql) this.link.noteSessionState(sql);
    const holdsTicket = this.link.holdsTicket;
    const listens = this.notifications !== null && raw !== null;
    if (this.pinReason !== null && !holdsTicket && !listens) return false;
    const end = Math.min(sql.length, 8192);
    if (!mayAffectSession(sql, end)) return false;
    const text = sql.toString('utf8', 0, end);
    let relayed = false;
    if (this.pinReason === null || listens) {
      const reason = this.pinReason === null ? outlivesTransaction(text) : null;
      if (raw !== null && (reason === 'listen' || (listens && /listen/i.test(text)))) relayed = this.relayListen(server, text, sql, raw);
      if (!relayed && reason) this.pinTo(server, reason);
      else if (!relayed && this.pinReason === null && changesSettings(text)) this.noteSettingsChange(server, resetsToStartup(text));
    }
    if (holdsTicket && rebindsSession(text)) server.boundSession = null;
    return relayed;
  }

  /**
   * LISTEN/UNLISTEN without a pin (see notifications.ts): false when the Query is not one
   * Tessera relays so (mixed with other statements, an unusual name) and must pin as before.
   */
  private relayListen(server: ServerConnection, text: string, body: Buffer, raw: Buffer): boolean {
    if (this.bypassListener || body.length > 8192) return false; // a text cut at 8 KiB is no LISTEN
    const actions = listenStatements(text.endsWith('\0') ? text.slice(0, -1) : text);
    if (actions === null) return false;
    if (this.notifications === null && !actions.some((a) => a.kind === 'listen')) return false;
    const n = (this.notifications ??= new ClientNotifications(this.link, listenerFor(this.pool)));
    if (!n.takesPart(actions)) return false; // UNLISTEN on a backend that listens to nothing: as it is
    const channels = n.hold(actions);
    if (!n.listener.isListening(channels)) {
      this.gated = [{ type: Frontend.Query, body, raw }];
      n.listener.whenListening(channels, (ok) => {
        if (!ok) n.settle(channels);
        this.openGate(ok);
      });
      return true;
    }
    const { query, answers } = n.rewrite(actions);
    this.pool.counters.queries++;
    this.queue(server, query, 1);
    const responses = server.responses!;
    for (const answer of answers) {
      responses.push(SWALLOWED_EXECUTE);
      this.deliver(responses.push({ expect: Expect.Synthetic, synthetic: answer }));
    }
    this.deliver(responses.push(PLAIN_ENTRIES[Expect.Ready]));
    return true;
  }

  /** The listener LISTENs on a gated LISTEN's channels (or cannot: `ok` false): its messages go on, in order. */
  private openGate(ok: boolean): void {
    const held = this.gated ?? [];
    this.gated = null;
    this.bypassListener = !ok;
    for (const m of held) {
      // A later LISTEN among them may close the gate again (forward() sets it).
      const again = this.gated as typeof held | null;
      if (again !== null) again.push(m);
      else if (!this.link.server) this.link.holdMessage(m.type, m.body, m.raw);
      else this.forward(m.type, m.body, m.raw);
    }
    this.bypassListener = false;
    const server = this.link.server;
    if (server) this.flush(server);
  }

  /** Between the client's transactions: notifications that waited for it go out now. */
  onIdle(): void {
    this.notifications?.flush();
  }

  /** The client is gone: its channels are let go. */
  close(): void {
    this.notifications?.close();
    this.gated = null;
  }

  /** The client keeps `server` until it disconnects. */
  pinTo(server: ServerConnection, reason: string): void {
    if (this.pinReason !== null) return;
    this.pinReason = reason;
    server.markSessionState(reason);
    // Pinned for good: its settings stay where they are, and the pool's reset clears them.
    server.sessionSettings = null;
    if (reason === TEMP_OBJECTS) server.holdsTempObjects = true;
    log.debug({ client: this.link.id, reason }, 'client pinned to its server: session state outlives its transaction');
  }

  /** What the server has is unknown until the transaction is over and its settings are read back. */
  private noteSettingsChange(server: ServerConnection, resets: 'all' | string[] | null): void {
    this.settingsUnsure = true;
    server.sessionSettings = null;
    if (resets === null || this.resets === 'all') return;
    if (resets === 'all') {
      this.resets = 'all';
      return;
    }
    const names = this.resets ?? new Set<string>();
    for (const name of resets) names.add(name);
    this.resets = names;
  }

  /** A ParameterStatus the client saw: a reported parameter its own statement changed. */
  onParameterStatus(name: string, value: string): void {
    const server = this.link.server;
    // Read back in full after the transaction anyway.
    if (this.settingsUnsure || this.pinReason !== null || !server) return;
    this.settings = withReported(this.settings, name, value);
    server.sessionSettings = this.settings;
  }

  /**
   * Before this client's messages on a newly linked backend: make its settings what this client
   * should see, undoing another client's. One injected query, pipelined, whose every reply Tessera
   * swallows.
   */
  restoreParameters(server: ServerConnection): void {
    // The common case costs one identity test: the backend already carries these very settings.
    const sql = restoreSql(server.sessionSettings, this.settings);
    server.sessionSettings = this.settings;
    if (sql === null) return;
    this.queue(server, msg.simpleQuery(sql), 1);
    server.responses!.push({ expect: Expect.Ready, swallowAll: true });
  }

  /**
   * At the end of a transaction that may have changed settings (the server is idle, nothing of the
   * client's is in flight): put back the startup values a RESET dropped and read the session's
   * settings back from the server, which then serve as this client's. True when the query went
   * out: the server is released at its ReadyForQuery instead.
   */
  readBackSettings(server: ServerConnection): boolean {
    if (!this.settingsUnsure || this.pinReason !== null) return false;
    this.settingsUnsure = false;
    const reader = new SettingsReader();
    this.queue(server, msg.simpleQuery(readBackSql(this.startup, this.resets ?? NO_RESETS)), 1);
    this.resets = null;
    server.responses!.push({
      expect: Expect.Ready,
      swallowAll: true,
      inspect: (type, body) => {
        const settings = reader.onResponse(type, body);
        if (settings === undefined) return;
        // Temp objects were made by something no statement text showed (a function, say).
        if (reader.tempNamespace) this.pinTo(server, TEMP_OBJECTS);
        // A failed read leaves the backend unknown (reset before its next client) and the client as it was.
        else if (settings !== null) this.settings = server.sessionSettings = settings;
      },
    });
    this.flush(server);
    return true;
  }
}
