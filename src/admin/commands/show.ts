/**
 * SHOW commands: PgBouncer's column names, order and types (admin.c, stats.c), one handler each.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { noticeResponse, SqlState } from '../../protocol/messages.js';
import { ConfigSchema } from '../../config/schema.js';
import { RESTART_ONLY_SETTINGS as NOT_CHANGEABLE } from '../../config/restart-only.js';
import { columns, commandComplete, resultSet, type Cell, type Column } from '../wire.js';
import { AdminError, LIST_NAMES, type ConnectionSnapshot, type StatCounters, type StatsSnapshot } from '../view.js';
import { invalidCommand, requireAdmin, type CommandContext, type CommandHandler } from './context.js';

// ---------- column lists ----------

const SOCKET_NAMES = [
  'type', 'user', 'database', 'replication', 'state', 'addr', 'port', 'local_addr', 'local_port',
  'connect_time', 'request_time', 'wait', 'wait_us', 'close_needed', 'ptr', 'link', 'remote_pid', 'tls',
  'application_name', 'prepared_statements', 'id',
];
const SOCKET_DEBUG_NAMES = ['recv_pos', 'pkt_pos', 'pkt_remain', 'send_pos', 'send_remain', 'pkt_avail', 'send_avail'];

/** Counter order shared by every statistics command. */
const STAT_KEYS: readonly (keyof StatCounters)[] = [
  'server_assignment_count', 'xact_count', 'query_count', 'received', 'sent', 'xact_time', 'query_time',
  'wait_time', 'client_parse_count', 'server_parse_count', 'bind_count',
];
const n = (count: number) => 'N'.repeat(count);

export const SHOW_COLUMNS = {
  version: columns('s', 'version'),
  config: columns('ssss', 'key', 'value', 'default', 'changeable'),
  databases: columns(
    'ssissiiiissiiiiii',
    'name', 'host', 'port', 'database', 'force_user', 'pool_size', 'min_pool_size', 'reserve_pool_size',
    'server_lifetime', 'pool_mode', 'load_balance_hosts', 'max_connections', 'current_connections',
    'max_client_connections', 'current_client_connections', 'paused', 'disabled',
  ),
  pools: columns(
    'ssiiiiiiiiiiiiiss',
    'database', 'user', 'cl_active', 'cl_waiting', 'cl_active_cancel_req', 'cl_waiting_cancel_req',
    'sv_active', 'sv_active_cancel', 'sv_being_canceled', 'sv_idle', 'sv_used', 'sv_tested', 'sv_login',
    'maxwait', 'maxwait_us', 'pool_mode', 'load_balance_hosts',
  ),
  // pin_reason, after PgBouncer's columns: why a transaction-mode client keeps its backend.
  clients: columns('ssssssisiTTiiississiis', ...SOCKET_NAMES, 'pin_reason'),
  // Tessera adds the server's host role (primary, standby, unknown) after PgBouncer's columns.
  servers: columns('ssssssisiTTiiississiis', ...SOCKET_NAMES, 'role'),
  sockets: columns('ssssssisiTTiiississiiiiiiiii', ...SOCKET_NAMES, ...SOCKET_DEBUG_NAMES),
  users: columns(
    'ssssiiii',
    'name', 'pool_size', 'reserve_pool_size', 'pool_mode', 'max_user_connections', 'current_connections',
    'max_user_client_connections', 'current_client_connections',
  ),
  stats: columns(
    's' + n(22),
    'database',
    ...STAT_KEYS.map((k) => `total_${k}`),
    ...STAT_KEYS.map((k) => (k === 'received' ? 'avg_recv' : `avg_${k}`)),
  ),
  stats_totals: columns(
    's' + n(11),
    'database', 'server_assignment_count', 'xact_count', 'query_count', 'bytes_received', 'bytes_sent',
    'xact_time', 'query_time', 'wait_time', 'client_parse_count', 'server_parse_count', 'bind_count',
  ),
  // PgBouncer's own quirk: only the last three carry the avg_ prefix here.
  stats_averages: columns(
    's' + n(11),
    'database', 'server_assignment_count', 'xact_count', 'query_count', 'bytes_received', 'bytes_sent',
    'xact_time', 'query_time', 'wait_time', 'avg_client_parse_count', 'avg_server_parse_count', 'avg_bind_count',
  ),
  totals: columns('sN', 'name', 'value'),
  lists: columns('si', 'list', 'items'),
  state: columns('ss', 'key', 'value'),
  mem: columns('siiii', 'name', 'size', 'used', 'free', 'memtotal'),
  sessions: columns('sssiNNNTs', 'session_id', 'accessor', 'database', 'clients', 'transactions', 'queries', 'errors', 'last_active', 'addr'),
  peers: columns('isii', 'peer_id', 'host', 'port', 'pool_size'),
  peer_pools: columns('iiiii', 'peer_id', 'cl_active_cancel_req', 'cl_waiting_cancel_req', 'sv_active_cancel', 'sv_login'),
  dns_hosts: columns('sqs', 'hostname', 'ttl', 'addrs'),
  dns_zones: columns('sqi', 'zonename', 'serial', 'count'),
} satisfies Record<string, Column[]>;

