import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Parser } from 'pg-protocol/dist/parser.js';
import { parseConfig } from '../../src/config/load.js';
import { runAdminQuery } from '../../src/admin/console.js';
import { parseAdminQuery } from '../../src/admin/parse.js';
import { formatTime } from '../../src/admin/wire.js';
import {
  AdminError,
  type AdminView,
  type AdminWho,
  type ConnectionSnapshot,
  type PoolerState,
  type ShutdownMode,
  type StatCounters,
} from '../../src/admin/view.js';

// ---------- a fake proxy ----------

const ADMIN: AdminWho = { user: 'alice', isAdmin: true, isStats: false };
const STATS: AdminWho = { user: 'stan', isAdmin: false, isStats: true };
const NOBODY: AdminWho = { user: 'mallory', isAdmin: false, isStats: false };

const CONFIG = parseConfig(
  {
    auth_type: 'trust',
    default_pool_size: 30,
    admin_users: 'alice, bob',
    stats_users: ['stan'],
    databases: {
      app: { host: 'db1', port: 5433, dbname: 'appdb' },
      '*': { host: 'db2' },
    },
  },
  'proxy.config.json',
  '/tmp',
);

const T0 = new Date(2024, 0, 2, 3, 4, 5);
const T1 = new Date(2024, 0, 2, 3, 4, 9);

function conn(over: Partial<ConnectionSnapshot>): ConnectionSnapshot {
  return {
    user: 'alice', database: 'app', state: 'active', addr: '127.0.0.1', port: 50000, local_addr: '127.0.0.1',
    local_port: 6432, connect_time: T0, request_time: T1, wait: 0, wait_us: 0, close_needed: false, ptr: '0x1',
    link: '', remote_pid: 0, tls: '', application_name: '', prepared_statements: 0, id: 1, ...over,
  };
}

const counters = (base: number): StatCounters => ({
  server_assignment_count: base + 1, xact_count: base + 2, query_count: base + 3, received: base + 4, sent: base + 5,
  xact_time: base + 6, query_time: base + 7, wait_time: base + 8, client_parse_count: base + 9,
  server_parse_count: base + 10, bind_count: base + 11,
});

interface Fake extends AdminView {
  calls: string[];
  st: PoolerState;
}

function fakeView(over: Partial<AdminView> = {}): Fake {
  const calls: string[] = [];
  const st: PoolerState = { paused: false, suspended: false, shuttingDown: false };
  const view: Fake = {
    calls,
    st,
    config: () => CONFIG,
    state: () => ({ ...st }),
    pools: () => [
      {
        database: 'app', user: 'alice', cl_active: 3, cl_waiting: 2, sv_active: 1, sv_idle: 4, sv_used: 5, sv_tested: 6,
        sv_login: 7, maxwait: 8, maxwait_us: 9, pool_mode: 'transaction',
      },
    ],
    clients: () => [
      conn({ id: 7, ptr: '0xc7', link: '0x57', state: 'active', application_name: 'psql', wait: 1, wait_us: 250 }),
      conn({ id: 8, ptr: '0xc8', link: '', state: 'active' }),
      conn({ id: 9, ptr: '0xc9', state: 'waiting' }),
    ],
    servers: () => [
      conn({ id: 57, ptr: '0x57', link: '0xc7', state: 'active', addr: '10.0.0.1', port: 5433, remote_pid: 4242, close_needed: true }),
      conn({ id: 58, ptr: '0x58', state: 'idle', addr: '10.0.0.1', port: 5433, remote_pid: 4243 }),
    ],
    databases: () => [
      {
        name: 'app', host: 'db1', port: 5433, database: 'appdb', force_user: null, pool_size: 30, min_pool_size: 0,
        reserve_pool_size: 0, server_lifetime: 3600, pool_mode: null, max_connections: 0, current_connections: 2,
        max_client_connections: 0, current_client_connections: 3, paused: false, disabled: false,
      },
      {
        name: 'sleepy', host: null, port: 5432, database: 'sleepy', force_user: 'svc', pool_size: 5, min_pool_size: 1,
        reserve_pool_size: 2, server_lifetime: 60, pool_mode: 'session', max_connections: 10, current_connections: 0,
        max_client_connections: 0, current_client_connections: 0, paused: true, disabled: true,
      },
    ],
    users: () => [
      {
        name: 'alice', pool_size: 7, reserve_pool_size: null, pool_mode: null, max_user_connections: 0,
        current_connections: 2, max_user_client_connections: 0, current_client_connections: 3,
      },
    ],
    stats: () => [
      { database: 'app', total: counters(100), avg: { ...counters(10), xact_count: 1, xact_time: 100 } },
      { database: 'sleepy', total: counters(200), avg: { ...counters(20), xact_count: 3, xact_time: 200 } },
    ],
    lists: () => ({ databases: 2, users: 1, pools: 1, used_clients: 3 }),
    pause: (db) => void calls.push(`pause ${db ?? '*'}`),
    resume: (db) => void calls.push(`resume ${db ?? '*'}`),
    reload: () => void calls.push('reload'),
    shutdown: (mode: ShutdownMode) => void calls.push(`shutdown ${mode}`),
    killClient: (id) => {
      calls.push(`kill_client ${id}`);
      return id === 7;
    },
    kill: (db) => void calls.push(`kill ${db ?? '*'}`),
    reconnect: (db) => void calls.push(`reconnect ${db ?? '*'}`),
    waitClose: (db) => void calls.push(`wait_close ${db ?? '*'}`),
    enable: (db) => void calls.push(`enable ${db}`),
    disable: (db) => void calls.push(`disable ${db}`),
    ...over,
  };
  return view;
}

