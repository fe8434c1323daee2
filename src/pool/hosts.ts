/**
 * A database entry's host list, as libpq and PgBouncer read `host=a,b port=5432,5433`: which host
 * the next server connection goes to (load_balance_hosts), whether a host's role fits the entry
 * (target_session_attrs, libpq's six values), and whether a standby is too far behind
 * (max_replica_lag). One HostSet per pool owns what is known of each host; the pool asks it
 * before opening a server and before handing one out, and closes a server that no longer fits
 * through its one closeServer() path.
 *
 * What is known of a host comes from three places: a connection that failed (the host is skipped
 * for a moment), the ParameterStatus values of every server that logs in (PostgreSQL 14+ reports
 * in_hot_standby and default_transaction_read_only; older servers are asked pg_is_in_recovery()),
 * and the HostMonitor's periodic check over a connection of its own, which also measures replay
 * lag and notices a promotion while the pool's servers sit idle.
 */
import { PgError, SqlState } from '../protocol/messages.js';
import type { ServerConnection } from './server-connection.js';

export interface HostAddress {
  /** Name, address, or a Unix socket folder (a leading "/"). */
  host: string;
  port: number;
}

export const TARGET_SESSION_ATTRS = ['any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby'] as const;
export type TargetSessionAttrs = (typeof TARGET_SESSION_ATTRS)[number];
export type LoadBalanceHosts = 'disable' | 'round-robin';

/** max_replica_lag: replayed WAL behind received WAL (bytes), or time since the last replayed commit. */
export type ReplicaLag = { bytes: number } | { seconds: number };

export interface HostPolicy {
  attrs: TargetSessionAttrs;
  balance: LoadBalanceHosts;
  maxLag: ReplicaLag | null;
  /** How often the monitor asks each host its role and lag (ms); 0: only at each login. */
  checkIntervalMs: number;
  /** How long a host whose connection failed is skipped (server_login_retry, bounded). */
  retryMs: number;
}

/** Why a server is closed instead of handed out (Pool's CloseReason). */
export type HostMismatch = 'wrong_role' | 'replica_lag' | 'standby_available';

/** What a server (or the monitor) reported about its host. */
export interface HostFacts {
  standby: boolean;
  readOnly: boolean;
}

/** What a pool shares of its HostSet with connections outside it: reading only. */
export type HostKnowledge = Pick<HostSet, 'fitting' | 'describe'>;

/** What the set reads of a server: where it is, and what its host last reported (ParameterStatus). */
export type HostedServer = Pick<ServerConnection, 'target' | 'status'>;

/** An error naming the setting, for the config loader to place on its key. */
export class HostListError extends Error {
  constructor(
    readonly key: 'host' | 'port' | 'max_replica_lag',
    message: string,
  ) {
    super(message);
  }
}

/**
 * `host` as a comma list and `port` as one port or a list of the same length (libpq's rule);
 * an empty host in the list is an error, not "the default".
 */
export function parseHostList(host: string, port: number | string | undefined): HostAddress[] {
  const hosts = host.split(',').map((h) => h.trim());
  if (hosts.some((h) => h === '')) throw new HostListError('host', 'expected host names, addresses or socket folders separated by commas, with none empty');
  if (hosts.some((h) => h.startsWith('@'))) throw new HostListError('host', 'abstract "@" sockets are not supported');
  const ports = (port === undefined ? '5432' : String(port)).split(',').map((p) => p.trim());
  const numbers = ports.map((p) => (/^\d+$/.test(p) ? Number(p) : NaN));
  if (numbers.some((p) => !(p >= 1 && p <= 65535))) throw new HostListError('port', 'expected a port from 1 to 65535, or a comma list of them');
  if (numbers.length !== 1 && numbers.length !== hosts.length) {
    throw new HostListError('port', `expected one port or one per host (${hosts.length}), got ${numbers.length}`);
  }
  return hosts.map((h, i) => ({ host: h, port: numbers.length === 1 ? numbers[0]! : numbers[i]! }));
}

const LAG_UNITS: Record<string, ['bytes' | 'seconds', number]> = {
  b: ['bytes', 1], kb: ['bytes', 1024], mb: ['bytes', 1024 ** 2], gb: ['bytes', 1024 ** 3],
  ms: ['seconds', 0.001], s: ['seconds', 1], min: ['seconds', 60],
};

/** "16MB", "512kB", "10s", "500ms": PostgreSQL's unit words; a bare number is ambiguous and refused. */
export function parseReplicaLag(text: string): ReplicaLag {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$/.exec(text);
  const unit = m ? LAG_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || !unit) throw new HostListError('max_replica_lag', 'expected an amount of WAL (B, kB, MB, GB) or of time (ms, s, min), e.g. "16MB" or "10s"');
  const amount = Number(m[1]) * unit[1];
  return unit[0] === 'bytes' ? { bytes: amount } : { seconds: amount };
}

