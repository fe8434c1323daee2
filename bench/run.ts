// `npm run bench`: PostgreSQL directly, through Tessera and through PgBouncer, side by side in one
// run. Each scenario measures every target in turn (A B C A B C ...) for the given number of rounds
// so machine drift hits all of them alike; a target's figure is the mean of its rounds.
//
// It starts its own throwaway PostgreSQL, Tessera (dist/, built when stale, or src/ through tsx) and
// PgBouncer when a `pgbouncer` binary is on PATH, all on 127.0.0.1, and stops them and removes its
// temp folders when it ends, fails, runs out of time or gets Ctrl-C.
//
//   node --import tsx bench/run.ts [--quick] [--only id,id] [--skip id,id] [--no-pgbouncer] ...
//   node --import tsx bench/run.ts --help
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PG_BIN, startCluster, type Cluster } from '../test/support/cluster.js';
import { abort, cleanupNow, cpuPerUnit, installCleanup, isAborted, progress, removeDir, runToEnd, tempDir } from './lib/proc.js';
import {
  BENCH_USER,
  DB_TX,
  ROOT,
  TOKEN_POOL_ROLE,
  pgbouncerBinary,
  pgbouncerVersion,
  prepareTessera,
  startPgBouncer,
  startTessera,
  type Backend,
  type Pooler,
  type PoolerSettings,
  type TesseraRunner,
} from './lib/poolers.js';
import { initPgbench, runPgbench } from './lib/pgbench.js';
import { measureIdleClients } from './lib/memory.js';
import { runDriverLoad } from './lib/driver-load.js';
import { defaultSizes, scenarios, unitOf, type Scenario, type TlsScenario } from './lib/scenarios.js';
import { writeDevCerts } from '../src/tls/cert-command.js';
import {
  TARGET_LABEL,
  detailTable,
  markdownTable,
  plainTable,
  ratio,
  summarize,
  svgChart,
  type Sample,
  type ScenarioReport,
  type TargetName,
} from './lib/report.js';
import { createSessions, runStorm, setupTokenDb, type TokenSession } from './token-storm.js';

const BENCH_DB = 'bench';

const USAGE = `Usage: node --import tsx bench/run.ts [options]     (npm run bench -- [options])

  --quick                  tiny durations and sizes, one round (checks that the scripts run)
  --only ID,ID             run only these scenarios (see --list)
  --skip ID,ID             leave these scenarios out
  --list                   list the scenarios and exit
  --no-pgbouncer           leave PgBouncer out even when it is installed
  --duration S             seconds per measurement (default 10; --quick 1)
  --rounds N               rounds of A B C (default 2; --quick 1)
  --warmup S               unrecorded run per target before round 1 (default 2; --quick 0)
  --pool-size N            server connections per pool, both poolers (default 20)
  --workers N              Tessera's workers setting (default 1; the memory scenario needs 1)
  --threads N              pgbench -j (default: number of CPUs, at most 4)
  --token-concurrency N    concurrent loops in the session-token storm (default 16; --quick 4)
  --token-direct-auth M    how direct token-storm connections log in: scram (default, as the
                           cluster's pg_hba.conf asks) or trust
  --memory-clients N       idle clients in the memory scenario (default 10000; --quick 100)
  --no-p99                 skip pgbench --log (p99 latency)
  --tessera dist|tsx       how to run Tessera (default: dist, built first if older than src)
  --tessera-cpu-prof DIR   run Tessera with node --cpu-prof, profiles written to DIR at its exit
  --server-socket          Tessera and PgBouncer reach PostgreSQL over its Unix socket instead
                           of TCP on 127.0.0.1 (clients still connect to every target over TCP)
  --out DIR                where latest.json/.svg/.md go (default bench/results; --quick: nowhere)
  --no-write               write no result files
  --help                   this text
`;

