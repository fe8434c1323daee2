/**
 * `workers` > 1: this process forks the workers (node:cluster; they share the listening sockets,
 * and the kernel spreads new connections between them), routes cancel requests to the worker
 * that owns the key, fans admin operations out, maps signals onto the workers, serves the metrics
 * endpoint summed over them, and restarts a worker that dies. It holds no client itself.
 */
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import { ADMIN_OPERATIONS, type AdminOperation, type ArgsOf, type PrimaryOperation, type ResultOf, type ShutdownMode } from '../admin/operations.js';
import { log, reopenLogDestinations } from '../log.js';
import { isMessage, type OpResult, type ToPrimary, type ToWorker } from './messages.js';
import { workersFor } from './fan-out.js';
import { workerOfPid } from '../net/worker-identity.js';
import { consoleFigures, serveMetrics } from '../metrics/metrics.js';
import type { Config } from '../config/schema.js';

export interface PrimaryOptions {
  workers: number;
  /** Extra environment for the workers (the embedded server's address). */
  env: Record<string, string>;
  metricsListen: string;
  /** The config the workers started with (metrics_format, limits for the pgbouncer_exporter names). */
  config: Readonly<Config>;
  configFile: string;
  /**
   * SIGHUP or the console's RELOAD: reads the config file again and applies this process's own
   * part (its log output); null when the file cannot be used (the workers log why).
   */
  reloadConfig(): Readonly<Config> | null;
  /** Called once every worker has exited, before the process exits. */
  onStopped(): Promise<void>;
}

const SIGNAL_OF: Record<ShutdownMode, NodeJS.Signals> = {
  wait_for_clients: 'SIGTERM',
  wait_for_servers: 'SIGINT',
  immediate: 'SIGQUIT',
};
/** A worker dying this soon after its start is not restarted (a config or listen error). */
const EARLY_EXIT_MS = 5000;

export class Primary {
  private readonly workers: (Worker | null)[];
  private readonly startedAt: number[] = [];
  private stopping = false;
  /** The config as last loaded: the one the workers run with, after each reload. */
  private config: Readonly<Config>;
  private nextRun = 1;
  private readonly runs = new Map<number, { results: OpResult[]; pending: Set<number>; done: (results: OpResult[]) => void }>();

  constructor(private readonly opts: PrimaryOptions) {
    this.workers = Array.from({ length: opts.workers }, () => null);
    this.config = opts.config;
  }

  async start(): Promise<void> {
    // Every worker accepts on the shared socket itself: no hand-off through this process per
    // connection, which a connection storm would pay for.
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({ serialization: 'advanced' });
    for (let i = 0; i < this.opts.workers; i++) this.fork(i);
    process.on('SIGTERM', () => this.stop('wait_for_clients'));
    process.on('SIGINT', () => this.stop('wait_for_servers'));
    process.on('SIGQUIT', () => this.stop('immediate'));
    for (const signal of ['SIGHUP', 'SIGUSR1', 'SIGUSR2'] as const) process.on(signal, () => this.signalAll(signal));
    // This process writes log lines too: its logfile is rotated with the workers', and it takes
    // the reloaded log settings as they do.
    process.on('SIGHUP', () => {
      reopenLogDestinations();
      this.reloadOwn();
    });
    if (this.opts.metricsListen) await this.serveMetrics();
    log.info({ workers: this.opts.workers }, 'workers started');
  }

  private fork(index: number): void {
    const worker = cluster.fork({ ...this.opts.env, TESSERA_WORKER_INDEX: String(index), TESSERA_WORKERS: String(this.opts.workers) });
    this.workers[index] = worker;
    this.startedAt[index] = Date.now();
    worker.on('message', (m: unknown) => {
      if (isMessage(m)) this.onMessage(index, m as ToPrimary);
    });
    worker.on('exit', (code, signal) => this.onExit(index, worker, code, signal));
  }

  private onExit(index: number, worker: Worker, code: number | null, signal: string | null): void {
    if (this.workers[index] !== worker) return;
    this.workers[index] = null;
    // A run still waiting for this worker gets its absence as a result.
    for (const [id, run] of this.runs) if (run.pending.has(index)) this.settle(id, index, { ok: false, error: { message: `worker ${index} exited`, code: '08006', pg: true } });
    if (this.stopping) {
      if (this.workers.every((w) => w === null)) void this.finish(0);
      return;
    }
    if (Date.now() - this.startedAt[index] < EARLY_EXIT_MS) {
      log.fatal({ worker: index, code, signal }, 'a worker failed to start; stopping');
      this.stopping = true;
      this.signalAll('SIGQUIT');
      if (this.workers.every((w) => w === null)) void this.finish(code || 1);
      return;
    }
    log.error({ worker: index, code, signal }, 'worker died; starting a new one');
    this.fork(index);
  }

