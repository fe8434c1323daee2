// The pool and its one release path, with servers that run no PostgreSQL: each test sets up a
// server's ledger as a client would leave it and checks what the pool does with it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Pool, DISCARD_ALL_KEEPING_PLANS, type PoolClient, type PoolSettings } from '../../src/pool/pool.js';
import { ServerConnection, ServerState, type ServerTarget, type ServerCounters } from '../../src/pool/server-connection.js';
import { PgError } from '../../src/protocol/messages.js';

/** A server whose login and queries succeed at once and are recorded; cancels are counted. */
class FakeServer extends ServerConnection {
  readonly ran: string[] = [];
  cancels = 0;
  closedByPool = false;
  drainedWithCancel: boolean | null = null;
  failQueries = false;

  override login(): Promise<void> {
    return Promise.resolve();
  }
  override runInternal(queries: string[]): Promise<void> {
    this.ran.push(...queries);
    return this.failQueries ? Promise.reject(PgError.fatal('XX000', 'reset failed')) : Promise.resolve();
  }
  override query(sql: string): Promise<(string | null)[][]> {
    this.ran.push(sql);
    return Promise.resolve([]);
  }
  override drain(cancel: boolean): Promise<void> {
    this.drainedWithCancel = cancel;
    this.outstanding = 0;
    return Promise.resolve();
  }
  override write(): boolean {
    return true;
  }
  override cancel(): void {
    this.cancels++;
  }
  override close(): void {
    this.closedByPool = true;
  }
}

const SETTINGS: PoolSettings = {
  mode: 'transaction',
  size: 2,
  minSize: 0,
  reserveSize: 0,
  reserveTimeoutMs: 0,
  resetQuery: 'DISCARD ALL',
  resetAlways: false,
  closeQuery: '',
  releaseCheck: '',
  watchSchemas: null,
  tickets: null,
  connectQuery: '',
  idleTimeoutMs: 0,
  lifetimeMs: 0,
  queryWaitTimeoutMs: 0,
  connectTimeoutMs: 1000,
  cancelWaitTimeoutMs: 1000,
  maxPreparedStatements: 0,
  autoPrepare: false,
  checkDelayMs: 60_000,
  checkQuery: 'select 1',
  loginRetryMs: 1000,
  socket: { tcp_keepalive: false, tcp_keepidle: 0, tcp_keepintvl: 0, tcp_keepcnt: 0, tcp_user_timeout: 0 },
  tls: { mode: 'disable', context: null } as unknown as PoolSettings['tls'],
  hosts: { attrs: 'any', balance: 'round-robin', maxLag: null, checkIntervalMs: 0, retryMs: 1000 },
};

function makePool(settings: Partial<PoolSettings> = {}): { pool: Pool; made: FakeServer[] } {
  const made: FakeServer[] = [];
  const pool = new Pool(
    'db/user',
    { hosts: [{ host: '127.0.0.1', port: 1 }], database: 'db', user: 'user' },
    { ...SETTINGS, ...settings },
    { kind: 'none' },
    () => true,
    (target: ServerTarget, variant: string, onClosed: (s: ServerConnection) => void, counters: ServerCounters) => {
      const s = new FakeServer(target, variant, onClosed, counters);
      made.push(s);
      return s;
    },
  );
  return { pool, made };
}

/** A client that records what the pool gives it. */
function client(): PoolClient & { got: ServerConnection[]; failed: PgError[] } {
  const got: ServerConnection[] = [];
  const failed: PgError[] = [];
  return {
    id: 1,
    variant: '[]',
    serverParams: new Map(),
    sessionId: null,
    waitingSince: 0,
    wantsStatusOnly: false,
    got,
    failed,
    onStatusKnown() {},
    onServerAssigned: (s) => void got.push(s),
    onServerFailed: (e) => void failed.push(e),
  };
}

const settle = () => new Promise((r) => setImmediate(r));

/** The server a fresh pool hands its first client, as the client holds it. */
async function linkedServer(settings: Partial<PoolSettings> = {}) {
  const { pool, made } = makePool(settings);
  const c = client();
  pool.acquire(c);
  await settle();
  assert.is(c.got.length, 1, 'the client got a server');
  const server = c.got[0] as FakeServer;
  assert.is(server.state, ServerState.Active);
  return { pool, server, made };
}

/** The lists and the server set agree: every server is on exactly the list its state names. */
function assertListsHonest(pool: Pool): void {
  const states = [ServerState.Login, ServerState.Idle, ServerState.Active, ServerState.Cleanup, ServerState.Canceling];
  const total = states.reduce((n, s) => n + pool.count(s), 0);
  assert.is(total, pool.servers.size, 'list sizes add up to the servers');
  for (const s of states) assert.is([...pool.servers].filter((x) => x.state === s).length, pool.count(s), `list ${s}`);
}

test('a transaction-mode client between transactions: the server is idle as it stands', async () => {
  const { pool, server } = await linkedServer();
  pool.release(server);
  await settle();
  assert.equal(server.ran, []);
  assert.is(server.state, ServerState.Idle);
  assertListsHonest(pool);
});

