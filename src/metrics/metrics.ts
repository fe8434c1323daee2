/**
 * The metrics_listen endpoint: the dashboard (/ and /api/dashboard), Prometheus (/metrics), and
 * the probes (/healthz, /readyz). Everything is read from the pooler's state when asked (and once
 * a second for the dashboard's history), so the relay pays nothing for it. With workers > 1 the
 * primary serves it, summing what each worker reports (see src/workers/primary.ts).
 */
import http from 'node:http';
import { AggregatorRegistry, Registry, collectDefaultMetrics } from 'prom-client';
import type { Config } from '../config/schema.js';
import { tesseraVersion } from '../admin/commands/show.js';
import type { Pooler } from '../pooler/pooler.js';
import type { AdminSnapshot } from '../admin/snapshots.js';
import { log } from '../log.js';
import type { MetricsSnapshot } from './snapshot.js';
import type { Readiness } from './health.js';
import { renderPgbouncerExporter, renderTessera, type ConsoleFigures } from './prometheus.js';
import { History, isSaturated, sumPools } from './history.js';
import { chartAssets, dashboardPage } from './dashboard.js';

const PROMETHEUS_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
const SAMPLE_INTERVAL_MS = 1000;

/** Where the endpoint's figures come from: one process, or the workers' sums. */
export interface MetricsSource {
  snapshot(): Promise<MetricsSnapshot>;
  /** The console's SHOW figures, for the pgbouncer_exporter names. */
  console(): Promise<ConsoleFigures>;
  readiness(): Promise<Readiness>;
  /** prom-client's process_* and nodejs_* series (summed over workers). */
  processMetrics(): Promise<string>;
  /** metrics_format, read when /metrics is asked (RELOAD may change it). */
  format(): Config['metrics_format'];
  configFile: string;
  workers: number;
}

/** A registry with only the standard process_* and nodejs_* series. */
function processRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}

/** A worker (setting `workers`): its process metrics are read by the primary, which serves the sums. */
export function offerMetricsToPrimary(): void {
  new AggregatorRegistry(); // installs the worker's answering side
  AggregatorRegistry.setRegistries([processRegistry()]);
}

/** The console figures (the pgbouncer_exporter names) from the console's snapshot of one process or all workers. */
export function consoleFigures(snapshot: Pick<AdminSnapshot, 'pools' | 'databases' | 'stats' | 'lists' | 'clients'>, config: Readonly<Config>): ConsoleFigures {
  return {
    version: tesseraVersion(),
    max_client_conn: config.max_client_conn,
    max_user_connections: config.max_user_connections,
    pools: snapshot.pools,
    databases: snapshot.databases,
    stats: snapshot.stats,
    lists: snapshot.lists,
    clients: snapshot.clients,
  };
}

/**
 * Serves the endpoint for one process on `listen` ("host:port" or a port), from the same admin
 * operations (metrics, readiness, snapshot) the primary asks of each worker. Resolves once listening.
 */
export function startMetrics(listen: string, pooler: Pooler, configFile = ''): Promise<http.Server> {
  const registry = processRegistry();
  const view = pooler.adminView;
  return serveMetrics(listen, {
    snapshot: async () => view.metrics(),
    console: async () => consoleFigures(view.snapshot(), pooler.currentConfig),
    readiness: () => view.readiness(),
    processMetrics: () => registry.metrics(),
    format: () => pooler.currentConfig.metrics_format,
    configFile,
    workers: 1,
  });
}

/** "host:port" or a bare port (host 127.0.0.1). */
function listenAddress(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: i > 0 ? listen.slice(0, i) : '127.0.0.1', port: Number(i >= 0 ? listen.slice(i + 1) : listen) };
}

