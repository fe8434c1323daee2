// Inputs for the fuzz tests: a seeded generator of front-end protocol byte streams (valid seeds,
// hand-written hostile ones, and random mutations of both) and a reader that checks what Tessera
// answered is well-formed. Seeded, so a failing case can be replayed: TESSERA_FUZZ_SEED=<n>.
import { serialize } from 'pg-protocol';

/** xorshift32: small, fast, and the same sequence for the same seed on every machine. */
export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return this.next() % n;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
}

export function fuzzSeed(): number {
  const env = process.env.TESSERA_FUZZ_SEED;
  return env ? Number(env) : (Math.random() * 0xffffffff) >>> 0 || 1;
}

/** Lengths that break naive parsers. */
export const NASTY_INT32 = [0, 1, 3, 4, 5, 7, 8, 16, 10000, 10001, 0x7fffffff, -1, -4, -0x80000000, 0x40000000, 0x40000001, 65536];

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n | 0);
  return b;
}

/** A typed message with any length field, whatever the body really is. */
export function rawMessage(type: number, body: Buffer, length = body.length + 4): Buffer {
  return Buffer.concat([Buffer.from([type]), int32(length), body]);
}

/** A startup packet (protocol 3.0 unless told) from name/value pairs. */
export function startupPacket(params: [string, string][], code = 196608, length?: number): Buffer {
  const body = Buffer.from(params.map(([k, v]) => `${k}\0${v}\0`).join('') + '\0', 'utf8');
  return Buffer.concat([int32(length ?? 8 + body.length), int32(code), body]);
}

