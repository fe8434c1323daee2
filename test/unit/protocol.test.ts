import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { serialize } from 'pg-protocol';
import { Framer, ProtocolViolation, type FrameSink } from '../../src/protocol/framing.js';
import { StartupReader, type StartupPacket } from '../../src/protocol/startup.js';
import * as msg from '../../src/protocol/messages.js';
import { PgError, parseErrorFields } from '../../src/protocol/messages.js';
import { extractSettings, splitOptions } from '../../src/protocol/options.js';
import { bindMessage, readBind } from '../../src/pool/prepared.js';
import { splitLikePostgres } from '../support/split-opts.js';

/** Records what a framer reports: every header, and the bodies of the wanted types. */
class Recorder implements FrameSink {
  headers: string[] = [];
  bodies: string[] = [];
  constructor(private readonly wanted: string) {}
  onHeader(type: number, length: number): boolean {
    this.headers.push(`${String.fromCharCode(type)}${length}`);
    return this.wanted.includes(String.fromCharCode(type));
  }
  onBody(type: number, body: Buffer): void {
    this.bodies.push(`${String.fromCharCode(type)}:${body.toString('hex')}`);
  }
}

/** Feeds `bytes` in two pieces split at every offset and checks the same messages come out. */
function eachSplit(bytes: Buffer, check: (chunks: Buffer[]) => void): void {
  for (let i = 0; i <= bytes.length; i++) check([bytes.subarray(0, i), bytes.subarray(i)]);
  // and one byte at a time
  check([...bytes].map((b) => Buffer.from([b])));
}

const serverStream = Buffer.concat([
  msg.authOk(),
  msg.parameterStatus('server_version', '15.18'),
  msg.backendKeyData(1234, -5678),
  msg.errorResponse({ severity: 'ERROR', code: '42601', message: 'syntax error' }),
  msg.readyForQuery(0x49),
]);

test('framer reports every header and wanted body at every split', () => {
  const whole = new Recorder('SZ');
  new Framer(whole).push(serverStream);
  assert.equal(whole.headers.length, 5);
  assert.equal(whole.bodies, [
    `S:${Buffer.from('server_version\u000015.18\u0000').toString('hex')}`,
    'Z:49',
  ]);
  eachSplit(serverStream, (chunks) => {
    const r = new Recorder('SZ');
    const f = new Framer(r);
    for (const c of chunks) f.push(c);
    assert.equal(r.headers, whole.headers);
    assert.equal(r.bodies, whole.bodies);
    assert.ok(f.atBoundary);
  });
});

test('framer holds a partial header and tells its type', () => {
  const q = serialize.query('select 1');
  const f = new Framer(new Recorder(''));
  f.push(q.subarray(0, 3));
  assert.is(f.heldHeaderBytes, 3);
  assert.is(String.fromCharCode(f.heldType), 'Q');
  assert.equal(f.heldHeader(), q.subarray(0, 3));
  assert.not.ok(f.atBoundary);
  f.push(q.subarray(3));
  assert.ok(f.atBoundary);
});

test('framer streams large bodies it does not want without buffering them', () => {
  const big = Buffer.alloc(5 + 3_000_000);
  big[0] = 0x44; // DataRow
  big.writeInt32BE(4 + 3_000_000, 1);
  const r = new Recorder('');
  const f = new Framer(r, 0x40000000, 16);
  for (let i = 0; i < big.length; i += 65536) f.push(big.subarray(i, i + 65536));
  assert.equal(r.headers, ['D3000004']);
  assert.ok(f.atBoundary);
});

test('framer rejects lengths below 4 and above the maximum', () => {
  for (const len of [0, 3, -1, 0x7fffffff]) {
    const b = Buffer.alloc(5);
    b[0] = 0x51;
    b.writeInt32BE(len, 1);
    assert.throws(() => new Framer(new Recorder(''), 1 << 30).push(b), (e: unknown) => e instanceof ProtocolViolation);
  }
});

test('framer refuses to assemble a wanted body larger than its limit', () => {
  const b = Buffer.alloc(5 + 100);
  b[0] = 0x5a;
  b.writeInt32BE(104, 1);
  assert.throws(() => new Framer(new Recorder('Z'), 1 << 30, 10).push(b), (e: unknown) => e instanceof ProtocolViolation);
});

