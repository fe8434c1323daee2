/**
 * One listening server connection per pool, for transaction-mode clients that LISTEN: it
 * LISTENs on the union of the channels they need, and hands each NotificationResponse to the
 * subscribers that joined its channel, in the order PostgreSQL sent them. Pooled backends never
 * LISTEN themselves (see frontend/notifications.ts), so each notification reaches a client once.
 *
 * Per pool rather than per database: it logs in exactly as the pool's servers do (same role,
 * credentials, TLS), so it needs nothing a pooled server does not; notifications are database-wide
 * in PostgreSQL, so one per pool hears everything its clients can. It is opened when the first
 * channel is needed and closed when the last is let go; a connection that drops is opened again
 * and LISTENs again (notifications sent meanwhile are lost: README says so).
 *
 * It also LISTENs on a control channel of its own: a client's LISTEN or UNLISTEN is sent to its
 * pooled backend as a NOTIFY on that channel, which PostgreSQL delivers only if, and when, the
 * client's transaction commits, in commit order with the notifications themselves.
 */
import { randomBytes } from 'node:crypto';
import { Framer, BodyReader, type FrameSink } from '../protocol/framing.js';
import { PgError } from '../protocol/messages.js';
import { ServerConnection, type ServerPeer } from './server-connection.js';
import type { Pool } from './pool.js';
import { log } from '../log.js';

/** NotificationResponse ('A'). */
const NOTIFICATION = 0x41;
/** The listening connection's application_name (what pg_stat_activity shows). */
export const LISTENER_APPLICATION_NAME = 'tessera listener';
/** How soon a lost or refused listening connection is tried again. */
const RECONNECT_MS = 500;

/** A client that listens through the pool's listener. */
export interface NotificationSubscriber {
  readonly id: number;
  /** The client's LISTEN/UNLISTEN number `seq` was committed (its control notification came). */
  onCommitted(seq: number): void;
  /** A notification on a channel it joined: the whole NotificationResponse message. */
  onNotification(message: Buffer): void;
}

/** A channel name as a quoted SQL identifier. */
export function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

const listeners = new WeakMap<Pool, PoolListener>();

/** The pool's listener, made on first use (it connects only once a channel is needed). */
export function listenerFor(pool: Pool): PoolListener {
  let l = listeners.get(pool);
  if (!l) listeners.set(pool, (l = new PoolListener(pool)));
  return l;
}

export class PoolListener implements ServerPeer, FrameSink {
  /** Where committed LISTEN/UNLISTEN of this pool's clients are announced (unique per listener). */
  readonly controlChannel = `tessera_${randomBytes(8).toString('hex')}`;
  private readonly subscribers = new Map<number, NotificationSubscriber>();
  /** Who needs each channel LISTENed on (joined, or about to be): the union is what the server LISTENs on. */
  private readonly holders = new Map<string, Set<NotificationSubscriber>>();
  /** Who gets each channel's notifications (committed LISTENs). */
  private readonly members = new Map<string, Set<NotificationSubscriber>>();
  private server: ServerConnection | null = null;
  private connecting = false;
  /** Channels the server connection has LISTENed on (the control channel included once it has). */
  private readonly listening = new Set<string>();
  private syncing = false;
  private retryTimer: NodeJS.Timeout | null = null;
  /** Callbacks waiting for channels to be LISTENed on; failed ones get false. */
  private waiting: { channels: readonly string[]; then: (ok: boolean) => void }[] = [];
  /** Frames the listening connection's bytes; a new one per connection. */
  private framer = new Framer(this);

  constructor(private readonly pool: Pool) {}

  subscribe(sub: NotificationSubscriber): void {
    this.subscribers.set(sub.id, sub);
  }

  /** The subscriber is gone: every channel it held or joined is let go. */
  unsubscribe(sub: NotificationSubscriber): void {
    this.subscribers.delete(sub.id);
    for (const [channel, set] of this.members) if (set.delete(sub) && set.size === 0) this.members.delete(channel);
    for (const channel of [...this.holders.keys()]) this.drop(channel, sub);
  }

  /** `sub` needs `channel` LISTENed on (a LISTEN of its is on its way or committed). */
  hold(channel: string, sub: NotificationSubscriber): void {
    let set = this.holders.get(channel);
    if (!set) this.holders.set(channel, (set = new Set()));
    set.add(sub);
    this.sync();
  }

  /** `sub` no longer needs `channel`; the server UNLISTENs once nobody does. */
  drop(channel: string, sub: NotificationSubscriber): void {
    const set = this.holders.get(channel);
    if (!set?.delete(sub)) return;
    if (set.size === 0) this.holders.delete(channel);
    this.sync();
  }

  join(channel: string, sub: NotificationSubscriber): void {
    let set = this.members.get(channel);
    if (!set) this.members.set(channel, (set = new Set()));
    set.add(sub);
  }

  leave(channel: string, sub: NotificationSubscriber): void {
    const set = this.members.get(channel);
    if (set?.delete(sub) && set.size === 0) this.members.delete(channel);
  }

