/**
 * A worker's end of the IPC channel: asks the primary to run an admin operation where
 * admin/operations.ts says (every worker, or the one that owns a client), forwards cancel
 * requests for keys of other workers, and runs what the primary asks of this worker's own view.
 */
import type { AdminOperation, OperationMethods } from '../admin/operations.js';
import { isMessage, type OpResult, type ToPrimary, type ToWorker } from './messages.js';
import { runOnThisWorker, type OperationRunner } from './fan-out.js';

/** What a worker's own pooler offers the primary. */
export interface LocalWorker {
  /** Every admin operation, none optional: the primary may ask any of them. */
  view: OperationMethods;
  cancel(pid: number, secret: number): void;
}

export class WorkerLink implements OperationRunner {
  private nextId = 1;
  private readonly waiting = new Map<number, (results: OpResult[]) => void>();

  constructor(private readonly local: LocalWorker) {
    process.on('message', (m: unknown) => {
      if (isMessage(m)) this.onMessage(m as ToWorker);
    });
  }

  /** Runs `op` where the table says (through the primary) and returns each worker's result. */
  request(op: AdminOperation, args: unknown[] = []): Promise<OpResult[]> {
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
        void runOnThisWorker(this.local.view, m.op, m.args).then((result) => this.send({ kind: 'result', id: m.id, result }));
        return;
    }
  }
}
