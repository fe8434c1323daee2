// `npm run bench:floor`: how much of the gap to PgBouncer is Node.js itself, in four tables.
//
// Throughput: pgbench -S (16 clients, session mode) against PgBouncer, Tessera and
// bench/floor/relay.mjs in relay mode, a relay with no protocol work at all, in turn (A B C A B C),
// with each one's tps and CPU time per transaction (user + system, from /proc). The relay's figure
// is what any pooler built on Node's net.Socket pays per transaction before doing anything a
// pooler does.
//
// Connection storm: pgbench -S -C (transaction mode) against PgBouncer, Tessera and relay.mjs in
// pool mode, the least a Node.js transaction pooler does per connection (fixed login reply, a
// query to a free PostgreSQL connection, the answer back).
//
// Prepared statements: pgbench -S -M extended and node-postgres's parameterised select (unnamed
// statements) through PgBouncer and through Tessera with auto_prepare, beside two ceilings that
// send named statements (PostgreSQL parses and plans once per connection): relay.mjs in relay mode
// (a Node.js pooler that only copies bytes) and PostgreSQL direct (a pooler that costs nothing).
//
// Memory: RSS per idle client (bench/lib/memory.ts, 10,000 clients) of PgBouncer, Tessera and
// relay.mjs in idle mode, a Node.js server that answers every login with fixed bytes and holds the
// socket: what an idle client costs a Node.js process at least.
//
// The Node.js baselines run with Tessera's own Node flags (src/node-flags.ts).
//
//   node --import tsx bench/floor.ts [--duration S] [--rounds N] [--memory-clients N]
//                                    [--only select,connect,prepared,memory] [--tessera-cpu-prof DIR]
//
// --only runs some of the four parts (e.g. `--only connect` to work on the login path);
// --tessera-cpu-prof runs Tessera with node --cpu-prof, its profile written to DIR at its exit.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PG_BIN, startCluster, type Cluster } from '../test/support/cluster.js';
import { measureIdleClients } from './lib/memory.js';
import { NODE_FLAGS } from '../src/node-flags.js';
import { cleanupNow, cpuPerUnit, freePort, installCleanup, progress, start, stop, waitForPort, type Started } from './lib/proc.js';
import { BENCH_USER, DB_SESSION, DB_TX, DB_TX_AUTO, pgbouncerBinary, prepareTessera, startPgBouncer, startTessera, type Pooler } from './lib/poolers.js';
import { initPgbench, runPgbench } from './lib/pgbench.js';
import { runDriverLoad } from './lib/driver-load.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));

