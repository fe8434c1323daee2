// Attacks resisted: guessing cancel keys, cancelling someone else's query, brute-forcing session
// tokens and ids, timing of wrong tokens (as a property of the SQL), secrets leaking into logs,
// SHOW output, metrics or error messages, and a session-token pool role that bypasses RLS.
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, until, capturedLogs, sendCancel, type RunningTessera } from '../support/tessera.js';
import { demoDatabase } from '../support/sql.js';
import { APP, SessionDb } from '../support/session-db.js';
import { startMetrics } from '../../src/metrics/metrics.js';
import { authentToken } from '../../src/client/index.js';

const DB = 'tessera_attack_test';

/** A new session of alice's, created by the application role directly on PostgreSQL. */
async function aliceSession(): Promise<{ id: string; token: string }> {
  const db = new SessionDb(cluster, DB);
  try {
    return await db.createSession(await db.app(), 'alice');
  } finally {
    await db.closeAll();
  }
}
let cluster: Cluster;

test.before(async () => {
  cluster = await sharedCluster();
  await demoDatabase(cluster, DB);
});

type Keyed = pg.Client & { processID: number; secretKey: number };

test('cancel keys are random per client, never the backend\'s, and cancel only the query their own client is running', async () => {
  const t = await startTessera({ pool_mode: 'transaction', default_pool_size: 1, databases: { '*': clusterEntry(cluster) } });
  try {
    const clients = (await Promise.all(Array.from({ length: 100 }, () => connect(t.conn(ROLES.trust.user))))) as Keyed[];
    const pids = new Set(clients.map((c) => c.processID));
    const secrets = new Set(clients.map((c) => c.secretKey));
    assert.is(pids.size, 100, 'distinct pids');
    assert.is(secrets.size, 100, 'distinct secrets');
    // Not sequential, not PostgreSQL's own backend pid.
    const sorted = [...pids].sort((a, b) => a - b);
    assert.ok(sorted.some((p, i) => i > 0 && p - sorted[i - 1] > 1000), 'pids are spread out');
    const backendPid = (await clients[0].query('select pg_backend_pid() as pid')).rows[0].pid;
    assert.not.ok(pids.has(backendPid));

    // One backend, shared: B runs a query on it while A (who used it before) sits idle.
    const [a, b] = clients;
    await a.query('select 1');
    const running = b.query('select pg_sleep(1.5) as slept');
    await until('B to run', async () => (await cluster.query(`select 1 from pg_stat_activity where query like '%slept%' and state = 'active' and pid <> pg_backend_pid()`)).rowCount === 1);
    await sendCancel(t.port, a.processID, a.secretKey); // A's own key: A runs nothing, so nothing is cancelled
    await sendCancel(t.port, b.processID, b.secretKey ^ 1); // B's pid with a wrong secret
    await sendCancel(t.port, b.processID + 1, b.secretKey); // a neighbouring pid
    assert.is((await running).rows.length, 1, 'B\'s query ran to completion');
    // B's own key does cancel B's query.
    const again = rejection(b.query('select pg_sleep(30) as slept_again'));
    await until('B to run again', async () => (await cluster.query(`select 1 from pg_stat_activity where query like '%slept_again%' and state = 'active' and pid <> pg_backend_pid()`)).rowCount === 1);
    await sendCancel(t.port, b.processID, b.secretKey);
    assert.is((await again).code, '57014');
    await Promise.all(clients.map((c) => c.end()));
  } finally {
    await t.stop();
  }
});

test('guessing session ids or authent_tokens from one address trips the failure limit; the right token is then refused too', async () => {
  const t = await startTessera({
    session_tokens: { max_failures: 5, ban_seconds: 60 },
    databases: { app: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: APP.user, password: APP.password }) },
  });
  try {
    const { id, token } = await aliceSession();
    const login = (password: string) => connect({ host: '127.0.0.1', port: t.port, database: 'app', user: 'web', password });
    (await login(`${id}:1:alice-password`)).end();
    // Guesses: unknown session ids, malformed ones, wrong tokens for a real session.
    const guesses = [`${Number(id) + 1}:2:${authentToken(token, 2)}`, `${Number(id) + 7}:2:x`, `abc:2:x`, `${id}:3:${authentToken('guess', 3)}`, `${id}:4:${authentToken(token, 4).slice(0, -2)}AA`, `${id}:5:`];
    for (const g of guesses) {
      const err = await rejection(login(g));
      assert.ok(['28P01', '28000'].includes(err.code!), `${g}: ${err.code} ${err.message}`);
    }
    const banned = await rejection(login(`${id}:6:${authentToken(token, 6)}`));
    assert.is(banned.code, '28000');
    assert.match(banned.message, 'too many failed session logins');
  } finally {
    await t.stop();
  }
});

