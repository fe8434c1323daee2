// Who each transaction served: alice and bob share one backend in transaction mode (pool_size 1),
// and SHOW SESSIONS, the tessera_accessor_* series and audit_log count exactly their transactions,
// queries and errors, by the accessor row-level security sees, never the pool role.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, until, type RunningTessera } from '../support/tessera.js';
import { demoDatabase } from '../support/sql.js';
import { SessionDb, APP } from '../support/session-db.js';
import { startMetrics } from '../../src/metrics/metrics.js';
import type { AuditLine } from '../../src/metrics/audit-log.js';
import type { SessionCredentials } from '../../src/client/index.js';

const DB = 'tessera_accessor_test';
/** A user with database credentials of their own (a dedicated session: connect_query = tessera.hello()). */
const CAROL = { user: 'tessera_acc_carol', password: 'carol-db-password' };
let cluster: Cluster;
let sessions: SessionDb;
let t: RunningTessera;

test.before(async () => {
  cluster = await sharedCluster();
  await demoDatabase(cluster, DB);
  sessions = new SessionDb(cluster, DB);
  await cluster.query(`drop role if exists ${CAROL.user}`);
  await cluster.query(`create role ${CAROL.user} login password '${CAROL.password}' in role tessera_user`);
  await sessions.su(`grant usage on schema demo to ${CAROL.user}; grant select on demo.notes to ${CAROL.user}`);
  await sessions.su(`select tessera.create_accessor($1, 'accessor-password')`, [CAROL.user]);
  t = await startTessera({
    pool_mode: 'transaction',
    admin_users: 'admin',
    metrics_per_accessor: true,
    audit_log: 'audit.jsonl',
    session_tokens: { max_failures: 1000 },
    databases: {
      app: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: APP.user, password: APP.password, pool_size: 1 }),
      reports: clusterEntry(cluster, { dbname: DB, connect_query: 'select tessera.hello()', pool_mode: 'session' }),
    },
  }, `"${CAROL.user}" "${CAROL.password}"\n`);
});

test.after(async () => {
  await sessions.closeAll();
  await t?.stop();
});

const through = (creds: SessionCredentials) => connect({ host: '127.0.0.1', port: t.port, database: 'app', user: 'web', password: creds.asPassword() });
const auditFile = () => path.join(t.dir, 'audit.jsonl');
const auditLines = (): AuditLine[] =>
  fs.existsSync(auditFile()) ? fs.readFileSync(auditFile(), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditLine) : [];