interface Options {
  quick: boolean;
  only: string[] | null;
  skip: string[];
  list: boolean;
  pgbouncer: boolean;
  duration: number;
  rounds: number;
  warmup: number;
  poolSize: number;
  workers: number;
  threads: number;
  tokenConcurrency: number;
  tokenDirectAuth: 'scram' | 'trust';
  memoryClients: number;
  p99: boolean;
  tessera: TesseraRunner | undefined;
  tesseraCpuProf: string | null;
  /** The poolers log in to PostgreSQL over its Unix socket. */
  serverSocket: boolean;
  out: string | null;
}

class UsageError extends Error {}

/** A sample from a load loop of our own (node-postgres clients, the token storm). */
function loopSample(r: { completed: number; failed: number; latencyAvgMs: number | null; latencyP99Ms: number | null; firstError: string | null }, rate: number, unit: string): Sample {
  return {
    round: 0,
    value: r.completed > 0 ? rate : null,
    latencyAvgMs: r.latencyAvgMs,
    latencyP99Ms: r.latencyP99Ms,
    failed: r.failed,
    error: r.completed === 0 ? `no ${unit} completed: ${r.firstError}` : r.failed > 0 ? r.firstError : null,
  };
}

function parseArgs(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const sizes = defaultSizes(quick);
  const o: Options = {
    quick,
    only: null,
    skip: [],
    list: false,
    pgbouncer: true,
    duration: quick ? 1 : 10,
    rounds: quick ? 1 : 2,
    warmup: quick ? 0 : 2,
    poolSize: sizes.poolSize,
    workers: 1,
    threads: Math.max(1, Math.min(4, os.cpus().length)),
    tokenConcurrency: sizes.tokenConcurrency,
    tokenDirectAuth: 'scram',
    memoryClients: sizes.memoryClients,
    p99: true,
    tessera: undefined,
    tesseraCpuProf: null,
    serverSocket: false,
    out: quick ? null : path.join(ROOT, 'bench/results'),
  };
  const value = (i: number, name: string): string => {
    const v = argv[i];
    if (v === undefined || v.startsWith('--')) throw new UsageError(`${name} needs a value`);
    return v;
  };
  const int = (i: number, name: string, min: number): number => {
    const v = Number(value(i, name));
    if (!Number.isInteger(v) || v < min) throw new UsageError(`${name} expects an integer >= ${min}`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--quick':
        break;
      case '--only':
      case '--scenarios':
        o.only = value(++i, a).split(',').map((s) => s.trim()).filter(Boolean);
        break;
      case '--skip':
        o.skip.push(...value(++i, a).split(',').map((s) => s.trim()).filter(Boolean));
        break;
      case '--list':
        o.list = true;
        break;
      case '--no-pgbouncer':
        o.pgbouncer = false;
        break;
      case '--duration':
        o.duration = int(++i, a, 1);
        break;
      case '--rounds':
        o.rounds = int(++i, a, 1);
        break;
      case '--warmup':
        o.warmup = int(++i, a, 0);
        break;
      case '--pool-size':
        o.poolSize = int(++i, a, 1);
        break;
      case '--workers':
        o.workers = int(++i, a, 1);
        break;
      case '--threads':
        o.threads = int(++i, a, 1);
        break;
      case '--token-concurrency':
        o.tokenConcurrency = int(++i, a, 1);
        break;
      case '--token-direct-auth': {
        const v = value(++i, a);
        if (v !== 'scram' && v !== 'trust') throw new UsageError(`${a} expects scram or trust`);
        o.tokenDirectAuth = v;
        break;
      }
      case '--memory-clients':
        o.memoryClients = int(++i, a, 1);
        break;
      case '--no-p99':
        o.p99 = false;
        break;
      case '--tessera': {
        const v = value(++i, a);
        if (v !== 'dist' && v !== 'tsx') throw new UsageError(`${a} expects dist or tsx`);
        o.tessera = v;
        break;
      }
      case '--tessera-cpu-prof':
        o.tesseraCpuProf = path.resolve(value(++i, a));
        break;
      case '--server-socket':
        o.serverSocket = true;
        break;
      case '--out':
        o.out = path.resolve(value(++i, a));
        break;
      case '--no-write':
        o.out = null;
        break;
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        process.exit(0);
        break;
      default:
        throw new UsageError(`unknown argument "${a}"`);
    }
  }
  return o;
}

