/**
 * What the primary and its workers say to each other over the cluster IPC channel (advanced
 * serialization, so Dates and bigints survive). A worker never talks to another worker: the
 * primary routes cancel requests to the worker that owns the key and fans admin commands out.
 */

/** Admin operations every worker can run on its own proxy (see runLocal in worker-link.ts). */
export type AdminOp = 'snapshot' | 'metrics' | 'readiness' | 'pause' | 'resume' | 'suspend' | 'reload' | 'kill' | 'reconnect' | 'waitClose' | 'enable' | 'disable' | 'set' | 'killClient' | 'shutdown';

export interface OpResult {
  ok: boolean;
  value?: unknown;
  /** A failure as the console reports it (PgError fields, no stack). */
  error?: { message: string; code: string; detail?: string };
}

export type ToPrimary =
  | { kind: 'cancel'; pid: number; secret: number }
  | { kind: 'admin'; id: number; op: AdminOp; args: unknown[] }
  | { kind: 'result'; id: number; result: OpResult };

export type ToWorker =
  | { kind: 'cancel'; pid: number; secret: number }
  | { kind: 'run'; id: number; op: AdminOp; args: unknown[] }
  | { kind: 'done'; id: number; results: OpResult[] };

export function isMessage(m: unknown): m is { kind: string } {
  return typeof m === 'object' && m !== null && typeof (m as { kind?: unknown }).kind === 'string';
}