test('a wrong token is compared as a hash of the whole: how much of it was right cannot show in the timing', async () => {
  // The property, read from the function PostgreSQL runs: both sides are hashed before comparing,
  // so the comparison's time does not depend on a common prefix. (A timing measurement would
  // belong in bench/, never in a test's assertion.) check_proof is what open_connection and
  // end_session call.
  const { rows } = await cluster.query(`select pg_get_functiondef('tessera.check_proof(bigint, integer, text, inet)'::regprocedure) as def`, [], DB);
  const def = rows[0].def as string;
  assert.match(def, /digest\(coalesce\(authent_token, ''\), 'sha256'\) = tessera\.digest\(_expected, 'sha256'\)/);
  assert.match(def, /digest\(_computed, 'sha256'\) = tessera\.digest\(_hash, 'sha256'\)/);
  // No other comparison of the token or the hashes in the clear.
  assert.not.match(def, /authent_token\s*=|=\s*authent_token|_expected\s*=[^=]|_computed\s*=\s*_hash/);
});

test('a session-token database whose pool role is superuser or BYPASSRLS gets a start-up warning naming it', async () => {
  await cluster.query(`drop role if exists tessera_su; create role tessera_su login superuser password 'su-secret-pw'`);
  await cluster.query(`drop role if exists tessera_bypass; create role tessera_bypass login bypassrls password 'bypass-secret-pw'`);
  const from = capturedLogs.length;
  const t = await startTessera({
    databases: {
      su_db: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: 'tessera_su', password: 'su-secret-pw' }),
      bypass_db: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: 'tessera_bypass', password: 'bypass-secret-pw' }),
      fine_db: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: APP.user, password: APP.password }),
    },
  });
  try {
    const warnings = () => capturedLogs.slice(from).filter((l) => l.includes('superuser or BYPASSRLS')).map((l) => JSON.parse(l));
    await until('both warnings', async () => warnings().length >= 2);
    await new Promise((r) => setTimeout(r, 300)); // the fine one has had its chance to (wrongly) warn
    const w = warnings();
    assert.equal(w.map((l) => `${l.db}/${l.role}/${l.superuser}/${l.bypassrls}`).sort(), ['bypass_db/tessera_bypass/false/true', 'su_db/tessera_su/true/false']);
    assert.is(w[0].level, 40);
    const text = capturedLogs.slice(from).join('\n');
    assert.not.ok(text.includes('su-secret-pw') || text.includes('bypass-secret-pw'), 'no password in the log');
    // And again on reload.
    const before = warnings().length;
    await t.proxy.reload();
    await until('the warnings again after reload', async () => warnings().length >= before + 2);
  } finally {
    await t.stop();
    await cluster.query(`drop role if exists tessera_su; drop role if exists tessera_bypass`);
  }
});

/**
 * Secrets that must never appear anywhere. Per-session tickets (being added separately) go here:
 * push each ticket a test run creates, and the grep below covers it.
 */
const EXTRA_SECRETS: string[] = [];