// ---------- decoding the answer ----------

interface Answer {
  messages: any[];
  columns: string[];
  types: number[];
  rows: (string | null)[][];
  tag?: string;
  error?: { code: string; message: string; severity: string; detail?: string };
  notices: any[];
}

function decode(bytes: Buffer): Answer {
  const messages: any[] = [];
  new Parser().parse(bytes, (m) => messages.push(m));
  const desc = messages.find((m) => m.name === 'rowDescription');
  const err = messages.find((m) => m.name === 'error');
  return {
    messages,
    columns: desc ? desc.fields.map((f: any) => f.name) : [],
    types: desc ? desc.fields.map((f: any) => f.dataTypeID) : [],
    rows: messages.filter((m) => m.name === 'dataRow').map((m) => m.fields),
    tag: messages.find((m) => m.name === 'commandComplete')?.text,
    error: err && { code: err.code, message: err.message, severity: err.severity, detail: err.detail },
    notices: messages.filter((m) => m.name === 'notice'),
  };
}

async function run(sql: string, who: AdminWho = ADMIN, view: AdminView = fakeView()): Promise<Answer> {
  return decode(await runAdminQuery(sql, view, who));
}

function byColumn(a: Answer, row = 0): Record<string, string | null> {
  return Object.fromEntries(a.columns.map((c, i) => [c, a.rows[row][i]]));
}

function okShow(a: Answer): void {
  assert.is(a.error, undefined, a.error?.message);
  assert.is(a.tag, 'SHOW');
  assert.not.ok(a.messages.some((m) => m.name === 'readyForQuery'), 'ReadyForQuery is the caller\'s');
}

// ---------- header rows: PgBouncer's documented column lists ----------

const SOCKET_COLUMNS = [
  'type', 'user', 'database', 'replication', 'state', 'addr', 'port', 'local_addr', 'local_port', 'connect_time',
  'request_time', 'wait', 'wait_us', 'close_needed', 'ptr', 'link', 'remote_pid', 'tls', 'application_name',
  'prepared_statements', 'id',
];
const STAT_NAMES = [
  'server_assignment_count', 'xact_count', 'query_count', 'received', 'sent', 'xact_time', 'query_time', 'wait_time',
  'client_parse_count', 'server_parse_count', 'bind_count',
];