/** SHOW TOTALS row names for each counter (PgBouncer's internal field names). */
const TOTALS_NAMES: Record<keyof StatCounters, string> = {
  server_assignment_count: 'server_assignment_count',
  xact_count: 'xact_count',
  query_count: 'query_count',
  received: 'client_bytes',
  sent: 'server_bytes',
  xact_time: 'xact_time',
  query_time: 'query_time',
  wait_time: 'wait_time',
  client_parse_count: 'ps_client_parse_count',
  server_parse_count: 'ps_server_parse_count',
  bind_count: 'ps_bind_count',
};

// ---------- SHOW HELP / VERSION ----------

const HELP_DETAIL = [
  '',
  '\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION',
  '\tSHOW PEERS|PEER_POOLS',
  '\tSHOW SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE|SESSIONS',
  '\tSHOW DNS_HOSTS|DNS_ZONES',
  '\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS',
  '\tSET key = arg',
  '\tRELOAD',
  '\tPAUSE [<db>]',
  '\tRESUME [<db>]',
  '\tDISABLE <db>',
  '\tENABLE <db>',
  '\tRECONNECT [<db>]',
  '\tKILL [<db>]',
  '\tKILL_CLIENT <client_id>',
  '\tKILL_SESSION <session_id>',
  '\tSUSPEND',
  '\tSHUTDOWN',
  '\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS',
  '\tWAIT_CLOSE [<db>]',
].join('\n');

const showHelp: CommandHandler = () =>
  Buffer.concat([
    noticeResponse({ severity: 'NOTICE', code: '00000', message: 'Console usage', detail: HELP_DETAIL }),
    commandComplete('SHOW'),
  ]);

let packageVersion: string | undefined;

/** Tessera's version from its package.json (found from src/ or dist/src/ alike). */
export function tesseraVersion(): string {
  if (packageVersion !== undefined) return packageVersion;
  packageVersion = '';
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'tessera' && typeof pkg.version === 'string') {
        packageVersion = pkg.version;
        break;
      }
    } catch {
      // not here; look one level up
    }
    dir = path.dirname(dir);
  }
  return packageVersion;
}

const showVersion: CommandHandler = ({ view }) => {
  const text = view.version?.() ?? `Tessera ${tesseraVersion()}`.trim();
  return resultSet(SHOW_COLUMNS.version, [[text]]);
};

// ---------- SHOW CONFIG ----------

interface SchemaProp {
  default?: unknown;
  /** A secret (embedded_password): listed, never shown. */
  writeOnly?: boolean;
  type?: string;
  properties?: Record<string, SchemaProp>;
}


/** Not settings: the schema reference and the [databases]/[users] sections. */
const NOT_SETTINGS = new Set(['$schema', 'databases', 'users']);

/** What SHOW CONFIG shows for a secret, set or not. */
const HIDDEN = '(hidden)';

function configValue(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'boolean') return v ? '1' : '0';
  if (Array.isArray(v)) return v.map(String).join(',');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export interface ConfigRow {
  key: string;
  value: string;
  default: string;
  changeable: boolean;
}

