/**
 * Protocol-level prepared statements in transaction mode. A client names its statements; Tessera
 * gives identical query text (and parameter types) one server-side name, prepares it on whichever
 * backend serves the client, just before it is used, and keeps a per-backend LRU bound
 * (max_prepared_statements). Only the message codecs and bookkeeping live here; the relays decide
 * when to call them.
 */
import { hash } from 'node:crypto';
import { BodyReader, ProtocolViolation } from '../protocol/framing.js';
import { message, parseErrorFields, type PgError } from '../protocol/messages.js';
import type { Entry } from './response-queue.js';

export interface Statement {
  /** Identity on a backend: hash of the query text and parameter types. */
  key: string;
  /** The name Tessera uses on backends. */
  serverName: string;
  /** The Parse body after the statement name (query, parameter types), replayed on any backend. */
  tail: Buffer;
  /** Its Bind's and Describe's queue entries, made once (naming it, should the server reject it). */
  bound?: Entry;
  described?: Entry;
  /** Its Describe message, made once: the same bytes for every client (never written to). */
  describeMessage?: Buffer;
}

/** Decodes a Parse body: statement name and everything after it. */
export function readParse(body: Buffer): { name: string; tail: Buffer } {
  const end = body.indexOf(0);
  // PostgreSQL's words for it (pq_getmsgstring); a protocol violation, never an internal error.
  if (end < 0) throw new ProtocolViolation('invalid string in message');
  return { name: body.toString('utf8', 0, end), tail: body.subarray(end + 1) };
}

/**
 * A hash of a statement's query text and parameter types. One-shot `hash()`: a third of
 * createHash()'s cost on a short text, and every Parse Tessera maps pays it.
 */
function textHash(tail: Buffer): string {
  return hash('sha256', tail, 'hex').slice(0, 24);
}

/** `key`: from KnownStatements.keyFor(). */
export function statementFor(tail: Buffer, key: string): Statement {
  return { key, serverName: `tessera_${key}`, tail: Buffer.from(tail) };
}

/** Decodes a Bind body's portal and statement names; `rest` is everything after them. */
export function readBind(body: Buffer): { portal: string; statement: string; rest: Buffer } {
  // What drivers send for every parameterised query: the unnamed portal of the unnamed statement.
  if (body.length >= 2 && body[0] === 0 && body[1] === 0) return { portal: '', statement: '', rest: body.subarray(2) };
  const r = new BodyReader(body);
  const portal = r.cstring();
  const statement = r.cstring();
  return { portal, statement, rest: r.rest() };
}

/** Decodes a Describe or Close body: 'S' or 'P' and a name. */
export function readTarget(body: Buffer): { kind: number; name: string } {
  const r = new BodyReader(body);
  return { kind: r.byte(), name: r.cstring() };
}

/** 'S' in Describe and Close: a prepared statement (never written to). */
const STATEMENT_KIND = Buffer.from([0x53]);

export const parseMessage = (s: Statement): Buffer => message(0x50, s.serverName, s.tail);
/** A Bind to `statement`: the client's Bind with its names rewritten (one per rewritten Bind, on the relay's path). */
export const bindMessage = (portal: string, statement: string, rest: Buffer): Buffer => message(0x42, portal, statement, rest);
export const describeStatement = (name: string): Buffer => message(0x44, STATEMENT_KIND, name);
export const closeStatement = (name: string): Buffer => message(0x43, STATEMENT_KIND, name);

/** Rebuilds a whole message from its type and body (for messages that arrived in pieces). */
export const wholeMessage = (type: number, body: Buffer): Buffer => message(type, body);

/** PostgreSQL's words when a prepared statement's result type changed under it (0A000). */
const STALE_PLAN = 'cached plan must not change result type';

/** The server's 0A000 for a statement whose result type changed since it was prepared. */
export const isStalePlan = (err: PgError): boolean => err.fields.code === '0A000' && err.fields.message === STALE_PLAN;

/**
 * A Bind whose result formats are one per column of the shape the client was told of, to a
 * statement Tessera prepared again on another backend after a schema change it did not see
 * (08P01 "bind message has 2 result formats but query has 3 columns"). Directly the client's own
 * statement would have been stale: it gets that 0A000 instead (stalePlanError), which drivers
 * recover from by preparing again.
 */
export const isShapeMismatch = (err: PgError): boolean => err.fields.code === '08P01' && /^bind message has \d+ result formats but query has \d+ columns$/.test(err.fields.message);

/** PostgreSQL's 0A000 for a stale statement, with the routine field drivers look for (RevalidateCachedQuery). */
export const stalePlanError = (): Buffer => message(0x45, 'SERROR', 'VERROR', 'C0A000', `M${STALE_PLAN}`, 'RRevalidateCachedQuery', Buffer.from([0]));

/**
 * An ErrorResponse body with Tessera's statement name replaced by the client's (as in
 * `prepared statement "tessera_..." requires 2`), as a whole message; the body as it is when the
 * name is not in it.
 */
export function renameInError(body: Buffer, serverName: string, clientName: string): Buffer {
  const quoted = `"${serverName}"`;
  if (body.indexOf(quoted) < 0) return wholeMessage(0x45, body);
  const fields = [...parseErrorFields(body)].map(([code, value]) => code + value.replaceAll(quoted, `"${clientName}"`));
  return message(0x45, ...fields, Buffer.from([0]));
}

