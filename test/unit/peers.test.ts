// Cancel requests across instances (src/pooler/peers.ts, src/net/worker-identity.ts): the
// instance's peer_id travels in its cancel keys, and a CancelRequest is kept, sent on to the
// configured peer its key names, or dropped; nothing in a request can aim it anywhere else.
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { routeCancel, forwardCancel, type CancelRoute } from '../../src/pooler/peers.js';
import { newCancelKey, peerOfSecret, markForwarded, isForwarded, withoutForwardMark } from '../../src/net/worker-identity.js';

const PEERS: Record<string, { host: string; port?: number }> = { '2': { host: '10.0.0.2', port: 6432 }, '3': { host: '10.0.0.3' }, '16383': { host: '/run/tessera', port: 7000 } };
const ONE = { peer_id: 1, peers: PEERS };

/** A key as instance `peer` issues it, with these random low bits. */
const keyOf = (peer: number, low = 0x1abcd) => (peer << 17) | (low & 0x1ffff);

test('a peered key carries its peer_id in bits 30..17, leaves bit 31 clear, and keeps 17 random bits', () => {
  for (const peer of [1, 2, 255, 8191, 16383]) {
    const lows = new Set<number>();
    for (let i = 0; i < 64; i++) {
      const { pid, secret } = newCancelKey(peer);
      assert.is(peerOfSecret(secret), peer);
      assert.not.ok(isForwarded(secret), 'a fresh key is not marked forwarded');
      assert.ok(pid > 0);
      lows.add(secret & 0x1ffff);
    }
    assert.ok(lows.size > 60, `random low bits (${lows.size} distinct of 64)`);
  }
  // Without peering the whole secret is random: its "peer" bits name nothing in particular.
  const peers = new Set(Array.from({ length: 64 }, () => peerOfSecret(newCancelKey(0).secret)));
  assert.ok(peers.size > 40);
});

test('the forwarded mark goes on and comes off without touching the key', () => {
  for (const key of [keyOf(1), keyOf(16383, 0x1ffff), keyOf(2, 0)]) {
    const marked = markForwarded(key);
    assert.ok(isForwarded(marked));
    assert.ok(marked < 0, 'bit 31 set: a negative Int32 on the wire');
    assert.is(withoutForwardMark(marked), key);
    assert.is(peerOfSecret(withoutForwardMark(marked)), peerOfSecret(key));
  }
});

test('without a peer_id every key is this instance\'s, whatever its bits say', () => {
  for (const secret of [keyOf(2), keyOf(7), markForwarded(keyOf(2)), -1, 0]) {
    assert.equal(routeCancel({ peer_id: 0, peers: PEERS }, secret), { kind: 'local', secret });
  }
});

test('a key naming our own peer_id is ours (a forwarded one too, with the mark taken off)', () => {
  assert.equal(routeCancel(ONE, keyOf(1)), { kind: 'local', secret: keyOf(1) });
  assert.equal(routeCancel(ONE, markForwarded(keyOf(1))), { kind: 'local', secret: keyOf(1) });
});

test('a key naming a configured peer is sent there, marked forwarded; a peer without a port gets 6432', () => {
  assert.equal(routeCancel(ONE, keyOf(2)), { kind: 'forward', peerId: 2, host: '10.0.0.2', port: 6432, secret: markForwarded(keyOf(2)) });
  assert.equal(routeCancel(ONE, keyOf(3, 5)), { kind: 'forward', peerId: 3, host: '10.0.0.3', port: 6432, secret: markForwarded(keyOf(3, 5)) });
  assert.equal(routeCancel(ONE, keyOf(16383)), { kind: 'forward', peerId: 16383, host: '/run/tessera', port: 7000, secret: markForwarded(keyOf(16383)) });
});

test('a forged key naming an unknown peer is dropped; a forwarded key that is not ours is never sent further', () => {
  assert.equal(routeCancel(ONE, keyOf(7)), { kind: 'drop', reason: 'names no configured peer' });
  assert.equal(routeCancel(ONE, keyOf(0)), { kind: 'drop', reason: 'names no configured peer' });
  // Peer 2 sent us a key it says is ours but that names peer 3: no second hop.
  assert.equal(routeCancel(ONE, markForwarded(keyOf(3))), { kind: 'drop', reason: 'forwarded by a peer but not ours' });
});

test('only configured peers are ever contacted: every 32-bit pattern of the peer bits and the mark, routed', () => {
  const allowed = new Set(Object.values(PEERS).map((p) => `${p.host}:${p.port ?? 6432}`));
  const counts: Record<CancelRoute['kind'], number> = { local: 0, forward: 0, drop: 0 };
  for (let peer = 0; peer <= 0x3fff; peer++) {
    for (const low of [0, 0x1ffff, (peer * 7919) & 0x1ffff]) {
      for (const secret of [keyOf(peer, low), markForwarded(keyOf(peer, low))]) {
        const route = routeCancel(ONE, secret);
        counts[route.kind]++;
        if (route.kind !== 'forward') continue;
        assert.ok(allowed.has(`${route.host}:${route.port}`), `${secret} went to ${route.host}:${route.port}`);
        assert.is(PEERS[String(route.peerId)]!.host, route.host);
        assert.ok(isForwarded(route.secret), 'what is sent on cannot travel again');
        assert.not.ok(isForwarded(secret), 'only an unmarked key is forwarded');
      }
    }
  }
  // Three configured peers, three low-bit patterns each; the rest ours or dropped.
  assert.equal(counts, { local: 6, forward: 9, drop: 2 * 3 * 0x4000 - 15 });
});

test('forwardCancel sends one CancelRequest with the marked key to the peer, and hangs up', async () => {
  const received: Buffer[] = [];
  const server = net.createServer((socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (d) => chunks.push(d));
    socket.on('end', () => {
      received.push(Buffer.concat(chunks));
      socket.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  try {
    const port = (server.address() as net.AddressInfo).port;
    const route = routeCancel({ peer_id: 1, peers: { '2': { host: '127.0.0.1', port } } }, keyOf(2));
    assert.is(route.kind, 'forward');
    forwardCancel(route as Extract<CancelRoute, { kind: 'forward' }>, 0x01020304);
    const deadline = Date.now() + 5000;
    while (received.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.is(received.length, 1);
    const packet = received[0]!;
    assert.is(packet.length, 16);
    assert.is(packet.readInt32BE(0), 16);
    assert.is(packet.readInt32BE(4), 80877102, 'the CancelRequest code');
    assert.is(packet.readInt32BE(8), 0x01020304);
    assert.is(packet.readInt32BE(12), markForwarded(keyOf(2)));
  } finally {
    server.close();
  }
});

test.run();
