/**
 * The Prometheus endpoint (metrics_listen) and a small live status page at the same address.
 * Everything is read from the pooler's state at scrape time, so the relay pays nothing for it.
 */
import http from 'node:http';
import { AggregatorRegistry, Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { PoolSnapshot } from '../admin/view.js';
import { ServerState } from '../pool/server-connection.js';
import type { Pool, PoolCounters } from '../pool/pool.js';
import type { Pooler } from '../pooler/pooler.js';
import { log } from '../log.js';

const SERVER_STATES = [ServerState.Login, ServerState.Idle, ServerState.Active, ServerState.Cleanup, ServerState.Canceling] as const;

export function buildRegistry(pooler: Pooler): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'tessera_' });
  const labels = (pool: Pool) => ({ database: pooler.databaseNameOf(pool), user: pool.target.user });

  new Gauge({
    name: 'tessera_pool_servers',
    help: 'Server connections by pool and state (login, idle, active, cleanup).',
    labelNames: ['database', 'user', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const pool of pooler.pools.values()) {
        for (const state of SERVER_STATES) {
          this.set({ ...labels(pool), state }, pool.count(state));
        }
      }
    },
  });
  new Gauge({
    name: 'tessera_pool_servers_by_host',
    help: 'Server connections by pool, host (host:port) and the role of that host (primary, standby, unknown).',
    labelNames: ['database', 'user', 'host', 'role'],
    registers: [registry],
    collect() {
      this.reset();
      for (const pool of pooler.pools.values()) {
        for (const s of pool.servers) this.inc({ ...labels(pool), host: `${s.target.host}:${s.target.port}`, role: pool.roleOf(s) });
      }
    },
  });
  new Gauge({
    name: 'tessera_pool_clients',
    help: 'Logged-in clients by pool: active (served or idle) and waiting for a server.',
    labelNames: ['database', 'user', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const pool of pooler.pools.values()) {
        const clients = [...pooler.clients].filter((c) => c.pool === pool);
        const waiting = clients.filter((c) => c.isWaiting).length;
        this.set({ ...labels(pool), state: 'active' }, clients.length - waiting);
        this.set({ ...labels(pool), state: 'waiting' }, waiting);
      }
    },
  });
  new Gauge({
    name: 'tessera_pool_max_wait_seconds',
    help: 'How long the longest-waiting client of each pool has waited for a server.',
    labelNames: ['database', 'user'],
    aggregator: 'max', // across workers: the longest wait, not a sum
    registers: [registry],
    collect() {
      this.reset();
      for (const pool of pooler.pools.values()) this.set(labels(pool), pool.maxWaitMs() / 1000);
    },
  });
  new Gauge({
    name: 'tessera_clients',
    help: 'Client connections, in any phase.',
    registers: [registry],
    collect() {
      this.set(pooler.clients.size);
    },
  });

  const poolCounter = (name: string, help: string, pick: (k: PoolCounters) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['database', 'user'],
      registers: [registry],
      collect() {
        this.reset();
        for (const pool of pooler.pools.values()) this.inc(labels(pool), pick(pool.counters));
      },
    });
  poolCounter('tessera_transactions_total', 'Transactions (ReadyForQuery back to idle).', (k) => k.xacts);
  poolCounter('tessera_queries_total', 'Queries and Syncs sent by clients.', (k) => k.queries);
  poolCounter('tessera_received_bytes_total', 'Bytes received from clients.', (k) => k.received);
  poolCounter('tessera_sent_bytes_total', 'Bytes sent to clients.', (k) => k.sent);
  poolCounter('tessera_server_assignments_total', 'Times a server was handed to a client.', (k) => k.assignments);
  poolCounter('tessera_server_connects_total', 'Server connections opened.', (k) => k.connects);

  new Counter({
    name: 'tessera_login_failures_total',
    help: 'Failed client logins by reason (invalid_password, unknown_database, max_client_conn, session_authfail, ...).',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of pooler.loginFailures) this.inc({ reason }, n);
    },
  });
  return registry;
}

const escape = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The status page: the pools at a glance (SHOW POOLS' numbers), refreshed every two seconds. */
export function statusPage(pools: PoolSnapshot[], clients: number, workers = 1): string {
  const rows = pools.map((p) => {
    const cells = [p.database, p.user, p.pool_mode, p.cl_active, p.cl_waiting, p.sv_active, p.sv_idle, p.sv_login, (p.maxwait + p.maxwait_us / 1e6).toFixed(1)];
    return `<tr>${cells.map((c) => `<td>${escape(c)}</td>`).join('')}</tr>`;
  });
  const head = ['database', 'user', 'mode', 'clients', 'waiting', 'servers active', 'idle', 'connecting', 'max wait s'];
  const processes = workers > 1 ? ` across ${escape(workers)} workers` : '';
  return `<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2"><title>Tessera</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){text-align:left}</style>
</head><body><h1>Tessera</h1><p>${escape(clients)} clients connected${processes}. Metrics for Prometheus: <a href="/metrics">/metrics</a>.</p>
<table><tr>${head.map((h) => `<th>${escape(h)}</th>`).join('')}</tr>${rows.join('') || `<tr><td colspan="${head.length}">no pools yet</td></tr>`}</table></body></html>`;
}

/** "host:port" or a bare port (host 127.0.0.1). */
function listenAddress(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: i > 0 ? listen.slice(0, i) : '127.0.0.1', port: Number(i >= 0 ? listen.slice(i + 1) : listen) };
}

/** A worker (setting `workers`): its metrics are read by the primary, which serves the sums. */
export function offerMetricsToPrimary(pooler: Pooler): void {
  new AggregatorRegistry(); // installs the worker's answering side
  AggregatorRegistry.setRegistries([buildRegistry(pooler)]);
}

/** Serves /metrics and / on `listen` ("host:port" or a port). Resolves once listening. */
export function startMetrics(listen: string, pooler: Pooler): Promise<http.Server> {
  const registry = buildRegistry(pooler);
  return serveMetrics(listen, {
    contentType: registry.contentType,
    metrics: () => registry.metrics(),
    status: async () => statusPage(pooler.adminView.pools(), pooler.clients.size),
  });
}

/** Where the endpoint's two pages come from: one process's registry, or the workers' sums. */
export interface MetricsSource {
  contentType: string;
  metrics(): Promise<string>;
  status(): Promise<string>;
}

export async function serveMetrics(listen: string, source: MetricsSource): Promise<http.Server> {
  const { host, port } = listenAddress(listen);
  const answer = (res: http.ServerResponse, type: string, body: Promise<string>) =>
    body.then(
      (text) => res.writeHead(200, { 'content-type': type }).end(text),
      (err) => res.writeHead(500).end(String(err)),
    );
  const server = http.createServer((req, res) => {
    if (req.url === '/metrics') void answer(res, source.contentType, source.metrics());
    else if (req.url === '/' || req.url === '/status') void answer(res, 'text/html; charset=utf-8', source.status());
    else res.writeHead(404).end('not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  server.unref();
  log.info({ metrics: `${host}:${(server.address() as { port: number }).port}` }, 'metrics listening');
  return server;
}