test('inside a transaction: ROLLBACK before reuse', async () => {
  const { pool, server } = await linkedServer();
  server.txStatus = 0x54; // 'T'
  server.endLink('left');
  pool.release(server);
  await settle();
  assert.equal(server.ran, ['ROLLBACK']);
  assert.is(server.state, ServerState.Idle);
});

test('session state left behind: server_reset_query before reuse, and the ledger starts empty again', async () => {
  const { pool, server } = await linkedServer();
  server.markSessionState('listen');
  server.endLink('left');
  pool.release(server);
  await settle();
  assert.equal(server.ran, ['DISCARD ALL']);
  assert.is(server.sessionState, null);
  assert.is(server.linkEnd, null);
});

test('cut off mid-message: cancelled and closed, with the reason', async () => {
  const { pool, server } = await linkedServer();
  server.owe(1);
  server.noteClientInput(true, false);
  server.endLink('left');
  pool.release(server);
  assert.is(server.cancels, 1);
  assert.ok(server.closedByPool);
  assert.is(server.state, ServerState.Closed);
  assert.is(server.closeReason, 'client_left_mid_message');
  assert.is(pool.closes.get('client_left_mid_message'), 1);
  assertListsHonest(pool);
});

test('an extended batch without its Sync: cancelled and closed, never synced', async () => {
  const { pool, server } = await linkedServer();
  server.noteClientInput(false, true);
  server.endLink('left');
  pool.release(server);
  assert.is(server.cancels, 1);
  assert.is(server.closeReason, 'unsynced_extended_batch');
  assert.equal(server.ran, []);
});

test('replies still owed: drained with a cancel when the client vanished, without when it said Terminate', async () => {
  for (const [how, cancel] of [['left', true], ['terminated', false]] as const) {
    const { pool, server } = await linkedServer();
    server.owe(2);
    server.endLink(how);
    pool.release(server);
    assert.is(server.state, ServerState.Cleanup);
    await settle();
    assert.is(server.drainedWithCancel, cancel, how);
    assert.is(server.state, ServerState.Idle, how);
  }
});

test('session SQL: close_connection when the client is gone, not between its transactions', async () => {
  const settings = { closeQuery: 'select close_connection()' };
  {
    const { pool, server } = await linkedServer(settings);
    server.boundSession = '7';
    pool.release(server);
    await settle();
    assert.equal(server.ran, [], 'between transactions it stays bound');
    assert.is(server.boundSession, '7');
  }
  {
    const { pool, server } = await linkedServer({ ...settings, resetQuery: DISCARD_ALL_KEEPING_PLANS });
    server.boundSession = '7';
    server.markSessionState('pinned');
    server.endLink('left');
    pool.release(server);
    await settle();
    // One message: close_connection and the reset share it.
    assert.equal(server.ran, [`select close_connection(); ${DISCARD_ALL_KEEPING_PLANS}`]);
    assert.is(server.boundSession, null);
  }
});

test('a failed reset closes the server instead of reusing it', async () => {
  const { pool, server } = await linkedServer();
  server.failQueries = true;
  server.markSessionState('session mode');
  server.endLink('left');
  pool.release(server);
  await settle();
  assert.is(server.closeReason, 'reset_failed');
  assertListsHonest(pool);
});

test('a released server goes to the longest-waiting client; a cancel in flight holds it on the canceling list', async () => {
  const { pool, server, made } = await linkedServer({ size: 1 });
  const next = client();
  pool.acquire(next);
  await settle();
  assert.is(made.length, 1, 'pool_size 1: no second server');
  assert.equal(next.got, []);
  server.cancelsInFlight = 1;
  pool.release(server);
  assert.is(server.state, ServerState.Canceling);
  assertListsHonest(pool);
  server.cancelsInFlight = 0;
  // The cancel's connection closed: ServerConnection calls back through whenNotBeingCanceled.
  (server as unknown as { afterCancels: (() => void) | null }).afterCancels?.();
  assert.equal(next.got, [server]);
  assert.is(server.state, ServerState.Active);
  assertListsHonest(pool);
});

test('a cancel still in flight for an abandoned query is waited for before ROLLBACK and the reset run', async () => {
  const { pool, server } = await linkedServer();
  server.txStatus = 0x54; // 'T'
  server.owe(1);
  server.markSessionState('session mode');
  server.cancelsInFlight = 1; // the drain's cancel, not yet through to PostgreSQL
  server.endLink('left');
  pool.release(server);
  await settle();
  assert.equal(server.ran, [], 'nothing runs while the cancel could still hit it');
  assert.is(server.state, ServerState.Canceling);
  server.cancelsInFlight = 0;
  (server as unknown as { afterCancels: (() => void) | null }).afterCancels?.();
  await settle();
  assert.equal(server.ran, ['ROLLBACK', 'DISCARD ALL']);
  assert.is(server.state, ServerState.Idle);
  assertListsHonest(pool);
});

test('RECONNECT: a server in use is closed when released, not reused', async () => {
  const { pool, server } = await linkedServer();
  await new Promise((r) => setTimeout(r, 2));
  pool.reconnect();
  pool.release(server);
  await settle();
  assert.is(server.closeReason, 'reconnect');
});

test.run();
