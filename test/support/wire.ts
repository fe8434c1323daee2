// A raw wire-protocol client for tests that must send what no driver sends (an SSLRequest
// followed by a startup in one write, a pipeline without Sync, a Terminate right behind a
// query) or look at the exact messages that come back. Messages out are built with
// pg-protocol's `serialize`; messages in are framed and decoded here, so no test hand-parses
// bytes like [0x5a, 0, 0, 0, 5, 0x49]. Every read has a bound and says what it got if it fails.
import net from 'node:net';
import tls from 'node:tls';
import { serialize } from 'pg-protocol';

/** One backend message: its type letter ('R', 'E', 'Z', ...) and its body (after the length). */
export interface Message {
  type: string;
  body: Buffer;
}

const DEFAULT_TIMEOUT_MS = 15_000;

export class WireClient {
  /** Bytes received and not yet taken as messages or single bytes. */
  private pending: Buffer = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  private closedFlag = false;
  private failure: Error | null = null;
  /** Resolves when the connection is closed (by either side). */
  readonly closed: Promise<void>;

  constructor(readonly socket: net.Socket | tls.TLSSocket) {
    socket.on('data', (d: Buffer) => {
      this.pending = this.pending.length === 0 ? d : Buffer.concat([this.pending, d]);
      this.notify();
    });
    socket.on('error', (err) => {
      this.failure = err;
      this.notify();
    });
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.closedFlag = true;
        this.notify();
        resolve();
      }),
    );
  }

  /** A plaintext connection to host:port, once connected. */
  static async connect(port: number, host = '127.0.0.1'): Promise<WireClient> {
    const socket = net.connect(port, host);
    const client = new WireClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return client;
  }

  /** A direct-TLS connection (PostgreSQL 17's sslnegotiation=direct), once the handshake is done. */
  static async connectTls(options: tls.ConnectionOptions): Promise<WireClient> {
    const socket = tls.connect(options);
    const client = new WireClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    return client;
  }

  /** Connects and logs in with a StartupMessage; resolves with the messages up to ReadyForQuery. */
  static async login(port: number, params: Record<string, string>): Promise<{ client: WireClient; messages: Message[] }> {
    const client = await WireClient.connect(port);
    client.send(serialize.startup(params));
    return { client, messages: await client.readUntil('Z') };
  }

  /** Writes raw bytes: one or more messages from pg-protocol's serialize, or anything at all. */
  send(...bytes: Buffer[]): void {
    this.socket.write(bytes.length === 1 ? bytes[0] : Buffer.concat(bytes));
  }

  /** Sends `bytes` (if any) and Terminate in one write, and closes our side. */
  end(...bytes: Buffer[]): void {
    this.socket.end(Buffer.concat([...bytes, serialize.end()]));
  }

  /** Hangs up at once, as a client that vanishes. */
  destroy(): void {
    this.socket.destroy();
  }

  /** The one-byte answer to SSLRequest or GSSENCRequest ('S', 'G' or 'N'). */
  async readByte(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string> {
    await this.waitFor(() => this.pending.length >= 1, 'a one-byte answer', timeoutMs);
    const b = String.fromCharCode(this.pending[0]);
    this.pending = this.pending.subarray(1);
    return b;
  }

  /** The next whole backend message. */
  async next(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Message> {
    await this.waitFor(() => this.whole() > 0, 'a backend message', timeoutMs);
    return this.take();
  }

  /** Every whole message received so far and not yet read (also after the connection closed). */
  received(): Message[] {
    const got: Message[] = [];
    while (this.whole() > 0) got.push(this.take());
    return got;
  }

  /** Messages up to and including the first of type `type`. */
  async readUntil(type: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Message[]> {
    const deadline = Date.now() + timeoutMs;
    const got: Message[] = [];
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now())).catch((err: Error) => {
        throw new Error(`${err.message} (waiting for '${type}' after ${types(got).join(' ') || 'nothing'})`);
      });
      got.push(m);
      if (m.type === type) return got;
    }
  }

  /** The whole message at the front of `pending` (the caller checked whole()), copied out. */
  private take(): Message {
    const len = this.pending.readInt32BE(1);
    const message = { type: String.fromCharCode(this.pending[0]), body: Buffer.from(this.pending.subarray(5, 1 + len)) };
    this.pending = this.pending.subarray(1 + len);
    return message;
  }

  /** Length of the whole message at the front of `pending`, or 0. */
  private whole(): number {
    if (this.pending.length < 5) return 0;
    const len = this.pending.readInt32BE(1);
    if (len < 4) throw new Error(`backend message '${String.fromCharCode(this.pending[0])}' has length ${len}`);
    return this.pending.length >= 1 + len ? 1 + len : 0;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async waitFor(ready: () => boolean, what: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!ready()) {
      if (this.failure) throw new Error(`${what}: ${this.failure.message}`);
      if (this.closedFlag) throw new Error(`${what}: the connection closed (unread: ${this.pending.toString('hex') || 'nothing'})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: nothing after ${timeoutMs} ms (unread: ${this.pending.toString('hex') || 'nothing'})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}

/** The type letters of some messages, e.g. ['R', 'S', 'K', 'Z']. */
export function types(messages: Message[]): string[] {
  return messages.map((m) => m.type);
}

/** An ErrorResponse's or NoticeResponse's fields by code letter: C (SQLSTATE), M (message), S (severity)... */
export function errorFields(m: Message): Record<string, string> {
  if (m.type !== 'E' && m.type !== 'N') throw new Error(`not an ErrorResponse or NoticeResponse: '${m.type}'`);
  const fields: Record<string, string> = {};
  for (const part of m.body.toString('utf8').split('\0')) if (part.length > 1) fields[part[0]] = part.slice(1);
  return fields;
}

/** The SQLSTATEs of the ErrorResponses among some messages. */
export function errorCodes(messages: Message[]): string[] {
  return messages.filter((m) => m.type === 'E').map((m) => errorFields(m).C);
}

/** An Authentication message's request code (0 = AuthenticationOk, 10 = SASL, ...). */
export function authCode(m: Message): number {
  if (m.type !== 'R') throw new Error(`not an Authentication message: '${m.type}'`);
  return m.body.readInt32BE(0);
}

/** ReadyForQuery's transaction status: 'I' idle, 'T' in a transaction, 'E' in a failed one. */
export function readyStatus(m: Message): string {
  if (m.type !== 'Z') throw new Error(`not ReadyForQuery: '${m.type}'`);
  return String.fromCharCode(m.body[0]);
}

/** NegotiateProtocolVersion: the newest version offered (major << 16 | minor) and the options not recognised. */
export function negotiatedVersion(m: Message): { version: number; unrecognised: string[] } {
  if (m.type !== 'v') throw new Error(`not NegotiateProtocolVersion: '${m.type}'`);
  const version = m.body.readInt32BE(0);
  const n = m.body.readInt32BE(4);
  const unrecognised = m.body.subarray(8).toString('utf8').split('\0').slice(0, n);
  return { version, unrecognised };
}
