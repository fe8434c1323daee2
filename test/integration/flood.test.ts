// Floods: 5,000 slowloris sockets (silent, or one byte a second) are cut at client_login_timeout
// while legitimate clients still log in, and a flood past max_client_conn gets 53300 at once and
// leaves nothing behind. Loopback only; every socket is closed by the test.
import net from 'node:net';
import { serialize } from 'pg-protocol';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, until } from '../support/tessera.js';

let cluster: Cluster;
const user = ROLES.trust.user;

test.before(async () => {
  cluster = await sharedCluster();
});

function open(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });
}

test('5,000 slowloris sockets are cut at client_login_timeout while legitimate clients log in', async () => {
  const t = await startTessera({ client_login_timeout: 6, max_client_conn: 10000, databases: { '*': clusterEntry(cluster) } });
  const sockets: net.Socket[] = [];
  let dripper: NodeJS.Timeout | undefined;
  try {
    // In batches within the listen backlog (128), each accepted before the next: an overflowing
    // backlog drops SYNs, and their one-second retransmits would only slow the test down.
    for (let i = 0; i < 5000; i += 100) {
      sockets.push(...(await Promise.all(Array.from({ length: 100 }, () => open(t.port)))));
      await until('the batch to be accepted', async () => t.proxy.clients.size >= sockets.length);
    }
    const closed = new Set<net.Socket>();
    const said: string[] = [];
    for (const s of sockets) {
      s.on('error', () => {});
      s.on('data', (d) => said.length < 10 && said.push(d.toString('latin1')));
      s.on('close', () => closed.add(s));
    }
    // Half send nothing; the other half drip a startup packet one byte a second.
    const startup = serialize.startup({ user, database: 'x' });
    let k = 0;
    dripper = setInterval(() => {
      for (let i = 1; i < sockets.length; i += 2) if (!sockets[i].destroyed) sockets[i].write(startup.subarray(k, k + 1));
      k++;
    }, 1000);
    // Legitimate clients are served while the 5,000 are held.
    assert.ok(t.proxy.clients.size >= 5000, `${t.proxy.clients.size} held`);
    for (let i = 0; i < 5; i++) {
      const c = await connect(t.conn(user));
      assert.is((await c.query('select 1 as one')).rows[0].one, 1);
      await c.end();
    }
    await until('every slowloris socket to be cut', async () => closed.size === sockets.length, 30000);
    assert.match(said.join(''), 'client_login_timeout');
    await until('Tessera to forget them', async () => t.proxy.clients.size === 0);
  } finally {
    clearInterval(dripper);
    for (const s of sockets) s.destroy();
    await t.stop();
  }
});

test('a flood past max_client_conn gets 53300 at once, the admitted clients keep working, nothing is left behind', async () => {
  const t = await startTessera({ max_client_conn: 20, databases: { '*': clusterEntry(cluster) } });
  try {
    const admitted = await Promise.all(Array.from({ length: 20 }, () => connect(t.conn(user))));
    const refused = await Promise.all(Array.from({ length: 500 }, () => rejection(connect(t.conn(user)))));
    for (const err of refused) assert.is(err.code, '53300');
    for (const c of admitted) assert.is((await c.query('select 1 as one')).rows[0].one, 1);
    await until('the refused clients to be forgotten', async () => t.proxy.clients.size === 20);
    await Promise.all(admitted.map((c) => c.end()));
    await until('all clients gone', async () => t.proxy.clients.size === 0);
  } finally {
    await t.stop();
  }
});

test.run();