  /** The config file again, for this process's own settings (log output, metrics_format). */
  private reloadOwn(): void {
    this.config = this.opts.reloadConfig() ?? this.config;
  }

  private async finish(code: number): Promise<void> {
    await this.opts.onStopped();
    log.info('stopped');
    process.exit(code);
  }

  /** SIGTERM / SIGINT / SIGQUIT or the console's SHUTDOWN: every worker shuts down in that mode. */
  stop(mode: ShutdownMode): void {
    log.info({ mode }, 'shutting down the workers');
    this.stopping = true;
    this.signalAll(SIGNAL_OF[mode]);
    if (this.workers.every((w) => w === null)) void this.finish(0);
  }

  private signalAll(signal: NodeJS.Signals): void {
    for (const w of this.workers) if (w && !w.isDead()) w.process.kill(signal);
  }

  private send(index: number, m: ToWorker): void {
    const w = this.workers[index];
    if (w && w.isConnected()) w.send(m);
  }

  private onMessage(from: number, m: ToPrimary): void {
    switch (m.kind) {
      case 'cancel':
        return this.send(workerOfPid(m.pid, this.opts.workers), { kind: 'cancel', pid: m.pid, secret: m.secret });
      case 'admin':
        void this.runOperation(m.op, m.args).then((results) => this.send(from, { kind: 'done', id: m.id, results }));
        return;
      case 'result':
        return this.settle(m.id, from, m.result);
    }
  }

  /** An admin operation from a worker's console, run where admin/operations.ts says. */
  private async runOperation(op: AdminOperation, args: unknown[]): Promise<OpResult[]> {
    const targets = workersFor(op, args, this.opts.workers);
    if (targets !== 'primary') {
      const results = await this.runOn(targets, op, args);
      if (op === 'reload') this.reloadOwn();
      return results;
    }
    this.onPrimary[op as PrimaryOperation](...(args as ArgsOf<PrimaryOperation>));
    return [{ ok: true }];
  }

  /** The operations the primary runs itself (one entry for each, or this does not compile). */
  private readonly onPrimary: { [K in PrimaryOperation]: (...args: ArgsOf<K>) => void } = {
    shutdown: (mode) => this.stop(mode),
  };

  /** Runs an operation on the given workers; resolves with their results, in worker order. */
  runOn(targets: number[], op: AdminOperation, args: unknown[] = []): Promise<OpResult[]> {
    const id = this.nextRun++;
    const live = targets.filter((i) => this.workers[i]?.isConnected());
    return new Promise((done) => {
      if (live.length === 0) return done([]);
      this.runs.set(id, { results: [], pending: new Set(live), done });
      for (const i of live) this.send(i, { kind: 'run', id, op, args });
    });
  }

  private settle(id: number, from: number, result: OpResult): void {
    const run = this.runs.get(id);
    if (!run || !run.pending.delete(from)) return;
    run.results[from] = result;
    if (run.pending.size === 0) {
      this.runs.delete(id);
      run.done(run.results.filter(Boolean));
    }
  }

  /** The metrics endpoint, summed over the workers (process_* through prom-client's cluster aggregation). */
  private async serveMetrics(): Promise<void> {
    const aggregator = new AggregatorRegistry();
    const all = () => this.workers.map((_, i) => i);
    // The answers of the workers that gave one (a worker restarting gives none), folded as the table says.
    const answers = async <K extends 'metrics' | 'readiness' | 'snapshot'>(op: K): Promise<ResultOf<K>[]> =>
      (await this.runOn(all(), op)).filter((r) => r.ok).map((r) => r.value as ResultOf<K>);
    await serveMetrics(this.opts.metricsListen, {
      snapshot: async () => ADMIN_OPERATIONS.metrics.combine(await answers('metrics')),
      console: async () => consoleFigures(ADMIN_OPERATIONS.snapshot.combine(await answers('snapshot')), this.config),
      readiness: async () => {
        const ready = await answers('readiness');
        // A worker that did not answer (restarting, or gone) is not ready to take its share.
        const missing = this.opts.workers - ready.length;
        for (let i = 0; i < missing; i++) ready.push({ ready: false, listening: false, shutting_down: this.stopping, databases: [] });
        return ADMIN_OPERATIONS.readiness.combine(ready);
      },
      processMetrics: () => aggregator.clusterMetrics(),
      format: () => this.config.metrics_format,
      configFile: this.opts.configFile,
      workers: this.opts.workers,
    });
  }
}
