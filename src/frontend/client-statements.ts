/**
 * A transaction-mode client's prepared statements, as PostgreSQL would keep them for a direct
 * connection, while the client moves from backend to backend:
 * - protocol-level statements: the client's names map to Tessera's shared per-text statements
 *   (tessera_<hash>), prepared on whichever backend serves the client just before use;
 * - SQL-level PREPARE: kept under the client's own name, replayed on the backend that serves an
 *   EXECUTE (a backend holding another client's statement of that name drops it first), so
 *   PostgreSQL itself answers with the client's names;
 * - DEALLOCATE name / DEALLOCATE ALL change only this client's view (Tessera answers them, simple
 *   or extended, named or unnamed); DISCARD ALL runs on the backend, whose statements Tessera then
 *   forgets and closes, so no other client ever meets a missing statement;
 * - a schema change (DDL through Tessera, or a 0A000 "cached plan must not change result type")
 *   gives new preparations new server statements, while an earlier preparation keeps its own and
 *   PostgreSQL's verdict on it (see KnownStatements), so drivers recover as they do directly;
 * - a Parse of a text some backend has parsed, and the Sync after it, are answered with no
 *   backend at all (answerAlone), so synchronous preparers cannot wait on a busy pool.
 * The transaction relay owns the wire (StatementWire); this class owns the client's names.
 */
import * as msg from '../protocol/messages.js';
import type { ServerConnection } from '../pool/server-connection.js';
import type { Pool } from '../pool/pool.js';
import { Frontend } from '../protocol/messages.js';
import { readParse, readBind, readTarget, statementFor, renameInError, parseMessage, bindMessage, describeStatement, closeStatement, PARSE_COMPLETE, BIND_COMPLETE, CLOSE_COMPLETE, NO_DATA, NO_PARAMETERS, type Statement } from '../pool/prepared.js';
import { Expect, type Entry } from '../pool/response-queue.js';
import { wordAt } from './session-state.js';

/** How the relay sends and answers for this class. */
export interface StatementWire {
  /** The client's message to the server, as it is or rewritten, with a plain queue entry. */
  forwardExpecting(bytes: Buffer, expect: Expect): void;
  /** Bytes for the server (answered by `readies` ReadyForQuery), completed by `entry`. */
  send(server: ServerConnection, bytes: Buffer, readies: number, entry: Entry): void;
  /** Tessera's own answer, in its place among the server's (made when due if a function). */
  answer(bytes: Buffer | (() => Buffer), onSkipped?: () => void): void;
  /** Tessera answered an extended message with an error: drop the batch up to its Sync. */
  skipToSync(): void;
  /** No server linked (answerAlone): bytes straight to the client. */
  writeToClient(bytes: Buffer): void;
  /** No server linked (answerAlone): nothing in the statement needs a backend's attention (session state). */
  needsNoServer(sql: Buffer): boolean;
}

const enum Kind {
  Deallocate,
  DeallocateAll,
  DiscardAll,
}
/** A statement Tessera runs itself (DEALLOCATE) or watches (DISCARD ALL). */
interface Command {
  kind: Kind;
  /** DEALLOCATE's target. */
  name: string;
}
const DEALLOCATE_ALL: Command = Object.freeze({ kind: Kind.DeallocateAll, name: '' });
const DISCARD_ALL: Command = Object.freeze({ kind: Kind.DiscardAll, name: '' });

const STATEMENT = 0x53; // 'S' in Describe/Close
const IDLE = 0x49; // 'I'
const FAILED = 0x45; // 'E'
const READY_IDLE = msg.readyForQuery(IDLE);
const LOWER = 0x20;

// An identifier as PostgreSQL reads it: unquoted (folded to lower case) or "quoted".
const IDENT = '([A-Za-z_\\u0080-\\uffff][\\w$\\u0080-\\uffff]*|"(?:[^"]|"")+")';
const DEALLOCATE = new RegExp(`^\\s*deallocate\\s+(?:prepare\\s+)?${IDENT}\\s*;?\\s*$`, 'i');
const DISCARD = /^\s*discard\s+all\s*;?\s*$/i;
const PREPARE = new RegExp(`^\\s*prepare\\s+${IDENT}\\s*(?:\\(|as\\s)`, 'i');
const EXECUTE = new RegExp(`\\bexecute\\s+${IDENT}`, 'gi');
/** Statements after which a prepared statement's result type may differ. */
const SCHEMA_CHANGE = /^\s*(alter|drop|create\s+or\s+replace)\s/i;