const HEADERS: Record<string, string[]> = {
  POOLS: [
    'database', 'user', 'cl_active', 'cl_waiting', 'cl_active_cancel_req', 'cl_waiting_cancel_req', 'sv_active',
    'sv_active_cancel', 'sv_being_canceled', 'sv_idle', 'sv_used', 'sv_tested', 'sv_login', 'maxwait', 'maxwait_us',
    'pool_mode', 'load_balance_hosts',
  ],
  STATS: [
    'database',
    ...STAT_NAMES.map((s) => `total_${s}`),
    ...STAT_NAMES.map((s) => (s === 'received' ? 'avg_recv' : `avg_${s}`)),
  ],
  STATS_TOTALS: [
    'database', 'server_assignment_count', 'xact_count', 'query_count', 'bytes_received', 'bytes_sent', 'xact_time',
    'query_time', 'wait_time', 'client_parse_count', 'server_parse_count', 'bind_count',
  ],
  STATS_AVERAGES: [
    'database', 'server_assignment_count', 'xact_count', 'query_count', 'bytes_received', 'bytes_sent', 'xact_time',
    'query_time', 'wait_time', 'avg_client_parse_count', 'avg_server_parse_count', 'avg_bind_count',
  ],
  // PgBouncer's columns, then Tessera's own: pin_reason (clients), role (servers).
  CLIENTS: [...SOCKET_COLUMNS, 'pin_reason'],
  SERVERS: [...SOCKET_COLUMNS, 'role'],
  SOCKETS: [...SOCKET_COLUMNS, 'recv_pos', 'pkt_pos', 'pkt_remain', 'send_pos', 'send_remain', 'pkt_avail', 'send_avail'],
  DATABASES: [
    'name', 'host', 'port', 'database', 'force_user', 'pool_size', 'min_pool_size', 'reserve_pool_size',
    'server_lifetime', 'pool_mode', 'load_balance_hosts', 'max_connections', 'current_connections',
    'max_client_connections', 'current_client_connections', 'paused', 'disabled',
  ],
  USERS: [
    'name', 'pool_size', 'reserve_pool_size', 'pool_mode', 'max_user_connections', 'current_connections',
    'max_user_client_connections', 'current_client_connections',
  ],
  CONFIG: ['key', 'value', 'default', 'changeable'],
  LISTS: ['list', 'items'],
  TOTALS: ['name', 'value'],
  STATE: ['key', 'value'],
  VERSION: ['version'],
  MEM: ['name', 'size', 'used', 'free', 'memtotal'],
  PEERS: ['peer_id', 'host', 'port', 'pool_size'],
  PEER_POOLS: ['peer_id', 'cl_active_cancel_req', 'cl_waiting_cancel_req', 'sv_active_cancel', 'sv_login'],
  DNS_HOSTS: ['hostname', 'ttl', 'addrs'],
  DNS_ZONES: ['zonename', 'serial', 'count'],
};

for (const [what, expected] of Object.entries(HEADERS)) {
  test(`SHOW ${what}: header row in PgBouncer's order`, async () => {
    const a = await run(`SHOW ${what};`);
    okShow(a);
    assert.equal(a.columns, expected);
    for (const row of a.rows) assert.is(row.length, expected.length);
  });
}

test('column types follow PgBouncer: text, int4, numeric for statistics', async () => {
  const pools = await run('SHOW POOLS');
  assert.is(pools.types[0], 25);
  assert.is(pools.types[2], 23);
  const stats = await run('SHOW STATS');
  assert.is(stats.types[0], 25);
  assert.ok(stats.types.slice(1).every((t) => t === 1700));
  const clients = await run('SHOW CLIENTS');
  assert.is(clients.types[SOCKET_COLUMNS.indexOf('connect_time')], 25);
  assert.is(clients.types[SOCKET_COLUMNS.indexOf('port')], 23);
});

// ---------- data rows ----------

test('SHOW POOLS rows: counts, defaults for cancel columns, NULL load_balance_hosts', async () => {
  const a = await run('SHOW POOLS');
  assert.equal(a.rows, [['app', 'alice', '3', '2', '0', '0', '1', '0', '0', '4', '5', '6', '7', '8', '9', 'transaction', null]]);
});

