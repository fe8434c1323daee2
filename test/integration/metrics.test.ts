// The metrics endpoint and status page, read after real traffic.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { AddressInfo } from 'node:net';
import { ROLES, TEST_DB, sharedCluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection } from '../support/tessera.js';
import { startMetrics } from '../../src/metrics/metrics.js';

test('/metrics reports pools, traffic and login failures; / shows the pools', async () => {
  const cluster = await sharedCluster();
  const t = await startTessera({ auth_type: 'md5', databases: { [TEST_DB]: clusterEntry(cluster) } }, `"${ROLES.scram.user}" "${ROLES.scram.password}"\n`);
  const http = await startMetrics('127.0.0.1:0', t.proxy);
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  try {
    const c = await connect(t.conn(ROLES.scram.user, ROLES.scram.password));
    await c.query('select 1');
    await rejection(connect(t.conn(ROLES.scram.user, 'wrong')));
    await rejection(connect(t.conn(ROLES.scram.user, ROLES.scram.password, 'nowhere')));
    const metrics = await (await fetch(`${base}/metrics`)).text();
    const labels = `database="${TEST_DB}",user="${ROLES.scram.user}"`;
    assert.match(metrics, `tessera_pool_clients{${labels},state="active"} 1`);
    assert.match(metrics, new RegExp(`tessera_queries_total\\{${labels}\\} [1-9]`));
    assert.match(metrics, new RegExp(`tessera_server_connects_total\\{${labels}\\} [1-9]`));
    assert.match(metrics, 'tessera_login_failures_total{reason="invalid_password"} 1');
    assert.match(metrics, 'tessera_login_failures_total{reason="unknown_database"} 1');
    assert.match(metrics, /tessera_process_resident_memory_bytes \d+/);
    assert.not.match(metrics, ROLES.scram.password);
    const page = await (await fetch(`${base}/`)).text();
    assert.match(page, '<h1>Tessera</h1>');
    assert.match(page, `<td>${TEST_DB}</td><td>${ROLES.scram.user}</td>`);
    await c.end();
  } finally {
    http.close();
    await t.stop();
  }
});

test.run();