function identifier(word: string): string {
  return word.startsWith('"') ? word.slice(1, -1).replace(/""/g, '"') : word.toLowerCase();
}
const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** Offset of a statement's first non-blank byte. */
function start(sql: Buffer): number {
  let i = 0;
  while (i < sql.length && (sql[i] === 0x20 || (sql[i] >= 0x09 && sql[i] <= 0x0d))) i++;
  return i;
}

/** Does the statement start with this (lower-case ASCII) word, as a whole word? */
function startsWith(sql: Buffer, at: number, word: string): boolean {
  if (!wordAt(sql, at, sql.length, word)) return false;
  const after = sql[at + word.length]; // undefined at the end: a word ends there too
  const lower = after | LOWER;
  return !((lower >= 0x61 && lower <= 0x7a) || after === 0x5f || (after >= 0x30 && after <= 0x39));
}

/** First words of the statements this class reads: everything else goes by without being decoded. */
const WORDS = ['deallocate', 'discard', 'prepare', 'execute', 'explain', 'alter', 'drop', 'create'];
function mayMatter(sql: Buffer): boolean {
  const at = start(sql);
  for (const word of WORDS) if (startsWith(sql, at, word)) return true;
  return false;
}

/** The statement text of a Query body or Parse tail (up to its NUL). */
function textOf(sql: Buffer): string {
  const end = sql.indexOf(0);
  return sql.toString('utf8', 0, Math.min(end < 0 ? sql.length : end, 65536));
}

const commandComplete = (tag: string) => msg.message(msg.Backend.CommandComplete, tag);
const error = (code: string, message: string) => msg.errorResponse({ severity: 'ERROR', code, message });
const ABORTED = () => error('25P02', 'current transaction is aborted, commands ignored until end of transaction block');

export class ClientStatements {
  // Each created on first use: an idle client should cost as little as possible.
  /** Protocol-level statements by the client's name. */
  private named: Map<string, Statement> | null = null;
  /** Named statements that are DEALLOCATE (run by Tessera) or DISCARD ALL (watched). */
  private commands: Map<string, Command> | null = null;
  /** The unnamed statement, when it is one of those. */
  private unnamed: Command | null = null;
  /** Portals bound to one of those, until the batch's Sync. */
  private portals: Map<string, Command> | null = null;
  /** SQL-level statements: the client's name -> its PREPARE text. */
  private sql: Map<string, string> | null = null;
  /** Tessera answered this batch's messages with no server: the Sync is Tessera's to answer too. */
  private answeredAlone = false;
  /** Extended messages since the last Sync: no query may be injected before them. */
  private inBatch = false;
  /** A schema change ran: the epoch is raised once its transaction is over. */
  private schemaChanged = false;
  /**
   * auto_prepare: the shared server statement that stands for the client's unnamed statement (its
   * text was seen before), until the client's next unnamed Parse, Close of it, or simple Query.
   */
  private auto: Statement | null = null;
  /**
   * Set by parse(): this Parse opened a batch on an idle backend with an auto_prepare statement,
   * so the batch can be sent again as it was if the statement turns out stale (see
   * TransactionRelay.retryBatch); else null.
   */
  autoBatch: Statement | null = null;
  /** auto_prepare: the last known statement an unnamed Parse was mapped to (see autoStatement). */
  private lastAuto: Statement | null = null;

  constructor(
    private readonly pool: Pool,
    private readonly wire: StatementWire,
  ) {}

  // ---- with a server linked ----

