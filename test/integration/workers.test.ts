// `workers: 2`: two processes share the port, each with its own pools sized so the totals stay as
// configured; the admin console and the metrics endpoint sum both; a cancel request reaches the
// worker that owns the client whichever worker it lands on; SUSPEND spans both, and so does the
// resume when its admin leaves; RELOAD and SIGHUP reload the primary's own settings too; signals
// stop both.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { serialize } from 'pg-protocol';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { testUnless } from '../support/tools.js';
import { spawnTessera, clusterEntry, connect, rejection, until, freePort, sendCancel, settle, settledSoon, type TesseraProcess } from '../support/tessera.js';

let cluster: Cluster;
let t: TesseraProcess;
let metricsPort: number;
const user = ROLES.trust.user;
const APP = 'tessera-workers-test';
// The application name reaches the servers too (startup parameters are honoured), which tells
// this test's backends from any other test's in pg_stat_activity.
const conn = (database = TEST_DB): pg.ClientConfig => ({ host: '127.0.0.1', port: t.port, user, database, application_name: APP });

test.before(async () => {
  cluster = await sharedCluster();
  metricsPort = await freePort();
  t = await spawnTessera({
    workers: 2,
    pool_mode: 'transaction',
    default_pool_size: 4,
    admin_users: 'admin',
    metrics_listen: `127.0.0.1:${metricsPort}`,
    databases: { [TEST_DB]: clusterEntry(cluster) },
  });
  await until('both workers to listen', async () => (t.output().match(/"msg":"listening"/g) ?? []).length >= 2);
});

test.after(async () => {
  await t?.stop();
});

/** Connects until clients of both workers are open (ids are odd on worker 0, even on worker 1). */
async function clientsOnBothWorkers(admin: pg.Client): Promise<pg.Client[]> {
  const clients: pg.Client[] = [];
  for (let i = 0; i < 200; i++) {
    const c = await connect(conn());
    c.on('error', () => {});
    clients.push(c);
    if (clients.length < 4) continue;
    const ids = (await admin.query('SHOW CLIENTS')).rows.filter((r) => r.database === TEST_DB).map((r) => Number(r.id));
    if (ids.some((id) => id % 2 === 1) && ids.some((id) => id % 2 === 0)) return clients;
  }
  throw new Error('200 connections all landed on one worker');
}

test('SHOW sums both workers, and the pools together stay within default_pool_size', async () => {
  const admin = await connect({ ...conn('pgbouncer'), user: 'admin' });
  const clients = await clientsOnBothWorkers(admin);
  try {
    // Everyone at once: more clients than servers, so both workers fill their pools.
    await Promise.all(clients.map((c) => c.query('select pg_sleep(0.2)')));
    const pool = (await admin.query('SHOW POOLS')).rows.find((p) => p.database === TEST_DB && p.user === user);
    assert.is(Number(pool.cl_active) + Number(pool.cl_waiting), clients.length);
    const db = (await admin.query('SHOW DATABASES')).rows.find((d) => d.name === TEST_DB);
    assert.is(Number(db.current_client_connections), clients.length);
    assert.is(Number(db.pool_size), 4);
    assert.ok(Number(db.current_connections) <= 4, `servers across workers: ${db.current_connections}`);
    const servers = (await cluster.query(`select count(*)::int as n from pg_stat_activity where datname = $1 and application_name = $2`, [TEST_DB, APP])).rows[0].n;
    assert.ok(servers <= 4, `backends in PostgreSQL: ${servers}`);
    const stats = (await admin.query('SHOW STATS')).rows.find((r) => r.database === TEST_DB);
    assert.ok(Number(stats.total_xact_count) >= clients.length);
    // KILL_CLIENT finds a client on either worker.
    const ids = (await admin.query('SHOW CLIENTS')).rows.filter((r) => r.database === TEST_DB).map((r) => Number(r.id));
    for (const id of [ids.find((i) => i % 2 === 1)!, ids.find((i) => i % 2 === 0)!]) await admin.query(`KILL_CLIENT ${id}`);
    await until('two clients fewer', async () => Number((await admin.query('SHOW DATABASES')).rows.find((d) => d.name === TEST_DB).current_client_connections) === clients.length - 2);
    // SET applies on both workers.
    await admin.query('SET default_pool_size = 6');
    assert.is(Number((await admin.query('SHOW DATABASES')).rows.find((d) => d.name === TEST_DB).pool_size), 6);
    await admin.query('SET default_pool_size = 4');
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await admin.end();
  }
});