function select(all: Scenario[], o: Options): Scenario[] {
  const ids = new Set(all.map((s) => s.id));
  for (const id of [...(o.only ?? []), ...o.skip]) {
    if (!ids.has(id)) throw new UsageError(`unknown scenario "${id}" (known: ${[...ids].join(', ')})`);
  }
  return all.filter((s) => (o.only === null || o.only.includes(s.id)) && !o.skip.includes(s.id));
}

function fmt(v: number | null | undefined, digits = 2): string {
  return typeof v === 'number' ? v.toFixed(digits) : '?';
}

export async function main(argv: string[]): Promise<void> {
  let o: Options;
  try {
    o = parseArgs(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`bench: ${err.message}\n\n${USAGE}`);
      process.exit(2);
    }
    throw err;
  }
  const all = scenarios({ quick: o.quick, tokenConcurrency: o.tokenConcurrency, memoryClients: o.memoryClients, poolSize: o.poolSize });
  if (o.list) {
    for (const s of all) process.stdout.write(`${s.id.padEnd(16)} ${s.title}\n`);
    return;
  }
  let selected: Scenario[];
  try {
    selected = select(all, o);
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    process.exit(2);
  }
  if (o.workers > 1 && selected.some((s) => s.kind === 'memory')) {
    // RSS is read from one pid; with workers the clients live in other processes.
    progress('bench: --workers > 1: leaving out the memory scenario');
    selected = selected.filter((s) => s.kind !== 'memory');
  }
  if (selected.length === 0) {
    process.stderr.write('bench: no scenarios selected\n');
    process.exit(2);
  }
  installCleanup();
  const startedAt = Date.now();

  if (!PG_BIN) {
    process.stderr.write('bench: psql and pgbench not found (/usr/lib/postgresql/*/bin or PATH); install PostgreSQL client tools\n');
    process.exit(2);
  }
  const pgbench = path.join(PG_BIN, 'pgbench');
  const psql = path.join(PG_BIN, 'psql');
  const pgbouncerBin = o.pgbouncer ? pgbouncerBinary() : undefined;
  const targets: TargetName[] = ['direct', 'tessera', ...(pgbouncerBin ? (['pgbouncer'] as const) : [])];
  if (o.pgbouncer && !pgbouncerBin) progress('bench: no pgbouncer on PATH; the PgBouncer column stays empty (apt-get install pgbouncer)');

  // Plan, and a hard time limit so that nothing can run away.
  const timed = selected.filter((s) => s.kind !== 'memory' && s.kind !== 'tls');
  const tlsScenarios = selected.filter((s): s is TlsScenario => s.kind === 'tls');
  const measurements =
    timed.length * targets.length * o.rounds + (selected.some((s) => s.kind === 'memory') ? (targets.length - 1) * o.rounds : 0) + tlsScenarios.length * 2 * o.rounds;
  const estimate =
    timed.length * targets.length * (o.rounds * (o.duration + 2) + (o.warmup > 0 ? o.warmup + 1 : 0)) +
    (targets.length - 1) * o.rounds * 15 +
    tlsScenarios.length * 2 * (o.rounds * (o.duration + 2) + (o.warmup > 0 ? o.warmup + 1 : 0)) +
    60;
  const budgetS = estimate * 2 + 300;
  progress(
    `bench: ${selected.map((s) => s.id).join(', ')} · targets ${targets.map((t) => TARGET_LABEL[t]).join(', ')} · ` +
      `${o.rounds} round(s) of ${o.duration} s · ${measurements} measurements · about ${Math.ceil(estimate / 60)} min (stops itself after ${Math.ceil(budgetS / 60)} min)`,
  );
  const budget = setTimeout(() => abort(`time budget of ${budgetS} s exceeded`, 3), budgetS * 1000);
  budget.unref();

  let cluster: Cluster | undefined;
  const poolers: Pooler[] = [];
  let exitCode = 0;
  try {
    const runner = await prepareTessera({ mayBuild: !o.quick, force: o.tessera });
    progress(`bench: Tessera runs from ${runner === 'dist' ? 'dist/src/cli.js' : 'src/cli.ts through tsx'}${o.serverSocket ? '; the poolers reach PostgreSQL over its Unix socket' : ''}`);

    progress('bench: starting PostgreSQL');
    // 500 direct clients, plus the poolers' servers, plus slack for the token storm.
    cluster = await startCluster({ extraConf: ['max_connections = 700'] });
    const pgVersion = String((await cluster.query('show server_version')).rows[0].server_version);
    await cluster.query(`create database ${BENCH_DB} owner ${BENCH_USER}`);
    progress('bench: pgbench -i -s 1');
    await initPgbench(pgbench, cluster.port, BENCH_USER, BENCH_DB, 1);

    // The cluster listens on a Unix socket in its data folder too (test/support/cluster.ts).
    const backend: Backend = { port: cluster.port, benchDb: BENCH_DB, socketDir: o.serverSocket ? cluster.dataDir : undefined };
    let sessions: TokenSession[] = [];
    const token = selected.find((s) => s.kind === 'token');
    if (token && token.kind === 'token') {
      progress('bench: installing sql/tessera.sql and sql/demo.sql, creating sessions');
      backend.tokenDb = await setupTokenDb(psql, cluster);
      if (o.tokenDirectAuth === 'trust') {
        const hba = path.join(cluster.dataDir, 'pg_hba.conf');
        fs.writeFileSync(hba, `host all ${TOKEN_POOL_ROLE.user} 127.0.0.1/32 trust\n` + fs.readFileSync(hba, 'utf8'));
        await cluster.query('select pg_reload_conf()');
      }
      sessions = await createSessions(cluster, token.concurrency);
    }

    const settings: PoolerSettings = { poolSize: o.poolSize, maxClientConn: 1000, workers: o.workers };
    progress('bench: starting Tessera' + (pgbouncerBin ? ' and PgBouncer' : ''));
    const tessera = await startTessera(backend, settings, runner, o.tesseraCpuProf);
    poolers.push(tessera);
    let pgbouncer: Pooler | undefined;
    let pgbouncerVer: string | null = null;
    if (pgbouncerBin) {
      pgbouncerVer = await pgbouncerVersion(pgbouncerBin);
      pgbouncer = await startPgBouncer(pgbouncerBin, backend, settings);
      poolers.push(pgbouncer);
    }
    const portOf = (t: TargetName): number => (t === 'direct' ? cluster!.port : t === 'tessera' ? tessera.port : pgbouncer!.port);

    const samples = new Map<string, Map<TargetName, Sample[]>>();
    const record = (id: string, t: TargetName, s: Sample) => {
      let m = samples.get(id);
      if (!m) samples.set(id, (m = new Map()));
      let list = m.get(t);
      if (!list) m.set(t, (list = []));
      list.push(s);
    };
    let done = 0;
    const line = (s: Scenario, round: number, t: TargetName, x: Sample, unit: string) => {
      done++;
      const head = `[${done}/${measurements}] ${s.id} round ${round}/${o.rounds} ${TARGET_LABEL[t]}:`;
      const parts = [`${head} ${x.value === null ? 'no value' : `${x.value.toFixed(unit === 'KB' ? 2 : 0)} ${unit}`}`];
      if (x.latencyAvgMs != null) parts.push(`lat ${fmt(x.latencyAvgMs)} ms`);
      if (x.latencyP99Ms != null) parts.push(`p99 ${fmt(x.latencyP99Ms)} ms`);
      if (x.failed != null) parts.push(`failed ${x.failed}`);
      if (typeof x.extra?.clientCpuPercent === 'number') parts.push(`client CPU ${x.extra.clientCpuPercent}%`);
      if (typeof x.extra?.poolerCpuUsPerTx === 'number') parts.push(`pooler CPU ${x.extra.poolerCpuUsPerTx} µs each`);
      if (x.error) parts.push(`ERROR ${x.error.slice(0, 400)}`);
      progress(parts.join(' · '));
    };

    const poolerPid = (t: TargetName): number | undefined => (t === 'tessera' ? tessera.pid : t === 'pgbouncer' ? pgbouncer?.pid : undefined);
    // The pooler's CPU time per transaction (or connection): on a machine whose cores PostgreSQL
    // and the load generator also need, this is what a pooler's throughput comes down to.
    const measure = async (s: Scenario, t: TargetName, seconds: number, p99: boolean): Promise<Sample> => {
      const { result: x, cpuUs } = await cpuPerUnit(poolerPid(t), () => measureOnce(s, t, seconds, p99), (r) => Number(r.extra?.transactions ?? r.extra?.completed));
      if (cpuUs !== undefined) x.extra = { ...x.extra, poolerCpuUsPerTx: Math.round(cpuUs * 10) / 10 };
      return x;
    };
    const measureOnce = async (s: Scenario, t: TargetName, seconds: number, p99: boolean): Promise<Sample> => {
      if (s.kind === 'pgbench') {
        const r = await runPgbench({
          bin: pgbench,
          port: portOf(t),
          user: BENCH_USER,
          db: t === 'direct' ? BENCH_DB : s.poolerDb,
          clients: s.clients,
          threads: o.threads,
          seconds,
          flags: s.flags,
          p99,
        });
        return {
          round: 0,
          value: r.tps,
          latencyAvgMs: r.latencyAvgMs,
          latencyP99Ms: r.latencyP99Ms,
          failed: r.failed,
          error: r.error,
          extra: { transactions: r.transactions, connectMs: r.connectMs },
        };
      }
      if (s.kind === 'driver') {
        const r = await runDriverLoad({ port: portOf(t), user: BENCH_USER, db: t === 'direct' ? BENCH_DB : s.poolerDb, clients: s.clients, seconds });
        return { ...loopSample(r, r.queriesPerSecond, 'query'), extra: { transactions: r.completed } };
      }
      if (s.kind === 'token') {
        const r = await runStorm(t, portOf(t), sessions, seconds);
        return { ...loopSample(r, r.connectionsPerSecond, 'connection'), seconds: r.seconds, extra: { completed: r.completed, clientCpuPercent: Math.round(r.clientCpuPercent) } };
      }
      throw new Error('memory is measured separately');
    };

    for (const s of timed) {
      if (isAborted()) break;
      const unit = unitOf(s);
      if (o.warmup > 0) {
        for (const t of targets) {
          const w = await measure(s, t, o.warmup, false);
          if (w.error) progress(`bench: warm-up ${s.id} ${TARGET_LABEL[t]}: ${w.error.slice(0, 300)}`);
        }
      }
      for (let round = 1; round <= o.rounds; round++) {
        for (const t of targets) {
          const x = { ...(await measure(s, t, o.duration, o.p99)), round };
          record(s.id, t, x);
          line(s, round, t, x, unit);
        }
      }
    }

    // Memory: fresh pooler processes, so "empty" is a just-started, warmed process.
    const mem = selected.find((s) => s.kind === 'memory');
    if (mem && mem.kind === 'memory' && !isAborted()) {
      const memSettings: PoolerSettings = { poolSize: o.poolSize, maxClientConn: mem.clients + 100 };
      for (let round = 1; round <= o.rounds; round++) {
        for (const t of targets) {
          if (t === 'direct') continue;
          const p = t === 'tessera' ? await startTessera(backend, memSettings, runner) : await startPgBouncer(pgbouncerBin!, backend, memSettings);
          poolers.push(p);
          const r = await measureIdleClients(p.pid, p.port, BENCH_USER, DB_TX, mem.clients);
          await p.stop();
          poolers.splice(poolers.indexOf(p), 1);
          const x: Sample = { round, value: r.perClientKB, error: r.error, extra: { emptyKB: r.emptyKB, withClientsKB: r.withClientsKB, clients: r.clients } };
          record(mem.id, t, x);
          line(mem, round, t, x, 'KB');
        }
      }
    }

    // TLS cost: one Tessera with client TLS on, each pgbench run in plaintext or over TLS in turn
    // (A B A B), so the ratio compares the same process on the same machine moment.
    const tlsResults: { id: string; title: string; plaintext: Sample[]; tls: Sample[]; ratio: number | null }[] = [];
    if (tlsScenarios.length > 0 && !isAborted()) {
      const certDir = tempDir('tessera-bench-tls-');
      const certs = writeDevCerts(certDir);
      const tlsTessera = await startTessera(backend, settings, runner, null, { keyFile: certs.serverKey, certFile: certs.serverCert });
      poolers.push(tlsTessera);
      const sslRun = async (s: TlsScenario, sslmode: 'disable' | 'require', seconds: number, p99: boolean): Promise<Sample> => {
        const r = await runPgbench({ bin: pgbench, port: tlsTessera.port, user: BENCH_USER, db: s.poolerDb, clients: s.clients, threads: o.threads, seconds, flags: s.flags, p99, env: { PGSSLMODE: sslmode } });
        return { round: 0, value: r.tps, latencyAvgMs: r.latencyAvgMs, latencyP99Ms: r.latencyP99Ms, failed: r.failed, error: r.error, extra: { transactions: r.transactions, connectMs: r.connectMs } };
      };
      for (const s of tlsScenarios) {
        if (isAborted()) break;
        if (o.warmup > 0) for (const mode of ['disable', 'require'] as const) await sslRun(s, mode, o.warmup, false);
        const result = { id: s.id, title: s.title, plaintext: [] as Sample[], tls: [] as Sample[], ratio: null as number | null };
        for (let round = 1; round <= o.rounds; round++) {
          for (const mode of ['disable', 'require'] as const) {
            const x = { ...(await sslRun(s, mode, o.duration, o.p99)), round };
            (mode === 'disable' ? result.plaintext : result.tls).push(x);
            done++;
            progress(`[${done}/${measurements}] ${s.id} round ${round}/${o.rounds} Tessera ${mode === 'disable' ? 'plaintext' : 'TLS'}: ${x.value === null ? 'no value' : `${x.value.toFixed(0)} tps`}${x.error ? ` · ERROR ${x.error.slice(0, 400)}` : ''}`);
          }
        }
        const plain = summarize(result.plaintext).value;
        const secure = summarize(result.tls).value;
        result.ratio = ratio(secure, plain);
        tlsResults.push(result);
      }
      await tlsTessera.stop();
      poolers.splice(poolers.indexOf(tlsTessera), 1);
      removeDir(certDir);
    }

    const logLines = { tessera: tessera.logLines(), pgbouncer: pgbouncer?.logLines() ?? null };
    for (const p of poolers.splice(0)) await p.stop();
    await cluster.stop();
    cluster = undefined;

    // ---- report ----
    const reports: ScenarioReport[] = selected.filter((s) => s.kind !== 'tls').map((s) => {
      const m = samples.get(s.id) ?? new Map<TargetName, Sample[]>();
      const tg: ScenarioReport['targets'] = {};
      for (const [t, list] of m) tg[t] = summarize(list);
      const notes: ScenarioReport['notes'] = {};
      if (s.kind === 'memory') notes.direct = 'n/a';
      if (!pgbouncerBin) notes.pgbouncer = '—';
      return {
        id: s.id,
        title: s.title,
        unit: unitOf(s),
        higherIsBetter: s.kind !== 'memory',
        notes,
        targets: tg,
        tesseraVsPgbouncer: ratio(tg.tessera?.value, tg.pgbouncer?.value),
        tesseraVsDirect: ratio(tg.tessera?.value, tg.direct?.value),
      };
    });
    const elapsedS = (Date.now() - startedAt) / 1000;
    const machine = `${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim() ?? 'unknown'}), ${Math.round(os.totalmem() / 2 ** 30)} GB`;
    const subtitle = `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · ${machine} · PostgreSQL ${pgVersion} · ${pgbouncerVer ?? 'no PgBouncer'} · Node ${process.version} · ${o.rounds} x ${o.duration} s${o.workers > 1 ? ` · Tessera workers = ${o.workers}` : ''}${o.serverSocket ? ' · poolers to PostgreSQL over its Unix socket' : ''}`;
    const md = markdownTable(reports);

    progress(`\n${detailTable(reports)}`);
    if (logLines.tessera > 0 || (logLines.pgbouncer ?? 0) > 0) {
      progress(`bench: log lines during the run (warnings and worse): Tessera ${logLines.tessera}, PgBouncer ${logLines.pgbouncer ?? '-'}`);
    }
    if (reports.length > 0) process.stdout.write(`\n${plainTable(reports)}\n\n${md}\n\n${subtitle}\n`);
    else process.stdout.write(`\n${subtitle}\n`);
    for (const r of tlsResults) {
      const plain = summarize(r.plaintext).value;
      const secure = summarize(r.tls).value;
      process.stdout.write(`${r.title}: plaintext ${fmt(plain, 0)} tps, TLS ${fmt(secure, 0)} tps, TLS/plaintext ${fmt(r.ratio)}\n`);
    }
    progress(`bench: finished in ${elapsedS.toFixed(0)} s`);

    if (o.out) {
      fs.mkdirSync(o.out, { recursive: true });
      let commit: string | null = null;
      const git = await runToEnd('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, timeoutMs: 10_000 }).catch(() => null);
      if (git && git.code === 0) commit = git.stdout.trim();
      const json = {
        generated: new Date().toISOString(),
        elapsedSeconds: Math.round(elapsedS),
        machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model.trim() ?? null, memoryGB: Math.round(os.totalmem() / 2 ** 30), platform: `${os.platform()} ${os.release()}` },
        versions: { node: process.version, postgresql: pgVersion, pgbouncer: pgbouncerVer, tessera: commit, tesseraRunner: runner },
        options: { ...o, out: undefined },
        method:
          'Each scenario measures direct, Tessera and PgBouncer in turn (A B C A B C), one round after another; ' +
          'a figure is the mean of its rounds. Both poolers: same databases and pool modes, pool size, trust client logins, ' +
          'server logins over TCP to 127.0.0.1, warnings-only logging. "!" marks a figure from a run with errors or failed transactions.',
        logLines,
        table: { header: ['scenario', 'direct', 'Tessera', 'PgBouncer', 'Tessera/PgBouncer', 'Tessera/direct'], markdown: md },
        scenarios: reports,
        tls: tlsResults.map((r) => ({ id: r.id, title: r.title, plaintext: summarize(r.plaintext), tls: summarize(r.tls), tlsVsPlaintext: r.ratio })),
      };
      const write = (name: string, text: string) => {
        const file = path.join(o.out!, name);
        fs.writeFileSync(`${file}.tmp`, text);
        fs.renameSync(`${file}.tmp`, file);
      };
      write('latest.json', JSON.stringify(json, null, 2) + '\n');
      write('latest.svg', svgChart(reports, subtitle));
      write('latest.md', `${md}\n\n${subtitle}\n`);
      progress(`bench: wrote ${path.relative(process.cwd(), path.join(o.out, 'latest.json'))}, latest.svg, latest.md`);
    }
    const missing = [
      ...tlsResults.flatMap((r) => (r.plaintext.concat(r.tls).some((x) => x.value === null) ? [`${r.id}`] : [])),
    ].concat(reports.flatMap((r) => Object.entries(r.targets).filter(([, s]) => s!.samples.some((x) => x.value === null)).map(([t]) => `${r.id}/${t}`)));
    if (missing.length) {
      progress(`bench: measurements without a value: ${missing.join(', ')}`);
      exitCode = 1;
    }
  } catch (err) {
    if (!isAborted()) progress(`bench: failed: ${(err as Error).stack ?? err}`);
    exitCode = 1;
  } finally {
    clearTimeout(budget);
    for (const p of poolers) await p.stop().catch(() => {});
    await cluster?.stop().catch(() => {});
    cleanupNow();
  }
  // Leftover sockets (a pg client still closing) must not keep the run alive.
  process.exit(exitCode);
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main(process.argv.slice(2));
}