  parse(server: ServerConnection, name: string, tail: Buffer, raw: Buffer): void {
    const batchStart = !this.inBatch;
    this.inBatch = true;
    const command = this.commandOf(tail, batchStart ? server : null);
    this.autoBatch = null;
    if (name === '') {
      this.unnamed = command;
      this.auto = null;
      if (command !== null && command.kind !== Kind.DiscardAll) return this.wire.answer(PARSE_COMPLETE);
      const st = command === null && this.pool.settings.autoPrepare ? this.autoStatement(tail) : null;
      if (st === null) return this.wire.forwardExpecting(raw, Expect.Parse);
      this.auto = st;
      if (batchStart && server.txStatus === IDLE) this.autoBatch = st;
      return this.parseShared(server, st, () => {
        if (this.auto === st) this.auto = null;
      });
    }
    if (this.owns(name)) {
      // As PostgreSQL: an error, and the rest of the batch is skipped up to Sync.
      this.wire.skipToSync();
      return this.wire.answer(error('42P05', `prepared statement "${name}" already exists`));
    }
    if (command !== null) {
      const commands = (this.commands ??= new Map());
      commands.set(name, command);
      const forget = () => commands.get(name) === command && commands.delete(name);
      if (command.kind !== Kind.DiscardAll) return this.wire.answer(PARSE_COMPLETE, forget);
    }
    const st = statementFor(tail, this.pool.knownStatements.keyFor(tail));
    const named = (this.named ??= new Map());
    named.set(name, st);
    this.parseShared(server, st, () => named.get(name) === st && named.delete(name));
  }

  /** The client's Parse of `st`: answered by Tessera where the backend has it, else prepared there. */
  private parseShared(server: ServerConnection, st: Statement, forget: () => void): void {
    this.ready(server);
    if (server.statements.has(st.key)) {
      server.statements.touch(st.key);
      this.wire.answer(PARSE_COMPLETE, forget);
    } else {
      this.prepareOn(server, st, false, forget);
    }
  }

  /**
   * auto_prepare: the shared statement for an unnamed Parse of `tail`, when its text was seen
   * before (a text used once, a query with its values written in, never takes a backend's
   * statement slot); null to send the Parse as it is. Statements this class reads (DDL among them)
   * always go as they are.
   */
  private autoStatement(tail: Buffer): Statement | null {
    if (mayMatter(tail)) return null;
    const known = this.pool.knownStatements;
    // A driver's loop sends one text again and again: compared, not hashed. Still the pool's
    // statement for its text only while `known` has it under its key (a schema change clears it).
    const last = this.lastAuto;
    if (last !== null && known.get(last.key) === last && last.tail.equals(tail)) return last;
    const key = known.keyFor(tail);
    const st = known.get(key);
    if (st !== undefined) return (this.lastAuto = st);
    return known.seenBefore(key) ? statementFor(tail, key) : null;
  }

  bind(server: ServerConnection, body: Buffer, raw: Buffer): void {
    this.inBatch = true;
    const { portal, statement, rest } = readBind(body);
    if (this.portals !== null) this.portals.delete(portal);
    const command = statement === '' ? this.unnamed : (this.commands?.get(statement) ?? null);
    if (command !== null) {
      (this.portals ??= new Map()).set(portal, command);
      if (command.kind !== Kind.DiscardAll) return this.wire.answer(BIND_COMPLETE);
    }
    const st = statement === '' ? this.auto : this.named?.get(statement);
    // An unknown name goes through as it is: the server answers 26000 with the client's name.
    if (!st) return this.wire.forwardExpecting(raw, Expect.Bind);
    if (!this.ensurePrepared(server, st)) return;
    this.wire.send(server, bindMessage(portal, st.serverName, rest), 0, (st.bound ??= Object.freeze({ expect: Expect.Bind, statement: st })));
  }

  describe(server: ServerConnection, body: Buffer, raw: Buffer): void {
    this.inBatch = true;
    const { kind, name } = readTarget(body);
    if (kind !== STATEMENT) {
      const command = this.portals?.get(name);
      if (command !== undefined && command.kind !== Kind.DiscardAll) return this.wire.answer(NO_DATA);
      return this.wire.forwardExpecting(raw, Expect.DescribePortal);
    }
    const command = name === '' ? this.unnamed : (this.commands?.get(name) ?? null);
    if (command !== null && command.kind !== Kind.DiscardAll) {
      this.wire.answer(NO_PARAMETERS);
      return this.wire.answer(NO_DATA);
    }
    const st = name === '' ? this.auto : this.named?.get(name);
    if (!st) return this.wire.forwardExpecting(raw, Expect.DescribeStatement);
    if (!this.ensurePrepared(server, st)) return;
    this.wire.send(server, (st.describeMessage ??= describeStatement(st.serverName)), 0, (st.described ??= Object.freeze({ expect: Expect.DescribeStatement, statement: st })));
  }

