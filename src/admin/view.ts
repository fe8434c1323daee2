/**
 * What the admin console (the virtual database `pgbouncer`) needs from the running proxy.
 *
 * The console is pure: it asks this view for plain-data snapshots (admin/snapshots.ts), formats
 * them exactly as PgBouncer's SHOW commands do, and calls the actions (admin/operations.ts) for
 * PAUSE, KILL and the rest.
 *
 * An action the proxy cannot do (or a precondition the console cannot see) is reported by
 * throwing an `AdminError` (or any `PgError`); the console turns it into an ErrorResponse and the
 * connection stays usable. Any other thrown Error becomes an ErrorResponse 08P01 with its message.
 */
import { PgError, SqlState } from '../protocol/messages.js';
import type { Config } from '../config/schema.js';
import type { AdminActions } from './operations.js';
import type { ConnectionSnapshot, DatabaseSnapshot, ListsSnapshot, MemSnapshot, PoolSnapshot, PoolerState, SessionSnapshot, StatsSnapshot, UserSnapshot } from './snapshots.js';

export type * from './snapshots.js';
export { LIST_NAMES, splitMicros } from './snapshots.js';
export type { ShutdownMode, KillSessionResult, FailureData } from './operations.js';

/** An error for the console client; `code` defaults to 08P01, PgBouncer's code for every console error. */
export class AdminError extends PgError {
  constructor(message: string, code: string = SqlState.ProtocolViolation, detail?: string) {
    super({ severity: 'ERROR', code, message, detail });
    this.name = 'AdminError';
  }
}

/**
 * Implemented by the pooler (admin/pooler-view.ts) and, with `workers` > 1, by the view across
 * all workers (workers/cluster-view.ts). Snapshot methods are called once per SHOW and must not
 * mutate. The actions are the operations of admin/operations.ts, documented there. Database-name
 * arguments are already checked by the console against databases() (and the "*" fallback in
 * config().databases, for the commands where PgBouncer auto-creates the entry), and are never the
 * console's own database `pgbouncer`.
 */
export interface AdminView extends AdminActions {
  /** SHOW VERSION text; defaults to "Tessera <package.json version>". */
  version?(): string;
  config(): Readonly<Config>;
  state(): PoolerState;
  pools(): PoolSnapshot[];
  clients(): ConnectionSnapshot[];
  servers(): ConnectionSnapshot[];
  databases(): DatabaseSnapshot[];
  users(): UserSnapshot[];
  stats(): StatsSnapshot[];
  lists(): ListsSnapshot;
  /** SHOW MEM rows; optional, an empty result without it. */
  mem?(): MemSnapshot[];
  /** SHOW SESSIONS rows; optional, an empty result without it. */
  sessions?(): SessionSnapshot[];
}

/** Who is asking: the console user and whether it is in admin_users / stats_users. */
export interface AdminWho {
  user: string;
  isAdmin: boolean;
  isStats: boolean;
}
