// /healthz and /readyz as a Kubernetes probe or load balancer reads them: ready while the only
// database's server is up, unready once it is down and during SHUTDOWN; alive throughout.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { AddressInfo } from 'node:net';
import { ROLES, TEST_DB, sharedCluster, startCluster, freePort } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, until } from '../support/tessera.js';
import { startMetrics } from '../../src/metrics/metrics.js';

interface Ready {
  ready: boolean;
  listening: boolean;
  shutting_down: boolean;
  databases: { database: string; ok: boolean; detail: string }[];
}

async function probes(base: string): Promise<{ live: number; ready: number; body: Ready }> {
  const live = await fetch(`${base}/healthz`);
  assert.equal(((await live.json()) as { status: string }).status, 'alive');
  const ready = await fetch(`${base}/readyz`);
  return { live: live.status, ready: ready.status, body: (await ready.json()) as Ready };
}

test('/readyz is 503 once the only database\'s server is down; /healthz stays 200', async () => {
  const own = await startCluster(); // stopped below: not the shared one
  const t = await startTessera({ pool_mode: 'transaction', databases: { [TEST_DB]: clusterEntry(own) } });
  const http = await startMetrics('127.0.0.1:0', t.proxy);
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  try {
    // Before any client: the server answers a TCP connection.
    let p = await probes(base);
    assert.is(p.ready, 200, JSON.stringify(p.body));
    assert.equal(p.body.databases, [{ database: TEST_DB, ok: true, detail: 'server accepts connections' }]);
    const c = await connect(t.conn(ROLES.trust.user));
    await c.query('select 1');
    p = await probes(base);
    assert.is(p.ready, 200);
    assert.is(p.body.databases[0].detail, 'live server connection');
    await c.end();

    await own.stop();
    p = await until('/readyz to go unready', async () => {
      const q = await probes(base);
      return q.ready === 503 && q;
    });
    assert.is(p.live, 200);
    assert.is(p.body.ready, false);
    assert.is(p.body.listening, true);
    assert.is(p.body.shutting_down, false);
    assert.is(p.body.databases[0].ok, false);
    assert.match(p.body.databases[0].detail, `cannot connect to 127.0.0.1:${own.port}`);
  } finally {
    http.close();
    await t.stop();
    await own.stop();
  }
});

test('/readyz with the first host of a list down is ready while another host answers, and unready once none does', async () => {
  const own = await startCluster(); // stopped below: not the shared one
  const down = await freePort(); // nothing listens there
  const t = await startTessera({ pool_mode: 'transaction', databases: { [TEST_DB]: clusterEntry(own, { host: `127.0.0.1,${own.host}`, port: `${down},${own.port}` }) } });
  const http = await startMetrics('127.0.0.1:0', t.proxy);
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  try {
    // Before any client: the first host refuses, the second accepts.
    let p = await probes(base);
    assert.is(p.ready, 200, JSON.stringify(p.body));
    assert.equal(p.body.databases, [{ database: TEST_DB, ok: true, detail: 'server accepts connections' }]);
    // After a client, whose pool skipped the first host: still ready (a live server, then the second host).
    const c = await connect(t.conn(ROLES.trust.user));
    assert.is((await c.query('select inet_server_port() as port')).rows[0].port, own.port);
    await c.end();
    assert.is((await probes(base)).ready, 200);

    await own.stop();
    p = await until('/readyz to go unready', async () => {
      const q = await probes(base);
      return q.ready === 503 && q;
    });
    assert.is(p.body.databases[0].ok, false);
    assert.match(p.body.databases[0].detail, `cannot connect to 127.0.0.1:${own.port}`);
  } finally {
    http.close();
    await t.stop();
    await own.stop();
  }
});

test('/readyz is 503 while SHUTDOWN waits for clients; /healthz stays 200', async () => {
  const cluster = await sharedCluster();
  const t = await startTessera({ admin_users: 'admin', shutdown_timeout: 30, databases: { [TEST_DB]: clusterEntry(cluster) } });
  const http = await startMetrics('127.0.0.1:0', t.proxy);
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  try {
    const c = await connect(t.conn(ROLES.trust.user));
    await c.query('select 1');
    assert.is((await probes(base)).ready, 200);
    const admin = await connect(t.conn('admin', undefined, 'pgbouncer'));
    await admin.query('SHUTDOWN WAIT_FOR_CLIENTS');
    const p = await probes(base);
    assert.is(p.ready, 503);
    assert.is(p.live, 200);
    assert.is(p.body.shutting_down, true);
    assert.is(p.body.listening, false);
    // The client that SHUTDOWN waits for is still served.
    assert.equal((await c.query('select 2 as n')).rows, [{ n: 2 }]);
    await c.end();
    await admin.end().catch(() => {});
  } finally {
    http.close();
    await t.stop();
  }
});

test.run();