/**
 * Every setting of the config schema with its current and default value. Object settings
 * (session_tokens) are flattened to dotted keys (session_tokens.max_failures).
 */
export function configRows(config: object): ConfigRow[] {
  const props = (ConfigSchema as unknown as { properties: Record<string, SchemaProp> }).properties;
  const current = config as Record<string, unknown>;
  const rows: ConfigRow[] = [];
  for (const [key, prop] of Object.entries(props)) {
    if (NOT_SETTINGS.has(key)) continue;
    if (prop.type === 'object' && prop.properties) {
      const sub = (current[key] ?? {}) as Record<string, unknown>;
      for (const [subKey, subProp] of Object.entries(prop.properties)) {
        rows.push({
          key: `${key}.${subKey}`,
          value: configValue(sub[subKey]),
          default: configValue(subProp.default),
          changeable: !NOT_CHANGEABLE.has(key),
        });
      }
      continue;
    }
    if (prop.writeOnly) {
      rows.push({ key, value: HIDDEN, default: HIDDEN, changeable: !NOT_CHANGEABLE.has(key) });
      continue;
    }
    rows.push({ key, value: configValue(current[key]), default: configValue(prop.default), changeable: !NOT_CHANGEABLE.has(key) });
  }
  return rows;
}

const showConfig: CommandHandler = ({ view }) =>
  resultSet(
    SHOW_COLUMNS.config,
    configRows(view.config()).map((r) => [r.key, r.value, r.default, r.changeable ? 'yes' : 'no']),
  );

// ---------- SHOW DATABASES / POOLS / USERS ----------

const showDatabases: CommandHandler = ({ view }) =>
  resultSet(
    SHOW_COLUMNS.databases,
    view.databases().map((d) => [
      d.name, d.host, d.port, d.database, d.force_user, d.pool_size, d.min_pool_size, d.reserve_pool_size,
      d.server_lifetime, d.pool_mode, d.load_balance_hosts, d.max_connections, d.current_connections,
      d.max_client_connections, d.current_client_connections, d.paused, d.disabled,
    ]),
  );

const showPools: CommandHandler = ({ view }) =>
  resultSet(
    SHOW_COLUMNS.pools,
    view.pools().map((p) => [
      p.database, p.user, p.cl_active, p.cl_waiting, p.cl_active_cancel_req ?? 0, p.cl_waiting_cancel_req ?? 0,
      p.sv_active, p.sv_active_cancel ?? 0, p.sv_being_canceled ?? 0, p.sv_idle, p.sv_used, p.sv_tested,
      p.sv_login, p.maxwait, p.maxwait_us, p.pool_mode, p.load_balance_hosts,
    ]),
  );

// PgBouncer prints an unset user override as an empty string, not NULL.
const override = (v: number | string | null): Cell => (v === null ? '' : v);

const showUsers: CommandHandler = ({ view }) =>
  resultSet(
    SHOW_COLUMNS.users,
    view.users().map((u) => [
      u.name, override(u.pool_size), override(u.reserve_pool_size), u.pool_mode, u.max_user_connections,
      u.current_connections, u.max_user_client_connections, u.current_client_connections,
    ]),
  );

// ---------- SHOW CLIENTS / SERVERS / SOCKETS ----------

/** PgBouncer shows an 'active' connection without a link as 'idle'. */
const shownState = (c: ConnectionSnapshot): string => (c.state === 'active' && !c.link ? 'idle' : c.state);

function socketCells(type: 'C' | 'S', c: ConnectionSnapshot, state: string): Cell[] {
  return [
    type, c.user, c.database, c.replication ?? 'none', state, c.addr, c.port, c.local_addr, c.local_port,
    c.connect_time, c.request_time, c.wait, c.wait_us, c.close_needed, c.ptr, c.link, c.remote_pid, c.tls,
    c.application_name, c.prepared_statements, c.id,
  ];
}

const showClients: CommandHandler = ({ view }) =>
  resultSet(SHOW_COLUMNS.clients, view.clients().map((c) => [...socketCells('C', c, shownState(c)), c.pin_reason ?? '']));

