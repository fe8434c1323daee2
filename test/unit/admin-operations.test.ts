// The admin operations table (src/admin/operations.ts) against the console and the workers: every
// console command runs an operation of the table, and with `workers` > 1 each one reaches every
// worker (or the one that owns the client, or the primary), through the same routing, the same
// worker-side runner and the same cluster view Tessera uses; only the IPC channel is left out.
// Everything is derived from the table, so a command added to it is covered here at once.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseConfig } from '../../src/config/load.js';
import { runAdminQuery, CONSOLE_COMMAND_NAMES } from '../../src/admin/console.js';
import { ADMIN_OPERATIONS, ADMIN_OPERATION_NAMES, operationOf, type AdminOperation, type OperationMethods } from '../../src/admin/operations.js';
import { mergeSnapshots, type AdminSnapshot, type PoolerState } from '../../src/admin/snapshots.js';
import type { AdminWho } from '../../src/admin/view.js';
import { PoolerAdminView } from '../../src/admin/pooler-view.js';
import { openClusterView } from '../../src/workers/cluster-view.js';
import { runOnThisWorker, workersFor, type OperationRunner } from '../../src/workers/fan-out.js';

const WORKERS = 3;
const ADMIN: AdminWho = { user: 'admin', isAdmin: true, isStats: false };
const CONFIG = parseConfig({ auth_type: 'trust', admin_users: 'admin', databases: { app: { host: 'db1' } } }, 'proxy.config.json', '/tmp');

/**
 * A console query for each command, run on behalf of worker `w` (KILL_CLIENT names a client of
 * that worker: worker i's ids are i+1, i+1+N, ...), and the pooler state the command needs first.
 */
const EXAMPLES: Record<string, { query: (w: number) => string; paused?: boolean }> = {
  show: { query: () => 'SHOW POOLS' },
  select: { query: () => 'SELECT databases' },
  pause: { query: () => 'PAUSE app' },
  resume: { query: () => 'RESUME', paused: true },
  suspend: { query: () => 'SUSPEND' },
  reload: { query: () => 'RELOAD' },
  shutdown: { query: () => 'SHUTDOWN WAIT_FOR_CLIENTS' },
  kill_client: { query: (w) => `KILL_CLIENT ${w + 1 + WORKERS}` },
  kill_session: { query: () => 'KILL_SESSION 42' },
  kill: { query: () => 'KILL app' },
  reconnect: { query: () => 'RECONNECT app' },
  wait_close: { query: () => 'WAIT_CLOSE' },
  enable: { query: () => 'ENABLE app' },
  disable: { query: () => 'DISABLE app' },
  set: { query: () => 'SET default_pool_size = 7' },
};

/** What a worker's view answers besides recording the call. */
const ANSWERS: Partial<Record<AdminOperation, (w: number) => unknown>> = {
  killClient: () => true,
  killSession: (w) => ({ clients: 1, ended: w === 0, errors: [] }),
};

function snapshotOf(state: PoolerState): AdminSnapshot {
  const empty = mergeSnapshots([]);
  const app = { name: 'app', host: 'db1', port: 5432, database: 'app', force_user: null, pool_size: 20, min_pool_size: 0, reserve_pool_size: 0, server_lifetime: 3600, pool_mode: null, max_connections: 0, current_connections: 0, max_client_connections: 0, current_client_connections: 0, paused: false, disabled: false };
  return { ...empty, state, databases: [app] };
}

/** WORKERS recording views (each runs every operation) and the cluster's runner over them. */
function fakeCluster(paused: boolean): { calls: string[][]; onPrimary: string[]; runner: OperationRunner } {
  const calls: string[][] = Array.from({ length: WORKERS }, () => []);
  const onPrimary: string[] = [];
  const views = calls.map((mine, w) => {
    const view: Record<string, (...args: unknown[]) => unknown> = {};
    for (const op of ADMIN_OPERATION_NAMES) {
      view[op] = () => {
        if (op === 'snapshot') return snapshotOf({ paused, suspended: false, shuttingDown: false });
        mine.push(op);
        return ANSWERS[op]?.(w);
      };
    }
    return view as unknown as OperationMethods;
  });
  // The primary's routing (src/workers/primary.ts), without the IPC channel.
  const runner: OperationRunner = {
    async request(op, args = []) {
      const targets = workersFor(op, args, WORKERS);
      if (targets === 'primary') {
        onPrimary.push(op);
        return [{ ok: true }];
      }
      return Promise.all(targets.map((w) => runOnThisWorker(views[w], op, args)));
    },
  };
  return { calls, onPrimary, runner };
}

/** The ErrorResponse in a console answer, if any: SQLSTATE and message. */
function errorIn(answer: Buffer): string | null {
  for (let at = 0; at < answer.length; at += 1 + answer.readInt32BE(at + 1)) {
    if (answer[at] !== 0x45) continue;
    const fields = answer.subarray(at + 5, at + 1 + answer.readInt32BE(at + 1)).toString().split('\0');
    return fields.filter((f) => f[0] === 'C' || f[0] === 'M').map((f) => f.slice(1)).join(' ');
  }
  return null;
}

test('every console command runs an operation of the table, and every operation has its commands', () => {
  for (const command of CONSOLE_COMMAND_NAMES) assert.ok(operationOf(command), `console command ${command} is in no operation of src/admin/operations.ts`);
  for (const op of ADMIN_OPERATION_NAMES) {
    for (const command of ADMIN_OPERATIONS[op].commands) assert.ok(CONSOLE_COMMAND_NAMES.includes(command), `${op}: the console has no command ${command}`);
  }
});

test('the single-process view implements every operation (a worker may be asked any of them)', () => {
  for (const op of ADMIN_OPERATION_NAMES) assert.type((PoolerAdminView.prototype as unknown as Record<string, unknown>)[op], 'function', op);
});

test('with workers, every console command reaches every worker', async () => {
  for (const op of ADMIN_OPERATION_NAMES) {
    const { reach, commands } = ADMIN_OPERATIONS[op];
    for (const command of commands) {
      const example = EXAMPLES[command];
      assert.ok(example, `no example query for console command ${command}: add one to EXAMPLES`);
      for (let w = 0; w < WORKERS; w++) {
        const { calls, onPrimary, runner } = fakeCluster(example.paused ?? false);
        const view = await openClusterView(runner, () => CONFIG, () => 'Tessera test');
        const query = example.query(w);
        const error = errorIn(await runAdminQuery(query, view, ADMIN));
        assert.is(error, null, `${query}: ${error}`);
        if (op === 'snapshot') continue; // every query above read every worker's snapshot first
        if (reach === 'primary') assert.equal(onPrimary, [op], query);
        else if (reach === 'owning-worker') assert.equal(calls.map((c) => c.includes(op)), calls.map((_, i) => i === w), `${query} runs on worker ${w} alone`);
        else assert.ok(calls.every((c) => c.includes(op)), `${query} ran on workers ${calls.map((c, i) => (c.includes(op) ? i : '-')).join(',')}`);
      }
    }
  }
});

test('with workers, the answers add up: KILL_SESSION counts every worker\'s clients', async () => {
  const { runner } = fakeCluster(false);
  const view = await openClusterView(runner, () => CONFIG, () => 'Tessera test');
  assert.equal(await view.killSession!('42'), { clients: WORKERS, ended: true, errors: [] });
  assert.is(await view.killClient(1), true);
});

test.run();
