/**
 * A pool of server connections for one (database, server user). Each server is on exactly one
 * list, and its `state` names that list: login, idle (LIFO, so a few hot connections serve light
 * load and the rest can age out), active (handed to a client), cleanup (Tessera's own queries
 * before reuse), canceling (a cancel for it is still in flight). move() is the only way between
 * lists. Clients that find no usable idle server wait in `waiters`, FIFO. There is one way back:
 * release(), which decides from the server's own ledger what it needs before reuse (nothing, a
 * rollback, a reset, a drain, or a close with a named reason).
 *
 * Servers are started with the client's startup parameters and reused only by clients with the
 * same ones (`variant`). In session mode that is all of them, so SET/RESET/DISCARD ALL behave
 * exactly as on a direct connection. In transaction mode the client leaves out what a session
 * can set (pool/startup-parameters.ts): its relay applies those per client on shared backends,
 * and at most MAX_SERVER_VARIANTS distinct sets of the rest are served at a time.
 *
 * Longer than most files on purpose: everything here moves servers between the lists (release,
 * hand-out, growth, login failures, the janitor's sweep), and keeping it in one file keeps move()
 * and its callers in one place.
 */
import { serialize } from 'pg-protocol';
import { ServerConnection, ServerState, NO_SESSION_SETTINGS, type ServerTarget, type ServerCredentials, type CloseReason } from './server-connection.js';
import { PgError, SqlState } from '../protocol/messages.js';
import { log } from '../log.js';
import { serverClosed, serverConnected, serverLoginFailed } from '../log/events.js';
import { dropsAllStatements, KnownStatements } from './prepared.js';
import { MAX_SERVER_VARIANTS } from './startup-parameters.js';
import type { SocketOptions } from '../net/socket-options.js';
import { observeDuration, zeroDurationCounts, type DurationCounts } from './histogram.js';
import type { ServerTls } from '../tls/contexts.js';
import { HostSet, HostMonitor, readFacts, hostUnavailable, type HostAddress, type HostKnowledge, type HostPolicy } from './hosts.js';

/**
 * What DISCARD ALL does except DISCARD PLANS (PostgreSQL's documentation of DISCARD lists DISCARD
 * ALL as equivalent to these statements plus DISCARD PLANS, in this order). Cached plans
 * hold no data and are re-checked against the role, search_path and row_security they were made
 * for, so keeping them shows the next client nothing; dropping them made every session-token login
 * plan Tessera's SQL functions (open_connection, current_accessor under RLS, ...) all over again.
 * One message: an error anywhere (the server is then closed) skips the rest.
 */
export const DISCARD_ALL_KEEPING_PLANS =
  'CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *; SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES';

/** close_connection and DISCARD_ALL_KEEPING_PLANS in one message, made once per closeQuery (every release sends it). */
let unbindAndResetFor: { closeQuery: string; both: string } = { closeQuery: '', both: '' };
function unbindAndReset(closeQuery: string): string {
  if (unbindAndResetFor.closeQuery !== closeQuery) unbindAndResetFor = { closeQuery, both: `${closeQuery}; ${DISCARD_ALL_KEEPING_PLANS}` };
  return unbindAndResetFor.both;
}

/** server_reset_query is PgBouncer's (and Tessera's) default, DISCARD ALL. */
export function isDiscardAll(query: string): boolean {
  return /^\s*discard\s+all\s*;?\s*$/i.test(query);
}

export type PoolMode = 'session' | 'transaction';

/** What a cleanup query does to what Tessera tracks of a backend. */
interface CleanupEffects {
  /** RESET ALL / DISCARD ALL: the session settings are back to the backend's defaults. */
  resetsSettings: boolean;
  /** DEALLOCATE ALL / DISCARD ALL: the statements Tessera prepared there are gone. */
  dropsStatements: boolean;
}

/**
 * By query text: the cleanup queries are a handful of strings made from the settings, each run at
 * every release, so they are read once rather than matched (and copied to a Buffer) every time.
 */
const cleanupEffects = new Map<string, CleanupEffects>();
const CLEANUP_EFFECTS_LIMIT = 256;

function effectsOf(query: string): CleanupEffects {
  let effects = cleanupEffects.get(query);
  if (effects === undefined) {
    effects = { resetsSettings: /\b(reset|discard)\s+all\b/i.test(query), dropsStatements: query.includes('DEALLOCATE ALL') || dropsAllStatements(Buffer.from(query)) };
    if (cleanupEffects.size < CLEANUP_EFFECTS_LIMIT) cleanupEffects.set(query, effects);
  }
  return effects;
}

/**
 * The "server connection closed" log line's reason: the CloseReason, but in PgBouncer's own words
 * (its setting names) where a PgBouncer admin will grep for them.
 */
const LOGGED_REASON: Partial<Record<CloseReason, string>> = {
  idle_timeout: 'server_idle_timeout',
  lifetime: 'server_lifetime',
};

const COPY_FAIL = serialize.copyFail('client disconnected during COPY');

