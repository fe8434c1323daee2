/**
 * Cancel requests across Tessera (or PgBouncer) instances behind one address, as PgBouncer 1.19's
 * peering: each instance has a peer_id, which its cancel keys carry (net/worker-identity.ts), and
 * a `peers` map of the others. A CancelRequest whose key names another configured peer is sent
 * on to that peer, marked as forwarded so it never travels further; a key naming any other id is
 * dropped. Only the configured peers' addresses are ever contacted: nothing in a request picks
 * where it goes beyond choosing one of them.
 */
import net from 'node:net';
import { serialize } from 'pg-protocol';
import type { Config } from '../config/schema.js';
import { isForwarded, markForwarded, peerOfSecret, withoutForwardMark } from '../net/worker-identity.js';

export type CancelRoute =
  | { kind: 'local'; secret: number }
  | { kind: 'forward'; peerId: number; host: string; port: number; secret: number }
  | { kind: 'drop'; reason: string };

const DEFAULT_PEER_PORT = 6432;
const FORWARD_TIMEOUT_MS = 5000;

/** Where a cancel request with this key goes. Without a peer_id every key is this instance's. */
export function routeCancel(c: Pick<Readonly<Config>, 'peer_id' | 'peers'>, secret: number): CancelRoute {
  if (c.peer_id === 0) return { kind: 'local', secret };
  const forwarded = isForwarded(secret);
  const key = withoutForwardMark(secret);
  const owner = peerOfSecret(key);
  if (owner === c.peer_id) return { kind: 'local', secret: key };
  if (forwarded) return { kind: 'drop', reason: 'forwarded by a peer but not ours' };
  const peer = c.peers[String(owner)];
  if (!peer) return { kind: 'drop', reason: 'names no configured peer' };
  return { kind: 'forward', peerId: owner, host: peer.host, port: peer.port ?? DEFAULT_PEER_PORT, secret: markForwarded(key) };
}

/** Sends the CancelRequest to the peer on a connection of its own; fire and forget, bounded. */
export function forwardCancel(route: Extract<CancelRoute, { kind: 'forward' }>, pid: number): void {
  const conn = route.host.startsWith('/') ? net.connect({ path: `${route.host}/.s.PGSQL.${route.port}` }) : net.connect({ host: route.host, port: route.port });
  conn.setTimeout(FORWARD_TIMEOUT_MS, () => conn.destroy());
  conn.on('error', () => conn.destroy());
  conn.on('connect', () => conn.end(serialize.cancel(pid, route.secret)));
}
