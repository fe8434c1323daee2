// Several Tessera instances behind one address: a cancel request that lands on the wrong instance
// is forwarded to the one that owns the key (peer_id, peers), a forged key for an unknown peer is
// dropped; and a rolling restart (SIGTERM one instance behind a round-robin TCP forwarder) fails
// no transaction of a node-postgres Pool while the other instance keeps serving.
import net from 'node:net';
import pg from 'pg';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, spawnTessera, clusterEntry, connect, rejection, until, sendCancel, freePort, capturedLogs } from '../support/tessera.js';
import { peerOfSecret, workerOfPid } from '../../src/net/worker-identity.js';

let cluster: Cluster;
const user = ROLES.trust.user;

test.before(async () => {
  cluster = await sharedCluster();
  await cluster.query(`drop table if exists rolling_log; create table rolling_log (worker int, n int); grant all on rolling_log to ${user}`, [], TEST_DB);
});

test('a CancelRequest sent to instance B cancels a query of a client on instance A; a forged key for an unknown peer is dropped', async () => {
  const [portA, portB] = [await freePort(), await freePort()];
  const databases = { '*': clusterEntry(cluster) };
  const a = await startTessera({ listen_port: portA, peer_id: 1, peers: { 2: { host: '127.0.0.1', port: portB } }, databases });
  const b = await startTessera({ listen_port: portB, peer_id: 2, peers: { 1: { host: '127.0.0.1', port: portA } }, databases });
  try {
    // listen_port given in the settings wins over the port startTessera picked for conn().
    const client = await connect({ ...a.conn(user), port: portA });
    const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
    assert.is(peerOfSecret(secretKey), 1, 'the key names its instance');
    const sleeping = rejection(client.query('select pg_sleep(30) as peer_cancel_victim'));
    await until('the query to run', async () => (await cluster.query(`select 1 from pg_stat_activity where query like '%peer_cancel_victim%' and state = 'active' and pid <> pg_backend_pid()`)).rowCount === 1);

    // A forged key naming peer 7, which neither instance knows: dropped, nothing is contacted.
    const forged = (7 << 17) | (secretKey & 0x1ffff);
    const logged = capturedLogs.length;
    await sendCancel(portB, processID, forged);
    await until('the forged key to be dropped', async () => capturedLogs.slice(logged).some((l) => l.includes('cancel request dropped') && l.includes('names no configured peer')));
    assert.is((await cluster.query(`select 1 from pg_stat_activity where query like '%peer_cancel_victim%' and state = 'active' and pid <> pg_backend_pid()`)).rowCount, 1, 'still running');

    // The real key, sent to the other instance (as a load balancer may): forwarded to A.
    await sendCancel(portB, processID, secretKey);
    const err = await sleeping;
    assert.is(err.code, '57014');
    assert.is((await client.query('select 1 as one')).rows[0].one, 1, 'the client goes on');
    await client.end();
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('workers = 2 on both instances: a cancel sent to B reaches the client on A, whichever of A\'s workers owns it and whichever worker of each instance receives it', async () => {
  const [portA, portB] = [await freePort(), await freePort()];
  const databases = { '*': clusterEntry(cluster) };
  const a = await spawnTessera({ workers: 2, listen_port: portA, peer_id: 1, peers: { 2: { host: '127.0.0.1', port: portB } }, databases });
  const b = await spawnTessera({ workers: 2, listen_port: portB, peer_id: 2, peers: { 1: { host: '127.0.0.1', port: portA } }, databases });
  const clients: pg.Client[] = [];
  try {
    // Four worker processes starting at once on a shared machine: give them time.
    for (const t of [a, b]) await until('both workers to listen', async () => (t.output().match(/"msg":"listening"/g) ?? []).length >= 2, 60000);
    // Clients on A until each of A's workers has one (the kernel spreads connections between them).
    const victims = new Map<number, pg.Client>();
    for (let i = 0; i < 200 && victims.size < 2; i++) {
      const c = await connect({ host: '127.0.0.1', port: portA, user, database: TEST_DB });
      clients.push(c);
      const { processID, secretKey } = c as unknown as { processID: number; secretKey: number };
      assert.is(peerOfSecret(secretKey), 1);
      if (!victims.has(workerOfPid(processID, 2))) victims.set(workerOfPid(processID, 2), c);
    }
    assert.is(victims.size, 2, '200 connections all landed on one of A\'s workers');
    // Each of A's workers' clients, cancelled through B twice: B's receiving worker forwards to A,
    // whose receiving worker hands it to the owner when that is the other one.
    let round = 0;
    for (let i = 0; i < 2; i++) {
      for (const [worker, victim] of victims) {
        const tag = `peer_worker_victim_${++round}`;
        const sleeping = rejection(victim.query(`select pg_sleep(30) as ${tag}`));
        await until('the query to run', async () => (await cluster.query(`select 1 from pg_stat_activity where query like '%${tag}%' and state = 'active' and pid <> pg_backend_pid()`)).rowCount === 1);
        const { processID, secretKey } = victim as unknown as { processID: number; secretKey: number };
        await sendCancel(portB, processID, secretKey);
        const err = await sleeping;
        assert.is(err.code, '57014', `the client of A's worker ${worker}, round ${i + 1}: ${err.message}\nA:\n${a.output().split('\n').slice(-15).join('\n')}\nB:\n${b.output().split('\n').slice(-15).join('\n')}`);
        assert.is((await victim.query('select 1 as one')).rows[0].one, 1, 'the client goes on');
      }
    }
    assert.ok(b.output().includes('forwarding it to its peer'), 'B sent the requests on to A');
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await a.stop();
    await b.stop();
  }
});

/**
 * A TCP round-robin forwarder, as a load balancer: each new connection goes to the next backend;
 * one that refuses the connection is skipped for the others in turn (HAProxy's redispatch). Once
 * connected, the two sides are piped, and either side's end ends the other.
 */
async function roundRobin(backends: number[]): Promise<{ port: number; served: Map<number, number>; close(): void }> {
  const served = new Map<number, number>();
  const sockets = new Set<net.Socket>();
  let next = 0;
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    client.pause();
    // This connection's own turn: concurrent connections must not make its retry pick the refusing backend again.
    const first = next++;
    const attempt = (tries: number) => {
      const port = backends[(first + tries) % backends.length]!;
      const upstream = net.connect(port, '127.0.0.1');
      const refused = () => {
        upstream.destroy();
        if (tries + 1 < backends.length) attempt(tries + 1);
        else client.destroy();
      };
      upstream.once('error', refused);
      upstream.once('connect', () => {
        upstream.off('error', refused);
        upstream.on('error', () => {}); // 'close' follows, and ends the client
        served.set(port, (served.get(port) ?? 0) + 1);
        sockets.add(upstream);
        upstream.on('close', () => sockets.delete(upstream));
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
        client.once('close', () => upstream.destroy());
        upstream.once('close', () => client.end());
      });
    };
    attempt(0);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    served,
    close() {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

test('rolling restart: SIGTERM one of two instances behind a round-robin forwarder; a node-postgres Pool fails no transaction and the other instance keeps serving', async () => {
  const settings = { pool_mode: 'transaction', default_pool_size: 4, shutdown_timeout: 30, databases: { '*': clusterEntry(cluster) } };
  const a = await spawnTessera(settings);
  const b = await spawnTessera(settings);
  const lb = await roundRobin([a.port, b.port]);
  // No idle timeout: every connection A closes is closed by its shutdown.
  const pool = new pg.Pool({ host: '127.0.0.1', port: lb.port, user, database: TEST_DB, max: 4, idleTimeoutMillis: 0 });
  pool.on('error', () => {}); // a client told of the close while idle in the pool: the pool drops it
  let stop = false;
  let committed = 0;
  const failed: string[] = [];
  const refusedConnects: string[] = [];
  const worker = async (id: number) => {
    for (let n = 0; !stop; n++) {
      const client = await pool.connect().catch((err: Error) => {
        refusedConnects.push(err.message);
        return null;
      });
      if (!client) continue;
      // A close seen while checked out shows up on its next query; one listener per client.
      if (!(client as unknown as { tagged?: boolean }).tagged) {
        (client as unknown as { tagged?: boolean }).tagged = true;
        client.on('error', () => {});
      }
      let step = 'begin';
      try {
        await client.query('begin');
        step = 'insert';
        await client.query('insert into rolling_log values ($1, $2)', [id, n]);
        step = 'commit';
        await client.query('commit');
        committed++;
        client.release();
      } catch (err) {
        failed.push(`${step}: ${(err as Error & { code?: string }).code ?? ''} ${(err as Error).message}`);
        client.release(err as Error);
      }
      // Back to back, as a busy pool hands a connection to its next caller at once.
    }
  };
  const workers = [0, 1, 2, 3].map(worker);
  try {
    await until('transactions through both instances', async () => committed > 50 && (lb.served.get(a.port) ?? 0) > 0 && (lb.served.get(b.port) ?? 0) > 0, 30000);
    const servedByA = lb.served.get(a.port)!;
    a.child.kill('SIGTERM');
    const code = await a.exited;
    assert.is(code, 0, a.output());
    const afterExit = committed;
    await until('transactions after the restart', async () => committed > afterExit + 50, 30000);
    stop = true;
    await Promise.all(workers);
    // Each of A's connections was closed as its transaction ended, with a FATAL that reached the
    // driver with that transaction's ReadyForQuery: the pool replaced it before its next BEGIN,
    // so no transaction failed, not even at its BEGIN.
    assert.equal(failed, [], `${failed.length} transactions failed`);
    // A connection the forwarder made after the SIGTERM found A refusing, and went to B.
    assert.equal(refusedConnects, []);
    const closes = a.output().split('\n').filter((l) => l.includes('"client closed"'));
    assert.is(closes.length, servedByA, a.output());
    for (const l of closes) assert.match(l, /"by":"pooler","code":"57P01","reason":"terminating connection due to pooler shutdown"/);
    const { rows } = await cluster.query('select count(*)::int as n from rolling_log', [], TEST_DB);
    assert.is(rows[0].n, committed, 'every committed transaction is in the table');
    // New connections after the SIGTERM all went to B.
    assert.ok((lb.served.get(b.port) ?? 0) > 1);
    assert.is(lb.served.get(a.port), servedByA);
  } finally {
    stop = true;
    await Promise.all(workers).catch(() => {});
    await pool.end().catch(() => {});
    lb.close();
    await a.stop();
    await b.stop();
  }
});

test.run();
