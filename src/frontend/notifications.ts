/**
 * LISTEN/UNLISTEN of a transaction-mode client without pinning it: its channels and the
 * notifications on their way to it. Pooled backends never LISTEN: each LISTEN or UNLISTEN
 * statement goes to the backend as a NOTIFY on the pool listener's control channel (answered to
 * the client with PostgreSQL's own CommandComplete tag), so PostgreSQL itself decides whether it
 * takes effect: the control notification reaches the listener if and when the client's
 * transaction commits (a rollback, also to a savepoint, discards it), in commit order with the
 * notifications, exactly as a LISTEN takes effect on a direct connection.
 *
 * Only simple Query messages made of nothing but LISTEN/UNLISTEN statements with a plain or
 * quoted channel name are handled so (what drivers and psql send); anything else that mentions
 * LISTEN pins the client, as before (session-state.ts).
 */
import * as msg from '../protocol/messages.js';
import type { ServerConnection } from '../pool/server-connection.js';
import { quoteIdentifier, type NotificationSubscriber, type PoolListener } from '../pool/listener.js';

export type ListenAction = { kind: 'listen' | 'unlisten'; channel: string } | { kind: 'unlisten_all' };

/** PostgreSQL's identifier limit (NAMEDATALEN - 1 bytes); longer names are truncated. */
const MAX_IDENTIFIER_BYTES = 63;
/** Reserved keywords, which PostgreSQL refuses as an unquoted channel name (a syntax error). */
const RESERVED = new Set(
  'all analyse analyze and any array as asc asymmetric both case cast check collate column constraint create current_catalog current_date current_role current_time current_timestamp current_user default deferrable desc distinct do else end except false fetch for foreign from grant group having in initially intersect into lateral leading limit localtime localtimestamp not null offset on only or order placing primary references returning select session_user some symmetric table then to trailing true union unique user using variadic when where window with'.split(
    ' ',
  ),
);

function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}
function isIdentStart(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f || c >= 0x80;
}
function isIdentPart(c: number): boolean {
  return isIdentStart(c) || (c >= 0x30 && c <= 0x39) || c === 0x24;
}

/** Past whitespace and comments from `i`; -1 inside an unterminated comment. */
function skipBlank(s: string, i: number): number {
  for (;;) {
    while (i < s.length && isSpace(s.charCodeAt(i))) i++;
    if (s.startsWith('--', i)) {
      const nl = s.indexOf('\n', i);
      i = nl < 0 ? s.length : nl + 1;
    } else if (s.startsWith('/*', i)) {
      let depth = 1;
      i += 2;
      while (depth > 0) {
        if (i >= s.length) return -1;
        if (s.startsWith('/*', i)) (depth++, (i += 2));
        else if (s.startsWith('*/', i)) (depth--, (i += 2));
        else i++;
      }
    } else return i;
  }
}

function truncateIdentifier(name: string): string {
  if (Buffer.byteLength(name) <= MAX_IDENTIFIER_BYTES) return name;
  let out = '';
  for (const ch of name) {
    if (Buffer.byteLength(out + ch) > MAX_IDENTIFIER_BYTES) break;
    out += ch;
  }
  return out;
}

/**
 * The statements of a simple Query when each is LISTEN name, UNLISTEN name or UNLISTEN * (names
 * plain, case-folded as PostgreSQL folds them, or double-quoted); null for anything else.
 */
export function listenStatements(text: string): ListenAction[] | null {
  const actions: ListenAction[] = [];
  let i = skipBlank(text, 0);
  while (i >= 0 && i < text.length) {
    let end = i;
    while (end < text.length && isIdentPart(text.charCodeAt(end))) end++;
    const keyword = text.slice(i, end).toLowerCase();
    if (keyword !== 'listen' && keyword !== 'unlisten') return null;
    i = skipBlank(text, end);
    if (i < 0 || i >= text.length) return null;
    const c = text.charCodeAt(i);
    if (c === 0x2a /* * */ && keyword === 'unlisten') {
      actions.push({ kind: 'unlisten_all' });
      i++;
    } else if (c === 0x22 /* " */) {
      let name = '';
      let j = i + 1;
      for (;;) {
        const q = text.indexOf('"', j);
        if (q < 0) return null;
        name += text.slice(j, q);
        if (text.charCodeAt(q + 1) === 0x22) {
          name += '"';
          j = q + 2;
        } else {
          j = q + 1;
          break;
        }
      }
      if (name === '') return null;
      actions.push({ kind: keyword, channel: truncateIdentifier(name) });
      i = j;
    } else if (isIdentStart(c)) {
      let j = i;
      while (j < text.length && isIdentPart(text.charCodeAt(j))) j++;
      // PostgreSQL folds only ASCII letters of an unquoted name.
      const name = text.slice(i, j).replace(/[A-Z]+/g, (m) => m.toLowerCase());
      if (RESERVED.has(name)) return null;
      actions.push({ kind: keyword, channel: truncateIdentifier(name) });
      i = j;
    } else return null;
    i = skipBlank(text, i);
    if (i < 0) return null;
    if (i < text.length) {
      if (text.charCodeAt(i) !== 0x3b /* ; */) return null;
      // Empty statements between semicolons are nothing, as in PostgreSQL.
      while (i >= 0 && i < text.length && text.charCodeAt(i) === 0x3b) i = skipBlank(text, i + 1);
    }
  }
  return i < 0 || actions.length === 0 ? null : actions;
}

