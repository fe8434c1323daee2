/**
 * A worker's end of the IPC channel: asks the primary to run an admin operation on every worker
 * (or on the one that owns a client), forwards cancel requests for keys of other workers, and runs
 * what the primary asks of this worker's own proxy.
 */
import { PgError } from '../protocol/messages.js';
import { AdminError, type AdminView } from '../admin/view.js';
import { isMessage, type AdminOp, type OpResult, type ToPrimary, type ToWorker } from './messages.js';
import type { WorkerSnapshot } from './merge.js';
import type { MetricsSnapshot } from '../metrics/snapshot.js';
import type { Readiness } from '../metrics/health.js';
import { log } from '../log.js';

/** What a worker's own proxy offers the primary. */
export interface LocalWorker {
  view: AdminView & { snapshot(): WorkerSnapshot };
  cancel(pid: number, secret: number): void;
  /** The metrics endpoint's figures (served by the primary, summed over the workers). */
  metrics?(): MetricsSnapshot;
  readiness?(): Promise<Readiness>;
}

export class WorkerLink {
  private nextId = 1;
  private readonly waiting = new Map<number, (results: OpResult[]) => void>();

  constructor(private readonly local: LocalWorker) {
    process.on('message', (m: unknown) => {
      if (isMessage(m)) this.onMessage(m as ToWorker);
    });
  }

  /** Runs `op` on every worker (killClient: on the client's worker) and returns their results. */
  request(op: AdminOp, args: unknown[] = []): Promise<OpResult[]> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.send({ kind: 'admin', id, op, args });
    });
  }

  /** A cancel request whose key belongs to another worker. */
  forwardCancel(pid: number, secret: number): void {
    this.send({ kind: 'cancel', pid, secret });
  }

  private send(m: ToPrimary): void {
    process.send?.(m);
  }

  private run(op: AdminOp, args: unknown[]): Promise<OpResult> {
    return op === 'metrics' || op === 'readiness' ? observe(this.local, op) : runLocal(this.local.view, op, args);
  }

  private onMessage(m: ToWorker): void {
    switch (m.kind) {
      case 'cancel':
        return this.local.cancel(m.pid, m.secret);
      case 'done': {
        const resolve = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        resolve?.(m.results);
        return;
      }
      case 'run':
        void this.run(m.op, m.args).then((result) => this.send({ kind: 'result', id: m.id, result }));
        return;
    }
  }
}

/** Not admin operations but figures for the primary's metrics endpoint. */
async function observe(local: LocalWorker, op: 'metrics' | 'readiness'): Promise<OpResult> {
  const value = op === 'metrics' ? local.metrics?.() : await local.readiness?.();
  return value === undefined ? { ok: false, error: { message: `worker does not report ${op}`, code: '0A000' } } : { ok: true, value };
}

/** One admin operation on this worker's own proxy, its outcome as data. */
export async function runLocal(view: LocalWorker['view'], op: Exclude<AdminOp, 'metrics' | 'readiness'>, args: unknown[]): Promise<OpResult> {
  try {
    const a = args as [never, never];
    let value: unknown;
    switch (op) {
      case 'snapshot':
        value = view.snapshot();
        break;
      case 'killClient':
        value = view.killClient(args[0] as number);
        break;
      case 'set':
        await view.set?.(a[0], a[1]);
        break;
      case 'shutdown':
        await view.shutdown(a[0]);
        break;
      case 'suspend':
        await view.suspend?.();
        break;
      default:
        await view[op](a[0]);
    }
    return { ok: true, value };
  } catch (err) {
    if (err instanceof PgError) return { ok: false, error: { message: err.message, code: err.code, detail: err.fields.detail } };
    log.error({ err, op }, 'admin operation failed in a worker');
    return { ok: false, error: { message: (err as Error).message, code: 'XX000' } };
  }
}

/** The first failure among the workers' results, thrown as the console reports errors. */
export function throwIfFailed(results: OpResult[]): void {
  const failed = results.find((r) => !r.ok);
  if (failed?.error) throw new AdminError(failed.error.message, failed.error.code, failed.error.detail);
}