test('SHOW CLIENTS rows: C, states as PgBouncer shows them, local-time timestamps', async () => {
  const a = await run('SHOW CLIENTS');
  assert.is(a.rows.length, 3);
  const linked = byColumn(a, 0);
  assert.is(linked.type, 'C');
  assert.is(linked.state, 'active');
  assert.is(linked.replication, 'none');
  assert.is(linked.connect_time, '2024-01-02 03:04:05');
  assert.is(linked.request_time, formatTime(T1));
  assert.is(linked.wait, '1');
  assert.is(linked.wait_us, '250');
  assert.is(linked.close_needed, '0');
  assert.is(linked.link, '0x57');
  assert.is(linked.application_name, 'psql');
  assert.is(linked.id, '7');
  assert.is(byColumn(a, 1).state, 'idle', 'active without a link is shown as idle');
  assert.is(byColumn(a, 2).state, 'waiting');
});

test('SHOW SERVERS rows: S, remote_pid, close_needed', async () => {
  const a = await run('SHOW SERVERS');
  const s = byColumn(a, 0);
  assert.is(s.type, 'S');
  assert.is(s.state, 'active');
  assert.is(s.remote_pid, '4242');
  assert.is(s.close_needed, '1');
  assert.is(s.link, '0xc7');
  assert.is(byColumn(a, 1).state, 'idle');
});

test('SHOW SOCKETS names lists; ACTIVE_SOCKETS keeps linked and waiting ones', async () => {
  const a = await run('SHOW SOCKETS');
  assert.equal(a.rows.map((r) => r[4]), ['cl_active', 'cl_active', 'cl_waiting', 'sv_active', 'sv_idle']);
  const b = await run('SHOW ACTIVE_SOCKETS');
  assert.equal(b.rows.map((r) => r[4]), ['cl_active', 'cl_waiting', 'sv_active']);
});

test('SHOW DATABASES rows: NULLs for unset host/force_user/pool_mode, booleans as 1/0', async () => {
  const a = await run('SHOW DATABASES');
  assert.equal(a.rows[0], ['app', 'db1', '5433', 'appdb', null, '30', '0', '0', '3600', null, null, '0', '2', '0', '3', '0', '0']);
  assert.equal(a.rows[1], ['sleepy', null, '5432', 'sleepy', 'svc', '5', '1', '2', '60', 'session', null, '10', '0', '0', '0', '1', '1']);
});

test('SHOW USERS rows: unset overrides are empty strings, as PgBouncer prints them', async () => {
  const a = await run('SHOW USERS');
  assert.equal(a.rows, [['alice', '7', '', null, '0', '2', '0', '3']]);
});

test('SHOW STATS / STATS_TOTALS / STATS_AVERAGES rows', async () => {
  const stats = await run('SHOW STATS');
  const app = byColumn(stats, 0);
  assert.is(app.database, 'app');
  assert.is(app.total_server_assignment_count, '101');
  assert.is(app.total_received, '104');
  assert.is(app.total_bind_count, '111');
  assert.is(app.avg_recv, '14');
  assert.is(app.avg_xact_time, '100');
  const totals = await run('SHOW STATS_TOTALS');
  assert.equal(totals.rows[1], ['sleepy', '201', '202', '203', '204', '205', '206', '207', '208', '209', '210', '211']);
  const avgs = await run('SHOW STATS_AVERAGES');
  assert.equal(avgs.rows[0], ['app', '11', '1', '13', '14', '15', '100', '17', '18', '19', '20', '21']);
});

test('SHOW TOTALS sums databases; mean times are weighted by their rates', async () => {
  const a = await run('SHOW TOTALS');
  const v = Object.fromEntries(a.rows.map(([k, val]) => [k, val]));
  assert.is(a.rows.length, 22);
  assert.is(a.rows[0][0], 'total_server_assignment_count');
  assert.is(v.total_server_assignment_count, '302');
  assert.is(v.total_client_bytes, '308');
  assert.is(v.total_server_bytes, '310');
  assert.is(v.total_ps_bind_count, '322');
  assert.is(v.avg_xact_count, '4');
  assert.is(v.avg_xact_time, String(Math.trunc((100 * 1 + 200 * 3) / 4)));
  assert.is(v.avg_client_bytes, String(14 + 24));
});