export function describeAddress(a: HostAddress): string {
  return a.host.startsWith('/') ? `${a.host}/.s.PGSQL.${a.port}` : `${a.host}:${a.port}`;
}

/** From a server's ParameterStatus values; null when it does not report them (before PostgreSQL 14). */
export function factsFromStatus(status: ReadonlyMap<string, string>): HostFacts | null {
  const hotStandby = status.get('in_hot_standby');
  if (hotStandby === undefined) return null;
  const standby = hotStandby === 'on';
  return { standby, readOnly: standby || status.get('default_transaction_read_only') === 'on' };
}

/** For servers that do not report in_hot_standby: one row, (in recovery, read only). */
export const ROLE_QUERY = "select pg_catalog.pg_is_in_recovery()::text, pg_catalog.current_setting('default_transaction_read_only')";

/**
 * The monitor's question: role, read-only default, and on a standby how far replay is behind
 * what it has received (bytes) and how old the last replayed commit is while replay is behind
 * (seconds; 0 once caught up, so an idle primary does not make a standby look stale).
 */
export const MONITOR_QUERY = `select pg_catalog.pg_is_in_recovery()::text,
  pg_catalog.current_setting('default_transaction_read_only'),
  case when pg_catalog.pg_is_in_recovery() then pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_receive_lsn(), pg_catalog.pg_last_wal_replay_lsn())::text end,
  case when pg_catalog.pg_is_in_recovery() and pg_catalog.pg_last_wal_receive_lsn() is distinct from pg_catalog.pg_last_wal_replay_lsn()
    then extract(epoch from pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp())::text else '0' end`;

/** What a logged-in server's host is: from its ParameterStatus (PostgreSQL 14+), else by asking. */
export async function readFacts(server: ServerConnection): Promise<HostFacts> {
  const reported = factsFromStatus(server.status);
  if (reported) return reported;
  const [row] = await server.query(ROLE_QUERY, []);
  const standby = row?.[0] === 'true';
  return { standby, readOnly: standby || row?.[1] === 'on' };
}

/** A refusal that says the host is not there now (PostgreSQL starting, or no answer), not that the login is wrong. */
export function hostUnavailable(err: PgError): boolean {
  return err.code === SqlState.CannotConnectNow || err.code === SqlState.ConnectionFailure;
}

/** Whether a host with these facts may serve an entry with `attrs` (libpq's definitions). */
export function acceptsFacts(attrs: TargetSessionAttrs, f: HostFacts): boolean {
  switch (attrs) {
    case 'read-write':
      return !f.readOnly;
    case 'read-only':
      return f.readOnly;
    case 'primary':
      return !f.standby;
    case 'standby':
      return f.standby;
    default:
      return true; // any, prefer-standby (a primary is its fallback)
  }
}

interface HostState {
  readonly address: HostAddress;
  readonly key: string;
  facts: HostFacts | null;
  /** Without the monitor, facts learned at a login are believed until then (then a login tries again). */
  factsUntil: number;
  lagging: boolean;
  /** A connection to it failed: not tried again before this time. */
  downUntil: number;
  lastError: string | null;
}

export function addressKey(a: HostAddress): string {
  return `${a.host}\0${a.port}`;
}

export class HostSet {
  private readonly hosts: HostState[];
  private readonly byKey = new Map<string, HostState>();
  /** Round-robin position: the host after the one the last new server went to. */
  private cursor = 0;

  constructor(
    addresses: readonly HostAddress[],
    /** Read at each decision, so a RELOAD's new policy applies at once. */
    private readonly policy: () => HostPolicy,
  ) {
    this.hosts = addresses.map((address) => ({ address, key: addressKey(address), facts: null, factsUntil: 0, lagging: false, downUntil: 0, lastError: null }));
    for (const h of this.hosts) this.byKey.set(h.key, h);
  }

  get addresses(): HostAddress[] {
    return this.hosts.map((h) => h.address);
  }

  /** The role checks matter: something other than any, or a lag limit. */
  get roleSensitive(): boolean {
    const p = this.policy();
    return p.attrs !== 'any' || p.maxLag !== null;
  }

  /**
   * The host for the next new server, or null when none may serve now (every host is down,
   * of the wrong role or lagging). Unknown hosts are tried; prefer-standby tries standbys
   * (known or unknown) before a known primary.
   */
  next(now = Date.now()): HostAddress | null {
    const pick = this.pick(now);
    if (!pick) return null;
    if (this.policy().balance === 'round-robin') this.cursor = this.hosts.indexOf(pick) + 1;
    return pick.address;
  }

  /** Some host may serve now (next() would not answer null); moves nothing. */
  hasCandidate(now = Date.now()): boolean {
    return this.pick(now) !== undefined;
  }

