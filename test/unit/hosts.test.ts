// Host selection for a database entry's host list (src/pool/hosts.ts), as pure decisions: what
// is known of each host goes in (a login's ParameterStatus, the monitor's lag reading, a failed
// connection, each at a given time), and out comes the host the next server goes to, the hosts a
// connection outside the pool may use, and whether a server already open may be handed out.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HostSet, factsFromStatus, openFitting, type HostAddress, type HostFacts, type HostPolicy, type TargetSessionAttrs } from '../../src/pool/hosts.js';
import { ServerConnection } from '../../src/pool/server-connection.js';
import { PgError } from '../../src/protocol/messages.js';

const A = { host: 'pg-a', port: 5432 };
const B = { host: 'pg-b', port: 5432 };
const C = { host: 'pg-c', port: 5433 };

const PRIMARY: HostFacts = { standby: false, readOnly: false };
const STANDBY: HostFacts = { standby: true, readOnly: true };
/** A primary whose default_transaction_read_only is on (read-only, but not in recovery). */
const READ_ONLY_PRIMARY: HostFacts = { standby: false, readOnly: true };

const REFUSED = PgError.fatal('08006', 'connect ECONNREFUSED');
const T0 = 1_000_000;

function policy(extra: Partial<HostPolicy> = {}): HostPolicy {
  return { attrs: 'any', balance: 'round-robin', maxLag: null, checkIntervalMs: 5000, retryMs: 1000, ...extra };
}

function hostSet(addresses: HostAddress[], extra: Partial<HostPolicy> = {}): HostSet {
  const p = policy(extra);
  return new HostSet(addresses, () => p);
}

const name = (a: HostAddress | null) => (a === null ? null : a.host);

/** The hosts `n` new servers in a row go to. */
function nextHosts(set: HostSet, n: number, now = T0): (string | null)[] {
  return Array.from({ length: n }, () => name(set.next(now)));
}

/** A server on `target` whose login reported these ParameterStatus values. */
function server(target: HostAddress, status: Record<string, string> = {}) {
  return { target: { ...target, database: 'db', user: 'u' } as never, status: new Map(Object.entries(status)) };
}

test('load_balance_hosts round-robin spreads new servers over the hosts in turn; disable always starts at the first', () => {
  assert.equal(nextHosts(hostSet([A, B, C], { balance: 'round-robin' }), 6), ['pg-a', 'pg-b', 'pg-c', 'pg-a', 'pg-b', 'pg-c']);
  assert.equal(nextHosts(hostSet([A, B, C], { balance: 'disable' }), 3), ['pg-a', 'pg-a', 'pg-a']);
  // hasCandidate and fitting() answer without moving the round-robin position.
  const set = hostSet([A, B, C]);
  assert.is(name(set.next(T0)), 'pg-a');
  assert.ok(set.hasCandidate(T0));
  assert.equal(set.fitting(T0).map(name), ['pg-a', 'pg-b', 'pg-c']);
  assert.is(name(set.next(T0)), 'pg-b');
});

test('a host whose connection failed is skipped for retryMs, then tried again; with disable the next host takes over', () => {
  const set = hostSet([A, B, C], { balance: 'disable', retryMs: 1000 });
  assert.ok(set.noteFailure(A, REFUSED, T0), 'another host may still serve');
  assert.equal(nextHosts(set, 2, T0 + 999), ['pg-b', 'pg-b']);
  assert.equal(set.fitting(T0 + 999).map(name), ['pg-b', 'pg-c']);
  assert.match(set.describe(), /pg-a:5432 \(unreachable\)/);
  assert.is(name(set.next(T0 + 1000)), 'pg-a', 'back once retryMs has passed');
  // A login that succeeds there clears the failure at once.
  set.noteFailure(A, REFUSED, T0 + 2000);
  set.noteFacts(A, PRIMARY, T0 + 2001);
  assert.is(name(set.next(T0 + 2001)), 'pg-a');
});

test('round-robin skips a failed host and keeps turning over the others', () => {
  const set = hostSet([A, B, C]);
  set.noteFailure(B, REFUSED, T0);
  assert.equal(nextHosts(set, 4, T0 + 10), ['pg-a', 'pg-c', 'pg-a', 'pg-c']);
});