  /** True when the server LISTENs on the control channel and on each of `channels`. */
  isListening(channels: readonly string[]): boolean {
    if (!this.listening.has(this.controlChannel)) return false;
    for (const c of channels) if (!this.listening.has(c)) return false;
    return true;
  }

  /** Calls `then(true)` once every channel (held first) is LISTENed on; `then(false)` if the connection cannot be made. */
  whenListening(channels: readonly string[], then: (ok: boolean) => void): void {
    if (this.isListening(channels)) return then(true);
    this.waiting.push({ channels, then });
    this.sync();
  }

  /** Brings the server's LISTEN set to the union of what is held; opens or closes the connection. */
  private sync(): void {
    if (this.syncing || this.connecting) return;
    const wanted = this.holders.size > 0 || this.waiting.length > 0;
    if (!this.server) {
      if (wanted && !this.retryTimer) this.connect();
      return;
    }
    if (!wanted) {
      // Nobody needs it: close it rather than keep a backend for nothing.
      const server = this.server;
      this.server = null;
      this.listening.clear();
      server.detach();
      server.close();
      return;
    }
    const add: string[] = [];
    const remove: string[] = [];
    if (!this.listening.has(this.controlChannel)) add.push(this.controlChannel);
    for (const c of this.holders.keys()) if (!this.listening.has(c)) add.push(c);
    for (const c of this.listening) if (c !== this.controlChannel && !this.holders.has(c)) remove.push(c);
    if (add.length === 0 && remove.length === 0) return this.wake();
    this.syncing = true;
    const server = this.server;
    server.runInternal([...add.map((c) => `LISTEN ${quoteIdentifier(c)}`), ...remove.map((c) => `UNLISTEN ${quoteIdentifier(c)}`)]).then(
      () => {
        this.syncing = false;
        if (server !== this.server) return this.sync();
        for (const c of add) this.listening.add(c);
        for (const c of remove) this.listening.delete(c);
        this.sync();
      },
      (err: PgError) => {
        this.syncing = false;
        if (server !== this.server) return this.sync();
        log.warn({ pool: this.pool.name, code: err.code }, 'the listening connection could not LISTEN; reconnecting');
        server.close();
      },
    );
  }

  /** Callbacks whose channels are all LISTENed on now. */
  private wake(): void {
    if (this.waiting.length === 0) return;
    const still: typeof this.waiting = [];
    const due: typeof this.waiting = [];
    for (const w of this.waiting) (this.isListening(w.channels) ? due : still).push(w);
    this.waiting = still;
    for (const w of due) w.then(true);
  }

  private connect(): void {
    const pool = this.pool;
    const s = pool.settings;
    this.connecting = true;
    const server = new ServerConnection(
      {
        ...pool.target,
        credentials: pool.credentials,
        params: new Map([['application_name', LISTENER_APPLICATION_NAME]]),
        connectTimeoutMs: s.connectTimeoutMs,
        socket: s.socket,
        tls: s.tls,
      },
      'listener',
      () => {},
    );
    server.login().then(
      () => {
        this.connecting = false;
        this.server = server;
        this.framer = new Framer(this);
        server.attach(this);
        log.debug({ pool: pool.name, server: server.id }, 'listening connection ready');
        this.sync();
      },
      (err: PgError) => {
        this.connecting = false;
        log.warn({ pool: pool.name, code: err.code, reason: err.message }, 'the listening connection could not log in; retrying');
        // Those waiting to LISTEN are not kept waiting on a server that refuses us.
        const failed = this.waiting;
        this.waiting = [];
        for (const w of failed) w.then(false);
        this.retryLater();
      },
    );
  }

  private retryLater(): void {
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.sync();
    }, RECONNECT_MS).unref();
  }

  // ---- ServerPeer: the listening connection's bytes ----

  writeFromServer(chunk: Buffer): boolean {
    try {
      this.framer.push(chunk);
    } catch {
      this.server?.close();
    }
    return true;
  }

  onceDrained(resume: () => void): void {
    resume();
  }

  onServerReady(): void {}

  onServerLost(server: ServerConnection): void {
    if (server !== this.server) return;
    this.server = null;
    this.listening.clear();
    log.warn({ pool: this.pool.name }, 'the listening connection was lost; reconnecting (notifications sent meanwhile are lost)');
    if (this.holders.size > 0 || this.waiting.length > 0) this.retryLater();
  }

  // ---- FrameSink: only NotificationResponse matters ----

  onHeader(type: number): boolean {
    return type === NOTIFICATION;
  }

  onBody(_type: number, body: Buffer): void {
    const r = new BodyReader(body);
    r.int32(); // the notifying backend's pid
    const channel = r.cstring();
    if (channel === this.controlChannel) {
      const [id, seq] = r.cstring().split(' ');
      this.subscribers.get(Number(id))?.onCommitted(Number(seq));
      return;
    }
    const set = this.members.get(channel);
    if (!set) return;
    const message = Buffer.allocUnsafe(5 + body.length);
    message[0] = NOTIFICATION;
    message.writeInt32BE(4 + body.length, 1);
    body.copy(message, 5);
    for (const sub of set) sub.onNotification(message);
  }
}