test('SHOW LISTS: every PgBouncer list, missing ones 0', async () => {
  const a = await run('SHOW LISTS');
  assert.equal(a.rows.map((r) => r[0]), [
    'databases', 'users', 'peers', 'pools', 'peer_pools', 'free_clients', 'used_clients', 'login_clients',
    'free_servers', 'used_servers', 'dns_names', 'dns_zones', 'dns_queries', 'dns_pending',
  ]);
  assert.equal(a.rows[0], ['databases', '2']);
  assert.equal(a.rows[6], ['used_clients', '3']);
  assert.equal(a.rows[2], ['peers', '0']);
});

test('SHOW STATE follows the view', async () => {
  const view = fakeView();
  assert.equal((await run('SHOW STATE', ADMIN, view)).rows, [['active', 'yes'], ['paused', 'no'], ['suspended', 'no']]);
  view.st.paused = true;
  assert.equal((await run('SHOW STATE', ADMIN, view)).rows, [['active', 'no'], ['paused', 'yes'], ['suspended', 'no']]);
});

test('SHOW CONFIG: every setting with value, schema default and changeable', async () => {
  const a = await run('SHOW CONFIG');
  const rows = new Map(a.rows.map((r) => [r[0], r.slice(1)]));
  assert.equal(rows.get('default_pool_size'), ['30', '20', 'yes']);
  assert.equal(rows.get('listen_port'), ['6432', '6432', 'no']);
  assert.equal(rows.get('tcp_keepalive'), ['1', '1', 'yes']);
  assert.equal(rows.get('admin_users'), ['alice,bob', '', 'yes']);
  assert.equal(rows.get('auth_type'), ['trust', 'md5', 'yes']);
  assert.equal(rows.get('session_tokens.max_failures'), ['20', '20', 'yes']);
  assert.not.ok(rows.has('databases'));
  assert.not.ok(rows.has('$schema'));
});

test('SHOW VERSION says Tessera and its version', async () => {
  const a = await run('SHOW VERSION');
  okShow(a);
  assert.is(a.rows.length, 1);
  assert.match(a.rows[0][0] ?? '', /^Tessera \d+\.\d+\.\d+/);
  const own = await run('SHOW VERSION', ADMIN, fakeView({ version: () => 'Tessera 9.9.9' }));
  assert.equal(own.rows, [['Tessera 9.9.9']]);
});

test('SHOW HELP is a NOTICE "Console usage" with the command list', async () => {
  const a = await run('show help');
  assert.is(a.tag, 'SHOW');
  assert.is(a.notices.length, 1);
  assert.is(a.notices[0].message, 'Console usage');
  assert.match(a.notices[0].detail, /KILL_CLIENT <client_id>/);
});

test('SHOW of a driver parameter answers like PgBouncer', async () => {
  const a = await run('SHOW client_encoding');
  okShow(a);
  assert.equal(a.columns, ['client_encoding']);
  assert.equal(a.rows, [['UTF-8']]);
  const b = await run('select version');
  assert.match(b.rows[0][0] ?? '', /^Tessera/, 'SELECT is an alias of SHOW');
});

// ---------- parsing ----------

test('keywords are case-insensitive; whitespace and one trailing semicolon are fine', async () => {
  for (const q of ['show pools', 'Show Pools;', '  SHOW\tPOOLS  ;  ', 'SHOW POOLS\n;\n', 'sHoW "pools"']) {
    const a = await run(q);
    okShow(a);
    assert.is(a.columns[0], 'database', q);
  }
});

test('unknown or malformed commands: invalid command, 08P01', async () => {
  for (const q of ['FOO', 'SHOW', 'SHOW NOTHING', 'SHOW POOLS; SHOW STATS', 'SHOW POOLS extra', 'SHOW POOLS;;', '']) {
    const a = await run(q);
    assert.ok(a.error, q);
    assert.is(a.error.code, '08P01');
    assert.is(a.error.severity, 'ERROR');
    assert.is(a.error.message, `invalid command '${q}', use SHOW HELP;`);
    assert.is(a.tag, undefined);
  }
});

