/**
 * The Prometheus text exposition (format 0.0.4) of a MetricsSnapshot (tessera_* names) and of the
 * admin console's snapshot (the names prometheus-community/pgbouncer_exporter gives PgBouncer's
 * SHOW output, so its dashboards and alerts carry over). Written by hand rather than through
 * prom-client's registry so the workers' sums are made once (mergeMetrics) from plain data;
 * prom-client still supplies the standard process_* and nodejs_* series.
 */
import { DURATION_BOUNDS_US } from '../pool/histogram.js';
import type { ConnectionSnapshot, DatabaseSnapshot, ListsSnapshot, PoolSnapshot, StatsSnapshot } from '../admin/view.js';
import type { MetricsSnapshot, PoolFigures } from './snapshot.js';

type Labels = Record<string, string | number>;

const escapeLabel = (v: string | number) => String(v).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const escapeHelp = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Builds one exposition: each family's HELP and TYPE once, then its samples. */
class Exposition {
  private readonly lines: string[] = [];

  family(name: string, type: 'gauge' | 'counter' | 'histogram', help: string): this {
    this.lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    return this;
  }

  sample(name: string, labels: Labels, value: number): this {
    const keys = Object.keys(labels);
    const text = keys.length === 0 ? '' : `{${keys.map((k) => `${k}="${escapeLabel(labels[k])}"`).join(',')}}`;
    this.lines.push(`${name}${text} ${formatValue(value)}`);
    return this;
  }

  /** A family with one sample per row. */
  each<T>(name: string, type: 'gauge' | 'counter', help: string, rows: readonly T[], labels: (row: T) => Labels, value: (row: T) => number): this {
    this.family(name, type, help);
    for (const row of rows) this.sample(name, labels(row), value(row));
    return this;
  }

  text(): string {
    return this.lines.length === 0 ? '' : `${this.lines.join('\n')}\n`;
  }
}

const poolLabels = (p: PoolFigures) => ({ database: p.database, user: p.user });
/** Microseconds to seconds by division, so 49000 us prints as 0.049 and not 0.048999999999999995. */
const seconds = (us: number) => us / 1e6;

/** Histogram buckets, cumulative, with le in seconds. */
function histogram(out: Exposition, name: string, help: string, pools: readonly PoolFigures[], counts: (p: PoolFigures) => number[], sumUs: (p: PoolFigures) => number): void {
  out.family(name, 'histogram', help);
  for (const p of pools) {
    const c = counts(p);
    let cumulative = 0;
    for (let i = 0; i < DURATION_BOUNDS_US.length; i++) {
      cumulative += c[i] ?? 0;
      out.sample(`${name}_bucket`, { ...poolLabels(p), le: String(DURATION_BOUNDS_US[i] / 1e6) }, cumulative);
    }
    cumulative += c[DURATION_BOUNDS_US.length] ?? 0;
    out.sample(`${name}_bucket`, { ...poolLabels(p), le: '+Inf' }, cumulative);
    out.sample(`${name}_sum`, poolLabels(p), seconds(sumUs(p)));
    out.sample(`${name}_count`, poolLabels(p), cumulative);
  }
}

const byReason = (counts: Record<string, number>) => Object.entries(counts).map(([reason, n]) => ({ reason, n }));

export interface BuildInfo {
  version: string;
  node: string;
}