test('every host failed: nothing to pick, and the failure says so; a lone host is never skipped (the pool retries it)', () => {
  const set = hostSet([A, B]);
  assert.ok(set.noteFailure(A, REFUSED, T0));
  assert.not.ok(set.noteFailure(B, REFUSED, T0), 'no host left');
  assert.is(set.next(T0 + 1), null);
  assert.not.ok(set.hasCandidate(T0 + 1));
  assert.equal(set.fitting(T0 + 1), []);
  assert.is(set.describe(), 'pg-a:5432 (unreachable), pg-b:5432 (unreachable)');

  const lone = hostSet([A]);
  assert.not.ok(lone.noteFailure(A, REFUSED, T0));
  assert.is(name(lone.next(T0 + 1)), 'pg-a');
});

/** Three hosts of known roles: a primary, a standby, and a primary with default_transaction_read_only on. */
function knownRoles(attrs: TargetSessionAttrs): HostSet {
  const set = hostSet([A, B, C], { attrs });
  set.noteFacts(A, PRIMARY, T0);
  set.noteFacts(B, STANDBY, T0);
  set.noteFacts(C, READ_ONLY_PRIMARY, T0);
  return set;
}

test("target_session_attrs with hosts of known roles: each of libpq's six values picks the hosts libpq would", () => {
  const expected: Record<TargetSessionAttrs, string[]> = {
    any: ['pg-a', 'pg-b', 'pg-c'],
    'read-write': ['pg-a'],
    'read-only': ['pg-b', 'pg-c'],
    primary: ['pg-a', 'pg-c'],
    standby: ['pg-b'],
    // Standbys first; a primary only after every standby.
    'prefer-standby': ['pg-b', 'pg-a', 'pg-c'],
  };
  for (const [attrs, hosts] of Object.entries(expected) as [TargetSessionAttrs, string[]][]) {
    const set = knownRoles(attrs);
    assert.equal(set.fitting(T0).map(name), hosts, attrs);
    // Round-robin over six new servers lands only on fitting hosts (prefer-standby: only the standby).
    const landed = new Set(nextHosts(set, 6, T0));
    assert.equal([...landed].sort(), attrs === 'prefer-standby' ? ['pg-b'] : [...hosts].sort(), `${attrs}: ${[...landed]}`);
  }
});

test('a host not checked yet is tried (its login tells); prefer-standby tries it before a known primary', () => {
  const rw = hostSet([A, B], { attrs: 'read-write', balance: 'disable' });
  rw.noteFacts(A, STANDBY, T0);
  assert.is(name(rw.next(T0)), 'pg-b');
  const ps = hostSet([A, B], { attrs: 'prefer-standby', balance: 'disable' });
  ps.noteFacts(A, PRIMARY, T0);
  assert.equal(ps.fitting(T0).map(name), ['pg-b', 'pg-a']);
  ps.noteFacts(B, PRIMARY, T0);
  assert.equal(ps.fitting(T0).map(name), ['pg-a', 'pg-b'], 'no standby anywhere: the primaries, in order');
});

test('no host of the list matches: nothing is picked, describe names each host and its role, an open server is of the wrong role', () => {
  const set = hostSet([A, C], { attrs: 'standby' });
  set.noteFacts(A, PRIMARY, T0);
  set.noteFacts(C, READ_ONLY_PRIMARY, T0);
  assert.is(set.next(T0), null);
  assert.not.ok(set.hasCandidate(T0));
  assert.is(set.describe(), 'pg-a:5432 (primary), pg-c:5433 (primary, read-only)');
  assert.is(set.mismatch(server(A), T0), 'wrong_role');
  // The server's own ParameterStatus wins over what the set knows of its host (PostgreSQL 14+).
  assert.is(set.mismatch(server(A, { in_hot_standby: 'on' }), T0), null);
});