test('parser: quoted words, SET forms, PgBouncer length limits', () => {
  assert.equal(parseAdminQuery('PAUSE "My""Db";'), { kind: 'command', command: 'PAUSE', arg: 'My"Db' });
  assert.equal(parseAdminQuery('kill_client 12'), { kind: 'command', command: 'kill_client', arg: '12' });
  assert.equal(parseAdminQuery("SET server_reset_query = 'DISCARD ''x'''"), { kind: 'set', key: 'server_reset_query', value: "DISCARD 'x'" });
  assert.equal(parseAdminQuery('set default_pool_size to 40;'), { kind: 'set', key: 'default_pool_size', value: '40' });
  assert.equal(parseAdminQuery('SET a = 1.5'), { kind: 'invalid' });
  assert.equal(parseAdminQuery(`PAUSE ${'d'.repeat(64)}`), { kind: 'bad_arguments' });
  assert.equal(parseAdminQuery(`PAUSE ${'d'.repeat(63)}`).kind, 'command');
});

// ---------- permissions ----------

test('a user in neither admin_users nor stats_users is not allowed anything', async () => {
  for (const q of ['SHOW POOLS', 'SHOW HELP', 'PAUSE']) {
    const a = await run(q, NOBODY);
    assert.is(a.error?.message, 'not allowed');
    assert.is(a.error?.code, '08P01');
  }
});

test('a stats user may SHOW but not change anything, nor SHOW FDS', async () => {
  const view = fakeView();
  for (const q of ['SHOW POOLS', 'SHOW STATS', 'SHOW CLIENTS', 'SHOW CONFIG', 'SHOW VERSION']) okShow(await run(q, STATS, view));
  for (const q of ['PAUSE', 'PAUSE app', 'RESUME', 'KILL app', 'KILL_CLIENT 7', 'KILL_SESSION 42', 'RELOAD', 'RECONNECT', 'SHUTDOWN', 'DISABLE app', 'ENABLE app', 'WAIT_CLOSE', 'SUSPEND', 'SHOW FDS', 'SET default_pool_size = 3']) {
    const a = await run(q, STATS, view);
    assert.is(a.error?.message, 'admin access needed', q);
    assert.is(a.error?.code, '08P01');
  }
  assert.equal(view.calls, []);
  const set = await run('SET client_encoding = UTF8', STATS, view);
  assert.is(set.tag, 'SET', 'driver parameters are ignored for anyone');
  assert.is(set.notices[0]?.message, 'SET ignored');
});

test('SHOW FDS for an admin: not supported (0A000)', async () => {
  const a = await run('SHOW FDS');
  assert.is(a.error?.code, '0A000');
});

// ---------- actions ----------

test('PAUSE / RESUME call the view with PgBouncer tags', async () => {
  const view = fakeView();
  assert.is((await run('PAUSE', ADMIN, view)).tag, 'PAUSE');
  assert.is((await run('pause app;', ADMIN, view)).tag, 'PAUSE');
  assert.is((await run('PAUSE newdb', ADMIN, view)).tag, 'PAUSE', '"*" registers any database');
  view.st.paused = true;
  assert.is((await run('RESUME', ADMIN, view)).tag, 'RESUME');
  assert.is((await run('RESUME sleepy', ADMIN, view)).tag, 'RESUME');
  assert.equal(view.calls, ['pause *', 'pause app', 'pause newdb', 'resume *', 'resume sleepy']);
});

test('PAUSE answers only when the view has paused', async () => {
  let release!: () => void;
  const view = fakeView({ pause: () => new Promise<void>((r) => (release = r)) });
  let done = false;
  const pending = runAdminQuery('PAUSE', view, ADMIN).then((b) => ((done = true), b));
  await new Promise((r) => setTimeout(r, 10));
  assert.not.ok(done);
  release();
  assert.is(decode(await pending).tag, 'PAUSE');
});