  /**
   * Every host that may serve now, best first, from the first host of the list (round-robin is
   * for the pool's own servers): where a connection outside the pool goes (auth_query,
   * KILL_SESSION, /readyz's probe). Moves nothing.
   */
  fitting(now = Date.now()): HostAddress[] {
    return this.ranked(now, 0).map((h) => h.address);
  }

  private pick(now: number): HostState | undefined {
    return this.ranked(now, this.policy().balance === 'round-robin' ? this.cursor : 0)[0];
  }

  /**
   * The hosts that may serve now, in the order they are tried from `start`: up (not skipped
   * after a failure) and not lagging, of a fitting role or not checked yet; prefer-standby as
   * libpq: standbys first (known, then not yet known), a primary only after them.
   */
  private ranked(now: number, start: number): HostState[] {
    const p = this.policy();
    const n = this.hosts.length;
    const up: HostState[] = [];
    for (let i = 0; i < n; i++) {
      const h = this.hosts[(start + i) % n]!;
      if (h.downUntil <= now && !h.lagging) up.push(h);
    }
    const facts = (h: HostState) => (p.checkIntervalMs > 0 || h.factsUntil > now ? h.facts : null);
    if (p.attrs === 'prefer-standby') {
      const standbys = up.filter((h) => facts(h)?.standby === true);
      const unknown = up.filter((h) => facts(h) === null);
      return [...standbys, ...unknown, ...up.filter((h) => facts(h)?.standby === false)];
    }
    return up.filter((h) => {
      const f = facts(h);
      return f === null || acceptsFacts(p.attrs, f);
    });
  }

  /** A server logged in (or the monitor answered): what its host is now. Returns whether it changed. */
  noteFacts(address: HostAddress, facts: HostFacts, now = Date.now()): boolean {
    const h = this.byKey.get(addressKey(address));
    if (!h) return false;
    const changed = h.facts === null || h.facts.standby !== facts.standby || h.facts.readOnly !== facts.readOnly;
    h.facts = facts;
    h.factsUntil = now + this.policy().retryMs;
    h.downUntil = 0;
    h.lastError = null;
    return changed;
  }

  /** The monitor's lag reading; returns whether the host's lagging flag changed. */
  noteLag(address: HostAddress, bytes: number | null, seconds: number | null): boolean {
    const h = this.byKey.get(addressKey(address));
    const limit = this.policy().maxLag;
    if (!h) return false;
    let lagging = false;
    if (limit && 'bytes' in limit) lagging = bytes !== null && bytes > limit.bytes;
    if (limit && 'seconds' in limit) lagging = seconds !== null && seconds > limit.seconds;
    const changed = lagging !== h.lagging;
    h.lagging = lagging;
    return changed;
  }

  /** A connection to the host failed: skip it for a moment. True when another host may still serve. */
  noteFailure(address: HostAddress, error: PgError, now = Date.now()): boolean {
    // A lone host is never skipped: the pool's own login retry decides when to try it again.
    if (this.hosts.length === 1) return false;
    const h = this.byKey.get(addressKey(address));
    if (h) {
      h.downUntil = now + this.policy().retryMs;
      h.lastError = error.message;
    }
    return this.hasCandidate(now);
  }

  /**
   * Whether an existing server may be handed out: its host (by the server's own latest
   * ParameterStatus, then by what the set knows) fits the entry and is not lagging; for
   * prefer-standby, a server on a primary is let go once a standby can serve again.
   */
  mismatch(server: HostedServer, now = Date.now()): HostMismatch | null {
    const p = this.policy();
    const h = this.byKey.get(addressKey(server.target));
    const facts = factsFromStatus(server.status) ?? h?.facts ?? null;
    if (facts && !acceptsFacts(p.attrs, facts)) return 'wrong_role';
    if (h?.lagging) return 'replica_lag';
    if (p.attrs === 'prefer-standby' && facts && !facts.standby && this.standbyPossible(now)) return 'standby_available';
    return null;
  }

  /** Some host that is up and not lagging is a standby, or has not been asked yet. */
  private standbyPossible(now: number): boolean {
    const p = this.policy();
    return this.hosts.some((h) => {
      const facts = p.checkIntervalMs > 0 || h.factsUntil > now ? h.facts : null;
      return facts?.standby !== false && !h.lagging && h.downUntil <= now;
    });
  }

  /** For an error when no host fits: each host and what is known of it. */
  describe(): string {
    return this.hosts
      .map((h) => {
        const what = h.lastError !== null ? 'unreachable' : h.facts === null ? 'not checked yet' : `${h.facts.standby ? 'standby' : 'primary'}${h.facts.readOnly && !h.facts.standby ? ', read-only' : ''}${h.lagging ? ', lagging' : ''}`;
        return `${describeAddress(h.address)} (${what})`;
      })
      .join(', ');
  }