/** Tessera's own series. */
export function renderTessera(s: MetricsSnapshot, build: BuildInfo): string {
  const out = new Exposition();
  const pools = s.pools;
  out.family('tessera_build_info', 'gauge', 'Always 1; the labels say which Tessera and Node.js are running.').sample('tessera_build_info', { version: build.version, node: build.node }, 1);
  out.family('tessera_workers', 'gauge', 'Processes whose figures are summed here (workers that answered; 1 without workers).').sample('tessera_workers', {}, s.processes);
  out.family('tessera_clients', 'gauge', 'Client connections, in any phase (logging in, logged in, admin console).').sample('tessera_clients', {}, s.clients);
  out.family('tessera_clients_logging_in', 'gauge', 'Client connections that have not finished logging in.').sample('tessera_clients_logging_in', {}, s.clients_logging_in);
  out.family('tessera_max_client_conn', 'gauge', 'The max_client_conn setting: most client connections accepted at once.').sample('tessera_max_client_conn', {}, s.max_client_conn);
  out.each('tessera_database_max_connections', 'gauge', 'The effective max_db_connections of each database (0: unlimited).', Object.entries(s.database_limits), ([database]) => ({ database }), ([, n]) => n);
  out.each('tessera_user_max_connections', 'gauge', 'The effective max_user_connections of each user with a pool or a [users] entry (0: unlimited).', Object.entries(s.user_limits), ([user]) => ({ user }), ([, n]) => n);

  out.family('tessera_pool_clients', 'gauge', 'Logged-in clients by pool: active (linked to a server or idle) and waiting for a server.');
  for (const p of pools) {
    out.sample('tessera_pool_clients', { ...poolLabels(p), state: 'active' }, p.clients_active);
    out.sample('tessera_pool_clients', { ...poolLabels(p), state: 'waiting' }, p.clients_waiting);
  }
  out.family('tessera_pool_servers', 'gauge', 'Server connections by pool and state: login (connecting), idle, active (linked to a client), cleanup (reset or check).');
  for (const p of pools) {
    out.sample('tessera_pool_servers', { ...poolLabels(p), state: 'login' }, p.servers_login);
    out.sample('tessera_pool_servers', { ...poolLabels(p), state: 'idle' }, p.servers_idle);
    out.sample('tessera_pool_servers', { ...poolLabels(p), state: 'active' }, p.servers_active);
    out.sample('tessera_pool_servers', { ...poolLabels(p), state: 'cleanup' }, p.servers_cleanup);
  }
  out.each('tessera_pool_size', 'gauge', 'Server connections the pool may open (pool_size; summed over the workers that have the pool).', pools, poolLabels, (p) => p.pool_size);
  out.each('tessera_pool_reserve_size', 'gauge', 'Extra server connections the pool may open when clients wait (reserve_pool_size).', pools, poolLabels, (p) => p.reserve_size);
  out.each('tessera_pool_min_size', 'gauge', 'Server connections kept open even when idle (min_pool_size).', pools, poolLabels, (p) => p.min_pool_size);
  out.each('tessera_pool_max_wait_seconds', 'gauge', 'How long the longest-waiting client of the pool has waited for a server (the longest over the workers).', pools, poolLabels, (p) => p.max_wait_seconds);

  out.each('tessera_transactions_total', 'counter', 'Transactions (ReadyForQuery back to idle).', pools, poolLabels, (p) => p.transactions);
  out.each('tessera_queries_total', 'counter', 'Queries and Syncs sent by clients.', pools, poolLabels, (p) => p.queries);
  out.each('tessera_received_bytes_total', 'counter', 'Bytes received from clients.', pools, poolLabels, (p) => p.received_bytes);
  out.each('tessera_sent_bytes_total', 'counter', 'Bytes sent to clients.', pools, poolLabels, (p) => p.sent_bytes);
  out.each('tessera_server_assignments_total', 'counter', 'Times a server was handed to a client.', pools, poolLabels, (p) => p.server_assignments);
  out.each('tessera_server_connects_total', 'counter', 'Server connections opened.', pools, poolLabels, (p) => p.server_connects);
  out.each('tessera_server_closes_total', 'counter', 'Server connections the pools closed, by reason (idle_timeout, lifetime, reset_failed, server_closed, ...; every reason from the start).', byReason(s.server_closes), (r) => ({ reason: r.reason }), (r) => r.n);
  out.each('tessera_transaction_seconds_total', 'counter', 'Seconds servers spent in client transactions (SHOW STATS total_xact_time).', pools, poolLabels, (p) => seconds(p.transaction_us));
  out.each('tessera_query_seconds_total', 'counter', 'Seconds servers spent running client queries (SHOW STATS total_query_time).', pools, poolLabels, (p) => seconds(p.query_us));
  out.each('tessera_wait_seconds_total', 'counter', 'Seconds clients waited for a server (SHOW STATS total_wait_time).', pools, poolLabels, (p) => seconds(p.wait_us));
  histogram(out, 'tessera_transaction_duration_seconds', 'Transactions by duration.', pools, (p) => p.transaction_times, (p) => p.transaction_us);
  histogram(out, 'tessera_wait_duration_seconds', 'Server assignments by how long the client waited (0 when a server was free).', pools, (p) => p.wait_times, (p) => p.wait_us);

  out.each('tessera_login_failures_total', 'counter', 'Refused client logins by reason.', byReason(s.login_failures), (r) => ({ reason: r.reason }), (r) => r.n);
  out.each('tessera_client_errors_total', 'counter', 'Errors Tessera ended a logged-in client with, by reason (timeouts, server unavailable, shutdown, ...).', byReason(s.client_errors), (r) => ({ reason: r.reason }), (r) => r.n);
  out.family('tessera_session_logins_total', 'counter', 'Session-token logins by result.');
  out.sample('tessera_session_logins_total', { result: 'ok' }, s.session_logins.ok);
  out.sample('tessera_session_logins_total', { result: 'failed' }, s.session_logins.failed);

  const acc = s.accessors;
  if (acc.length > 0) {
    const labels = (a: (typeof acc)[number]) => ({ accessor: a.accessor });
    out.each('tessera_accessor_transactions_total', 'counter', 'Transactions per accessor (metrics_per_accessor).', acc, labels, (a) => a.transactions);
    out.each('tessera_accessor_queries_total', 'counter', 'Queries per accessor (metrics_per_accessor).', acc, labels, (a) => a.queries);
    out.each('tessera_accessor_errors_total', 'counter', 'Errors relayed from the server per accessor (metrics_per_accessor).', acc, labels, (a) => a.errors);
  }
  return out.text();
}