test('PAUSE / RESUME / KILL preconditions and messages', async () => {
  const view = fakeView();
  assert.is((await run('PAUSE pgbouncer', ADMIN, view)).error?.message, 'cannot pause admin db: pgbouncer');
  assert.is((await run('RESUME', ADMIN, view)).error?.message, 'pooler is not paused/suspended');
  assert.is((await run('RESUME app', ADMIN, view)).error?.message, 'database app is not paused');
  assert.is((await run('RESUME newdb', ADMIN, view)).error?.message, 'no such database: newdb', 'RESUME does not auto-register');
  assert.is((await run('ENABLE newdb', ADMIN, view)).error?.message, 'no such database: newdb');
  assert.is((await run('ENABLE', ADMIN, view)).error?.message, 'a database is required');
  assert.is((await run('KILL pgbouncer', ADMIN, view)).error?.message, 'cannot kill admin db: pgbouncer');
  view.st.paused = true;
  assert.is((await run('PAUSE', ADMIN, view)).error?.message, 'already suspended/paused');
  assert.is((await run('KILL app', ADMIN, view)).error?.message, 'already suspended/paused');
  view.st.shuttingDown = true;
  assert.is((await run('RESUME', ADMIN, view)).error?.message, 'pooler is shutting down');
  assert.equal(view.calls, []);
});

test('without a "*" entry, unknown databases are refused', async () => {
  const noStar = parseConfig({ auth_type: 'trust', databases: { app: { host: 'db1' } } }, 'x.json', '/tmp');
  const view = fakeView({ config: () => noStar });
  assert.is((await run('PAUSE other', ADMIN, view)).error?.message, 'no such database: other');
  assert.is((await run('DISABLE other', ADMIN, view)).error?.message, 'no such database: other');
  assert.equal(view.calls, []);
});

test('KILL_CLIENT: calls the view, reports unknown ids and bad input', async () => {
  const view = fakeView();
  assert.is((await run('KILL_CLIENT 7', ADMIN, view)).tag, 'KILL_CLIENT');
  assert.is((await run('kill_client 99;', ADMIN, view)).error?.message, 'client not found');
  assert.is((await run('KILL_CLIENT abc', ADMIN, view)).error?.message, 'invalid client pointer supplied');
  assert.is((await run('KILL_CLIENT', ADMIN, view)).error?.message, 'invalid client pointer supplied');
  assert.equal(view.calls, ['kill_client 7', 'kill_client 99']);
});

test('KILL_SESSION: calls the view with the id; unknown sessions, bad ids and failures to end it are errors', async () => {
  const calls: string[] = [];
  const view = fakeView({
    killSession: async (id) => {
      calls.push(id);
      if (id === '42') return { clients: 2, ended: true, errors: [] };
      if (id === '43') return { clients: 1, ended: false, errors: [] }; // already gone from the database
      if (id === '44') return { clients: 1, ended: false, errors: [new AdminError('permission denied for function end_session_admin', '42501')] };
      return { clients: 0, ended: false, errors: [] };
    },
  });
  assert.is((await run('KILL_SESSION 42', ADMIN, view)).tag, 'KILL_SESSION');
  assert.is((await run('kill_session 0043;', ADMIN, view)).tag, 'KILL_SESSION');
  const denied = await run('KILL_SESSION 44', ADMIN, view);
  assert.is(denied.error?.code, '42501');
  assert.match(denied.error?.message ?? '', 'disconnected 1 client(s) but could not end the session: permission denied');
  assert.is((await run('KILL_SESSION 45', ADMIN, view)).error?.message, 'session not found');
  for (const bad of ['KILL_SESSION', 'KILL_SESSION abc', 'KILL_SESSION 0', 'KILL_SESSION 9223372036854775808', 'KILL_SESSION 12345678901234567890']) {
    assert.is((await run(bad, ADMIN, view)).error?.message, 'invalid session id supplied', bad);
  }
  assert.equal(calls, ['42', '43', '44', '45']);
  const unsupported = await run('KILL_SESSION 42', ADMIN, fakeView());
  assert.is(unsupported.error?.code, '0A000');
});