  execute(server: ServerConnection, body: Buffer, raw: Buffer): void {
    this.inBatch = true;
    const command = this.portals === null ? undefined : this.portals.get(body.toString('utf8', 0, Math.max(0, body.indexOf(0))));
    if (command !== undefined) {
      if (command.kind === Kind.DiscardAll) this.discarded(server);
      else if (command.kind === Kind.DeallocateAll) {
        this.forgetAll();
        return this.wire.answer(commandComplete('DEALLOCATE ALL'));
      } else if (this.drop(command.name)) return this.wire.answer(commandComplete('DEALLOCATE'));
      else {
        this.wire.skipToSync();
        return this.wire.answer(error('26000', `prepared statement "${command.name}" does not exist`));
      }
    }
    this.wire.forwardExpecting(raw, Expect.Execute);
  }

  close(body: Buffer, raw: Buffer): void {
    this.inBatch = true;
    const { kind, name } = readTarget(body);
    if (kind !== STATEMENT) {
      this.portals?.delete(name);
      return this.wire.forwardExpecting(raw, Expect.Close);
    }
    if (name === '') {
      this.unnamed = null;
      this.auto = null;
      return this.wire.forwardExpecting(raw, Expect.Close);
    }
    // Shared on the server and kept for other clients; closing a missing name is no error.
    this.drop(name);
    this.wire.answer(CLOSE_COMPLETE);
  }

  sync(server: ServerConnection, raw: Buffer): void {
    this.inBatch = false;
    this.portals = null;
    this.sendReady(server, raw);
  }

  query(server: ServerConnection, body: Buffer, raw: Buffer): void {
    this.inBatch = false;
    // A simple Query drops the session's unnamed statement (PostgreSQL's exec_simple_query).
    this.unnamed = this.auto = null;
    // The common case decodes nothing: no statement that matters here, no SQL-level statements.
    if (!mayMatter(body) && this.sql === null && server.statements.sql === null) return this.wire.forwardExpecting(raw, Expect.Ready);
    const text = textOf(body);
    if (SCHEMA_CHANGE.test(text)) this.schemaChanged = true;
    const dealloc = DEALLOCATE.exec(text);
    if (dealloc) {
      const all = dealloc[1].toLowerCase() === 'all';
      const name = identifier(dealloc[1]);
      if (all || this.drop(name)) {
        if (all) this.forgetAll();
        const tag = commandComplete(all ? 'DEALLOCATE ALL' : 'DEALLOCATE');
        return this.wire.answer(() => (server.txStatus === FAILED ? Buffer.concat([ABORTED(), msg.readyForQuery(FAILED)]) : Buffer.concat([tag, msg.readyForQuery(server.txStatus)])));
      }
      // Not this client's: PostgreSQL's own 26000, where no other client's statement can answer.
      this.ensureAbsent(server, name);
      return this.sendReady(server, raw);
    }
    if (DISCARD.test(text)) {
      this.discarded(server);
      return this.sendReady(server, raw);
    }
    const prepare = PREPARE.exec(text);
    if (prepare && !text.replace(/;\s*$/, '').includes(';')) {
      const name = identifier(prepare[1]);
      if (this.owns(name)) {
        // The backend gets the client's statement first, so PostgreSQL itself says 42P05.
        this.ensureOn(server, name, this.sql?.get(name) ?? `PREPARE ${quoteIdent(name)} AS SELECT`);
        return this.sendReady(server, raw);
      }
      this.ensureAbsent(server, name);
      const sql = (this.sql ??= new Map());
      sql.set(name, text);
      const on = server.statements;
      (on.sql ??= new Map()).set(name, text);
      const undo = (ok: boolean) => {
        if (ok) return;
        if (sql.get(name) === text) sql.delete(name);
        if (on.sql?.get(name) === text) on.sql.delete(name);
      };
      this.pool.counters.queries++;
      return this.wire.send(server, raw, 1, { expect: Expect.Ready, onDone: this.schemaChanged ? this.afterSchemaChange(server, undo) : undo });
    }
    this.placeExecuted(server, text);
    this.sendReady(server, raw);
  }

  /** SQL-level EXECUTE in `text`: each name the client prepared is on this backend, and no other. */
  private placeExecuted(server: ServerConnection, text: string): void {
    if (this.sql === null && server.statements.sql === null) return;
    for (const m of text.matchAll(EXECUTE)) {
      const name = identifier(m[1]);
      const mine = this.sql?.get(name);
      if (mine !== undefined) this.ensureOn(server, name, mine);
      else this.ensureAbsent(server, name);
    }
  }