function option(argv: string[], name: string, fallback: number): number {
  const i = argv.indexOf(name);
  const v = i >= 0 ? Number(argv[i + 1]) : fallback;
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} expects an integer >= 1`);
  return v;
}

/** One row of a table: what is measured (pgbench or node-postgres) and through what. */
interface Target {
  label: string;
  /** The pooler's process, whose CPU is counted; undefined for PostgreSQL direct. */
  pid: number | undefined;
  run: (seconds: number) => Promise<{ perSecond: number | null; units: number; error: string | null }>;
  rate: number[];
  cpuUs: number[];
}

/** bench/floor/relay.mjs in one of its modes, with Tessera's Node flags. */
async function startBaseline(mode: 'relay' | 'pool' | 'idle', args: string[]): Promise<{ pid: number | undefined; port: number; stop: () => Promise<void> }> {
  const port = await freePort();
  const p: Started = start(process.execPath, [...NODE_FLAGS, path.join(HERE, 'floor/relay.mjs'), mode, String(port), ...args]);
  await waitForPort(port, p, `relay.mjs ${mode}`);
  return { pid: p.child.pid, port, stop: () => stop(p, 'SIGTERM') };
}

const PARTS = ['select', 'connect', 'prepared', 'memory'] as const;
type Part = (typeof PARTS)[number];

function parts(argv: string[]): Set<Part> {
  const i = argv.indexOf('--only');
  if (i < 0) return new Set(PARTS);
  const wanted = (argv[i + 1] ?? '').split(',').filter(Boolean);
  const unknown = wanted.filter((w) => !(PARTS as readonly string[]).includes(w));
  if (wanted.length === 0 || unknown.length > 0) throw new Error(`--only expects some of ${PARTS.join(',')}`);
  return new Set(wanted as Part[]);
}

function textOption(argv: string[], name: string): string | null {
  const i = argv.indexOf(name);
  if (i < 0) return null;
  const v = argv[i + 1];
  if (!v || v.startsWith('--')) throw new Error(`${name} needs a value`);
  return v;
}

async function main(argv: string[]): Promise<void> {
  const duration = option(argv, '--duration', 10);
  const rounds = option(argv, '--rounds', 2);
  const memoryClients = option(argv, '--memory-clients', 10_000);
  const only = parts(argv);
  const cpuProf = textOption(argv, '--tessera-cpu-prof');
  if (!PG_BIN) throw new Error('pgbench not found (/usr/lib/postgresql/*/bin or PATH)');
  const pgbouncerBin = pgbouncerBinary();
  if (!pgbouncerBin) throw new Error('no pgbouncer on PATH (apt-get install pgbouncer): the floor is measured against it');
  installCleanup();
  const pgbench = path.join(PG_BIN, 'pgbench');
  let cluster: Cluster | undefined;
  const stops: (() => Promise<void>)[] = [];
  try {
    const runner = await prepareTessera({ mayBuild: true });
    cluster = await startCluster({ extraConf: ['max_connections = 200'] });
    await cluster.query(`create database bench owner ${BENCH_USER}`);
    await initPgbench(pgbench, cluster.port, BENCH_USER, 'bench', 1);
    const backend = { port: cluster.port, benchDb: 'bench' };
    const settings = { poolSize: 20, maxClientConn: 1000 };
    const pgbouncer: Pooler = await startPgBouncer(pgbouncerBin, backend, settings);
    stops.push(() => pgbouncer.stop());
    const tessera: Pooler = await startTessera(backend, settings, runner, cpuProf === null ? null : path.resolve(cpuProf));
    stops.push(() => tessera.stop());
    const relay = await startBaseline('relay', [String(cluster.port)]);
    stops.push(relay.stop);
    const pool = await startBaseline('pool', [String(cluster.port), BENCH_USER, 'bench']);
    stops.push(pool.stop);

    const lines: string[] = [];
    const compare = async (title: string, unit: string, targets: Target[]): Promise<void> => {
      for (let round = 0; round <= rounds; round++) {
        for (const t of targets) {
          const { result: r, cpuUs } = await cpuPerUnit(t.pid, () => t.run(round === 0 ? 2 : duration), (x) => x.units);
          if (r.error || !r.perSecond || (t.pid !== undefined && cpuUs === undefined)) throw new Error(`${t.label}: ${r.error ?? 'no result'}`);
          if (round === 0) continue; // warm-up
          t.rate.push(r.perSecond);
          if (cpuUs !== undefined) t.cpuUs.push(cpuUs);
          progress(`${title} round ${round}/${rounds} ${t.label}: ${r.perSecond.toFixed(0)} ${unit}${cpuUs === undefined ? '' : `, ${cpuUs.toFixed(1)} µs CPU per ${unit === 'tps' ? 'transaction' : 'query'}`}`);
        }
      }
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      const base = targets[0];
      lines.push(`| ${title} | ${unit} | vs PgBouncer | pooler CPU per ${unit === 'tps' ? 'transaction' : 'query'} |`, '|---|---:|---:|---:|');
      for (const t of targets) {
        const cpu = t.cpuUs.length ? `${mean(t.cpuUs).toFixed(1)} µs` : '—';
        lines.push(`| ${t.label} | ${Math.round(mean(t.rate)).toLocaleString('en-US')} | ${(mean(t.rate) / mean(base.rate)).toFixed(2)}x | ${cpu} |`);
      }
      lines.push('');
    };
    const pgbenchTarget = (label: string, port: number, pid: number | undefined, db: string, flags: string[]): Target => ({
      label,
      pid,
      rate: [],
      cpuUs: [],
      run: async (seconds) => {
        const r = await runPgbench({ bin: pgbench, port, user: BENCH_USER, db, clients: 16, threads: 2, seconds, flags, p99: false });
        return { perSecond: r.tps, units: r.transactions ?? 0, error: r.error };
      },
    });
    const driverTarget = (label: string, port: number, pid: number | undefined, db: string, named: boolean): Target => ({
      label,
      pid,
      rate: [],
      cpuUs: [],
      run: async (seconds) => {
        const r = await runDriverLoad({ port, user: BENCH_USER, db, clients: 16, seconds, named });
        return { perSecond: r.failed ? null : r.queriesPerSecond, units: r.completed, error: r.firstError };
      },
    });
    if (only.has('select')) await compare('pgbench -S, 16 clients, session mode', 'tps', [
      pgbenchTarget('PgBouncer', pgbouncer.port, pgbouncer.pid, DB_SESSION, ['-S']),
      pgbenchTarget('Tessera', tessera.port, tessera.pid, DB_SESSION, ['-S']),
      pgbenchTarget('Node relay, no parsing', relay.port, relay.pid, 'bench', ['-S']),
    ]);
    if (only.has('connect')) await compare('pgbench -S -C, 16 clients, transaction mode', 'tps', [
      pgbenchTarget('PgBouncer', pgbouncer.port, pgbouncer.pid, DB_TX, ['-S', '-C']),
      pgbenchTarget('Tessera', tessera.port, tessera.pid, DB_TX, ['-S', '-C']),
      pgbenchTarget('Node pool, fixed login reply, no checks', pool.port, pool.pid, 'bench', ['-S', '-C']),
    ]);
    // What prepared statements can win at most. The clients send unnamed statements (PgBouncer
    // relays them; Tessera's auto_prepare prepares them); the ceilings send named ones, so
    // PostgreSQL parses and plans once per connection: through the Node relay (a Node.js pooler
    // that copies bytes and does nothing else) and direct (a pooler that costs nothing).
    if (only.has('prepared')) {
      await compare('pgbench -S -M extended, 16 clients, transaction mode', 'tps', [
        pgbenchTarget('PgBouncer', pgbouncer.port, pgbouncer.pid, DB_TX, ['-S', '-M', 'extended']),
        pgbenchTarget('Tessera, auto_prepare', tessera.port, tessera.pid, DB_TX_AUTO, ['-S', '-M', 'extended']),
        pgbenchTarget('ceiling: Node relay, -M prepared', relay.port, relay.pid, 'bench', ['-S', '-M', 'prepared']),
        pgbenchTarget('ceiling: PostgreSQL direct, -M prepared', cluster.port, undefined, 'bench', ['-S', '-M', 'prepared']),
      ]);
      await compare('node-postgres parameterised select, 16 clients, transaction mode', 'queries/s', [
        driverTarget('PgBouncer', pgbouncer.port, pgbouncer.pid, DB_TX, false),
        driverTarget('Tessera, auto_prepare', tessera.port, tessera.pid, DB_TX_AUTO, false),
        driverTarget('ceiling: Node relay, named statement', relay.port, relay.pid, 'bench', true),
        driverTarget('ceiling: PostgreSQL direct, named statement', cluster.port, undefined, 'bench', true),
      ]);
    }
    for (const s of stops.splice(0).reverse()) await s();

    // Memory: fresh processes, one at a time, as in the bench's memory scenario.
    const memSettings = { poolSize: 20, maxClientConn: memoryClients + 100 };
    const memoryTargets: { label: string; launch: () => Promise<{ pid: number | undefined; port: number; stop: () => Promise<void> }> }[] = [
      { label: 'PgBouncer', launch: () => startPgBouncer(pgbouncerBin, backend, memSettings) },
      { label: 'Tessera', launch: () => startTessera(backend, memSettings, runner) },
      { label: 'Node server, fixed login reply', launch: () => startBaseline('idle', []) },
    ];
    if (only.has('memory')) lines.push(`| ${memoryClients.toLocaleString('en-US')} idle clients | RSS per client |`, '|---|---:|');
    for (const m of only.has('memory') ? memoryTargets : []) {
      const p = await m.launch();
      stops.push(p.stop);
      const r = await measureIdleClients(p.pid, p.port, BENCH_USER, DB_TX, memoryClients);
      await p.stop();
      stops.pop();
      if (r.error || r.perClientKB === null) throw new Error(`${m.label}: ${r.error}`);
      progress(`memory ${m.label}: ${r.perClientKB.toFixed(2)} KB per idle client`);
      lines.push(`| ${m.label} | ${r.perClientKB.toFixed(2)} KB |`);
    }
    process.stdout.write(`\n${lines.join('\n')}\n\n${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · Node ${process.version} · ${rounds} x ${duration} s\n`);
  } finally {
    for (const s of stops.reverse()) await s().catch(() => {});
    await cluster?.stop().catch(() => {});
    cleanupNow();
  }
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err) => {
    progress(`floor: ${(err as Error).message}`);
    process.exit(1);
  },
);