test('alice and bob through one backend: SHOW SESSIONS, per-accessor series and the audit log count exactly their transactions', async () => {
  const app = await sessions.app();
  const alice = await sessions.login(app, 'alice');
  const bob = await sessions.login(app, 'bob');
  const a = await through(alice.creds);
  const b = await through(bob.creds);
  // Interleaved, so the one backend is re-bound (a ticket redeemed) before most transactions.
  for (let i = 0; i < 3; i++) {
    assert.equal((await a.query('select owner from demo.notes group by owner')).rows, [{ owner: 'alice' }]);
    assert.equal((await b.query('select owner from demo.notes group by owner')).rows, [{ owner: 'bob' }]);
  }
  // alice: one transaction of three queries, and one that fails.
  await a.query('begin');
  await a.query('select count(*) from demo.notes');
  await a.query('commit');
  assert.is((await rejection(a.query('select 1/0'))).code, '22012');
  // node-postgres rejects at the ErrorResponse; once the next answer is in, so was its ReadyForQuery.
  await a.query('select 1');
  // alice 6 transactions (3 + 1 + 1 + 1), 8 queries, 1 error; bob 3, 3, 0.

  const admin = await connect({ host: '127.0.0.1', port: t.port, database: 'pgbouncer', user: 'admin' });
  const rows = (await admin.query('SHOW SESSIONS')).rows as Record<string, string>[];
  const row = (id: string) => rows.find((r) => r.session_id === String(id));
  assert.equal(
    { ...row(alice.s.id), last_active: undefined },
    { session_id: String(alice.s.id), accessor: 'alice', database: 'app', clients: 1, transactions: '6', queries: '8', errors: '1', last_active: undefined, addr: '127.0.0.1' },
  );
  assert.equal(
    { ...row(bob.s.id), last_active: undefined },
    { session_id: String(bob.s.id), accessor: 'bob', database: 'app', clients: 1, transactions: '3', queries: '3', errors: '0', last_active: undefined, addr: '127.0.0.1' },
  );
  assert.match(row(alice.s.id)!.last_active, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
  const fields = (await admin.query('SHOW SESSIONS')).fields.map((f) => f.name);
  assert.equal(fields, ['session_id', 'accessor', 'database', 'clients', 'transactions', 'queries', 'errors', 'last_active', 'addr']);

  const http = await startMetrics('127.0.0.1:0', t.proxy);
  try {
    const metrics = await (await fetch(`http://127.0.0.1:${(http.address() as AddressInfo).port}/metrics`)).text();
    const series = (name: string, who: string) => Number(metrics.match(new RegExp(`^${name}\\{accessor="${who}"\\} (\\d+)$`, 'm'))?.[1]);
    assert.equal([series('tessera_accessor_transactions_total', 'alice'), series('tessera_accessor_queries_total', 'alice'), series('tessera_accessor_errors_total', 'alice')], [6, 8, 1]);
    assert.equal([series('tessera_accessor_transactions_total', 'bob'), series('tessera_accessor_queries_total', 'bob'), series('tessera_accessor_errors_total', 'bob')], [3, 3, 0]);
    // Never the pool role, never a session's secret.
    assert.not.match(metrics, `accessor="${APP.user}"`);
    for (const token of sessions.tokens) assert.not.match(metrics, token);
  } finally {
    http.close();
  }

  const lines = await until('the audit log to have 9 lines', async () => auditLines().length >= 9 && auditLines());
  assert.is(lines.length, 9);
  const of = (who: string) => lines.filter((l) => l.accessor === who);
  assert.is(of('alice').length, 6);
  assert.is(of('bob').length, 3);
  assert.equal(of('alice').map((l) => l.status), ['ok', 'ok', 'ok', 'ok', 'error', 'ok']);
  assert.equal(of('bob').map((l) => l.status), ['ok', 'ok', 'ok']);
  for (const l of lines) {
    assert.equal(Object.keys(l).sort(), ['accessor', 'client_id', 'database', 'duration_ms', 'session_id', 'status', 'time']);
    assert.is(l.database, 'app');
    assert.is(l.session_id, String(l.accessor === 'alice' ? alice.s.id : bob.s.id));
    assert.ok(l.duration_ms >= 0);
    assert.ok(!Number.isNaN(Date.parse(l.time)));
  }
  assert.is(new Set(of('alice').map((l) => l.client_id)).size, 1);
  assert.is.not(of('alice')[0].client_id, of('bob')[0].client_id);
  // No query text by default.
  const text = fs.readFileSync(auditFile(), 'utf8');
  for (const sql of ['demo.notes', 'select', '1/0', 'begin']) assert.not.match(text.toLowerCase(), sql);

  await Promise.all([a.end(), b.end(), admin.end()]);
});

test('audit_log_queries adds the statements of each transaction; SHOW SESSIONS keeps a session its clients left', async () => {
  const before = auditLines().length;
  t.proxy.set('audit_log_queries', '1');
  try {
    const app = await sessions.app();
    const alice = await sessions.login(app, 'alice');
    const a = await through(alice.creds);
    await a.query('select 42 as answer');
    await a.query('select $1::int as n', [7]);
    await a.end();
    const lines = await until('two more audit lines', async () => auditLines().length >= before + 2 && auditLines().slice(before));
    assert.equal(lines.map((l) => [l.accessor, l.statements]), [['alice', ['select 42 as answer']], ['alice', ['select $1::int as n']]]);
    const admin = await connect({ host: '127.0.0.1', port: t.port, database: 'pgbouncer', user: 'admin' });
    const row = (await admin.query('SHOW SESSIONS')).rows.find((r) => r.session_id === String(alice.s.id));
    assert.equal([row.accessor, row.clients, row.transactions], ['alice', 0, '2']);
    await admin.end();
  } finally {
    t.proxy.set('audit_log_queries', '0');
  }
});

test('connect_query logins: the accessor is the login role, one SHOW SESSIONS row per database and accessor', async () => {
  const before = auditLines().length;
  const c1 = await connect({ host: '127.0.0.1', port: t.port, database: 'reports', user: CAROL.user });
  const c2 = await connect({ host: '127.0.0.1', port: t.port, database: 'reports', user: CAROL.user });
  for (const c of [c1, c2]) {
    assert.equal((await c.query('select tessera.current_accessor() as who')).rows, [{ who: CAROL.user }]);
    await c.query('select 1');
  }
  const admin = await connect({ host: '127.0.0.1', port: t.port, database: 'pgbouncer', user: 'admin' });
  const row = (await admin.query('SHOW SESSIONS')).rows.find((r) => r.database === 'reports');
  assert.equal([row.session_id, row.accessor, row.clients, row.transactions, row.queries, row.errors], [null, CAROL.user, 2, '4', '4', '0']);
  await admin.end();
  const lines = await until('four more audit lines', async () => auditLines().length >= before + 4 && auditLines().slice(before));
  assert.equal(lines.map((l) => [l.accessor, l.session_id, l.database, l.status]), Array(4).fill([CAROL.user, null, 'reports', 'ok']));
  await Promise.all([c1.end(), c2.end()]);
});

test.run();