/** What the pgbouncer_exporter names are made from: the console's SHOW snapshots. */
export interface ConsoleFigures {
  version: string;
  max_client_conn: number;
  max_user_connections: number;
  pools: PoolSnapshot[];
  databases: DatabaseSnapshot[];
  stats: StatsSnapshot[];
  lists: ListsSnapshot;
  clients: ConnectionSnapshot[];
}

/** pgbouncer_exporter's SHOW STATS_TOTALS columns: its name, what to divide by (microseconds to seconds), help. */
const EXPORTER_STATS: [keyof StatsSnapshot['total'], string, number, string][] = [
  ['query_count', 'queries_pooled_total', 1, 'Total number of SQL queries pooled'],
  ['query_time', 'queries_duration_seconds_total', 1e6, 'Total number of seconds spent executing queries'],
  ['received', 'received_bytes_total', 1, 'Total volume in bytes of network traffic received'],
  ['sent', 'sent_bytes_total', 1, 'Total volume in bytes of network traffic sent'],
  ['wait_time', 'client_wait_seconds_total', 1e6, 'Time spent by clients waiting for a server in seconds'],
  ['xact_count', 'sql_transactions_pooled_total', 1, 'Total number of SQL transactions pooled'],
  ['xact_time', 'server_in_transaction_seconds_total', 1e6, 'Total number of seconds spent connected to PostgreSQL in a transaction'],
  ['client_parse_count', 'client_parses_total', 1, 'Total number of prepared statement Parse messages received from clients'],
  ['server_parse_count', 'server_parses_total', 1, 'Total number of prepared statement Parse messages sent to PostgreSQL'],
  ['bind_count', 'binds_total', 1, 'Total number of prepared statements readied for execution with a Bind message'],
  ['server_assignment_count', 'server_assignments_total', 1, 'Total number of client connections which have been served'],
];

const EXPORTER_POOLS: [keyof PoolSnapshot, string, string][] = [
  ['cl_active', 'client_active_connections', 'Client connections linked to server connection and able to process queries'],
  ['cl_active_cancel_req', 'client_active_cancel_connections', 'Client connections that have forwarded query cancellations to the server'],
  ['cl_waiting', 'client_waiting_connections', 'Client connections waiting on a server connection'],
  ['cl_waiting_cancel_req', 'client_waiting_cancel_connections', 'Client connections that have not forwarded query cancellations to the server yet'],
  ['sv_active', 'server_active_connections', 'Server connections linked to a client connection'],
  ['sv_active_cancel', 'server_active_cancel_connections', 'Server connections that are currently forwarding a cancel request'],
  ['sv_being_canceled', 'server_being_canceled_connections', 'Servers waiting for in-flight cancel requests before becoming idle'],
  ['sv_idle', 'server_idle_connections', 'Server connections idle and ready for a client query'],
  ['sv_used', 'server_used_connections', 'Server connections idle more than server_check_delay, needing server_check_query'],
  ['sv_tested', 'server_testing_connections', 'Server connections running server_reset_query or server_check_query'],
  ['sv_login', 'server_login_connections', 'Server connections currently logging in'],
];

