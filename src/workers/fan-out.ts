/**
 * `workers` > 1: how an admin operation spans the workers, read from the table in
 * admin/operations.ts: which workers run it, running it on this worker's own view, and folding the
 * answers into the one the console sees. Nothing here names an operation.
 */
import { ADMIN_OPERATIONS, type AdminOperation, type ArgsOf, type OperationMethods, type ResultOf } from '../admin/operations.js';
import { AdminError } from '../admin/view.js';
import { PgError } from '../protocol/messages.js';
import { workerOfId } from '../net/worker-identity.js';
import { log } from '../log.js';
import type { OpResult } from './messages.js';

/** The workers that run `op` (indexes), or 'primary' for the operations the primary runs itself. */
export function workersFor(op: AdminOperation, args: readonly unknown[], workers: number): number[] | 'primary' {
  switch (ADMIN_OPERATIONS[op].reach) {
    case 'primary':
      return 'primary';
    case 'owning-worker':
      return [workerOfId(args[0] as number, workers)];
    case 'every-worker':
      return Array.from({ length: workers }, (_, i) => i);
  }
}

/** One operation on this worker's own view (every operation, none optional), its outcome as data. */
export async function runOnThisWorker(view: OperationMethods, op: AdminOperation, args: unknown[]): Promise<OpResult> {
  try {
    const method = view[op] as (...a: unknown[]) => unknown;
    return { ok: true, value: await method.apply(view, args) };
  } catch (err) {
    if (err instanceof PgError) return { ok: false, error: { message: err.message, code: err.code, detail: err.fields.detail, pg: true } };
    log.error({ err, op }, 'admin operation failed in a worker');
    return { ok: false, error: { message: (err as Error).message, code: 'XX000', pg: false } };
  }
}

/** The workers' answers as one; the first failure is thrown as the console reports errors. */
export function combineResults<K extends AdminOperation>(op: K, results: OpResult[]): ResultOf<K> {
  const failed = results.find((r) => !r.ok)?.error;
  if (failed) throw failed.pg ? new AdminError(failed.message, failed.code, failed.detail) : new Error(failed.message);
  const combine = ADMIN_OPERATIONS[op].combine as (values: unknown[]) => ResultOf<K>;
  return combine(results.map((r) => r.value));
}

/** What runs an operation across the workers (the worker link; a test's stand-in). */
export interface OperationRunner {
  request(op: AdminOperation, args?: unknown[]): Promise<OpResult[]>;
}

/** Runs `op` wherever the table says and returns the console's one answer. */
export async function runAcrossWorkers<K extends AdminOperation>(runner: OperationRunner, op: K, args: ArgsOf<K>): Promise<ResultOf<K>> {
  return combineResults(op, await runner.request(op, args as unknown[]));
}
