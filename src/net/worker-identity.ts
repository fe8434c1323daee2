/**
 * Which worker this process is (setting `workers`): the primary forks N processes that share the
 * listening sockets, each with its own pools. Limits are split between them so the totals stay
 * within the configured ones; ids and cancel keys carry the worker so the right one is found.
 */
import { randomFillSync } from 'node:crypto';

/** 0-based index of this worker; 0 in a single-process Tessera. */
export const workerIndex = Number(process.env.TESSERA_WORKER_INDEX ?? 0);
/** How many workers share the port; 1 in a single-process Tessera. */
export const workerCount = Math.max(1, Number(process.env.TESSERA_WORKERS ?? 1));

/**
 * This worker's part of a limit: the total split as evenly as possible. 0 (unlimited) stays 0;
 * a worker never gets less than 1 of a non-zero limit, so it can still serve anyone.
 */
export function shareOf(total: number): number {
  if (workerCount === 1 || total <= 0) return total;
  const share = Math.floor(total / workerCount) + (workerIndex < total % workerCount ? 1 : 0);
  return Math.max(1, share);
}

/** Ids unique across workers: worker i hands out i+1, i+1+N, i+1+2N, ... */
export function idSequence(): () => number {
  let next = workerIndex + 1;
  return () => {
    const id = next;
    next += workerCount;
    return id;
  };
}

/** The worker that owns an id from idSequence() (`workers`: the primary passes its own count). */
export function workerOfId(id: number, workers = workerCount): number {
  return (id - 1) % workers;
}

// Random bytes are drawn a page at a time: one call into the CSPRNG per 512 keys, not per login.
const randomPool = Buffer.alloc(4096);
let randomOffset = randomPool.length;

/** The offset in randomPool of 8 fresh random bytes (read in place: no view allocated per key). */
function random8(): number {
  if (randomOffset + 8 > randomPool.length) {
    randomFillSync(randomPool);
    randomOffset = 0;
  }
  const at = randomOffset;
  randomOffset += 8;
  return at;
}

/** peer_id's place in a peered key's secret: bits 30..17; bit 31 marks a forwarded request. */
const PEER_SHIFT = 17;
const PEER_MASK = 0x3fff;
const SECRET_RANDOM = (1 << PEER_SHIFT) - 1;
const FORWARDED = 0x80000000;

/**
 * A client's BackendKeyData: 7 bits of the pid name the worker (a cancel request may reach any
 * worker, which forwards it), the other 24 and the whole 32-bit secret are random. With peering
 * (`peerId` > 0) 14 bits of the secret name the instance, so another instance behind the same
 * load balancer can forward the request; 17 stay random, and bit 31 is left clear for the
 * forwarded mark. That is 41 random bits with workers, 48 without: each guess costs a TCP
 * connection, and a wrong key is dropped without an answer.
 */
export function newCancelKey(peerId = 0): { pid: number; secret: number } {
  const at = random8();
  const random = randomPool.readUInt32BE(at) & 0xffffff;
  const pid = workerCount > 1 ? (workerIndex << 24) | random : randomPool.readInt32BE(at) & 0x7fffffff;
  const secret = peerId > 0 ? ((peerId & PEER_MASK) << PEER_SHIFT) | (randomPool.readInt32BE(at + 4) & SECRET_RANDOM) : randomPool.readInt32BE(at + 4);
  return { pid: pid || 1, secret };
}

/** The peer_id a peered key names (meaningful only when this instance has a peer_id). */
export function peerOfSecret(secret: number): number {
  return (secret >>> PEER_SHIFT) & PEER_MASK;
}

/** A forwarded request carries the mark, so it is never forwarded again (no loops between misconfigured peers). */
export function markForwarded(secret: number): number {
  return (secret | FORWARDED) | 0;
}

export function isForwarded(secret: number): boolean {
  return (secret & FORWARDED) !== 0;
}

/** The key as it was issued. */
export function withoutForwardMark(secret: number): number {
  return secret & 0x7fffffff;
}

export function workerOfPid(pid: number, workers = workerCount): number {
  return workers > 1 ? (pid >>> 24) & 0x7f : 0;
}