export async function serveMetrics(listen: string, source: MetricsSource): Promise<http.Server> {
  const { host, port } = listenAddress(listen);
  const history = new History();
  const build = { version: tesseraVersion(), node: process.version };
  let sampling = false;
  const sample = () => {
    if (sampling) return; // a slow worker answer: skip a beat rather than pile up requests
    sampling = true;
    source.snapshot().then(
      (s) => {
        sampling = false;
        history.add(s);
      },
      (err) => {
        sampling = false;
        log.warn({ err: (err as Error).message }, 'metrics sample failed');
      },
    );
  };
  sample();
  const sampler = setInterval(sample, SAMPLE_INTERVAL_MS);
  sampler.unref();

  const prometheus = async (which: 'tessera' | 'pgbouncer_exporter' | 'both'): Promise<string> => {
    const parts: string[] = [];
    if (which !== 'pgbouncer_exporter') parts.push(renderTessera(await source.snapshot(), build));
    if (which !== 'tessera') parts.push(renderPgbouncerExporter(await source.console()));
    parts.push(await source.processMetrics());
    return parts.join('');
  };

  const dashboard = async (url: URL): Promise<string> => {
    if (!history.latest) history.add(await source.snapshot());
    const s = history.latest!;
    const last = history.points.at(-1);
    const since = Number(url.searchParams.get('since') ?? 0);
    const pools = history.pools({
      search: url.searchParams.get('search') ?? '',
      sort: url.searchParams.get('sort') ?? 'usage',
      limit: Number(url.searchParams.get('limit') ?? 50) || 50,
    });
    const totals = sumPools(s.pools, ['clients_waiting', 'servers_active', 'pool_size', 'transactions']);
    const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
    return JSON.stringify({
      info: { ...build, uptime_seconds: Math.round(process.uptime()), config_file: source.configFile, workers: source.workers },
      now: {
        xacts_per_s: last?.xacts_per_s ?? 0,
        queries_per_s: last?.queries_per_s ?? 0,
        xact_p99_ms: last?.xact_p99_ms ?? 0,
        wait_p99_ms: last?.wait_p99_ms ?? 0,
        clients: s.clients,
        max_client_conn: s.max_client_conn,
        clients_waiting: totals.clients_waiting,
        servers_active: totals.servers_active,
        pool_size: totals.pool_size,
        transactions_total: totals.transactions,
        saturated_pools: s.pools.filter(isSaturated).length,
        client_errors_total: sum(s.client_errors),
        login_failures_total: sum(s.login_failures),
        session_logins: s.session_logins,
        login_failures: s.login_failures,
        client_errors: s.client_errors,
      },
      points: history.points.filter((p) => p.t > since),
      pools,
    });
  };

  const server = http.createServer((req, res) => {
    const answer = (type: string, body: Promise<string> | string, status = 200) =>
      Promise.resolve(body).then(
        (text) => res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' }).end(req.method === 'HEAD' ? undefined : text),
        (err) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`),
      );
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed: use GET\n');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://tessera');
    switch (url.pathname) {
      case '/':
      case '/status':
        return void answer('text/html; charset=utf-8', dashboardPage());
      case '/assets/uPlot.iife.min.js':
        return void answer('text/javascript; charset=utf-8', chartAssets().js);
      case '/assets/uPlot.min.css':
        return void answer('text/css; charset=utf-8', chartAssets().css);
      case '/api/dashboard':
        return void answer('application/json', dashboard(url));
      case '/metrics':
        return void answer(PROMETHEUS_TYPE, prometheus(source.format()));
      case '/metrics/tessera':
        return void answer(PROMETHEUS_TYPE, prometheus('tessera'));
      case '/metrics/pgbouncer':
        return void answer(PROMETHEUS_TYPE, prometheus('pgbouncer_exporter'));
      case '/healthz':
        return void answer('application/json', JSON.stringify({ status: 'alive', pid: process.pid, uptime_seconds: Math.round(process.uptime()) }));
      case '/readyz':
        source.readiness().then(
          (r) => answer('application/json', JSON.stringify(r), r.ready ? 200 : 503),
          (err) => answer('application/json', JSON.stringify({ ready: false, error: String(err) }), 503),
        );
        return;
      default:
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  server.on('close', () => clearInterval(sampler));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  server.unref();
  log.info({ metrics: `${host}:${(server.address() as { port: number }).port}` }, 'metrics listening');
  return server;
}
