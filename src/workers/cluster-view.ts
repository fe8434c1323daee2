/**
 * The admin console with `workers` > 1: each SHOW reads a snapshot of every worker and shows the
 * sums (pools, databases and users by name, stats by database, clients and servers side by side),
 * and each command runs where admin/operations.ts says (every worker, or the client's). The
 * console's own code is unchanged: it sees one AdminView.
 */
import type { Config } from '../config/schema.js';
import type { AdminView } from '../admin/view.js';
import { ADMIN_OPERATION_NAMES, type AdminActions, type AdminOperation, type ArgsOf } from '../admin/operations.js';
import { runAcrossWorkers, type OperationRunner } from './fan-out.js';

/** The console's view across all workers, for one command (SHOW reads one merged snapshot). */
export async function openClusterView(workers: OperationRunner, localConfig: () => Readonly<Config>, version: () => string): Promise<AdminView> {
  const merged = await runAcrossWorkers(workers, 'snapshot', []);
  const actions: Partial<Record<AdminOperation, (...args: never[]) => Promise<unknown>>> = {};
  for (const op of ADMIN_OPERATION_NAMES) {
    if (op !== 'snapshot') actions[op] = (...args: never[]) => runAcrossWorkers(workers, op, args as ArgsOf<typeof op>);
  }
  return {
    // Every operation of the table, none optional: what the console calls reaches the workers.
    ...(actions as Required<AdminActions>),
    version,
    config: localConfig,
    state: () => merged.state,
    pools: () => merged.pools,
    clients: () => merged.clients,
    servers: () => merged.servers,
    databases: () => merged.databases,
    users: () => merged.users,
    stats: () => merged.stats,
    lists: () => merged.lists,
    mem: () => merged.mem,
    sessions: () => merged.sessions,
  };
}