const showServers: CommandHandler = ({ view }) =>
  resultSet(SHOW_COLUMNS.servers, view.servers().map((s) => [...socketCells('S', s, shownState(s)), s.role ?? 'unknown']));

/** SHOW SOCKETS names the list a socket is on: cl_active, sv_idle, sv_login ... */
const CLIENT_LIST: Record<string, string> = { active: 'cl_active', idle: 'cl_active', waiting: 'cl_waiting' };
const SERVER_LIST: Record<string, string> = {
  active: 'sv_active', idle: 'sv_idle', used: 'sv_used', tested: 'sv_tested', new: 'sv_login',
};

/** Sockets with their list name; activeOnly keeps those with work in flight (PgBouncer: non-empty buffers). */
function socketRows(ctx: CommandContext, activeOnly: boolean): Cell[][] {
  const rows: Cell[][] = [];
  const debug = [0, 0, 0, 0, 0, 0, 0]; // Node's stream buffers are not PgBouncer's; reported as 0
  const add = (type: 'C' | 'S', list: Record<string, string>, conns: ConnectionSnapshot[]) => {
    for (const c of conns) {
      const name = list[c.state];
      if (name === undefined) continue; // cancel-request states are not on these lists
      if (activeOnly && !(c.state === 'waiting' || (c.state === 'active' && c.link))) continue;
      rows.push([...socketCells(type, c, name), ...debug]);
    }
  };
  add('C', CLIENT_LIST, ctx.view.clients());
  add('S', SERVER_LIST, ctx.view.servers());
  return rows;
}

const showSockets: CommandHandler = (ctx) => resultSet(SHOW_COLUMNS.sockets, socketRows(ctx, false));
const showActiveSockets: CommandHandler = (ctx) => resultSet(SHOW_COLUMNS.sockets, socketRows(ctx, true));

// ---------- statistics ----------

type Num = number | bigint;

const big = (v: Num): bigint => (typeof v === 'bigint' ? v : BigInt(Math.trunc(v)));

function sum(a: Num, b: Num): Num {
  if (typeof a === 'bigint' || typeof b === 'bigint') return big(a) + big(b);
  return a + b;
}

const counters = (c: StatCounters): Num[] => STAT_KEYS.map((k) => c[k]);

/** Totals and averages over all databases, as SHOW TOTALS computes them from the summed counters. */
export function aggregateStats(all: readonly StatsSnapshot[]): { total: StatCounters; avg: StatCounters } {
  const zero = (): StatCounters =>
    Object.fromEntries(STAT_KEYS.map((k) => [k, 0])) as unknown as StatCounters;
  const total = zero();
  const avg = zero();
  for (const s of all) {
    for (const k of STAT_KEYS) {
      total[k] = sum(total[k], s.total[k]);
      avg[k] = sum(avg[k], s.avg[k]);
    }
  }
  // Mean durations are per transaction / query / assignment: weight each database's mean by its rate.
  const weighted = (timeKey: 'xact_time' | 'query_time' | 'wait_time', rateKey: keyof StatCounters): Num => {
    let time = 0;
    let rate = 0;
    for (const s of all) {
      time += Number(s.avg[timeKey]) * Number(s.avg[rateKey]);
      rate += Number(s.avg[rateKey]);
    }
    return rate > 0 ? Math.trunc(time / rate) : 0;
  };
  avg.xact_time = weighted('xact_time', 'xact_count');
  avg.query_time = weighted('query_time', 'query_count');
  avg.wait_time = weighted('wait_time', 'server_assignment_count');
  return { total, avg };
}

const showStats: CommandHandler = ({ view }) =>
  resultSet(SHOW_COLUMNS.stats, view.stats().map((s) => [s.database, ...counters(s.total), ...counters(s.avg)]));

const showStatsTotals: CommandHandler = ({ view }) =>
  resultSet(SHOW_COLUMNS.stats_totals, view.stats().map((s) => [s.database, ...counters(s.total)]));

const showStatsAverages: CommandHandler = ({ view }) =>
  resultSet(SHOW_COLUMNS.stats_averages, view.stats().map((s) => [s.database, ...counters(s.avg)]));