/** What the notifications need of their client (the transaction relay's link). */
export interface NotifiedClient {
  readonly id: number;
  readonly server: ServerConnection | null;
  writeFromServer(bytes: Buffer): boolean;
}

const LISTEN_COMPLETE = msg.message(0x43 /* C */, 'LISTEN');
const UNLISTEN_COMPLETE = msg.message(0x43 /* C */, 'UNLISTEN');
/** Actions sent but not known committed, kept at most (older ones were rolled back or are lost). */
const MAX_PENDING = 1024;

export class ClientNotifications implements NotificationSubscriber {
  /** Channels whose LISTEN committed: their notifications are this client's. */
  private readonly channels = new Set<string>();
  /** LISTEN/UNLISTEN sent to a backend whose commit is not seen yet, by sequence number. */
  private readonly pending = new Map<number, ListenAction>();
  /** Per channel, how many pending LISTENs name it (the listener keeps LISTENing for them). */
  private readonly pendingListens = new Map<string, number>();
  private nextSeq = 1;
  /** Notifications that came while the client was inside a transaction, for its next idle moment. */
  private queued: Buffer[] | null = null;

  constructor(
    private readonly client: NotifiedClient,
    readonly listener: PoolListener,
  ) {
    listener.subscribe(this);
  }

  get id(): number {
    return this.client.id;
  }

  /** Whether `actions` need Tessera at all: an UNLISTEN of a client that holds nothing is a no-op. */
  takesPart(actions: readonly ListenAction[]): boolean {
    return this.channels.size > 0 || this.pending.size > 0 || actions.some((a) => a.kind === 'listen');
  }

  /** The channels `actions` LISTEN on, held on the listener from now (so it LISTENs before the client's commit). */
  hold(actions: readonly ListenAction[]): string[] {
    const channels: string[] = [];
    for (const a of actions) {
      if (a.kind !== 'listen') continue;
      channels.push(a.channel);
      this.listener.hold(a.channel, this);
    }
    return channels;
  }

  /**
   * What the backend runs instead of `actions`: one NOTIFY on the control channel per statement,
   * with the CommandComplete each is answered with.
   */
  rewrite(actions: readonly ListenAction[]): { query: Buffer; answers: Buffer[] } {
    const ctl = quoteIdentifier(this.listener.controlChannel);
    const statements: string[] = [];
    const answers: Buffer[] = [];
    for (const a of actions) {
      const seq = this.nextSeq++;
      this.pending.set(seq, a);
      if (a.kind === 'listen') this.pendingListens.set(a.channel, (this.pendingListens.get(a.channel) ?? 0) + 1);
      statements.push(`NOTIFY ${ctl}, '${this.client.id} ${seq}'`);
      answers.push(a.kind === 'listen' ? LISTEN_COMPLETE : UNLISTEN_COMPLETE);
    }
    // A client rolling back LISTEN after LISTEN must not grow this without bound.
    for (const [seq, a] of this.pending) {
      if (this.pending.size <= MAX_PENDING) break;
      this.pending.delete(seq);
      this.unpend(a);
    }
    return { query: msg.simpleQuery(statements.join('; ')), answers };
  }

  /** Channels held (hold()) for a LISTEN that never went out (the listener could not LISTEN): let go. */
  settle(channels: readonly string[]): void {
    for (const c of channels) this.release(c);
  }

  onCommitted(seq: number): void {
    // A client's transactions commit in order: anything pending before `seq` was rolled back.
    for (const [s, a] of this.pending) {
      if (s > seq) break;
      this.pending.delete(s);
      if (s === seq) this.apply(a);
      this.unpend(a);
    }
  }

  private apply(a: ListenAction): void {
    if (a.kind === 'listen') {
      this.channels.add(a.channel);
      this.listener.join(a.channel, this);
      return;
    }
    const gone = a.kind === 'unlisten' ? (this.channels.has(a.channel) ? [a.channel] : []) : [...this.channels];
    for (const c of gone) {
      this.channels.delete(c);
      this.listener.leave(c, this);
      this.release(c);
    }
  }

  private unpend(a: ListenAction): void {
    if (a.kind !== 'listen') return;
    const n = (this.pendingListens.get(a.channel) ?? 1) - 1;
    if (n > 0) this.pendingListens.set(a.channel, n);
    else {
      this.pendingListens.delete(a.channel);
      this.release(a.channel);
    }
  }

  /** The listener may UNLISTEN `channel` unless this client still listens or is about to. */
  private release(channel: string): void {
    if (!this.channels.has(channel) && !this.pendingListens.has(channel)) this.listener.drop(channel, this);
  }

  /** A notification on one of its channels: now if the client is between transactions, else at its end. */
  onNotification(message: Buffer): void {
    if (this.queued === null && this.deliverable()) {
      this.client.writeFromServer(message);
      return;
    }
    (this.queued ??= []).push(message);
  }

  /** The client's transaction ended (its server released, or a pinned one idle): deliver what waited. */
  flush(): void {
    const q = this.queued;
    if (q === null || !this.deliverable()) return;
    this.queued = null;
    this.client.writeFromServer(q.length === 1 ? q[0] : Buffer.concat(q));
  }

  close(): void {
    this.listener.unsubscribe(this);
    this.queued = null;
  }

  /** Between the client's messages: no server linked, or one with nothing owed outside a transaction. */
  private deliverable(): boolean {
    const server = this.client.server;
    return server === null || server.atTransactionBoundary;
  }
}