export interface PoolSettings {
  mode: PoolMode;
  size: number;
  minSize: number;
  reserveSize: number;
  reserveTimeoutMs: number;
  resetQuery: string;
  resetAlways: boolean;
  /** Run first on every release (session tokens: close_connection); a failure closes the server. */
  closeQuery: string;
  /** After closeQuery and the reset: the backend is reused only if this answers true ('' for none). */
  releaseCheck: string;
  /**
   * Without a releaseCheck, for session SQL whose unbinding a client can undo: the schemas whose
   * calls (with DISCARD and the rest of sessionStateDisturbance's list) have the client's backend
   * closed when it leaves. Null: no watch (no session SQL, a check, or tessera.sql's).
   */
  watchSchemas: readonly string[] | null;
  /** Session-token pools: the queries of the ticket protocol (transaction mode re-binds backends). */
  tickets: TicketQueries | null;
  /** Run for each client right after its login, on the server it keeps (session mode); '' for none. */
  connectQuery: string;
  idleTimeoutMs: number;
  lifetimeMs: number;
  queryWaitTimeoutMs: number;
  connectTimeoutMs: number;
  /** How long an abandoned query may take to answer its cancel before the server is closed. */
  cancelWaitTimeoutMs: number;
  /** Per-backend bound on transaction-mode prepared statements; 0 turns the tracking off. */
  maxPreparedStatements: number;
  /** auto_prepare: unnamed Parses of texts seen before use shared server statements. */
  autoPrepare: boolean;
  /** Idle longer than this (ms), a server is checked with checkQuery before reuse. */
  checkDelayMs: number;
  checkQuery: string;
  /** After a failed server login, how long new logins are not tried (server_login_retry). */
  loginRetryMs: number;
  socket: SocketOptions;
  /** server_tls_sslmode and its context (a RELOAD swaps it for new servers). */
  tls: ServerTls;
  /** target_session_attrs, load_balance_hosts, max_replica_lag and the role check's interval. */
  hosts: HostPolicy;
}

export interface TicketQueries {
  /** Run after a successful open_connection; returns the ticket. */
  issue: string;
  /** $1 the ticket: unbinds the backend, then binds it to the ticket's session; returns a boolean. */
  redeem: string;
  /** $1 a text[] of tickets whose clients have gone. */
  revoke: string;
}

export type ServerFactory = (target: ServerTarget, variant: string, onClosed: (server: ServerConnection) => void, counters: PoolCounters) => ServerConnection;

/** Where the pool's servers live (one host or a list, see hosts.ts) and who they log in as. */
export interface PoolTarget {
  hosts: readonly HostAddress[];
  database: string;
  user: string;
}

/** A client as the pool sees it: something waiting for a server with given startup parameters. */
export interface PoolClient {
  readonly id: number;
  readonly variant: string;
  readonly serverParams: ReadonlyMap<string, string>;
  /** A session-token client's session: an idle server already bound to it is preferred. */
  readonly sessionId: string | null;
  waitingSince: number;
  /** True while the client waits only to learn the server's ParameterStatus values (login). */
  readonly wantsStatusOnly: boolean;
  onStatusKnown(status: ReadonlyMap<string, string>): void;
  onServerAssigned(server: ServerConnection): void;
  onServerFailed(error: PgError): void;
}

export function zeroPoolCounters(): PoolCounters {
  return { assignments: 0, xacts: 0, queries: 0, received: 0, sent: 0, waitUs: 0, connects: 0, xactUs: 0, queryUs: 0, clientParses: 0, serverParses: 0, binds: 0, xactTimes: zeroDurationCounts(), waitTimes: zeroDurationCounts() };
}

