/**
 * What a backend owes for the messages sent to it, in order, while Tessera rewrites a client's
 * extended-protocol traffic (prepared statements in transaction mode). Each entry says which
 * response completes it, whether that response is Tessera's own to swallow (a Parse or Close it
 * injected), or, for a message Tessera answered itself, the bytes to hand the client when every
 * earlier response has been relayed.
 */

export const enum Expect {
  Parse,
  Bind,
  DescribeStatement,
  DescribePortal,
  Execute,
  Close,
  /** Sync, simple Query and FunctionCall: complete at ReadyForQuery. */
  Ready,
  /** Answered by Tessera: `synthetic` goes to the client in order. */
  Synthetic,
}

export interface Entry {
  expect: Expect;
  /** The completing response is Tessera's own (an injected Parse/Close): do not relay it. */
  swallow?: boolean;
  /** Every response up to and including the completing one is Tessera's own (an injected query). */
  swallowAll?: boolean;
  synthetic?: Buffer;
  /** Synthetic bytes made when they are due (they depend on the transaction status by then). */
  synthesize?: () => Buffer;
  /** Sees each response swallowed for this entry (Tessera reading its own injected query's answer). */
  inspect?: (type: number, body: Buffer) => void;
  /** Undo bookkeeping when the server never ran the message (an earlier error skipped it). */
  onSkipped?: () => void;
  /** The message ran: `ok` unless the server answered it (or its query) with an error. */
  onDone?: (ok: boolean) => void;
  /**
   * The prepared statement a rewritten Bind or Describe names: an ErrorResponse answering it goes
   * to the client's relay first (which names the client's statement, or retries the batch).
   */
  statement?: { readonly key: string; readonly serverName: string };
  /** A Ready entry with onDone saw an ErrorResponse before its ReadyForQuery. */
  failed?: boolean;
}

const T = (c: string) => c.charCodeAt(0);
/** Shared "nothing due" answer; callers only read it. */
const NONE: readonly Buffer[] = Object.freeze([]) as readonly Buffer[];
const ERROR = T('E');
const READY = T('Z');

/** Response types that can complete an entry of each kind (ErrorResponse aside). */
const COMPLETES: Record<Exclude<Expect, Expect.Synthetic>, number[]> = {
  [Expect.Parse]: [T('1')],
  [Expect.Bind]: [T('2')],
  [Expect.DescribeStatement]: [T('T'), T('n')],
  [Expect.DescribePortal]: [T('T'), T('n')],
  [Expect.Execute]: [T('C'), T('I'), T('s')],
  [Expect.Close]: [T('3')],
  [Expect.Ready]: [READY],
};

/** Types the server relay must read whole to follow the queue. */
export const TRACKED_RESPONSES = new Set([T('1'), T('2'), T('3'), T('T'), T('n'), T('C'), T('I'), T('s'), ERROR, READY]);

export class ResponseQueue {
  private readonly entries: Entry[] = [];
  /** The entry the server's last ErrorResponse answered (an extended message's, not a query's). */
  failed: Entry | null = null;

  get empty(): boolean {
    return this.entries.length === 0;
  }

  /** Adds an entry; returns synthetic bytes that are due now (nothing was outstanding before them). */
  push(entry: Entry): readonly Buffer[] {
    this.entries.push(entry);
    return this.dueSynthetics();
  }

  /** True when a response of this type completes the head entry and is Tessera's to swallow. */
  swallows(type: number): boolean {
    const head = this.entries[0];
    if (head === undefined || head.expect === Expect.Synthetic) return false;
    return head.swallowAll === true || (head.swallow === true && COMPLETES[head.expect].includes(type));
  }

  /** True when an ErrorResponse now would answer a rewritten statement's message (see Entry.statement). */
  reviewsError(): boolean {
    const head = this.entries[0];
    return head !== undefined && head.statement !== undefined;
  }

  /** After an error: nothing is owed but the ReadyForQuery of the failed batch's Sync. */
  get onlyReadyLeft(): boolean {
    return this.entries.length === 1 && this.entries[0].expect === Expect.Ready;
  }

  /**
   * The failed batch is sent again (see TransactionRelay.retryBatch): its ReadyForQuery is
   * Tessera's own, and `then` resends the batch when it arrives. Only while onlyReadyLeft.
   */
  retryAtReady(then: () => void): void {
    this.entries[0] = { expect: Expect.Ready, swallowAll: true, onDone: then };
  }

  /** A swallowed response, shown to the head entry's inspector before it advances the queue. */
  inspect(type: number, body: Buffer): void {
    this.entries[0]?.inspect?.(type, body);
  }

  /**
   * A whole response arrived. Advances the queue and returns the synthetic responses that are due
   * right after it.
   */
  onResponse(type: number): readonly Buffer[] {
    const head = this.entries[0];
    if (!head || head.expect === Expect.Synthetic) return NONE;
    if (type === ERROR) this.failed = null;
    if (type === ERROR && head.expect !== Expect.Ready) {
      // The server skips everything up to the next Sync after an error in an extended batch.
      this.failed = head;
      this.entries.shift();
      head.onSkipped?.();
      while (this.entries.length > 0 && this.entries[0].expect !== Expect.Ready) this.entries.shift()!.onSkipped?.();
      return NONE;
    }
    if (type === ERROR && head.onDone) head.failed = true;
    if (!COMPLETES[head.expect].includes(type)) return NONE;
    this.entries.shift();
    head.onDone?.(head.failed !== true);
    return this.dueSynthetics();
  }

  private dueSynthetics(): readonly Buffer[] {
    // The common case allocates nothing: this runs once per message on the relay path.
    if (this.entries.length === 0 || this.entries[0].expect !== Expect.Synthetic) return NONE;
    const due: Buffer[] = [];
    while (this.entries.length > 0 && this.entries[0].expect === Expect.Synthetic) {
      const entry = this.entries.shift()!;
      due.push(entry.synthetic ?? entry.synthesize!());
    }
    return due;
  }
}
