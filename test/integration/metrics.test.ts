// /metrics read by the official Prometheus text-format parser, before and after real traffic:
// every documented series, values that move, the pgbouncer_exporter names, 405 for POST.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { AddressInfo } from 'node:net';
import { ROLES, TEST_DB, sharedCluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection } from '../support/tessera.js';
import { HAS_PROM_PARSER, parseExposition, samples, value } from '../support/prometheus.js';
import { startMetrics } from '../../src/metrics/metrics.js';
import { LOGIN_FAILURE_REASONS, CLIENT_ERROR_REASON_NAMES } from '../../src/metrics/pooler-stats.js';

// Without python3-prometheus-client (.ci/run installs it) these are skipped, not passed.
const it = HAS_PROM_PARSER ? test : test.skip;
if (!HAS_PROM_PARSER) console.log('  (skipped: /usr/bin/python3 has no prometheus_client; apt-get install python3-prometheus-client)');

/** Sample names README documents that exist from the start, before any client. */
const AT_START = [
  'tessera_build_info', 'tessera_workers', 'tessera_clients', 'tessera_clients_logging_in', 'tessera_max_client_conn',
  'tessera_database_max_connections', 'tessera_login_failures_total', 'tessera_client_errors_total', 'tessera_session_logins_total',
  'process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds',
];
/** Per pool, once the pool exists. */
const PER_POOL = [
  'tessera_pool_clients', 'tessera_pool_servers', 'tessera_pool_size', 'tessera_pool_reserve_size', 'tessera_pool_min_size', 'tessera_pool_max_wait_seconds',
  'tessera_transactions_total', 'tessera_queries_total', 'tessera_received_bytes_total', 'tessera_sent_bytes_total', 'tessera_server_assignments_total',
  'tessera_server_connects_total', 'tessera_transaction_seconds_total', 'tessera_query_seconds_total', 'tessera_wait_seconds_total',
  'tessera_transaction_duration_seconds_bucket', 'tessera_transaction_duration_seconds_sum', 'tessera_transaction_duration_seconds_count',
  'tessera_wait_duration_seconds_bucket', 'tessera_wait_duration_seconds_sum', 'tessera_wait_duration_seconds_count',
];