  /** The backend has the client's SQL statement `name`, made by `text`. */
  private ensureOn(server: ServerConnection, name: string, text: string): void {
    const on = server.statements;
    if (on.sql?.get(name) === text) return;
    this.ensureAbsent(server, name);
    (on.sql ??= new Map()).set(name, text);
    const onDone = (ok: boolean) => {
      if (!ok && on.sql?.get(name) === text) on.sql.delete(name);
    };
    this.wire.send(server, msg.simpleQuery(text), 1, { expect: Expect.Ready, swallowAll: true, onDone });
  }

  /** The backend has no SQL statement `name` left by another client (an error could not abort anything). */
  private ensureAbsent(server: ServerConnection, name: string): void {
    const on = server.statements;
    if (on.sql?.delete(name) !== true) return;
    const sql = `DO $tessera$BEGIN EXECUTE 'DEALLOCATE ${quoteIdent(name).replace(/'/g, "''")}'; EXCEPTION WHEN invalid_sql_statement_name THEN NULL; END$tessera$`;
    this.wire.send(server, msg.simpleQuery(sql), 1, { expect: Expect.Ready, swallowAll: true });
  }

  /** A message answered by ReadyForQuery; after a schema change, the epoch rises once it is committed. */
  private sendReady(server: ServerConnection, raw: Buffer): void {
    if (!this.schemaChanged) return this.wire.forwardExpecting(raw, Expect.Ready);
    this.pool.counters.queries++;
    this.wire.send(server, raw, 1, { expect: Expect.Ready, onDone: this.afterSchemaChange(server) });
  }

  private afterSchemaChange(server: ServerConnection, then?: (ok: boolean) => void): (ok: boolean) => void {
    return (ok) => {
      // Still in its transaction: wait for the ReadyForQuery that ends it.
      if (server.txStatus === IDLE && this.schemaChanged) {
        this.schemaChanged = false;
        this.pool.knownStatements.schemaChanged();
      }
      then?.(ok);
    };
  }

  /** The server ran DISCARD ALL for this client: everything it had is gone, for the client too. */
  private discarded(server: ServerConnection): void {
    server.statements.invalidate();
    server.statements.sql = null;
    // Inside a transaction block it fails, and the client keeps its statements.
    if (server.txStatus === IDLE) this.forgetAll();
  }

  /**
   * PostgreSQL said `statement`'s result type changed (0A000): its copy there is closed, and the
   * client's next preparation of the text gets a new one.
   */
  staled(server: ServerConnection, statement: { readonly key: string }, error: Buffer): void {
    server.statements.discard(statement.key);
    this.pool.knownStatements.markStale(statement.key, error);
  }

  /**
   * The server's error to a message Tessera rewrote to `st`: as the client would have it, naming
   * the client's statement (its unnamed one under auto_prepare, else the name it gave the text).
   */
  errorFor(st: Statement, body: Buffer): Buffer {
    let name: string | undefined = this.auto === st ? '' : undefined;
    if (name === undefined && this.named !== null) for (const [n, s] of this.named) if (s === st) name = n;
    return renameInError(body, st.serverName, name ?? '');
  }

  /** The batch is sent again as it came (a stale auto_prepare statement): its unnamed Parse goes as it is. */
  forgetAuto(): void {
    this.auto = null;
  }

  // ---- with no server linked ----

