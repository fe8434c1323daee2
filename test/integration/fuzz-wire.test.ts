// A sample of the fuzz cases (test/unit/fuzz.test.ts runs the bulk in-process) sent over loopback
// to a real Tessera in front of a real PostgreSQL, so the cases that get past the login reach the
// relay, the pool and the server: every connection ends with a well-formed reply, no internal
// error, no backend left busy or inside a transaction, and a normal client is served afterwards.
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, capturedLogs, until, type RunningTessera } from '../support/tessera.js';
import { Rng, fuzzSeed, seeds, fuzzCase, chunks, readReply } from '../support/fuzz.js';

const SEED = fuzzSeed();
const CASES = Number(process.env.TESSERA_FUZZ_WIRE_CASES ?? 1500);
const PARALLEL = 25;
const user = ROLES.trust.user;
const APP = 'fuzz'; // seeds() log in with application_name=fuzz
/** A refused login, a malformed message, or PostgreSQL's own answer to a mangled query. */
const INTERNAL = 'XX000';

let cluster: Cluster;

test.before(async () => {
  cluster = await sharedCluster();
});

/** One case on its own socket: write the pieces, half-close, read until Tessera hangs up. */
function runCase(port: number, pieces: Buffer[]): Promise<{ reply: Buffer; hungUp: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    // A case that leaves a session idle and open (Tessera waits for more, as PostgreSQL would)
    // is ended by us after a moment; a hang guard, not a timing assertion.
    const guard = setTimeout(() => finish(false), 3000);
    let done = false;
    const finish = (hungUp: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(guard);
      s.destroy();
      resolve({ reply: Buffer.concat(got), hungUp });
    };
    s.on('data', (d) => got.push(d));
    s.on('error', () => {}); // a reset after Tessera's error is a clean close for our purposes
    s.on('close', () => finish(true));
    s.on('connect', async () => {
      for (const p of pieces) {
        if (s.destroyed) return;
        s.write(p);
        await new Promise((r) => setImmediate(r));
      }
      s.end();
    });
  });
}

for (const mode of ['session', 'transaction'] as const) {
  test(`${mode} mode: ${CASES} fuzzed connections over loopback get well-formed replies and leave no dirty backend (seed ${SEED})`, async () => {
    const t: RunningTessera = await startTessera({ pool_mode: mode, default_pool_size: 5, max_client_conn: 500, stats_users: user, cancel_wait_timeout: 1, databases: { '*': clusterEntry(cluster) } });
    const errorsBefore = capturedLogs.filter((l) => l.includes('"level":50')).length;
    try {
      const rng = new Rng(SEED ^ (mode === 'session' ? 1 : 2));
      const pool = [...seeds(user, TEST_DB), ...seeds(user, 'pgbouncer')];
      let next = 0;
      let errors = 0;
      const worker = async () => {
        while (next < CASES) {
          const i = next++;
          const { reply } = await runCase(t.port, chunks(rng, fuzzCase(rng, pool)));
          let parsed;
          try {
            parsed = readReply(reply);
          } catch (err) {
            assert.unreachable(`case ${i} (seed ${SEED}): malformed reply: ${(err as Error).message}`);
            return;
          }
          assert.not.ok(parsed!.codes.includes(INTERNAL), `case ${i} (seed ${SEED}): internal error`);
          errors += parsed!.codes.length;
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, worker));
      assert.ok(errors > CASES / 10, `${errors} error replies`);

      // Every client is gone and every backend is back to idle, outside any transaction.
      await until('every fuzz client to be gone', async () => t.proxy.clients.size === 0);
      await until('every backend to be idle', async () => {
        const { rows } = await cluster.query(`select state, xact_start from pg_stat_activity where usename = $1 and application_name = $2`, [user, APP]);
        return rows.every((r) => r.state === 'idle' && r.xact_start === null);
      });
      for (const pool of t.proxy.pools.values()) assert.ok(pool.servers.size <= 5, `${pool.name}: ${pool.servers.size} servers`);
      const c = await connect({ ...t.conn(user), application_name: APP });
      assert.equal((await c.query('select 1 as one, now() = statement_timestamp() as fresh')).rows[0], { one: 1, fresh: true });
      await c.end();
      const internal = capturedLogs.filter((l) => l.includes('"level":50')).slice(errorsBefore);
      assert.equal(internal, [], 'no unexpected error was logged');
    } finally {
      const servers = [...t.proxy.pools.values()].flatMap((p) => [...p.servers]);
      await t.stop();
      // Servers still being drained or reset at shutdown are closed too, not leaked.
      await until('every server connection to close', async () => servers.every((s) => s.socket.destroyed));
    }
  });
}


test.run();