test('without the monitor (role_check_interval 0) roles learned at a login are believed for retryMs, then the host is tried again', () => {
  const set = hostSet([A, B], { attrs: 'read-write', checkIntervalMs: 0, retryMs: 1000, balance: 'disable' });
  set.noteFacts(A, STANDBY, T0);
  assert.is(name(set.next(T0 + 999)), 'pg-b');
  assert.is(name(set.next(T0 + 1000)), 'pg-a', 'a promotion would be found at the next login');
});

test('max_replica_lag in bytes: a standby past it is not picked and its servers are not handed out, until it catches up', () => {
  const set = hostSet([A, B], { attrs: 'prefer-standby', maxLag: { bytes: 65536 } });
  set.noteFacts(A, PRIMARY, T0);
  set.noteFacts(B, STANDBY, T0);
  assert.equal(set.fitting(T0).map(name), ['pg-b', 'pg-a']);
  assert.not.ok(set.noteLag(B, 65536, 0), 'at the limit is not past it');
  assert.ok(set.noteLag(B, 65537, 0), 'past the limit: changed');
  assert.equal(set.fitting(T0).map(name), ['pg-a']);
  assert.equal(nextHosts(set, 3, T0), ['pg-a', 'pg-a', 'pg-a']);
  assert.is(set.mismatch(server(B, { in_hot_standby: 'on' }), T0), 'replica_lag');
  assert.is(set.mismatch(server(A), T0), null, 'no standby may serve: the primary is kept');
  assert.match(set.describe(), /pg-b:5432 \(standby, lagging\)/);
  assert.ok(set.noteLag(B, 0, 0), 'caught up: changed');
  assert.equal(set.fitting(T0).map(name), ['pg-b', 'pg-a']);
  assert.is(set.mismatch(server(B, { in_hot_standby: 'on' }), T0), null);
  assert.is(set.mismatch(server(A), T0), 'standby_available', 'prefer-standby lets a primary server go once a standby can serve');
});

test('max_replica_lag in seconds reads the replay age, not the byte count; no limit: never lagging', () => {
  const set = hostSet([A, B], { maxLag: { seconds: 10 } });
  assert.not.ok(set.noteLag(B, 10 ** 9, 10));
  assert.ok(set.noteLag(B, 0, 10.5));
  assert.equal(set.fitting(T0).map(name), ['pg-a']);
  assert.ok(set.noteLag(B, null, null), 'a primary (no replay) is not lagging');
  const unlimited = hostSet([A, B]);
  assert.not.ok(unlimited.noteLag(B, 10 ** 12, 10 ** 6));
  assert.equal(unlimited.fitting(T0).map(name), ['pg-a', 'pg-b']);
});

test('a server on a host that changed role (a promotion) is let go; roleOf says what each server is', () => {
  const set = hostSet([A, B], { attrs: 'read-write' });
  set.noteFacts(A, PRIMARY, T0);
  set.noteFacts(B, STANDBY, T0);
  const onA = server(A);
  assert.is(set.mismatch(onA, T0), null);
  assert.is(set.roleOf(onA), 'primary');
  // A was demoted and B promoted; the monitor reports both.
  assert.ok(set.noteFacts(A, STANDBY, T0 + 1));
  assert.ok(set.noteFacts(B, PRIMARY, T0 + 1));
  assert.not.ok(set.noteFacts(B, PRIMARY, T0 + 2), 'same role again: no change');
  assert.is(set.mismatch(onA, T0 + 2), 'wrong_role');
  assert.is(set.roleOf(onA), 'standby');
  assert.equal(set.fitting(T0 + 2).map(name), ['pg-b']);
  assert.is(hostSet([A]).roleOf(server(A)), 'unknown');
});

test('factsFromStatus: in_hot_standby and default_transaction_read_only as PostgreSQL 14+ report them; null before', () => {
  assert.equal(factsFromStatus(new Map([['in_hot_standby', 'on']])), STANDBY);
  assert.equal(factsFromStatus(new Map([['in_hot_standby', 'off'], ['default_transaction_read_only', 'off']])), PRIMARY);
  assert.equal(factsFromStatus(new Map([['in_hot_standby', 'off'], ['default_transaction_read_only', 'on']])), READ_ONLY_PRIMARY);
  assert.is(factsFromStatus(new Map([['server_version', '13.9']])), null);
});