test('a wanted body spanning chunks costs only the bytes received, whatever its header claims', () => {
  const sizes: number[] = [];
  const original = Buffer.allocUnsafe;
  Buffer.allocUnsafe = (n: number) => (sizes.push(n), original(n));
  try {
    // A header claiming 1 GB, then 5 bytes: nothing near 1 GB is allocated.
    const claim = Buffer.alloc(10);
    claim[0] = 0x50;
    claim.writeInt32BE(0x40000000, 1);
    const framer = new Framer(new Recorder('P'), 0x40000000, 0x40000000);
    framer.push(claim);
    assert.ok(Math.max(0, ...sizes) <= 64 * 1024, `allocated ${Math.max(...sizes)} bytes for 5 received`);
    assert.is(framer.buffered, 5);
  } finally {
    Buffer.allocUnsafe = original;
  }
  // A 200 kB body one byte per chunk, and in uneven pieces, comes out whole and unchanged.
  const body = Buffer.from(Array.from({ length: 200_000 }, (_, i) => i % 251));
  const whole = Buffer.concat([Buffer.from([0x50, 0, 0, 0, 0]), body]);
  whole.writeInt32BE(body.length + 4, 1);
  for (const step of [1, 7, 65535, 65536, 65537, 199_999]) {
    const r = new Recorder('P');
    const f = new Framer(r, 0x40000000, 1 << 20);
    for (let i = 0; i < whole.length; i += step) f.push(whole.subarray(i, i + step));
    assert.equal(r.bodies, [`P:${body.toString('hex')}`], `step ${step}`);
    assert.is(f.buffered, 0);
  }
});

function readStartup(chunks: Buffer[]): StartupPacket | null {
  const r = new StartupReader();
  let out: StartupPacket | null = null;
  for (const c of chunks) out = r.push(c) ?? out;
  return out;
}

test('startup packet decodes at every split', () => {
  const packet = serialize.startup({ user: 'alice', database: 'app', options: '-c search_path=x' });
  eachSplit(packet, (chunks) => {
    const p = readStartup(chunks);
    assert.ok(p && p.kind === 'startup');
    if (p?.kind !== 'startup') return;
    assert.is(p.minor, 0);
    assert.equal([...p.params], [['user', 'alice'], ['database', 'app'], ['options', '-c search_path=x'], ['client_encoding', 'UTF8']]);
  });
});

test('SSLRequest, GSSENCRequest and CancelRequest decode', () => {
  assert.equal(readStartup([serialize.requestSsl()]), { kind: 'ssl' });
  const gss = Buffer.alloc(8);
  gss.writeInt32BE(8, 0);
  gss.writeInt32BE(80877104, 4);
  assert.equal(readStartup([gss]), { kind: 'gssenc' });
  const cancel = serialize.cancel(42, -7);
  eachSplit(cancel, (chunks) => assert.equal(readStartup(chunks), { kind: 'cancel', pid: 42, secret: -7 }));
});