  /** SHOW SERVERS / metrics: the role a server's host has, as far as is known. */
  roleOf(server: HostedServer): 'primary' | 'standby' | 'unknown' {
    const facts = factsFromStatus(server.status) ?? this.byKey.get(addressKey(server.target))?.facts ?? null;
    return facts === null ? 'unknown' : facts.standby ? 'standby' : 'primary';
  }
}

/** How the monitor reaches a host: a logged-in connection of its own, or the login's error. */
export type ProbeOpener = (address: HostAddress) => ServerConnection;

/**
 * Asks every host its role and replay lag every checkIntervalMs over one connection per host,
 * kept open between checks. Only runs for role-sensitive entries. `onChange` is told when a
 * host's role or lag state changed, so the pool can let go of servers that no longer fit and
 * open servers for clients that waited for a fitting host.
 */
export class HostMonitor {
  private readonly probes = new Map<string, ServerConnection>();
  private running = 0;
  private lastRun = 0;
  private stopped = false;

  constructor(
    private readonly hosts: HostSet,
    private readonly policy: () => HostPolicy,
    private readonly open: ProbeOpener,
    private readonly onChange: () => void,
  ) {}

  /** From the pool's tick: starts a round when one is due and none is running. */
  tick(now: number): void {
    const interval = this.policy().checkIntervalMs;
    if (this.stopped || interval <= 0 || !this.hosts.roleSensitive || this.running > 0 || now - this.lastRun < interval) return;
    this.lastRun = now;
    for (const address of this.hosts.addresses) {
      this.running++;
      this.check(address).finally(() => this.running--);
    }
  }

  private async check(address: HostAddress): Promise<void> {
    const key = addressKey(address);
    let probe = this.probes.get(key);
    try {
      if (!probe || probe.isClosed) {
        probe = this.open(address);
        this.probes.set(key, probe);
        await probe.login();
      }
      const [row] = await probe.query(MONITOR_QUERY, []);
      if (this.stopped || !row) return;
      const standby = row[0] === 'true';
      let changed = this.hosts.noteFacts(address, { standby, readOnly: standby || row[1] === 'on' });
      changed = this.hosts.noteLag(address, row[2] == null ? null : Number(row[2]), row[3] == null ? null : Number(row[3])) || changed;
      if (changed) this.onChange();
    } catch (err) {
      probe?.close();
      this.probes.delete(key);
      if (this.stopped) return;
      if (this.hosts.noteFailure(address, err as PgError)) this.onChange();
    }
  }

  stop(): void {
    this.stopped = true;
    for (const probe of this.probes.values()) probe.close();
    this.probes.clear();
  }
}

/**
 * A connection of Tessera's own outside any pool (auth_query, KILL_SESSION, the row-level
 * security check) to a host that would serve the entry: `hosts` in the order given (see
 * HostSet.fitting), each logged in and, unless `attrs` is any, its role checked as a pool's new
 * server's is. A host that does not answer, or is of the wrong role, is passed over; for
 * prefer-standby a primary is kept in reserve until no standby answered. Any other refusal (a
 * wrong password, say) is final, as it is for the pool. One host: its own error, as before lists.
 */
export async function openFitting(hosts: readonly HostAddress[], attrs: TargetSessionAttrs, open: (address: HostAddress) => ServerConnection): Promise<ServerConnection> {
  let reserve: ServerConnection | null = null;
  let lastError: PgError | null = null;
  const passed: string[] = [];
  for (const address of hosts) {
    const server = open(address);
    let facts: HostFacts;
    try {
      await server.login();
      if (attrs === 'any') return server;
      facts = await readFacts(server);
    } catch (err) {
      server.close();
      const error = err instanceof PgError ? err : PgError.fatal(SqlState.ConnectionFailure, String(err));
      if (!hostUnavailable(error)) {
        reserve?.close();
        throw error;
      }
      lastError = error;
      passed.push(`${describeAddress(address)} (unreachable: ${error.message})`);
      continue;
    }
    if (attrs === 'prefer-standby' ? facts.standby : acceptsFacts(attrs, facts)) {
      reserve?.close();
      return server;
    }
    if (attrs === 'prefer-standby' && reserve === null) reserve = server;
    else server.close();
    passed.push(`${describeAddress(address)} (${facts.standby ? 'standby' : facts.readOnly ? 'primary, read-only' : 'primary'})`);
  }
  if (reserve) return reserve;
  if (hosts.length === 1 && lastError) throw lastError;
  throw PgError.fatal(SqlState.ConnectionFailure, `no host matches target_session_attrs "${attrs}" (${passed.join(', ') || 'no hosts'})`);
}