const showTotals: CommandHandler = ({ view }) => {
  const { total, avg } = aggregateStats(view.stats());
  return resultSet(SHOW_COLUMNS.totals, [
    ...STAT_KEYS.map((k) => [`total_${TOTALS_NAMES[k]}`, total[k]]),
    ...STAT_KEYS.map((k) => [`avg_${TOTALS_NAMES[k]}`, avg[k]]),
  ]);
};

// ---------- LISTS / STATE / MEM / FDS / peers / DNS ----------

const showLists: CommandHandler = ({ view }) => {
  const lists = view.lists();
  return resultSet(SHOW_COLUMNS.lists, LIST_NAMES.map((name) => [name, lists[name] ?? 0]));
};

const showState: CommandHandler = ({ view }) => {
  const s = view.state();
  const yes = (b: boolean) => (b ? 'yes' : 'no');
  return resultSet(SHOW_COLUMNS.state, [
    ['active', yes(!s.paused && !s.suspended)],
    ['paused', yes(s.paused && !s.suspended)],
    ['suspended', yes(s.suspended)],
  ]);
};

const showMem: CommandHandler = ({ view }) =>
  resultSet(SHOW_COLUMNS.mem, (view.mem?.() ?? []).map((m) => [m.name, m.size, m.used, m.free, m.memtotal]));

/** Tessera's own: who the pooled connections served (session-token and connect_query logins). */
const showSessions: CommandHandler = ({ view }) =>
  resultSet(
    SHOW_COLUMNS.sessions,
    (view.sessions?.() ?? []).map((s) => [s.session_id, s.accessor, s.database, s.clients, s.transactions, s.queries, s.errors, s.last_active, s.addr]),
  );

const showFds: CommandHandler = (ctx) => {
  requireAdmin(ctx);
  throw new AdminError(
    'SHOW FDS is not supported',
    SqlState.FeatureNotSupported,
    'Tessera does not hand its sockets over to another process (PgBouncer online restart).',
  );
};

// Tessera has no peering and no DNS cache of its own: headers only.
const emptyResult = (cols: Column[]): CommandHandler => () => resultSet(cols, []);

// ---------- fake parameters (SHOW client_encoding and friends) ----------

/** Parameters some drivers SHOW or SET on any connection; PgBouncer fakes them. */
export const FAKE_PARAMS: ReadonlyMap<string, string> = new Map([
  ['client_encoding', 'UTF-8'],
  ['default_transaction_isolation', 'read committed'],
  ['standard_conforming_strings', 'on'],
  ['datestyle', 'ISO'],
  ['timezone', 'GMT'],
  ['extra_float_digits', '2'],
]);

// ---------- dispatch ----------

export const SHOW_COMMANDS: ReadonlyMap<string, CommandHandler> = new Map<string, CommandHandler>([
  ['clients', showClients],
  ['config', showConfig],
  ['databases', showDatabases],
  ['fds', showFds],
  ['help', showHelp],
  ['lists', showLists],
  ['peers', emptyResult(SHOW_COLUMNS.peers)],
  ['peer_pools', emptyResult(SHOW_COLUMNS.peer_pools)],
  ['pools', showPools],
  ['servers', showServers],
  ['sockets', showSockets],
  ['active_sockets', showActiveSockets],
  ['stats', showStats],
  ['stats_totals', showStatsTotals],
  ['stats_averages', showStatsAverages],
  ['users', showUsers],
  ['version', showVersion],
  ['totals', showTotals],
  ['mem', showMem],
  ['sessions', showSessions],
  ['dns_hosts', emptyResult(SHOW_COLUMNS.dns_hosts)],
  ['dns_zones', emptyResult(SHOW_COLUMNS.dns_zones)],
  ['state', showState],
]);

/** SHOW <what> (also reached as SELECT <what>, as in PgBouncer). Every role may SHOW except FDS. */
export const show: CommandHandler = (ctx, arg) => {
  const what = arg.toLowerCase();
  const fake = FAKE_PARAMS.get(what);
  if (fake !== undefined) return resultSet(columns('s', what), [[fake]]);
  const handler = SHOW_COMMANDS.get(what);
  if (!handler) throw invalidCommand(ctx.query);
  return handler(ctx, '');
};