test('a newer minor version and _pq_ options are reported for NegotiateProtocolVersion', () => {
  const body = Buffer.from('user\u0000bob\u0000_pq_.future\u0000on\u0000\u0000');
  const b = Buffer.alloc(8 + body.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE((3 << 16) | 2, 4);
  body.copy(b, 8);
  const p = readStartup([b]);
  assert.ok(p?.kind === 'startup');
  if (p?.kind !== 'startup') return;
  assert.is(p.minor, 2);
  assert.equal(p.unknownOptions, ['_pq_.future']);
  assert.equal([...p.params], [['user', 'bob']]);
});

test('bad startup packets are protocol violations, never huge allocations', () => {
  const bad = (b: Buffer) => assert.throws(() => new StartupReader().push(b), (e: unknown) => e instanceof ProtocolViolation);
  const len = (n: number) => {
    const b = Buffer.alloc(8);
    b.writeInt32BE(n, 0);
    b.writeInt32BE(196608, 4);
    return b;
  };
  bad(len(0));
  bad(len(4));
  bad(len(-1));
  bad(len(0x7fffffff));
  bad(len(10001));
  // protocol 2.0
  const v2 = Buffer.alloc(9);
  v2.writeInt32BE(9, 0);
  v2.writeInt32BE(2 << 16, 4);
  bad(v2);
  // missing terminators
  const noTerm = Buffer.concat([Buffer.alloc(8), Buffer.from('user\u0000bob')]);
  noTerm.writeInt32BE(noTerm.length, 0);
  noTerm.writeInt32BE(196608, 4);
  bad(noTerm);
});

test('ErrorResponse round-trips through parseErrorFields and PgError.fromServer keeps the bytes', () => {
  const bytes = msg.errorResponse({ severity: 'FATAL', code: '57P01', message: 'terminating connection due to administrator command' });
  const fields = parseErrorFields(bytes.subarray(5));
  assert.is(fields.get('C'), '57P01');
  assert.is(fields.get('S'), 'FATAL');
  const err = PgError.fromServer(bytes.subarray(5));
  assert.is(err.code, '57P01');
  assert.equal(err.toMessage(), bytes);
});

test('NegotiateProtocolVersion names the newest minor we speak and the options we ignore', () => {
  const b = msg.negotiateProtocolVersion(0, ['_pq_.x']);
  assert.is(String.fromCharCode(b[0]), 'v');
  assert.is(b.readInt32BE(5), 0x30000);
  assert.is(b.readInt32BE(9), 1);
  assert.is(b.toString('utf8', 13, b.length - 1), '_pq_.x');
});

test('options are split into words as pg_split_opts does: white space between, a backslash taking the next character', () => {
  const cases: [string, string[]][] = [
    ['', []],
    ['   ', []],
    ['-c a=b', ['-c', 'a=b']],
    ['  -c\ta=b \n\r -c  x=y  ', ['-c', 'a=b', '-c', 'x=y']],
    ['-c search_path=x,\\ y', ['-c', 'search_path=x, y']],
    ['\\ leading', [' leading']],
    ['a\\\\b', ['a\\b']], // an escaped backslash
    ['ab\\', ['ab\\']], // a backslash at the very end stays
    ['\\', ['\\']],
    ['x\\ \\ y', ['x  y']],
    ['é\u00a0ü', ['é', 'ü']], // no-break space is white space to /\s/
    ['a\u2003b', ['a', 'b']],
    ['naïve -c tessera.nonce=7', ['naïve', '-c', 'tessera.nonce=7']],
  ];
  for (const [options, words] of cases) assert.equal(splitOptions(options), words, JSON.stringify(options));
  // And against the plain character-by-character reading, on strings made of the characters that matter.
  const alphabet = ['a', 'b', ' ', '\t', '\\', '=', '-', '\u00a0', 'é'];
  let seed = 1;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) % alphabet.length;
  for (let n = 0; n < 2000; n++) {
    const len = n % 12;
    let text = '';
    for (let i = 0; i < len; i++) text += alphabet[next()];
    assert.equal(splitOptions(text), splitLikePostgres(text), JSON.stringify(text));
  }
});

test('options: tessera.* settings are taken out, the rest is kept with its escapes', () => {
  const { settings, rest } = extractSettings('-c tessera.session_id=12 -ctessera.nonce=3 --tessera.authent_token=a\\ b -c search_path=x,\\ y --work_mem=4MB', 'tessera.');
  assert.equal([...settings], [['tessera.session_id', '12'], ['tessera.nonce', '3'], ['tessera.authent_token', 'a b']]);
  assert.is(rest, '-c search_path=x,\\ y --work_mem=4MB');
  assert.equal(splitOptions(rest!), ['-c', 'search_path=x, y', '--work_mem=4MB']);
  assert.is(extractSettings('-c tessera.nonce=1', 'tessera.').rest, undefined);
});

test('a rewritten Bind is the Bind pg-protocol writes for the new names, and readBind reads any back', () => {
  const values = ['42', null, 'é'];
  for (const [portal, statement] of [['', ''], ['', 'stmt'], ['p1', ''], ['pörtal', 'sé']]) {
    const original = serialize.bind({ portal, statement, values, binary: false });
    const { portal: p, statement: s, rest } = readBind(original.subarray(5));
    assert.equal([p, s], [portal, statement]);
    assert.equal(bindMessage('', 'tessera_abc', rest), serialize.bind({ portal: '', statement: 'tessera_abc', values, binary: false }));
    assert.equal(bindMessage(p, 'tessera_abc', rest), serialize.bind({ portal, statement: 'tessera_abc', values, binary: false }));
  }
});

test.run();