/** Seeds: what real clients send, and the hostile shapes the issue names. */
export function seeds(user: string, database: string): Buffer[] {
  const startup = serialize.startup({ user, database, application_name: 'fuzz' });
  const sql = (q: string) => serialize.query(q);
  const extended = Buffer.concat([
    serialize.parse({ name: 's1', text: 'select $1::int + 1' }),
    serialize.bind({ statement: 's1', values: ['41'] }),
    serialize.describe({ type: 'P' }),
    serialize.execute(),
    serialize.sync(),
  ]);
  const manyParams = startupPacket([['user', user], ['database', database], ...Array.from({ length: 10000 }, (_, i) => [`p${i}`, 'v'] as [string, string])]);
  const big = startupPacket([['user', user], ['database', database], ['application_name', 'x'.repeat(11000)]]);
  const list: Buffer[] = [
    startup,
    serialize.requestSsl(),
    serialize.cancel(12345, 678),
    Buffer.concat([startup, sql('select 1')]),
    Buffer.concat([startup, sql('select 1'), serialize.end(), Buffer.from('bytes after terminate')]),
    Buffer.concat([startup, extended]),
    Buffer.concat([startup, serialize.parse({ text: 'select 1' }), serialize.flush()]),
    Buffer.concat([startup, sql('begin'), sql('select 1/0'), sql('rollback')]),
    Buffer.concat([startup, sql('copy (select 1) to stdout')]),
    Buffer.concat([startup, rawMessage(0x70, Buffer.from('password\0'))]),
    Buffer.concat([startup, serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', 'n,,n=,r=abcdefghijklmnop')]),
    Buffer.concat([startup, serialize.sendSCRAMClientFinalMessage('c=biws,r=abc,p=AAAA')]),
    Buffer.concat([startup, serialize.end(), sql('select 1')]),
    manyParams,
    big,
    startupPacket([['user', user]], 196608 + 2),
    startupPacket([['user', user], ['_pq_.x', 'y']], 196608 + 1),
    startupPacket([['user', user]], 2 << 16),
    startupPacket([['database', database]]),
    startupPacket([['user', '']]),
    startupPacket([['user', user], ['replication', 'true']]),
    startupPacket([['user', user], ['database', 'pgbouncer']]),
    startupPacket([['user', user], ['database', database], ['options', '-c tessera.session_id=1 -c tessera.nonce=2 -c tessera.authent_token=x']]),
    Buffer.from(startup.subarray(0, startup.length - 1)), // no final terminator
    Buffer.concat([int32(12), int32(196608), Buffer.from('user')]), // key without terminator
  ];
  for (const n of NASTY_INT32) {
    list.push(Buffer.concat([int32(n), int32(196608)])); // startup length
    list.push(Buffer.concat([startup, rawMessage(0x51, Buffer.from('select 1\0'), n)])); // message length
    list.push(Buffer.concat([startup, rawMessage(0x70, Buffer.from('pw\0'), n)]));
  }
  for (const type of [0x00, 0x01, 0x7a, 0xff, 0x41, 0x4b, 0x56]) list.push(Buffer.concat([startup, rawMessage(type, Buffer.from('junk'))]));
  return list;
}

/** One random mutation of `b` (or of `b` spliced with another seed). */
export function mutate(rng: Rng, b: Buffer, pool: Buffer[]): Buffer {
  const out = Buffer.from(b);
  const at = () => rng.int(out.length + 1);
  switch (rng.int(10)) {
    case 0: // flip a bit
      if (out.length) out[rng.int(out.length)] ^= 1 << rng.int(8);
      return out;
    case 1: // random byte
      if (out.length) out[rng.int(out.length)] = rng.next() & 0xff;
      return out;
    case 2: { // nasty int32 somewhere (a length field, with luck)
      if (out.length < 4) return out;
      out.writeInt32BE(rng.pick(NASTY_INT32) | 0, rng.int(out.length - 3));
      return out;
    }
    case 3: { // truncate
      return out.subarray(0, at());
    }
    case 4: { // insert random bytes
      const i = at();
      return Buffer.concat([out.subarray(0, i), rng.bytes(1 + rng.int(16)), out.subarray(i)]);
    }
    case 5: { // delete a range
      const i = at();
      return Buffer.concat([out.subarray(0, i), out.subarray(Math.min(out.length, i + 1 + rng.int(16)))]);
    }
    case 6: { // duplicate a range
      const i = at();
      const j = Math.min(out.length, i + rng.int(64));
      return Buffer.concat([out.subarray(0, j), out.subarray(i, j), out.subarray(j)]);
    }
    case 7: { // splice with another seed
      const other = rng.pick(pool);
      return Buffer.concat([out.subarray(0, at()), other.subarray(rng.int(other.length + 1))]);
    }
    case 8: // remove a NUL terminator
      {
        const i = out.indexOf(0, rng.int(out.length + 1));
        if (i >= 0) out[i] = 0x41;
      }
      return out;
    default: // pure noise
      return rng.bytes(rng.int(64));
  }
}

/** A case: a seed, mutated 0-3 times, or pure random bytes. */
export function fuzzCase(rng: Rng, pool: Buffer[]): Buffer {
  if (rng.int(20) === 0) return rng.bytes(rng.int(200));
  let b = rng.pick(pool);
  for (let n = rng.int(4); n > 0; n--) b = mutate(rng, b, pool);
  return b;
}

/** Splits `b` into 1..6 chunks at random offsets (the framers must not care where). */
export function chunks(rng: Rng, b: Buffer): Buffer[] {
  const cuts = Array.from({ length: rng.int(6) }, () => rng.int(b.length + 1)).sort((x, y) => x - y);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...cuts, b.length]) {
    if (c > prev) out.push(b.subarray(prev, c));
    prev = c;
  }
  return out;
}

export interface Reply {
  /** Type letters of every message, in order ('N' alone: the SSL/GSS refusal byte). */
  types: string[];
  /** SQLSTATEs of the ErrorResponses. */
  codes: string[];
  /** Bytes left that do not form a whole message (must be empty when the server hung up). */
  trailing: number;
}

/** Splits what Tessera sent back into messages; throws if a length field is impossible. */
export function readReply(bytes: Buffer): Reply {
  const types: string[] = [];
  const codes: string[] = [];
  let pos = 0;
  // A lone 'N' answers SSLRequest/GSSENCRequest; it may come first (or after another request).
  while (pos < bytes.length && bytes[pos] === 0x4e && (bytes.length - pos < 5 || bytes.readInt32BE(pos + 1) < 4 || bytes.readInt32BE(pos + 1) > 1 << 20)) {
    types.push('N');
    pos++;
  }
  while (bytes.length - pos >= 5) {
    const type = String.fromCharCode(bytes[pos]);
    const len = bytes.readInt32BE(pos + 1);
    if (len < 4) throw new Error(`reply has message ${type} with length ${len}`);
    if (bytes.length - pos < 1 + len) break;
    if (type === 'E') {
      const body = bytes.subarray(pos + 5, pos + 1 + len);
      const m = /(?:^|\0)C([0-9A-Z]{5})\0/.exec(body.toString('latin1'));
      codes.push(m ? m[1] : '?');
    }
    types.push(type);
    pos += 1 + len;
  }
  return { types, codes, trailing: bytes.length - pos };
}