const EXPORTER_DATABASES: [keyof DatabaseSnapshot, string, string][] = [
  ['pool_size', 'pool_size', 'Maximum number of server connections'],
  ['reserve_pool_size', 'reserve_pool', 'Maximum number of additional connections for this database'],
  ['max_connections', 'max_connections', 'Maximum number of allowed connections for this database'],
  ['current_connections', 'current_connections', 'Current number of connections for this database'],
  ['paused', 'paused', '1 if this database is currently paused, else 0'],
  ['disabled', 'disabled', '1 if this database is currently disabled, else 0'],
];

const EXPORTER_LISTS: [keyof ListsSnapshot, string, string][] = [
  ['databases', 'databases', 'Count of databases'],
  ['users', 'users', 'Count of users'],
  ['pools', 'pools', 'Count of pools'],
  ['free_clients', 'free_clients', 'Count of free clients'],
  ['used_clients', 'used_clients', 'Count of used clients'],
  ['login_clients', 'login_clients', 'Count of clients in login state'],
  ['free_servers', 'free_servers', 'Count of free servers'],
  ['used_servers', 'used_servers', 'Count of used servers'],
  ['dns_names', 'cached_dns_names', 'Count of DNS names in the cache'],
  ['dns_zones', 'cached_dns_zones', 'Count of DNS zones in the cache'],
  ['dns_queries', 'in_flight_dns_queries', 'Count of in-flight DNS queries'],
];

/** The series prometheus-community/pgbouncer_exporter makes of PgBouncer's SHOW output. */
export function renderPgbouncerExporter(f: ConsoleFigures): string {
  const out = new Exposition();
  out.family('pgbouncer_up', 'gauge', 'The pgbouncer scrape succeeded').sample('pgbouncer_up', {}, 1);
  out.family('pgbouncer_version_info', 'gauge', 'The pgbouncer version info').sample('pgbouncer_version_info', { version: f.version }, 1);
  for (const [key, name, help] of EXPORTER_LISTS) out.family(`pgbouncer_${name}`, 'gauge', help).sample(`pgbouncer_${name}`, {}, f.lists[key] ?? 0);
  out.family('pgbouncer_config_max_client_connections', 'gauge', 'Config maximum number of client connections').sample('pgbouncer_config_max_client_connections', {}, f.max_client_conn);
  out.family('pgbouncer_config_max_user_connections', 'gauge', 'Config maximum number of server connections per user').sample('pgbouncer_config_max_user_connections', {}, f.max_user_connections);
  for (const [key, name, scale, help] of EXPORTER_STATS) {
    out.each(`pgbouncer_stats_${name}`, 'counter', help, f.stats, (s) => ({ database: s.database }), (s) => Number(s.total[key]) / scale);
  }
  for (const [key, name, help] of EXPORTER_POOLS) {
    out.each(`pgbouncer_pools_${name}`, 'gauge', help, f.pools, (p) => ({ database: p.database, user: p.user }), (p) => Number(p[key] ?? 0));
  }
  out.each('pgbouncer_pools_client_maxwait_seconds', 'gauge', 'Age of oldest unserved client connection, shown as second', f.pools, (p) => ({ database: p.database, user: p.user }), (p) => p.maxwait + p.maxwait_us / 1e6);
  const dbLabels = (d: DatabaseSnapshot) => ({ name: d.name, host: d.host ?? '', port: d.port, database: d.database, force_user: d.force_user ?? '', pool_mode: d.pool_mode ?? '' });
  for (const [key, name, help] of EXPORTER_DATABASES) out.each(`pgbouncer_databases_${name}`, 'gauge', help, f.databases, dbLabels, (d) => Number(d[key] ?? 0));
  // SHOW CLIENTS grouped, as the exporter does.
  const groups = new Map<string, { labels: Labels; n: number }>();
  for (const c of f.clients) {
    const labels = { database: c.database, user: c.user, application_name: c.application_name, state: c.state };
    const key = JSON.stringify(labels);
    const g = groups.get(key);
    if (g) g.n++;
    else groups.set(key, { labels, n: 1 });
  }
  out.each('pgbouncer_client_connections', 'gauge', 'Number of client connections grouped by database, user, application name, and state', [...groups.values()], (g) => g.labels, (g) => g.n);
  return out.text();
}
