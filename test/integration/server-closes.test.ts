// tessera_server_closes_total{reason}: every reason a pool closes a server for is a series from the
// start at 0, and a close the operator caused moves its own reason: a backend terminated in
// PostgreSQL (server_closed), RECONNECT from the console (reconnect).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { AddressInfo } from 'node:net';
import { ROLES, TEST_DB, sharedCluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, until } from '../support/tessera.js';
import { HAS_PROM_PARSER, parseExposition, value } from '../support/prometheus.js';
import { startMetrics } from '../../src/metrics/metrics.js';
import { CLOSE_REASONS } from '../../src/pool/server-connection.js';

// Without python3-prometheus-client (.ci/run installs it) this is skipped, not passed.
const it = HAS_PROM_PARSER ? test : test.skip;
if (!HAS_PROM_PARSER) console.log('  (skipped: /usr/bin/python3 has no prometheus_client; apt-get install python3-prometheus-client)');

it('tessera_server_closes_total: every reason at 0 from the start; a terminated backend and RECONNECT each count once', async () => {
  const cluster = await sharedCluster();
  const user = ROLES.scram.user;
  const t = await startTessera({ auth_type: 'md5', admin_users: 'admin', databases: { [TEST_DB]: clusterEntry(cluster) } }, `"${user}" "${ROLES.scram.password}"\n"admin" "console-password"\n`);
  const http = await startMetrics('127.0.0.1:0', t.proxy);
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/metrics`;
  const closes = async (reason: string) => value(await parseExposition(await (await fetch(url)).text()), 'tessera_server_closes_total', { reason });
  try {
    const start = await parseExposition(await (await fetch(url)).text());
    for (const reason of CLOSE_REASONS) assert.is(value(start, 'tessera_server_closes_total', { reason }), 0, reason);

    // Session mode: the client's backend is the one it reports; once the client leaves it is idle.
    const c = await connect(t.conn(user, ROLES.scram.password));
    const pid = (await c.query('select pg_backend_pid() as pid')).rows[0].pid as number;
    await c.end();
    await until('the backend to be idle in the pool', async () => t.proxy.adminView.pools().some((p) => p.sv_idle === 1));
    await cluster.query('select pg_terminate_backend($1)', [pid]);
    await until('a server_closed close', async () => (await closes('server_closed')) === 1);

    const d = await connect(t.conn(user, ROLES.scram.password));
    await d.query('select 1');
    await d.end();
    await until('the new backend to be idle', async () => t.proxy.adminView.pools().some((p) => p.sv_idle === 1));
    const admin = await connect({ host: '127.0.0.1', port: t.port, database: 'pgbouncer', user: 'admin', password: 'console-password' });
    await admin.query('RECONNECT');
    await admin.end();
    await until('a reconnect close', async () => (await closes('reconnect')) === 1);
    assert.is(await closes('server_closed'), 1);
  } finally {
    http.close();
    await t.stop();
  }
});

test.run();