  /**
   * A message Tessera can answer with no backend at all (none linked, nothing held): a Parse of a
   * text a backend has already parsed and whose statement needs no backend's attention
   * (StatementWire.needsNoServer), a Close, the Sync after them, a DEALLOCATE of the client's own.
   */
  answerAlone(type: number, body: Buffer): boolean {
    const wire = this.wire;
    const answered = this.answeredAlone;
    this.answeredAlone = false;
    switch (type) {
      case Frontend.Parse: {
        const { name, tail } = readParse(body);
        if (name === '' || this.owns(name) || mayMatter(tail) || !wire.needsNoServer(tail)) return false;
        const known = this.pool.knownStatements.get(this.pool.knownStatements.keyFor(tail));
        if (known === undefined) return false;
        this.pool.counters.clientParses++;
        (this.named ??= new Map()).set(name, known);
        wire.writeToClient(PARSE_COMPLETE);
        return (this.answeredAlone = true);
      }
      case Frontend.Close: {
        const { kind, name } = readTarget(body);
        if (kind !== STATEMENT || name === '') return false;
        this.drop(name);
        wire.writeToClient(CLOSE_COMPLETE);
        return (this.answeredAlone = true);
      }
      case Frontend.Sync:
        if (!answered) return false;
        wire.writeToClient(READY_IDLE);
        return true;
      case Frontend.Query: {
        if (!startsWith(body, start(body), 'deallocate')) return false;
        const dealloc = DEALLOCATE.exec(textOf(body));
        if (!dealloc) return false;
        const all = dealloc[1].toLowerCase() === 'all';
        if (all) this.forgetAll();
        else if (!this.drop(identifier(dealloc[1]))) return false;
        wire.writeToClient(Buffer.concat([commandComplete(all ? 'DEALLOCATE ALL' : 'DEALLOCATE'), READY_IDLE]));
        return true;
      }
      default:
        return false;
    }
  }

  // ---- bookkeeping ----

  private commandOf(tail: Buffer, server: ServerConnection | null): Command | null {
    if (!mayMatter(tail)) return null;
    const text = textOf(tail);
    if (SCHEMA_CHANGE.test(text)) this.schemaChanged = true;
    if (DISCARD.test(text)) return DISCARD_ALL;
    const dealloc = DEALLOCATE.exec(text);
    if (!dealloc) return null;
    if (dealloc[1].toLowerCase() === 'all') return DEALLOCATE_ALL;
    const name = identifier(dealloc[1]);
    if (this.owns(name)) return { kind: Kind.Deallocate, name };
    // Not this client's: the server answers, and must not find another client's statement.
    if (server) this.ensureAbsent(server, name);
    return null;
  }

  private owns(name: string): boolean {
    return this.named?.has(name) === true || this.commands?.has(name) === true || this.sql?.has(name) === true;
  }

  /** Drops a statement from the client's view; false if it had none of that name. */
  private drop(name: string): boolean {
    const a = this.named?.delete(name) === true;
    const b = this.commands?.delete(name) === true;
    const c = this.sql?.delete(name) === true;
    return a || b || c;
  }

  private forgetAll(): void {
    this.named = this.commands = null;
    this.sql = null;
  }

  /** Before Tessera's statements on `server` are used: those it forgot are closed there first. */
  private ready(server: ServerConnection): void {
    const on = server.statements;
    if (on.closing === null) return;
    const names = on.closing;
    on.closing = null;
    for (const name of names) {
      // Skipped after an error in the batch: closed before the next use instead.
      this.wire.send(server, closeStatement(name), 0, { expect: Expect.Close, swallow: true, onSkipped: () => (on.closing ??= []).push(name) });
    }
  }

  /**
   * The statement is on `server` before the client's message that uses it; false (and the error
   * PostgreSQL gave elsewhere) when it is stale there is no copy to keep it.
   */
  private ensurePrepared(server: ServerConnection, st: Statement): boolean {
    this.ready(server);
    if (server.statements.has(st.key)) server.statements.touch(st.key);
    else {
      const stale = this.pool.knownStatements.staleError(st.key);
      if (stale === undefined) this.prepareOn(server, st, true);
      else {
        this.wire.skipToSync();
        this.wire.answer(stale);
        return false;
      }
    }
    return true;
  }

  /** Prepares a statement on the server (evicting its least recently used one when full). */
  private prepareOn(server: ServerConnection, st: Statement, injected: boolean, forget?: () => void): void {
    const pool = this.pool;
    const bound = pool.settings.maxPreparedStatements;
    if (server.statements.size >= bound) {
      const old = server.statements.evictOldest();
      if (old) this.wire.send(server, closeStatement(old.name), 0, { expect: Expect.Close, swallow: true });
    }
    server.statements.add(st);
    pool.counters.serverParses++;
    const onSkipped = () => {
      server.statements.delete(st.key);
      forget?.();
    };
    this.wire.send(server, parseMessage(st), 0, { expect: Expect.Parse, swallow: injected, onSkipped, onDone: () => pool.knownStatements.add(st, bound) });
  }
}