/** The canonical form of a set of startup parameters: servers are reused only within one. */
export function variantOf(params: ReadonlyMap<string, string>): string {
  return JSON.stringify([...params].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Startup parameters and their variant, as clients hold them. */
export interface ClientParams {
  variant: string;
  params: ReadonlyMap<string, string>;
}

/**
 * Clients of one application mostly send the same startup parameters: they share one map and one
 * variant string instead of holding a copy each (a few hundred bytes per idle client). Bounded,
 * so a stream of unique application_names cannot grow it; the rest keep their own copy.
 */
const sharedParams = new Map<string, ClientParams>();
/** The same, by the parameters in the order sent (`name\0value\0...`): a login like many before it sorts nothing. */
const sharedByOrder = new Map<string, ClientParams>();
const SHARED_PARAMS_LIMIT = 1000;

export function shareParams(params: ReadonlyMap<string, string>): ClientParams {
  let order = '';
  for (const [name, value] of params) order += `${name}\0${value}\0`;
  const seen = sharedByOrder.get(order);
  if (seen) return seen;
  const variant = variantOf(params);
  let shared = sharedParams.get(variant);
  if (!shared) {
    shared = { variant, params };
    if (sharedParams.size >= SHARED_PARAMS_LIMIT) return shared;
    sharedParams.set(variant, shared);
  }
  if (sharedByOrder.size < SHARED_PARAMS_LIMIT) sharedByOrder.set(order, shared);
  return shared;
}

/** Totals since start, for SHOW STATS (the relay adds to them with plain increments). */
export interface PoolCounters {
  assignments: number;
  xacts: number;
  queries: number;
  received: number;
  sent: number;
  /** Microseconds clients spent waiting for a server. */
  waitUs: number;
  /** Server connections opened. */
  connects: number;
  /** Microseconds servers spent in transactions / running queries (SHOW STATS xact_time, query_time). */
  xactUs: number;
  queryUs: number;
  /** Parse messages from clients, Parse messages Tessera sent to servers, Bind messages. */
  clientParses: number;
  serverParses: number;
  binds: number;
  /** Transactions and server waits by duration (histogram buckets, see histogram.ts). */
  xactTimes: DurationCounts;
  waitTimes: DurationCounts;
}

export class Pool {
  /** Every server not closed, whatever its list. */
  readonly servers = new Set<ServerConnection>();
  readonly counters: PoolCounters = zeroPoolCounters();
  /** PAUSE: no server is handed out or opened until RESUME. */
  paused = false;
  /** Servers created before this time are closed instead of reused (RECONNECT, RELOAD). */
  private retireBefore = 0;
  /** The lists a server can be on besides idle (which is ordered: LIFO reuse, oldest retired). */
  private readonly idle: ServerConnection[] = [];
  private readonly lists: Record<ServerState.Login | ServerState.Active | ServerState.Cleanup | ServerState.Canceling, Set<ServerConnection>> = {
    [ServerState.Login]: new Set(),
    [ServerState.Active]: new Set(),
    [ServerState.Cleanup]: new Set(),
    [ServerState.Canceling]: new Set(),
  };
  /** Servers closed by the pool, by reason (metrics). */
  readonly closes = new Map<CloseReason, number>();
  private readonly waiters: PoolClient[] = [];
  /** ParameterStatus values seen per variant, replayed to clients that log in without a server. */
  readonly statusCache = new Map<string, ReadonlyMap<string, string>>();
  /** Statement texts a backend has parsed, and their epoch (transaction-mode prepared statements). */
  readonly knownStatements = new KnownStatements();
  /** The most recent client's parameters: what min_pool_size prefills with. */
  private lastParams: ReadonlyMap<string, string> = new Map();
  private closed = false;
  /**
   * Per parameter variant: until when a failed server login is not retried, and the server's
   * error. Per variant, because a bad startup parameter fails only that client's logins.
   */
  private readonly loginFailures = new Map<string, { until: number; error: PgError }>();
  /** Tickets of departed session-token clients, to revoke on the next free server. */
  private readonly revocations: string[] = [];
  private revoking = false;

  /** What is known of each host of the target: the one owner of roles, lag and failures. */
  private hostSet!: HostSet;
  private monitor: HostMonitor | null = null;
  private currentTarget!: PoolTarget;

  constructor(
    readonly name: string,
    target: PoolTarget,
    public settings: PoolSettings,
    /** How the pool's servers authenticate; updated when a client proves SCRAM keys. */
    public credentials: ServerCredentials,
    /** Limits shared with other pools (max_db_connections, max_user_connections). */
    private readonly mayOpen: () => boolean = () => true,
    /** Makes a server connection (a test gives one that runs no PostgreSQL). */
    private readonly newServer: ServerFactory = (target, variant, onClosed, counters) => new ServerConnection(target, variant, onClosed, counters),
  ) {
    this.target = target;
  }

  get target(): PoolTarget {
    return this.currentTarget;
  }

  /** RELOAD with a changed address: a fresh host set (what was known was of other hosts); then reconnect(). */
  set target(target: PoolTarget) {
    this.currentTarget = target;
    this.monitor?.stop();
    const policy = () => this.settings.hosts;
    this.hostSet = new HostSet(target.hosts, policy);
    this.monitor = new HostMonitor(this.hostSet, policy, (address) => this.newServer(this.serverTarget(address, new Map([['application_name', 'tessera role check']])), '', () => {}, zeroPoolCounters()), () => this.onHostsChanged());
  }

  /** What the pool has learned of its hosts, for connections outside it (auth_query, KILL_SESSION, /readyz). */
  get hostKnowledge(): HostKnowledge {
    return this.hostSet;
  }

  /** SHOW SERVERS / metrics: the role of the server's host (primary, standby or unknown). */
  roleOf(server: ServerConnection): string {
    return this.hostSet.roleOf(server);
  }

  /** How many servers are on a list (SHOW POOLS, metrics). */
  count(state: ServerState): number {
    if (state === ServerState.Idle) return this.idle.length;
    if (state === ServerState.Closed) return 0;
    return this.lists[state].size;
  }

  /** How long the longest-waiting client has waited, in ms. */
  maxWaitMs(now = Date.now()): number {
    return this.waiters.length > 0 ? now - this.waiters[0].waitingSince : 0;
  }

  /** A server is linked to a client or being cleaned. */
  inUse(): boolean {
    return this.lists[ServerState.Active].size > 0 || this.lists[ServerState.Cleanup].size > 0;
  }

  /** PAUSE: resolves once no server is in use, then closes the idle ones (as PgBouncer). */
  async pause(): Promise<void> {
    this.paused = true;
    while (this.inUse()) {
      await new Promise((r) => setTimeout(r, 20));
      if (!this.paused) return;
    }
    this.closeIdle('paused');
  }

  resume(): void {
    this.paused = false;
    for (const server of [...this.idle]) this.handOut(server);
    this.grow();
  }

  /** RECONNECT: servers in use are closed when released; idle ones now. */
  reconnect(): void {
    this.retireBefore = Date.now() + 1;
    this.closeIdle('reconnect');
  }

  /** Gives the client a server now or when one is free; answers through the client's callbacks. */
  acquire(client: PoolClient): void {
    this.lastParams = client.serverParams;
    let server = this.paused ? null : this.takeIdle(client.variant, client.sessionId);
    while (server && this.letGoIfMisplaced(server)) server = this.takeIdle(client.variant, client.sessionId);
    if (server && this.needsCheck(server)) {
      // Long idle: make sure it still answers before anyone relies on it; the client waits.
      client.waitingSince = Date.now();
      this.waiters.unshift(client);
      this.check(server);
      return;
    }
    if (server) return this.assign(server, client);
    // The server has been refusing logins and no connection of ours is alive: say so now, in the
    // server's own words, instead of queueing the client behind server_login_retry.
    const failure = this.recentLoginFailure(client.variant, Date.now());
    if (failure && !this.hasServerFor(client.variant)) {
      client.onServerFailed(failure);
      return;
    }
    if (this.settings.mode === 'transaction' && !this.hasServerFor(client.variant) && this.serverVariants() >= MAX_SERVER_VARIANTS) {
      client.onServerFailed(PgError.fatal(SqlState.ConfigurationLimitExceeded, `too many distinct sets of start-only parameters for this pool (at most ${MAX_SERVER_VARIANTS} at a time)`));
      return;
    }
    client.waitingSince = Date.now();
    this.waiters.push(client);
    this.grow();
  }

  /** How many distinct startup parameter sets the pool's servers were started with. */
  private serverVariants(): number {
    const variants = new Set<string>();
    for (const server of this.servers) variants.add(server.variant);
    return variants.size;
  }

  /** A waiting client left. */
  cancelWait(client: PoolClient): void {
    const i = this.waiters.indexOf(client);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  /**
   * The one way back to the pool, for every server a client (or a login) was given. What the
   * server needs before anyone else may use it is read from its own ledger:
   * - cut off mid-message, or inside an extended batch without its Sync (whose implicit
   *   transaction PostgreSQL would roll back, where a Sync now would commit), or confused: cancel
   *   what runs and close it;
   * - still owing replies: end any COPY, drain (cancelling first unless the client said
   *   Terminate, whose queued queries PostgreSQL would have run), then clean up;
   * - in a transaction: ROLLBACK; left by its client on a session-token pool: close_connection;
   *   carrying a client's session state: server_reset_query;
   * - otherwise (a transaction-mode client between transactions) it is idle as it stands.
   */
  release(server: ServerConnection): void {
    server.detach();
    if (server.state === ServerState.Closed) return;
    const unusable: CloseReason | null = server.broken
      ? 'protocol_broken'
      : server.midMessage
        ? 'client_left_mid_message'
        : server.unsyncedExtended
          ? 'unsynced_extended_batch'
          : server.disturbedBy !== null
            ? 'session_state_disturbed'
            : server.holdsTempObjects
              ? 'temp_objects'
              : null;
    if (unusable) {
      // The client ran something after which no reset can make the backend safe for another session.
      if (unusable === 'temp_objects') log.info({ pool: this.name, server: server.id }, 'server closed instead of reused: its client created temporary objects, whose namespace outlives any reset');
      if (server.disturbedBy !== null) log.info({ pool: this.name, server: server.id, reason: server.disturbedBy }, "server closed instead of reused: its client ran something that can disturb the session SQL's state");
      // Closing alone would leave PostgreSQL running the query until it next writes to us.
      if (server.outstanding > 0 || server.unsyncedExtended) server.cancel();
      return this.closeServer(server, unusable);
    }
    if (server.outstanding > 0) {
      this.move(server, ServerState.Cleanup);
      // A COPY FROM STDIN waiting for the client's data ignores a cancel; CopyFail ends it (and
      // outside COPY, PostgreSQL ignores a CopyFail, so it is safe to send whatever is running).
      server.write(COPY_FAIL);
      server.drain(server.linkEnd !== 'terminated', this.settings.cancelWaitTimeoutMs).then(
        () => this.cleanUp(server),
        () => {
          server.cancel();
          this.closeServer(server, 'abandoned_query_timeout');
        },
      );
      return;
    }
    this.cleanUp(server);
  }

  /** The queries a quiet server needs before reuse, from its ledger (see release()). */
  private cleanupQueries(server: ServerConnection): string[] {
    const s = this.settings;
    const queries: string[] = [];
    if (server.isIdleInTransaction) queries.push('ROLLBACK');
    // Between a transaction-mode client's transactions the backend stays bound to its session
    // (tickets re-bind it for anyone else); once the client is gone, it is unbound.
    const unbind = s.closeQuery !== '' && server.linkEnd !== null;
    if (unbind) queries.push(s.closeQuery);
    const reset = server.sessionState !== null || (s.resetAlways && server.linkEnd !== null);
    if (reset && s.resetQuery) {
      // Unlike DISCARD ALL, its parts may share a message with close_connection: one transaction
      // and one reply flush less per release. An error still skips the rest and closes the server.
      if (unbind && s.resetQuery === DISCARD_ALL_KEEPING_PLANS) queries[queries.length - 1] = unbindAndReset(s.closeQuery);
      else queries.push(s.resetQuery);
    }
    return queries;
  }

  private cleanUp(server: ServerConnection): void {
    if (server.state === ServerState.Closed) return;
    // A cancel sent for the abandoned query and still on its way would hit ROLLBACK or the reset
    // (which then fails, and the server is closed): wait until PostgreSQL has it, as handOut does.
    // Delivered to a backend that is idle by then, PostgreSQL ignores it.
    if (server.cancelsInFlight > 0) {
      this.move(server, ServerState.Canceling);
      return server.whenNotBeingCanceled(() => this.cleanUp(server));
    }
    const queries = this.cleanupQueries(server);
    if (this.settings.closeQuery && server.linkEnd !== null) server.boundSession = null;
    if (queries.length === 0) {
      server.clearLedger();
      return this.handOut(server);
    }
    this.move(server, ServerState.Cleanup);
    // A client's session state is reset now: its settings are gone if the reset says RESET ALL.
    if (server.sessionState !== null) server.sessionSettings = queries.some((q) => effectsOf(q).resetsSettings) ? NO_SESSION_SETTINGS : null;
    server.runInternal(queries).then(
      () => {
        // DISCARD ALL / DEALLOCATE ALL dropped the statements Tessera prepared there.
        if (queries.some((q) => effectsOf(q).dropsStatements)) server.statements.clear();
        if (this.settings.releaseCheck) return this.verifyRelease(server);
        server.clearLedger();
        this.handOut(server);
      },
      (err: PgError) => {
        log.warn({ pool: this.name, server: server.id, code: err.code }, 'server reset failed; closing server');
        this.closeServer(server, 'reset_failed');
      },
    );
  }

  /** release_check: a backend whose session SQL state did not clear is closed, never reused. */
  private verifyRelease(server: ServerConnection): void {
    server.query(this.settings.releaseCheck, []).then(
      (rows) => {
        if (rows.length === 1 && rows[0][0] === 't') {
          server.clearLedger();
          this.handOut(server);
          return;
        }
        log.info({ pool: this.name, server: server.id }, 'server closed instead of reused: release_check did not answer true');
        this.closeServer(server, 'release_check_failed');
      },
      (err: PgError) => {
        log.warn({ pool: this.name, server: server.id, code: err.code, reason: err.message }, 'release_check failed; closing server');
        this.closeServer(server, 'release_check_failed');
      },
    );
  }

  private needsCheck(server: ServerConnection): boolean {
    return Date.now() - server.lastUsedAt > this.settings.checkDelayMs;
  }

  /** server_check_query on an idle server: a good one goes to the waiters, a dead one is closed. */
  private check(server: ServerConnection): void {
    this.move(server, ServerState.Cleanup);
    server.runInternal([this.settings.checkQuery]).then(
      () => {
        server.lastUsedAt = Date.now();
        this.handOut(server);
      },
      () => {
        log.info({ pool: this.name, server: server.id }, 'idle server failed server_check_query; closing it');
        this.closeServer(server, 'check_failed');
      },
    );
  }

  /** Closes a server that must not be reused, and opens another for waiting clients. */
  closeServer(server: ServerConnection, reason: CloseReason): void {
    this.retire(server, reason);
    this.grow();
  }

  /** Takes a server off every list and closes it, counting why. */
  private retire(server: ServerConnection, reason: CloseReason): void {
    if (server.state === ServerState.Closed) return;
    server.closeReason = reason;
    this.countClose(reason);
    this.move(server, ServerState.Closed);
    server.close();
    // Only a server that logged in was announced (serverConnected); a failed login is logged by launch().
    if (server.pid !== 0) serverClosed(this.name, server, LOGGED_REASON[reason] ?? reason);
  }

  private countClose(reason: CloseReason): void {
    this.closes.set(reason, (this.closes.get(reason) ?? 0) + 1);
  }

  /**
   * The only place a server changes lists: off the one it is on, onto `to`, so the lists, the
   * counters derived from them and `server.state` never disagree. A new server is on none yet.
   */
  private move(server: ServerConnection, to: ServerState, isNew = false): void {
    const from = server.state;
    if (from === to && !isNew) return;
    if (!isNew) {
      if (from === ServerState.Idle) {
        const i = this.idle.indexOf(server);
        if (i >= 0) this.idle.splice(i, 1);
      } else if (from !== ServerState.Closed) {
        this.lists[from].delete(server);
      }
    }
    server.setListState(to);
    if (to === ServerState.Closed) {
      this.servers.delete(server);
      return;
    }
    this.servers.add(server);
    if (to === ServerState.Idle) this.idle.push(server);
    else this.lists[to].add(server);
  }

  /** Housekeeping, called by the janitor a few times a second. */
  tick(now: number): void {
    const s = this.settings;
    // Retire idle servers past their idle timeout or lifetime, oldest first, above min_pool_size.
    for (const server of [...this.idle]) {
      const tooIdle = s.idleTimeoutMs > 0 && now - server.lastUsedAt > s.idleTimeoutMs && this.servers.size > s.minSize;
      const tooOld = s.lifetimeMs > 0 && now - server.createdAt > s.lifetimeMs;
      if (tooIdle || tooOld) this.retire(server, tooOld ? 'lifetime' : 'idle_timeout');
    }
    this.monitor?.tick(now);
    // No host fits target_session_attrs (or every one is down): after server_connect_timeout a
    // waiting client hears so, instead of waiting out query_wait_timeout for nothing.
    if (this.waiters.length > 0 && now - this.waiters[0].waitingSince > s.connectTimeoutMs && !this.hostSet.hasCandidate(now)) {
      const error = this.noFittingHost();
      while (this.waiters.length > 0 && now - this.waiters[0].waitingSince > s.connectTimeoutMs) this.waiters.shift()!.onServerFailed(error);
    }
    // Clients that waited too long get PgBouncer's error.
    if (s.queryWaitTimeoutMs > 0) {
      while (this.waiters.length > 0 && now - this.waiters[0].waitingSince > s.queryWaitTimeoutMs) {
        const client = this.waiters.shift()!;
        client.onServerFailed(PgError.fatal(SqlState.ProtocolViolation, 'query_wait_timeout', 'no server connection became free within query_wait_timeout'));
      }
    }
    // Keep min_pool_size servers, started with the parameters the latest client used.
    if (!this.closed) {
      const variant = variantOf(this.lastParams);
      while (this.servers.size < s.minSize && !this.recentLoginFailure(variant, now) && this.mayOpen() && this.launch(this.lastParams));
    }
    this.grow(now);
  }

  /** Closes every server not in use; waiting clients get an error; servers in use close when released. */
  close(): void {
    this.closed = true;
    this.monitor?.stop();
    for (const w of this.waiters.splice(0)) {
      w.onServerFailed(PgError.fatal(SqlState.AdminShutdown, 'the pooler is shutting down'));
    }
    for (const server of [...this.idle, ...this.lists[ServerState.Login], ...this.lists[ServerState.Canceling]]) this.retire(server, 'pool_closed');
  }

  /** Closes idle servers only (PAUSE, RECONNECT, shutdown once clients are gone). */
  closeIdle(reason: CloseReason = 'pool_closed'): void {
    for (const server of [...this.idle]) this.retire(server, reason);
  }

  // ---- internals ----

  /** The most recently used idle server for the variant; one bound to `session` first. */
  private takeIdle(variant: string, session: string | null): ServerConnection | null {
    let found: ServerConnection | null = null;
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const server = this.idle[i];
      if (server.variant !== variant) continue;
      found ??= server;
      if (session === null || server.boundSession === session) {
        found = server;
        break;
      }
    }
    return found;
  }

  /**
   * Hands a server to a client: it is the client's until the client calls release(). `waitedUs`:
   * how long the client waited for it (0: served at once).
   */
  private assign(server: ServerConnection, client: PoolClient, waitedUs = 0): void {
    this.move(server, ServerState.Active);
    this.counters.assignments++;
    this.counters.waitUs += waitedUs;
    observeDuration(this.counters.waitTimes, waitedUs);
    client.onServerAssigned(server);
  }

  /**
   * A session-token client holding this ticket disconnected: revoke it in the database, on the
   * next free server (now, if one is idle), so it can never bind a backend again.
   */
  revokeTicket(ticket: string): void {
    this.revocations.push(ticket);
    if (this.closed || this.paused || this.revoking) return;
    const server = this.idle.at(-1);
    if (server) this.handOut(server);
  }

  private revokeOn(server: ServerConnection): void {
    const tickets = this.revocations.splice(0);
    this.revoking = true;
    this.move(server, ServerState.Cleanup);
    // Tickets are checked to be plain tokens when issued, so the array literal needs no quoting.
    server.query(this.settings.tickets!.revoke, [`{${tickets.join(',')}}`]).then(
      () => {
        this.revoking = false;
        this.handOut(server);
      },
      (err: PgError) => {
        this.revoking = false;
        log.warn({ pool: this.name, server: server.id, code: err.code, count: tickets.length }, 'revoking session tickets failed; they stay valid until their sessions end');
        this.closeServer(server, 'revoke_failed');
      },
    );
  }

  /** A server became free: the longest-waiting client with the same parameters gets it. */
  private handOut(server: ServerConnection): void {
    if (server.state === ServerState.Closed) return;
    // A cancel still on its way to PostgreSQL would hit the next client's query: wait for it.
    if (server.cancelsInFlight > 0 && !this.closed) {
      this.move(server, ServerState.Canceling);
      return server.whenNotBeingCanceled(() => this.handOut(server));
    }
    if (this.closed) {
      // Cleaned after the pool closed (a client torn down at shutdown): nobody will use it.
      return this.retire(server, 'pool_closed');
    }
    const now = Date.now();
    if (this.settings.lifetimeMs > 0 && now - server.createdAt > this.settings.lifetimeMs) return this.closeServer(server, 'lifetime');
    if (server.createdAt < this.retireBefore) return this.closeServer(server, 'reconnect');
    if (this.letGoIfMisplaced(server)) return;
    if (this.revocations.length > 0 && !this.revoking && !this.paused && this.settings.tickets) return this.revokeOn(server);
    for (let i = 0; !this.paused && i < this.waiters.length; i++) {
      const client = this.waiters[i];
      if (client.variant === server.variant) {
        this.waiters.splice(i, 1);
        return this.assign(server, client, (now - client.waitingSince) * 1000);
      }
    }
    this.move(server, ServerState.Idle);
    this.grow();
  }

  /** A server whose host no longer fits the entry (role, lag) is closed; true if it was. */
  private letGoIfMisplaced(server: ServerConnection): boolean {
    if (!this.hostSet.roleSensitive) return false;
    const mismatch = this.hostSet.mismatch(server);
    if (mismatch === null) return false;
    log.info({ pool: this.name, server: server.id, host: server.target.host, port: server.target.port, reason: mismatch }, 'server closed: its host no longer fits target_session_attrs / max_replica_lag');
    this.closeServer(server, mismatch);
    return true;
  }

  /** The monitor saw a host change role or lag state: idle servers that no longer fit go now. */
  private onHostsChanged(): void {
    for (const server of [...this.idle]) this.letGoIfMisplaced(server);
    this.grow();
  }

  private limit(now = Date.now()): number {
    const s = this.settings;
    const reserve = s.reserveSize > 0 && this.waiters.length > 0 && now - this.waiters[0].waitingSince >= s.reserveTimeoutMs;
    return s.size + (reserve ? s.reserveSize : 0);
  }

  /** Opens servers for clients that no idle or pending server will serve. */
  private grow(now = Date.now()): void {
    if (this.closed || this.paused) return;
    let pending = this.lists[ServerState.Login].size; // connections under way serve the first waiters
    for (const client of this.waiters) {
      if (pending > 0) {
        pending--;
        continue;
      }
      if (this.recentLoginFailure(client.variant, now)) continue;
      if (this.servers.size >= this.limit(now) || !this.mayOpen()) {
        // Full: an idle server started with other parameters makes room for the waiting client.
        const victim = this.idle[0];
        if (!victim) return;
        this.retire(victim, 'made_room');
        if (!this.mayOpen()) return;
      }
      if (!this.launch(client.serverParams)) return; // no host may serve now
    }
  }

  private recentLoginFailure(variant: string, now: number): PgError | null {
    const f = this.loginFailures.get(variant);
    if (!f) return null;
    if (now < f.until) return f.error;
    this.loginFailures.delete(variant);
    return null;
  }

  private hasServerFor(variant: string): boolean {
    for (const server of this.servers) if (server.variant === variant) return true;
    return false;
  }

  /**
   * Where a connection of the pool's own (not a pooled server: the LISTEN connection) logs in:
   * the host the host set would pick now, as the pool's servers log in; null when none may serve.
   */
  targetForOwnConnection(params: ReadonlyMap<string, string>): ServerTarget | null {
    const address = this.hostSet.next();
    return address ? this.serverTarget(address, params) : null;
  }

  private serverTarget(address: HostAddress, params: ReadonlyMap<string, string>): ServerTarget {
    return {
      host: address.host,
      port: address.port,
      database: this.target.database,
      user: this.target.user,
      credentials: this.credentials,
      params,
      connectTimeoutMs: this.settings.connectTimeoutMs,
      socket: this.settings.socket,
      tls: this.settings.tls,
    };
  }

  /** Opens a server on the host the host set picks; false when no host may serve now. */
  private launch(params: ReadonlyMap<string, string>): boolean {
    const variant = variantOf(params);
    const address = this.hostSet.next();
    if (!address) return false;
    const server = this.newServer(this.serverTarget(address, params), variant, (s) => this.onServerClosed(s), this.counters);
    this.move(server, ServerState.Login, true);
    this.counters.connects++;
    server.login().then(
      () => this.learnRole(server),
    ).then(
      () => {
        this.loginFailures.delete(variant);
        // Logged in to a host of the wrong role (or one lagging): close it, try the next host.
        if (this.letGoIfMisplaced(server)) return;
        const status = new Map(server.status);
        this.statusCache.set(variant, status);
        serverConnected(this.name, server);
        // Clients that were only waiting to log in can finish now; they need a server at their
        // first query, not before.
        for (let i = 0; i < this.waiters.length; ) {
          const w = this.waiters[i];
          if (w.variant === variant && w.wantsStatusOnly) {
            this.waiters.splice(i, 1);
            w.onStatusKnown(status);
          } else i++;
        }
        this.handOut(server);
      },
      (err: PgError) => {
        this.retire(server, 'login_failed');
        // PostgreSQL restarting (57P03) or not answering (08006) may be back in a moment: clients
        // already waiting keep their place for up to server_connect_timeout, are retried after
        // server_login_retry (as PgBouncer: not sooner, so a server that is down is not hammered
        // and the log not flooded), and are served by the restarted server. Any other refusal
        // is final for them.
        const now = Date.now();
        const transient = hostUnavailable(err);
        // One host of several is down: the others are tried at once, nobody is told.
        if (transient && this.hostSet.noteFailure(address, err, now)) {
          log.info({ pool: this.name, host: address.host, port: address.port, code: err.code, reason: err.message }, 'server login failed on one host of the list; trying the others');
          this.grow();
          return;
        }
        const retryMs = this.settings.loginRetryMs;
        serverLoginFailed(this.name, err, retryMs / 1000);
        this.loginFailures.set(variant, { until: now + retryMs, error: err });
        // The client this connection was opened for hears why, in the server's own words; so do
        // the others with the same parameters when no server is left to serve them before
        // server_login_retry has passed.
        const orphaned = !this.hasServerFor(variant);
        let first = true;
        let kept = false;
        for (let i = 0; i < this.waiters.length; ) {
          const w = this.waiters[i];
          if (w.variant === variant && transient && now - w.waitingSince < this.settings.connectTimeoutMs) {
            kept = true;
            i++;
          } else if (w.variant === variant && (first || orphaned)) {
            first = false;
            this.waiters.splice(i, 1);
            w.onServerFailed(err);
          } else i++;
        }
        // The retry for the clients kept waiting is this pool's own, not left to the janitor's next tick.
        if (kept) {
          setTimeout(() => this.grow(), retryMs + 1).unref();
          // Each of them hears the error once its server_connect_timeout has passed, not only at
          // the next retry (server_login_retry may well be longer).
          setTimeout(() => this.failExpiredWaiters(variant), this.settings.connectTimeoutMs + 1).unref();
        }
        this.grow();
      },
    );
    return true;
  }

  /**
   * What the new server's host is, for the host set: from its ParameterStatus (PostgreSQL 14+),
   * else by asking. Only when the entry cares (target_session_attrs, max_replica_lag).
   */
  private async learnRole(server: ServerConnection): Promise<void> {
    if (!this.hostSet.roleSensitive) return;
    const facts = await readFacts(server);
    if (this.hostSet.noteFacts(server.target, facts)) log.info({ pool: this.name, host: server.target.host, port: server.target.port, role: facts.standby ? 'standby' : 'primary' }, 'server host role learned');
  }

  /**
   * Clients kept waiting through a refused or unanswered login (see launch) whose
   * server_connect_timeout has passed get the server's error, unless a server for them came up.
   */
  private failExpiredWaiters(variant: string): void {
    const now = Date.now();
    const loginFailure = this.recentLoginFailure(variant, now);
    if (!loginFailure || this.hasServerFor(variant)) return;
    // With no host left that may serve, say so (as the janitor's sweep does), not one host's refusal.
    const failure = this.hostSet.hasCandidate(now) ? loginFailure : this.noFittingHost();
    for (let i = 0; i < this.waiters.length; ) {
      const w = this.waiters[i];
      if (w.variant === variant && now - w.waitingSince >= this.settings.connectTimeoutMs) {
        this.waiters.splice(i, 1);
        w.onServerFailed(failure);
      } else i++;
    }
  }

  /** What a client hears when no host of the entry may serve it now. */
  private noFittingHost(): PgError {
    return PgError.fatal(SqlState.ConnectionFailure, `no server for "${this.name}" matches target_session_attrs "${this.settings.hosts.attrs}" (${this.hostSet.describe()})`);
  }

  /** The server's socket closed by itself (PostgreSQL went away, or a close finished). */
  private onServerClosed(server: ServerConnection): void {
    // A login that fails is handled where it is awaited (launch), with its error and retry.
    if (server.state === ServerState.Login) return;
    // Not closed by the pool (that counted already): the server hung up, or its socket failed.
    this.retire(server, server.closeReason ?? 'server_closed');
    if (this.waiters.length > 0) this.grow();
  }
}
