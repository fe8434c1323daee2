/**
 * Every operation the admin console runs against the pooler, once, with where it runs when
 * `workers` > 1 and how the workers' answers become one. Everything else is derived from this
 * table: the actions of AdminView (what the console may call), the single-process view (which
 * must implement each one), the worker messages, the primary's routing, the worker link and the
 * cluster view. A console command can only call an operation listed here, and an operation listed
 * here reaches every worker: none can be left out by hand.
 */
import { mergeSnapshots, type AdminSnapshot } from './snapshots.js';
import { mergeMetrics, type MetricsSnapshot } from '../metrics/snapshot.js';
import { mergeReadiness, type Readiness } from '../metrics/health.js';

export type ShutdownMode = 'immediate' | 'wait_for_servers' | 'wait_for_clients';

/** A failure as plain data, so it crosses the workers' IPC channel (a PgError's fields do not). */
export interface FailureData {
  code: string;
  message: string;
  hint?: string;
}

/** What KILL_SESSION did. */
export interface KillSessionResult {
  /** Clients logged in with the session that were disconnected. */
  clients: number;
  /** A session-token database had the session and ended it. */
  ended: boolean;
  /** Why ending it failed where it could not be asked (server errors, e.g. permission denied). */
  errors: FailureData[];
}

/**
 * Where an operation runs with `workers` > 1: on every worker, on the one worker that owns the id
 * in its first argument (ids carry their worker: net/worker-identity.ts), or on the primary, which
 * turns it into the signal every worker obeys (SHUTDOWN: the workers stop, then the primary exits).
 */
export type Reach = 'every-worker' | 'owning-worker' | 'primary';

/** One row of the table. */
export interface OperationSpec {
  /** The console commands (lower case, as admin/commands/ registers them) that run it. */
  readonly commands: readonly string[];
  readonly reach: Reach;
  /** A view may leave it out; the console then answers 0A000 (feature_not_supported). */
  readonly optional: boolean;
  /** Type only: the operation's arguments and result (see `signature()`). */
  readonly signature: ((...args: any[]) => any) | undefined;
  /** Folds the answers of the workers it ran on (in worker order; none when no worker is up) into one. */
  readonly combine: (results: any[]) => any;
}

/** Carries an operation's argument and result types into the table; nothing at run time. */
function signature<Args extends unknown[], Result = void>(): ((...args: Args) => Result) | undefined {
  return undefined;
}

const nothing = (): void => undefined;