test('no secret appears in any log line, SHOW output, metric or error message after every auth path', async () => {
  const secrets: string[] = [...EXTRA_SECRETS];
  const errors: string[] = [];
  const add = (...s: string[]) => secrets.push(...s.filter((x) => x.length >= 6));
  const { rows: authid } = await cluster.query(`select rolname, rolpassword from pg_authid where rolname in ($1, $2, $3)`, [ROLES.scram.user, ROLES.md5.user, ROLES.plain.user]);
  for (const r of authid) {
    add(r.rolpassword);
    // SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>: each key is a secret on its own.
    for (const part of String(r.rolpassword).split(/[$:]/).slice(2)) add(part);
  }
  add(ROLES.scram.password, ROLES.md5.password, ROLES.plain.password, APP.password, cluster.superPassword, 'alice-password');
  add(`md5${createHash('md5').update(ROLES.md5.password + ROLES.md5.user).digest('hex')}`);

  const from = capturedLogs.length;
  const userlist = [
    `"${ROLES.plain.user}" "${ROLES.plain.password}"`,
    `"${ROLES.md5.user}" "md5${createHash('md5').update(ROLES.md5.password + ROLES.md5.user).digest('hex')}"`,
    `"${ROLES.scram.user}" "${authid.find((r) => r.rolname === ROLES.scram.user)!.rolpassword}"`,
    `"postgres" "${cluster.superPassword}"`,
    `"admin" "admin-console-pw"`,
  ].join('\n');
  add('admin-console-pw');
  const started: RunningTessera[] = [];
  const http: { close(): void }[] = [];
  const texts: string[] = [];
  try {
    const db = clusterEntry(cluster);
    const tok = clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', user: APP.user, password: APP.password });
    for (const auth_type of ['trust', 'plain', 'md5', 'scram-sha-256']) {
      const t = await startTessera({ auth_type, admin_users: 'admin', auth_user: 'postgres', log_level: 'debug', databases: { [TEST_DB]: db, app: tok } }, userlist);
      started.push(t);
      const server = await startMetrics('127.0.0.1:0', t.proxy);
      http.push(server);
      const conn = (user: string, password?: string, database = TEST_DB) => connect({ host: '127.0.0.1', port: t.port, user, password, database });
      // Every user: from auth_file (plain, md5, SCRAM secret) and, for trust_user, via auth_query.
      for (const role of [ROLES.plain, ROLES.md5, ROLES.scram]) {
        const c = await conn(role.user, role.password).catch((e) => (errors.push(e.message), null));
        await c?.query('select 1');
        await c?.end();
        if (auth_type !== 'trust') errors.push((await rejection(conn(role.user, `${role.password}-wrong`))).message);
      }
      const viaLookup = await conn(ROLES.trust.user, 'whatever').catch((e) => (errors.push(e.message), null));
      await viaLookup?.end();
      // Session tokens: the password form and the options form, right and wrong.
      const { id, token } = await aliceSession();
      add(token);
      for (let n = 1; n <= 5; n++) add(authentToken(token, n));
      (await conn('web', `${id}:1:alice-password`, 'app')).end();
      const byOptions = await connect({ host: '127.0.0.1', port: t.port, user: 'web', database: 'app', options: `-c tessera.session_id=${id} -c tessera.nonce=2 -c tessera.authent_token=${authentToken(token, 2)}` });
      await byOptions.query('select 1');
      errors.push((await rejection(conn('web', `${id}:3:${authentToken(token, 3).slice(0, -3)}xyz`, 'app'))).message);
      errors.push((await rejection(conn('web', `${id}:4:${authentToken(token, 4)}`.replace(/^\d+/, '999999'), 'app'))).message);
      // Everything an operator can look at.
      const admin = await conn('admin', 'admin-console-pw', 'pgbouncer');
      for (const what of ['POOLS', 'CLIENTS', 'SERVERS', 'DATABASES', 'USERS', 'STATS', 'CONFIG', 'LISTS', 'VERSION', 'FDS', 'SOCKETS', 'ACTIVE_SOCKETS', 'MEM', 'DNS_HOSTS', 'STATE', 'TOTALS', 'STATS_TOTALS', 'STATS_AVERAGES']) {
        const r = await admin.query({ text: `SHOW ${what}`, rowMode: 'array' }).catch((e: Error) => ({ rows: [[e.message]] }));
        texts.push(JSON.stringify(r.rows));
      }
      await admin.end();
      await byOptions.end();
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      texts.push(await (await fetch(`${base}/metrics`)).text(), await (await fetch(`${base}/`)).text());
    }
  } finally {
    for (const h of http) h.close();
    for (const t of started) await t.stop();
  }
  const everything = [...capturedLogs.slice(from), ...texts, ...errors].join('\n');
  assert.ok(capturedLogs.length - from > 50 && texts.length > 50 && errors.length > 10, 'the run produced output to search');
  for (const secret of new Set(secrets)) assert.not.ok(everything.includes(secret), `a secret appears in the output: ${secret.slice(0, 3)}…`);
});

test.run();
