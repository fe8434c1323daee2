/**
 * What the primary and its workers say to each other over the cluster IPC channel (advanced
 * serialization, so Dates and bigints survive). A worker never talks to another worker: the
 * primary routes cancel requests to the worker that owns the key and fans admin operations out
 * (admin/operations.ts says where each one runs).
 */
import type { AdminOperation } from '../admin/operations.js';

export interface OpResult {
  ok: boolean;
  value?: unknown;
  /**
   * A failure as the console reports it (no stack). `pg`: it was a PgError, whose code the
   * console keeps; any other error is reported as the console reports it from a single process.
   */
  error?: { message: string; code: string; detail?: string; pg: boolean };
}

export type ToPrimary =
  | { kind: 'cancel'; pid: number; secret: number }
  | { kind: 'admin'; id: number; op: AdminOperation; args: unknown[] }
  | { kind: 'result'; id: number; result: OpResult };

export type ToWorker =
  | { kind: 'cancel'; pid: number; secret: number }
  | { kind: 'run'; id: number; op: AdminOperation; args: unknown[] }
  | { kind: 'done'; id: number; results: OpResult[] };

export function isMessage(m: unknown): m is { kind: string } {
  return typeof m === 'object' && m !== null && typeof (m as { kind?: unknown }).kind === 'string';
}