// Which worker accepts a new connection is the kernel's choice (every worker accepts on the shared
// socket), so a test that sends cancels on fresh connections and hopes some cross over fails
// whenever none happen to. Instead each cancel goes over a connection whose accepting worker is
// known: the worker process holding the accepted socket, found through /proc (Linux).

/** The worker processes, from their "listening" log lines. */
function workerPids(): number[] {
  const pids = new Set<number>();
  for (const line of t.output().split('\n')) {
    if (!line.includes('"msg":"listening"')) continue;
    pids.add((JSON.parse(line) as { pid: number }).pid);
  }
  return [...pids];
}

/** The socket inode of Tessera's side of the connection from our local port, once accepted. */
function serverSideInode(localPort: number): string | undefined {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(4, '0');
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const row of fs.readFileSync(file, 'utf8').split('\n').slice(1)) {
      const f = row.trim().split(/\s+/);
      if (f.length > 9 && f[1].endsWith(`:${hex(t.port)}`) && f[2].endsWith(`:${hex(localPort)}`)) return f[9];
    }
  }
  return undefined;
}

/** The worker process that accepted the connection from `localPort`. */
async function acceptedBy(localPort: number): Promise<number> {
  return until(`the worker holding the connection from port ${localPort}`, async () => {
    const inode = serverSideInode(localPort);
    if (!inode) return undefined;
    return workerPids().find((pid) =>
      fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
        try {
          return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`;
        } catch {
          return false; // closed meanwhile
        }
      }),
    );
  });
}

/** A connection to Tessera accepted by worker `pid` (or, with `other`, by any other worker), nothing sent yet. */
async function connectionOn(pid: number, other: boolean): Promise<net.Socket> {
  const spare: net.Socket[] = [];
  try {
    for (let i = 0; i < 200; i++) {
      const s = await new Promise<net.Socket>((resolve, reject) => {
        const sock = net.connect(t.port, '127.0.0.1', () => resolve(sock));
        sock.on('error', reject);
      });
      if ((await acceptedBy(s.localPort!)) === pid !== other) return s;
      spare.push(s);
    }
    throw new Error(`200 connections, none accepted by ${other ? 'a worker other than' : 'worker'} ${pid}`);
  } finally {
    for (const s of spare) s.destroy();
  }
}

const crossings = () => (t.output().match(/cancel request for another worker/g) ?? []).length;

testUnless(fs.existsSync('/proc/net/tcp') ? undefined : 'no /proc/net/tcp (Linux) to tell which worker accepted a connection')(
  'a cancel request reaches the worker that owns the client, whichever worker it lands on',
  async () => {
    const admin = await connect({ ...conn('pgbouncer'), user: 'admin' });
    const clients = await clientsOnBothWorkers(admin);
    try {
      const owners = await Promise.all(clients.map((c) => acceptedBy((c as unknown as { connection: { stream: net.Socket } }).connection.stream.localPort!)));
      // One client of each worker, each cancelled once through its own worker and once through the other.
      const picked = [...new Set(owners)].map((owner) => clients[owners.indexOf(owner)]);
      assert.is(picked.length, 2, `clients on workers ${owners.join(', ')}`);
      for (const c of picked) {
        const owner = owners[clients.indexOf(c)];
        for (const crossing of [false, true]) {
          const q = rejection(c.query('select pg_sleep(20)'));
          let settled = false;
          const settle = () => (settled = true);
          q.then(settle, settle); // q itself is awaited below (and fails the test if the query was not cancelled)
          await until('the query to run', async () => {
            if (settled) throw new Error(`the query ended before it was cancelled\n${t.output().split('\n').slice(-12).join('\n')}`);
            return (await cluster.query(`select 1 from pg_stat_activity where query = 'select pg_sleep(20)' and state = 'active' and application_name = $1`, [APP])).rowCount === 1;
          });
          const before = crossings();
          const s = await connectionOn(owner, crossing);
          const key = c as unknown as { processID: number; secretKey: number };
          await new Promise<void>((resolve) => {
            s.on('close', () => resolve());
            s.end(serialize.cancel(key.processID, key.secretKey));
          });
          assert.is((await q).code, '57014', crossing ? 'cancelled through the other worker' : 'cancelled through its own worker');
          // The receiving worker forwarded it exactly when it was not the owner.
          await until('the cancel to be logged', async () => crossings() === before + (crossing ? 1 : 0) || undefined);
          assert.is(crossings(), before + (crossing ? 1 : 0));
        }
      }
      // A wrong secret cancels nothing.
      const victim = clients[0] as unknown as { processID: number; secretKey: number } & pg.Client;
      const slow = victim.query('select pg_sleep(0.5) as slept');
      await sendCancel(t.port, victim.processID, victim.secretKey ^ 1);
      assert.equal((await slow).rows, [{ slept: '' }]);
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => {})));
      await admin.end();
    }
  },
);

test('the metrics endpoint sums the workers: /metrics, the dashboard\'s data, /readyz', async () => {
  const admin = await connect({ ...conn('pgbouncer'), user: 'admin' });
  const clients = await clientsOnBothWorkers(admin);
  const base = `http://127.0.0.1:${metricsPort}`;
  const sample = (text: string, name: string) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name}{database="${TEST_DB}",user="${user}"}`) || l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.split(' ').pop());
  };
  try {
    const before = sample(await (await fetch(`${base}/metrics`)).text(), 'tessera_transactions_total') ?? 0;
    for (const c of clients) for (let i = 0; i < 3; i++) await c.query('select 1');
    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.is(sample(metrics, 'tessera_workers'), 2);
    assert.ok(sample(metrics, 'tessera_transactions_total')! >= before + clients.length * 3);
    // Each worker's pool has its share; summed, the configured default_pool_size.
    assert.is(sample(metrics, 'tessera_pool_size'), 4);
    assert.ok(/^process_resident_memory_bytes \d/m.test(metrics));
    const dashboard = await until('the dashboard to see the pool', async () => {
      const d = (await (await fetch(`${base}/api/dashboard`)).json()) as { info: { workers: number }; pools: { rows: { database: string; user: string; pool_size: number; clients_active: number }[] } };
      return d.pools.rows.some((r) => r.database === TEST_DB && r.clients_active >= clients.length) && d;
    });
    assert.is(dashboard.info.workers, 2);
    assert.is(dashboard.pools.rows.find((r) => r.database === TEST_DB && r.user === user)!.pool_size, 4);
    const ready = await fetch(`${base}/readyz`);
    assert.is(ready.status, 200, await ready.clone().text());
    assert.is(((await ready.json()) as { ready: boolean }).ready, true);
    assert.is((await admin.query('SHOW SESSIONS')).rows.length, 0);
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await admin.end();
  }
});

test('one worker paused on its own (SIGUSR1 to it): SHOW STATE says paused and the console RESUME resumes it', async () => {
  const admin = await connect({ ...conn('pgbouncer'), user: 'admin' });
  const clients = await clientsOnBothWorkers(admin);
  try {
    // Each worker has this database's pool now; one of them pauses, the other does not.
    process.kill(workerPids()[0]!, 'SIGUSR1');
    const state = async () => Object.fromEntries((await admin.query('SHOW STATE')).rows.map((r) => [r.key, r.value]));
    await until('SHOW STATE to say paused', async () => (await state()).paused === 'yes');
    assert.equal(await state(), { active: 'no', paused: 'yes', suspended: 'no' });
    await admin.query('RESUME');
    assert.equal(await state(), { active: 'yes', paused: 'no', suspended: 'no' });
    // Clients of both workers get servers again.
    const ran = settle(Promise.all(clients.map((c) => c.query('select 1 as one'))));
    const outcome = await Promise.race([ran, new Promise<null>((r) => setTimeout(() => r(null), 20_000))]);
    assert.ok(outcome !== null, 'a query still waits 20 s after RESUME');
    assert.ok(outcome.ok, outcome.ok ? '' : outcome.e.message);
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await admin.end();
  }
});

test('SUSPEND reaches both workers; when the admin who suspended disconnects, both resume by themselves', async () => {
  const admin = () => connect({ ...conn('pgbouncer'), user: 'admin' });
  const finder = await admin();
  const clients = await clientsOnBothWorkers(finder);
  await finder.end();
  // The console connection lands on one worker; SUSPEND runs on every worker.
  const suspender = await admin();
  try {
    await suspender.query('SUSPEND');
    const answers = clients.map((c, i) => settle(c.query(`select ${i} as i`)));
    assert.not.ok(await settledSoon(Promise.race(answers)), 'a query ran under SUSPEND');
    await suspender.end();
    // Clients of both workers are served again (ids odd on worker 0, even on worker 1).
    let done: Awaited<(typeof answers)[number]>[] | undefined;
    void Promise.all(answers).then((r) => (done = r));
    const results = await until('the queries to run', async () => done, 15000);
    results.forEach((r, i) => assert.ok(r.ok && (r.v as pg.QueryResult).rows[0].i === i, r.ok ? `client ${i}` : r.e.message));
    await until('the log line', async () => t.output().includes('"msg":"admin disappeared when suspended, doing RESUME"'));
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await suspender.end().catch(() => {});
  }
});

test('RELOAD and SIGHUP reach the primary too: the merged metrics take the new metrics_format, its own lines the new logfile', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-workers-reload-'));
  const first = path.join(dir, 'first.log');
  const second = path.join(dir, 'second.log');
  const port = await freePort();
  const w = await spawnTessera({ workers: 2, admin_users: 'admin', metrics_listen: `127.0.0.1:${port}`, logfile: first, databases: { [TEST_DB]: clusterEntry(cluster) } });
  const edit = (change: Record<string, unknown>) => fs.writeFileSync(w.file, JSON.stringify({ ...JSON.parse(fs.readFileSync(w.file, 'utf8')), ...change }));
  const metrics = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const said = (file: string, msg: string) => fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes(`"msg":"${msg}"`);
  try {
    await until('both workers to listen', async () => (w.output().match(/"msg":"listening"/g) ?? []).length >= 2);
    assert.ok(/^tessera_workers 2/m.test(await metrics()));
    edit({ metrics_format: 'pgbouncer_exporter' });
    const admin = await connect({ host: '127.0.0.1', port: w.port, user: 'admin', database: 'pgbouncer' });
    await admin.query('RELOAD');
    await admin.end();
    const reloaded = await metrics();
    assert.ok(/^pgbouncer_up 1/m.test(reloaded), reloaded.slice(0, 300));
    assert.not.ok(/^tessera_workers /m.test(reloaded));

    edit({ logfile: second });
    w.child.kill('SIGHUP');
    // Each worker says "configuration reloaded" (before it re-points its log output): two for RELOAD, two now.
    await until('both workers to reload', async () => fs.readFileSync(first, 'utf8').match(/"msg":"configuration reloaded"/g)?.length === 4);
    w.child.kill('SIGTERM');
    assert.is(await w.exited, 0);
    // The primary's own lines, written after the reload, went where the workers' go.
    assert.ok(said(second, 'shutting down the workers') && said(second, 'stopped'), fs.readFileSync(second, 'utf8'));
    assert.ok(said(first, 'workers started'));
    assert.not.ok(said(first, 'shutting down the workers'));
  } finally {
    await w.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGTERM stops both workers and the process exits 0', async () => {
  t.child.kill('SIGTERM');
  assert.is(await t.exited, 0);
  assert.not.ok(/"level":50|"level":60/.test(t.output()), t.output());
});

test.run();