/** A host as a one-off connection meets it: refuses with an error, or logs in and reports a role (PostgreSQL 14+). */
type FakeHost = PgError | HostFacts;

class FakeServer extends ServerConnection {
  closedByCaller = false;
  constructor(address: HostAddress, private readonly host: FakeHost) {
    super({ ...address, database: 'db', user: 'u', credentials: { kind: 'none' }, params: new Map(), connectTimeoutMs: 1000, socket: { tcp_keepalive: false, tcp_keepidle: 0, tcp_keepintvl: 0, tcp_keepcnt: 0, tcp_user_timeout: 0 }, tls: { mode: 'disable' } as never }, '', () => {});
  }
  override login(): Promise<void> {
    if (this.host instanceof PgError) return Promise.reject(this.host);
    this.status.set('in_hot_standby', this.host.standby ? 'on' : 'off');
    this.status.set('default_transaction_read_only', this.host.readOnly ? 'on' : 'off');
    return Promise.resolve();
  }
  override close(): void {
    this.closedByCaller = true;
  }
}

/** openFitting over hosts A, B, C as given; which host it returned (or its error) and which connections it left open. */
async function oneOff(attrs: TargetSessionAttrs, hosts: [HostAddress, FakeHost][]): Promise<{ got: string | null; error: PgError | null; open: string[] }> {
  const made: FakeServer[] = [];
  const byHost = new Map(hosts.map(([a, h]) => [a.host, h]));
  let got: ServerConnection | null = null;
  let error: PgError | null = null;
  try {
    got = await openFitting(hosts.map(([a]) => a), attrs, (address) => {
      const s = new FakeServer(address, byHost.get(address.host)!);
      made.push(s);
      return s;
    });
  } catch (err) {
    error = err as PgError;
  }
  return { got: got?.target.host ?? null, error, open: made.filter((s) => !s.closedByCaller).map((s) => s.target.host) };
}

test('a connection outside the pool passes over a host that is down and one of the wrong role, and closes what it does not use', async () => {
  assert.equal(await oneOff('read-write', [[A, REFUSED], [B, STANDBY], [C, PRIMARY]]), { got: 'pg-c', error: null, open: ['pg-c'] });
  assert.equal(await oneOff('any', [[A, REFUSED], [B, STANDBY], [C, PRIMARY]]), { got: 'pg-b', error: null, open: ['pg-b'] });
  assert.equal(await oneOff('standby', [[A, PRIMARY], [B, STANDBY]]), { got: 'pg-b', error: null, open: ['pg-b'] });
});

test('prefer-standby keeps a primary in reserve until no standby answered', async () => {
  assert.equal(await oneOff('prefer-standby', [[A, PRIMARY], [B, REFUSED], [C, STANDBY]]), { got: 'pg-c', error: null, open: ['pg-c'] });
  assert.equal(await oneOff('prefer-standby', [[A, PRIMARY], [B, REFUSED], [C, PRIMARY]]), { got: 'pg-a', error: null, open: ['pg-a'] });
});

test('a refusal that is not about the host (a wrong password) is final; nothing fitting is a clear 08006 naming each host', async () => {
  const wrong = PgError.fatal('28P01', 'password authentication failed for user "u"');
  const refusedLogin = await oneOff('any', [[A, wrong], [B, PRIMARY]]);
  assert.is(refusedLogin.error, wrong);
  assert.equal(refusedLogin.open, []);
  const none = await oneOff('read-write', [[A, REFUSED], [B, STANDBY], [C, READ_ONLY_PRIMARY]]);
  assert.is(none.error?.code, '08006');
  assert.is(none.error?.message, 'no host matches target_session_attrs "read-write" (pg-a:5432 (unreachable: connect ECONNREFUSED), pg-b:5432 (standby), pg-c:5433 (primary, read-only))');
  assert.equal(none.open, []);
  // A lone host that does not answer: its own error, as before host lists.
  assert.is((await oneOff('read-write', [[A, REFUSED]])).error, REFUSED);
});

test.run();