export const ADMIN_OPERATIONS = {
  /** Everything SHOW (and its alias SELECT) reads, at one moment: each worker's rows, summed. */
  snapshot: { commands: ['show', 'select'], reach: 'every-worker', optional: false, signature: signature<[], AdminSnapshot>(), combine: mergeSnapshots },
  /**
   * PAUSE: stop handing out servers (all databases, or one) and resolve once every server of the
   * paused databases has been released by its client (PgBouncer answers only then). With no db
   * this is the global pause: state().paused becomes true.
   */
  pause: { commands: ['pause'], reach: 'every-worker', optional: false, signature: signature<[db?: string]>(), combine: nothing },
  /** RESUME after PAUSE/KILL/SUSPEND (global when db is undefined). */
  resume: { commands: ['resume'], reach: 'every-worker', optional: false, signature: signature<[db?: string]>(), combine: nothing },
  /** SUSPEND: flush and stop all socket activity. */
  suspend: { commands: ['suspend'], reach: 'every-worker', optional: true, signature: signature<[]>(), combine: nothing },
  /** RELOAD the config file(s). Throw to report failure (sent as F0000, the message as detail). */
  reload: { commands: ['reload'], reach: 'every-worker', optional: false, signature: signature<[]>(), combine: nothing },
  /** SHUTDOWN; immediate needs no answer, the pooler may close the console connection. */
  shutdown: { commands: ['shutdown'], reach: 'primary', optional: false, signature: signature<[mode: ShutdownMode]>(), combine: nothing },
  /** KILL_CLIENT: disconnect the client with this id; false when there is no such client. */
  killClient: { commands: ['kill_client'], reach: 'owning-worker', optional: false, signature: signature<[id: number], boolean>(), combine: (found: boolean[]) => found.some(Boolean) },
  /**
   * KILL_SESSION: end a session-token session (its id, in decimal) in the databases and disconnect
   * every client logged in with it. Each worker ends it (the first to get there finds it) and cuts
   * off its own clients.
   */
  killSession: { commands: ['kill_session'], reach: 'every-worker', optional: true, signature: signature<[sessionId: string], KillSessionResult>(), combine: combineKillSession },
  /** KILL: pause the database(s) and close all their client and server connections at once. */
  kill: { commands: ['kill'], reach: 'every-worker', optional: false, signature: signature<[db?: string]>(), combine: nothing },
  /** RECONNECT: close each server connection of the database(s) as soon as it is released. */
  reconnect: { commands: ['reconnect'], reach: 'every-worker', optional: false, signature: signature<[db?: string]>(), combine: nothing },
  /** WAIT_CLOSE: resolve when the servers marked by RECONNECT/RELOAD of the database(s) are closed. */
  waitClose: { commands: ['wait_close'], reach: 'every-worker', optional: false, signature: signature<[db?: string]>(), combine: nothing },
  /** ENABLE / DISABLE new client connections to a database. */
  enable: { commands: ['enable'], reach: 'every-worker', optional: false, signature: signature<[db: string]>(), combine: nothing },
  disable: { commands: ['disable'], reach: 'every-worker', optional: false, signature: signature<[db: string]>(), combine: nothing },
  /** SET key = value at run time; `key` is a SHOW CONFIG key. */
  set: { commands: ['set'], reach: 'every-worker', optional: true, signature: signature<[key: string, value: string]>(), combine: nothing },
  /**
   * No console command: the metrics_listen endpoint's figures (/metrics, the dashboard), which the
   * primary asks of every worker and serves summed. Optional for the console's views.
   */
  metrics: { commands: [], reach: 'every-worker', optional: true, signature: signature<[], MetricsSnapshot>(), combine: mergeMetrics },
  /** No console command: /readyz, ready only when every worker is. */
  readiness: { commands: [], reach: 'every-worker', optional: true, signature: signature<[], Readiness>(), combine: mergeReadiness },
} as const satisfies Record<string, OperationSpec>;

function combineKillSession(results: KillSessionResult[]): KillSessionResult {
  return {
    clients: results.reduce((n, r) => n + r.clients, 0),
    ended: results.some((r) => r.ended),
    errors: results.flatMap((r) => r.errors),
  };
}

export type AdminOperation = keyof typeof ADMIN_OPERATIONS;
export const ADMIN_OPERATION_NAMES = Object.keys(ADMIN_OPERATIONS) as AdminOperation[];

type SpecOf<K extends AdminOperation> = (typeof ADMIN_OPERATIONS)[K];
type SignatureOf<K extends AdminOperation> = NonNullable<SpecOf<K>['signature']>;
export type ArgsOf<K extends AdminOperation> = Parameters<SignatureOf<K>>;
export type ResultOf<K extends AdminOperation> = ReturnType<SignatureOf<K>>;

/** Each operation as a method: a view may answer at once or later. */
export type OperationMethods = { [K in AdminOperation]: (...args: ArgsOf<K>) => ResultOf<K> | Promise<ResultOf<K>> };

type OperationsWhere<P extends Partial<OperationSpec>> = { [K in AdminOperation]: SpecOf<K> extends P ? K : never }[AdminOperation];
/** Operations the primary runs itself. */
export type PrimaryOperation = OperationsWhere<{ reach: 'primary' }>;
type OptionalOperation = OperationsWhere<{ optional: true }>;

/** The console's actions: AdminView's methods besides the reads SHOW makes (the snapshot's parts). */
export type AdminActions = Omit<OperationMethods, 'snapshot' | OptionalOperation> & Partial<Pick<OperationMethods, OptionalOperation>>;

/** The operation a console command runs, or undefined for one that runs none. */
export function operationOf(command: string): AdminOperation | undefined {
  return ADMIN_OPERATION_NAMES.find((op) => (ADMIN_OPERATIONS[op].commands as readonly string[]).includes(command.toLowerCase()));
}