it('/metrics: every series at start, values that move under load, histograms that add up, 405 for POST', async () => {
  const cluster = await sharedCluster();
  const user = ROLES.scram.user;
  // A name with every character the text format must escape in a label value.
  const odd = 'quo"te\\back\nline';
  const t = await startTessera(
    {
      auth_type: 'md5', pool_mode: 'transaction', default_pool_size: 3, reserve_pool_size: 1, max_client_conn: 77,
      databases: { [TEST_DB]: clusterEntry(cluster, { max_db_connections: 9 }), [odd]: clusterEntry(cluster, { dbname: TEST_DB }) },
    },
    `"${user}" "${ROLES.scram.password}"\n`,
  );
  const http = await startMetrics('127.0.0.1:0', t.proxy);
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  const scrape = async () => {
    const res = await fetch(`${base}/metrics`);
    assert.is(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', 'text/plain; version=0.0.4');
    return parseExposition(await res.text());
  };
  try {
    const start = await scrape();
    for (const name of AT_START) assert.ok(samples(start, name).length > 0, `${name} at start`);
    for (const reason of LOGIN_FAILURE_REASONS) assert.is(value(start, 'tessera_login_failures_total', { reason }), 0);
    for (const reason of CLIENT_ERROR_REASON_NAMES) assert.is(value(start, 'tessera_client_errors_total', { reason }), 0);
    assert.is(value(start, 'tessera_session_logins_total', { result: 'failed' }), 0);
    assert.is(value(start, 'tessera_max_client_conn'), 77);
    assert.is(value(start, 'tessera_database_max_connections', { database: TEST_DB }), 9);
    const build = samples(start, 'tessera_build_info')[0];
    assert.is(build.labels.node, process.version);
    assert.match(build.labels.version, /^\d+\.\d+\.\d+/);
    // Standard names only: no prefixed copies, and no gauge named like a counter.
    assert.equal(Object.keys(start).filter((f) => f.startsWith('tessera_process_') || f.startsWith('tessera_nodejs_')), []);
    for (const [name, f] of Object.entries(start)) if (f.type === 'gauge' && name.startsWith('tessera_')) assert.not.ok(name.endsWith('_total'), `gauge ${name}`);

    const c = await connect(t.conn(user, ROLES.scram.password));
    for (let i = 0; i < 10; i++) await c.query('select pg_sleep(0.002)');
    await rejection(connect(t.conn(user, 'wrong')));
    const o = await connect(t.conn(user, ROLES.scram.password, odd));
    await o.query('select 1');
    await o.end();
    const first = await scrape();
    // Read back exactly: escaped in the exposition, unescaped by the parser.
    assert.is(value(first, 'tessera_transactions_total', { database: odd, user }), 1);
    assert.is(value(first, 'tessera_database_max_connections', { database: odd }), 0);
    const pool = { database: TEST_DB, user };
    for (const name of PER_POOL) assert.ok(samples(first, name).some((s) => s.labels.database === TEST_DB && s.labels.user === user), `${name} for the pool`);
    assert.is(value(first, 'tessera_pool_size', pool), 3);
    assert.is(value(first, 'tessera_pool_reserve_size', pool), 1);
    assert.is(value(first, 'tessera_pool_clients', { ...pool, state: 'active' }), 1);
    assert.is(value(first, 'tessera_login_failures_total', { reason: 'invalid_password' }), 1);
    const xacts1 = value(first, 'tessera_transactions_total', pool);
    assert.ok(xacts1 >= 10, `${xacts1} transactions`);
    assert.ok(value(first, 'tessera_transaction_seconds_total', pool) > 0);
    assert.ok(value(first, 'tessera_query_seconds_total', pool) > 0);
    // The histogram counts every transaction once, and its buckets are cumulative.
    assert.is(value(first, 'tessera_transaction_duration_seconds_count', pool), xacts1);
    assert.is(value(first, 'tessera_transaction_duration_seconds_bucket', { ...pool, le: '+Inf' }), xacts1);
    const buckets = samples(first, 'tessera_transaction_duration_seconds_bucket').filter((s) => s.labels.database === TEST_DB && s.labels.user === user).map((s) => s.value);
    assert.equal([...buckets].sort((a, b) => a - b), buckets);
    assert.is(value(first, 'tessera_wait_duration_seconds_count', pool), value(first, 'tessera_server_assignments_total', pool));

    for (let i = 0; i < 5; i++) await c.query('select 1');
    const second = await scrape();
    assert.ok(value(second, 'tessera_transactions_total', pool) >= xacts1 + 5);
    assert.ok(value(second, 'tessera_queries_total', pool) > value(first, 'tessera_queries_total', pool));
    assert.ok(value(second, 'tessera_received_bytes_total', pool) > value(first, 'tessera_received_bytes_total', pool));
    assert.ok(value(second, 'tessera_sent_bytes_total', pool) > value(first, 'tessera_sent_bytes_total', pool));
    await c.end();

    for (const method of ['POST', 'PUT', 'DELETE']) {
      const res = await fetch(`${base}/metrics`, { method });
      assert.is(res.status, 405, method);
      assert.is(res.headers.get('allow'), 'GET, HEAD');
    }
    const text = await (await fetch(`${base}/metrics`)).text();
    assert.not.match(text, ROLES.scram.password);
  } finally {
    http.close();
    await t.stop();
  }
});

it('metrics_format pgbouncer_exporter: prometheus-community/pgbouncer_exporter names and units; /metrics/pgbouncer always', async () => {
  const cluster = await sharedCluster();
  const user = ROLES.trust.user;
  const t = await startTessera({ pool_mode: 'transaction', default_pool_size: 4, max_client_conn: 55, metrics_format: 'pgbouncer_exporter', databases: { [TEST_DB]: clusterEntry(cluster) } });
  const http = await startMetrics('127.0.0.1:0', t.proxy);
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  try {
    const c = await connect(t.conn(user));
    for (let i = 0; i < 7; i++) await c.query('select pg_sleep(0.002)');
    for (const path of ['/metrics', '/metrics/pgbouncer']) {
      const m = await parseExposition(await (await fetch(base + path)).text());
      assert.is(value(m, 'pgbouncer_up'), 1);
      assert.ok(samples(m, 'pgbouncer_version_info').length === 1);
      assert.is(value(m, 'pgbouncer_config_max_client_connections'), 55);
      assert.is(value(m, 'pgbouncer_pools_client_active_connections', { database: TEST_DB, user }), 1);
      assert.is(value(m, 'pgbouncer_pools_client_waiting_connections', { database: TEST_DB, user }), 0);
      assert.ok(value(m, 'pgbouncer_pools_server_idle_connections', { database: TEST_DB, user }) >= 1);
      assert.ok(samples(m, 'pgbouncer_pools_client_maxwait_seconds').length === 1);
      assert.ok(value(m, 'pgbouncer_stats_sql_transactions_pooled_total', { database: TEST_DB }) >= 7);
      assert.ok(value(m, 'pgbouncer_stats_queries_pooled_total', { database: TEST_DB }) >= 7);
      // Seconds, not microseconds: 7 transactions of about 2 ms.
      const xactSeconds = value(m, 'pgbouncer_stats_server_in_transaction_seconds_total', { database: TEST_DB });
      assert.ok(xactSeconds > 0 && xactSeconds < 60, `${xactSeconds} s in transactions`);
      assert.ok(samples(m, 'pgbouncer_stats_client_wait_seconds_total').length === 1);
      assert.is(value(m, 'pgbouncer_databases_pool_size', { name: TEST_DB }), 4);
      assert.is(value(m, 'pgbouncer_databases_paused', { name: TEST_DB }), 0);
      assert.ok(value(m, 'pgbouncer_pools') >= 1);
      assert.ok(value(m, 'pgbouncer_used_clients') >= 1);
      assert.ok(samples(m, 'process_resident_memory_bytes').length === 1);
      if (path === '/metrics') assert.is(samples(m, 'tessera_transactions_total').length, 0);
    }
    // /metrics/tessera whatever metrics_format says.
    const own = await parseExposition(await (await fetch(`${base}/metrics/tessera`)).text());
    assert.ok(value(own, 'tessera_transactions_total', { database: TEST_DB, user }) >= 7);
    await c.end();
  } finally {
    http.close();
    await t.stop();
  }
});

test.run();