/** Server responses Tessera makes up for messages it answered itself. */
export const PARSE_COMPLETE = Buffer.from([0x31, 0, 0, 0, 4]);
export const BIND_COMPLETE = Buffer.from([0x32, 0, 0, 0, 4]);
export const CLOSE_COMPLETE = Buffer.from([0x33, 0, 0, 0, 4]);
export const NO_DATA = Buffer.from([0x6e, 0, 0, 0, 4]);
/** ParameterDescription of a statement without parameters. */
export const NO_PARAMETERS = Buffer.from([0x74, 0, 0, 0, 6, 0, 0]);

/**
 * A backend's prepared statements, least recently used first (Map keeps insertion order): the
 * protocol-level ones Tessera names (shared by every client with the same text), and the SQL-level
 * ones clients PREPAREd under their own names (replayed here when a client EXECUTEs one).
 */
export class ServerStatements {
  private readonly byKey = new Map<string, string>();
  /** Server names to Close before the next use (statements that may be stale or gone); else null. */
  closing: string[] | null = null;
  /** SQL-level statements on this backend: the client's name -> the PREPARE text that made it. */
  sql: Map<string, string> | null = null;

  has(key: string): boolean {
    return this.byKey.has(key);
  }

  /** Marks a statement used now (moves it to the back of the LRU order). */
  touch(key: string): void {
    const name = this.byKey.get(key);
    if (name === undefined) return;
    this.byKey.delete(key);
    this.byKey.set(key, name);
  }

  add(s: Statement): void {
    this.byKey.set(s.key, s.serverName);
  }

  delete(key: string): void {
    this.byKey.delete(key);
  }

  /** The backend has none of Tessera's statements (it was reset with DISCARD ALL). */
  clear(): void {
    this.byKey.clear();
    this.closing = null;
    this.sql = null;
  }

  /**
   * Tessera's statements here may be stale (a schema change) or gone (a client's DISCARD ALL or
   * DEALLOCATE ALL): forget them, and Close each on the server before the next use (closing a
   * missing statement is no error), so a re-Parse under the same name cannot fail.
   */
  invalidate(): void {
    if (this.byKey.size === 0) return;
    (this.closing ??= []).push(...this.byKey.values());
    this.byKey.clear();
  }

  /** One statement here is stale (its result type changed): forget it, and Close it before the next use. */
  discard(key: string): void {
    const name = this.byKey.get(key);
    if (name === undefined) return;
    this.byKey.delete(key);
    (this.closing ??= []).push(name);
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Removes and returns the least recently used statement's server name. */
  evictOldest(): { key: string; name: string } | null {
    const first = this.byKey.entries().next();
    if (first.done) return null;
    const [key, name] = first.value;
    this.byKey.delete(key);
    return { key, name };
  }
}

/**
 * Per pool: the statement texts some backend has parsed successfully (so a client's Parse of one
 * can be answered with no backend at all), and the epoch in statements' keys. A schema change
 * raises the epoch, so every new preparation gets a fresh statement on the server, as it would on a
 * direct connection, while a client's earlier one keeps its server statement (and PostgreSQL's
 * verdict on it). A statement PostgreSQL said changed its result type is stale: where a backend
 * lacks it, Tessera gives the client the error PostgreSQL would.
 */
/** Unnamed texts remembered per pool for auto_prepare's "seen before" (about 100 bytes each). */
const SEEN_BOUND = 10000;

export class KnownStatements {
  private readonly byKey = new Map<string, Statement>();
  /** Stale statements' keys -> PostgreSQL's error about them (drivers read its routine field). */
  private readonly stale = new Map<string, Buffer>();
  private epoch = 0;
  private suffix = '';
  /** auto_prepare: keys of unnamed Parses seen once, oldest first (bounded, see seenBefore). */
  private readonly seenOnce = new Set<string>();

  /** The key a statement with this Parse tail gets now. */
  keyFor(tail: Buffer): string {
    return textHash(tail) + this.suffix;
  }

  get(key: string): Statement | undefined {
    return this.byKey.get(key);
  }

  /** A statement parsed successfully; at most `bound` are kept, least recently parsed dropped. */
  add(s: Statement, bound: number): void {
    this.byKey.delete(s.key);
    this.byKey.set(s.key, s);
    if (this.byKey.size > bound) this.byKey.delete(this.byKey.keys().next().value!);
  }

  /**
   * auto_prepare: true when an unnamed Parse of this key was seen before; else it is remembered
   * (at most `SEEN_BOUND` keys, oldest forgotten first) and false.
   */
  seenBefore(key: string): boolean {
    if (this.seenOnce.delete(key)) return true;
    if (this.seenOnce.size >= SEEN_BOUND) this.seenOnce.delete(this.seenOnce.values().next().value!);
    this.seenOnce.add(key);
    return false;
  }

  /** The schema changed: new preparations get new statements. */
  schemaChanged(): void {
    this.byKey.clear();
    this.suffix = `_${++this.epoch}`;
  }

  /** PostgreSQL said this statement's result type changed (0A000). */
  markStale(key: string, error: Buffer): void {
    if (this.stale.size >= 4096) this.stale.delete(this.stale.keys().next().value!);
    this.stale.set(key, error);
    this.schemaChanged();
  }

  /** PostgreSQL's error for a stale statement, or undefined. */
  staleError(key: string): Buffer | undefined {
    return this.stale.size > 0 ? this.stale.get(key) : undefined;
  }
}

/** Simple-protocol statements that drop every prepared statement of the session. */
export function dropsAllStatements(query: Buffer): boolean {
  return /^\s*(deallocate\s+(prepare\s+)?all|discard\s+all)\s*;?\s*$/i.test(query.toString('utf8', 0, Math.min(query.length, 64)).replace(/\0$/, ''));
}
