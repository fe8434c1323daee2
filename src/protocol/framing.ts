/**
 * Header-only framing of typed protocol messages (everything after the startup packet).
 *
 * The relay forwards the bytes it received; it only needs to know where each message starts and,
 * for a few types (ReadyForQuery, ParameterStatus, ...), what the body says. The framer keeps the
 * state that survives chunk boundaries: a header split across chunks, and how many body bytes of
 * the current message are still to come. Bodies are only assembled for types the sink asks for;
 * everything else streams through untouched, so a 1 GB DataRow costs nothing here.
 */

export class ProtocolViolation extends Error {
  constructor(
    message: string,
    /** The SQLSTATE the client is told: protocol_violation unless PostgreSQL says otherwise. */
    readonly sqlstate = '08P01',
  ) {
    super(message);
  }
}

export interface FrameSink {
  /**
   * A message's 5-byte header is complete. `start` is the offset of its type byte in `chunk`,
   * or -1 when the header began in an earlier chunk. Return true to receive the whole body
   * through onBody (only for small messages: the framer refuses bodies above maxWantedBody).
   */
  onHeader(type: number, length: number, chunk: Buffer, start: number): boolean;
  onBody(type: number, body: Buffer): void;
}

const HEADER = 5;
/** Block size for assembling bodies that span chunks. */
const BLOCK = 64 * 1024;

export class Framer {
  /** Allocated on the first header split across chunks: most connections never need one. */
  private header: Buffer | null = null;
  private headerFill = 0;
  /** Body bytes of the current message not seen yet. */
  private remaining = 0;
  /**
   * A wanted body that spans chunks, copied into blocks of at most BLOCK bytes as it arrives and
   * joined once whole: memory follows the bytes received, never the length a header merely claims
   * (a client announcing 1 GB and sending 5 bytes costs 5 bytes), and a body sent one byte per
   * chunk costs no more than one sent at once.
   */
  private body: Buffer[] | null = null;
  private bodyFill = 0;
  private bodyLength = 0;
  private bodyType = 0;
  /**
   * During a callback: the offset in the current chunk just past what was read (past the header
   * in onHeader, past the body in onBody). Relays that cut or splice messages use it.
   */
  offset = 0;

  constructor(
    private readonly sink: FrameSink,
    /** Largest message length accepted at all (PostgreSQL's own limit is 1 GB). */
    private readonly maxLength = 0x40000000,
    /** Largest body assembled for onBody; relays that rewrite messages raise it. */
    public maxWantedBody = 1 << 20,
  ) {}

  /** Bytes held across chunks: a partial header and the received part of a wanted body. */
  get buffered(): number {
    return this.headerFill + (this.body ? this.bodyFill : 0);
  }

  /** True while a wanted body is being assembled across chunks. */
  get assembling(): boolean {
    return this.body !== null;
  }

  /** True between messages: no partial header and no body bytes outstanding. */
  get atBoundary(): boolean {
    return this.remaining === 0 && this.headerFill === 0;
  }

  /** Bytes of an incomplete header held from the last chunk (0..4); header[0] is its type. */
  get heldHeaderBytes(): number {
    return this.headerFill;
  }

  /** Type byte of the held partial header, valid when heldHeaderBytes > 0. */
  get heldType(): number {
    return this.header![0];
  }

  /** A copy of the held partial header, for relays that forward it once the header completes. */
  heldHeader(): Buffer {
    return Buffer.from(this.header!.subarray(0, this.headerFill));
  }

  push(chunk: Buffer): void {
    const len = chunk.length;
    let pos = 0;
    while (pos < len) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, len - pos);
        if (this.body) this.collect(chunk, pos, n);
        pos += n;
        this.remaining -= n;
        if (this.remaining === 0 && this.body) {
          const body = this.body.length === 1 ? this.body[0] : Buffer.concat(this.body, this.bodyFill);
          this.body = null;
          this.offset = pos;
          this.sink.onBody(this.bodyType, body);
        }
        continue;
      }

      let type: number;
      let length: number;
      let start: number;
      if (this.headerFill === 0 && len - pos >= HEADER) {
        type = chunk[pos];
        length = chunk.readInt32BE(pos + 1);
        start = pos;
        pos += HEADER;
      } else {
        const n = Math.min(HEADER - this.headerFill, len - pos);
        const header = (this.header ??= Buffer.alloc(HEADER));
        chunk.copy(header, this.headerFill, pos, pos + n);
        this.headerFill += n;
        pos += n;
        if (this.headerFill < HEADER) return;
        type = header[0];
        length = header.readInt32BE(1);
        this.headerFill = 0;
        start = -1;
      }
      if (length < 4 || length > this.maxLength) {
        throw new ProtocolViolation(`invalid message length ${length} for message type 0x${type.toString(16)}`);
      }
      this.remaining = length - 4;
      this.offset = pos;
      if (!this.sink.onHeader(type, length, chunk, start)) continue;

      if (this.remaining > this.maxWantedBody) {
        throw new ProtocolViolation(`message type 0x${type.toString(16)} too long (${length} bytes)`);
      }
      if (this.remaining <= len - pos) {
        const body = chunk.subarray(pos, pos + this.remaining);
        pos += this.remaining;
        this.remaining = 0;
        this.offset = pos;
        this.sink.onBody(type, body);
      } else {
        this.body = [];
        this.bodyFill = 0;
        this.bodyLength = this.remaining;
        this.bodyType = type;
      }
    }
  }

  /** Copies `n` bytes of a spanning body into its blocks (the last one filled before a new one). */
  private collect(chunk: Buffer, pos: number, n: number): void {
    const blocks = this.body!;
    while (n > 0) {
      const used = this.bodyFill % BLOCK;
      if (used === 0) blocks.push(Buffer.allocUnsafe(Math.min(BLOCK, this.bodyLength - this.bodyFill)));
      const block = blocks[blocks.length - 1];
      const k = Math.min(n, block.length - used);
      chunk.copy(block, used, pos, pos + k);
      pos += k;
      n -= k;
      this.bodyFill += k;
    }
  }
}

/** Reads NUL-terminated strings and integers out of one message body. */
export class BodyReader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  cstring(): string {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) throw new ProtocolViolation('missing string terminator');
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }

  int32(): number {
    if (this.pos + 4 > this.buf.length) throw new ProtocolViolation('message too short');
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  byte(): number {
    if (this.pos + 1 > this.buf.length) throw new ProtocolViolation('message too short');
    return this.buf[this.pos++];
  }

  bytes(n: number): Buffer {
    if (n < 0 || this.pos + n > this.buf.length) throw new ProtocolViolation('message too short');
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  rest(): Buffer {
    const b = this.buf.subarray(this.pos);
    this.pos = this.buf.length;
    return b;
  }
}