test('KILL, RECONNECT, WAIT_CLOSE, ENABLE, DISABLE, SHUTDOWN', async () => {
  const view = fakeView();
  const tags = [];
  for (const q of ['KILL app', 'KILL', 'RECONNECT', 'RECONNECT app', 'WAIT_CLOSE app', 'ENABLE sleepy', 'DISABLE app', 'SHUTDOWN WAIT_FOR_CLIENTS', 'shutdown wait_for_servers', 'SHUTDOWN']) {
    const a = await run(q, ADMIN, view);
    assert.is(a.error, undefined, `${q}: ${a.error?.message}`);
    tags.push(a.tag);
  }
  assert.equal(tags, ['KILL', 'KILL', 'RECONNECT', 'RECONNECT', 'WAIT_CLOSE', 'ENABLE', 'DISABLE', 'SHUTDOWN', 'SHUTDOWN', 'SHUTDOWN']);
  assert.equal(view.calls, [
    'kill app', 'kill *', 'reconnect *', 'reconnect app', 'wait_close app', 'enable sleepy', 'disable app',
    'shutdown wait_for_clients', 'shutdown wait_for_servers', 'shutdown immediate',
  ]);
  assert.match((await run('SHUTDOWN NOW', ADMIN, view)).error?.message ?? '', /^invalid command/);
  assert.match((await run('RELOAD app', ADMIN, view)).error?.message ?? '', /^invalid command/);
});

test('RELOAD: tag, and F0000 when it fails', async () => {
  assert.is((await run('RELOAD;')).tag, 'RELOAD');
  const failing = fakeView({
    reload: () => {
      throw new Error('pgbouncer.ini line 3: bad value');
    },
  });
  const a = await run('RELOAD', ADMIN, failing);
  assert.is(a.error?.code, 'F0000');
  assert.is(a.error?.message, 'RELOAD failed, see logs for additional details');
  assert.is(a.error?.detail, 'pgbouncer.ini line 3: bad value');
});

test('SUSPEND is not supported unless the view offers it', async () => {
  assert.is((await run('SUSPEND')).error?.message, 'cannot suspend with paused databases');
  const base = fakeView();
  const unpaused = () => base.databases().map((d) => ({ ...d, paused: false }));
  assert.is((await run('SUSPEND', ADMIN, fakeView({ databases: unpaused }))).error?.code, '0A000');
  const view = fakeView({ databases: unpaused, suspend: () => undefined });
  assert.is((await run('SUSPEND', ADMIN, view)).tag, 'SUSPEND');
});

test('errors thrown by the view become ErrorResponses, the connection stays usable', async () => {
  const view = fakeView({
    pause: () => {
      throw new AdminError('cannot pause now', '55000');
    },
    reconnect: () => Promise.reject(new Error('boom')),
  });
  const a = await run('PAUSE', ADMIN, view);
  assert.equal([a.error?.code, a.error?.message, a.error?.severity], ['55000', 'cannot pause now', 'ERROR']);
  const b = await run('RECONNECT', ADMIN, view);
  assert.equal([b.error?.code, b.error?.message], ['08P01', 'boom']);
});

test('SET: driver parameters ignored, settings need view.set, checks keys', async () => {
  assert.is((await run("SET DateStyle = 'ISO'")).notices[0]?.message, 'SET ignored');
  const unsupported = await run('SET default_pool_size = 40');
  assert.is(unsupported.error?.code, '0A000');
  assert.match(unsupported.error?.message ?? '', /not supported yet/);
  const seen: string[] = [];
  const view = fakeView({ set: (k, v) => void seen.push(`${k}=${v}`) });
  assert.is((await run('SET default_pool_size = 40', ADMIN, view)).tag, 'SET default_pool_size=40');
  assert.is((await run("set server_reset_query to 'DISCARD ALL';", ADMIN, view)).tag, 'SET server_reset_query=DISCARD ALL');
  assert.is((await run('SET listen_port = 7000', ADMIN, view)).error?.message, 'SET failed');
  assert.is((await run('SET no_such_thing = 1', ADMIN, view)).error?.message, 'SET failed');
  assert.equal(seen, ['default_pool_size=40', 'server_reset_query=DISCARD ALL']);
});

test.run();
