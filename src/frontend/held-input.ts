/**
 * What a client sent while no server was linked to it (or before its login was finished): raw
 * chunks from the session relay and the login phase, whole messages from the transaction relay.
 * They are forwarded, in order, once a server is linked.
 */

export interface HeldMessage {
  type: number;
  body: Buffer;
  raw: Buffer;
}

/** Shared empty lists, replaced by a real array at the first push: never pushed to. */
const NO_CHUNKS: Buffer[] = [];
const NO_MESSAGES: HeldMessage[] = [];
/**
 * A client waiting for a server is paused only once it has sent more than this: most send one
 * batch and wait for its answer, and pausing and resuming every wait costs each transaction a trip
 * through the stream machinery.
 */
const MAX_HELD_BYTES = 256 * 1024;

export class HeldInput {
  private chunks: Buffer[] = NO_CHUNKS;
  private messages: HeldMessage[] = NO_MESSAGES;
  /** ReadyForQuery messages the held chunks will be answered with. */
  readies = 0;
  private bytes = 0;

  get empty(): boolean {
    return this.chunks.length === 0 && this.messages.length === 0;
  }

  /** Keeps a chunk; true once so much is held that the client should no longer be read. */
  holdChunk(bytes: Buffer, readies = 0): boolean {
    if (this.chunks === NO_CHUNKS) this.chunks = [];
    this.chunks.push(bytes);
    this.readies += readies;
    return (this.bytes += bytes.length) > MAX_HELD_BYTES;
  }

  /** Keeps a whole message; true once so much is held that the client should no longer be read. */
  holdMessage(message: HeldMessage): boolean {
    if (this.messages === NO_MESSAGES) this.messages = [];
    this.messages.push(message);
    return (this.bytes += message.raw.length) > MAX_HELD_BYTES;
  }

  /** Everything held as chunks, and the ReadyForQuery count they owe; the hold starts empty again. */
  takeChunks(): { chunks: Buffer[]; readies: number } {
    const taken = { chunks: this.chunks, readies: this.readies };
    this.chunks = NO_CHUNKS;
    this.readies = 0;
    this.bytes = 0;
    return taken;
  }

  takeMessages(): HeldMessage[] {
    const taken = this.messages;
    this.messages = NO_MESSAGES;
    this.bytes = 0;
    return taken;
  }
}
