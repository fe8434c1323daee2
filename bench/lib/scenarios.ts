// The scenarios, by id. Titles depend on the sizes in use (--quick shrinks the big ones).
import { DB_SESSION, DB_TX, DB_TX_AUTO } from './poolers.js';

export interface SizeOptions {
  quick: boolean;
  /** Concurrent loops of the session-token storm. */
  tokenConcurrency: number;
  /** Idle clients of the memory scenario. */
  memoryClients: number;
  poolSize: number;
}

/** Sizes when not given on the command line. */
export function defaultSizes(quick: boolean): SizeOptions {
  return { quick, tokenConcurrency: quick ? 4 : 16, memoryClients: quick ? 100 : 10000, poolSize: 20 };
}

export interface PgbenchScenario {
  kind: 'pgbench';
  id: string;
  title: string;
  /** Database name through a pooler (picks the pool mode); direct uses the bench database. */
  poolerDb: string;
  clients: number;
  flags: string[];
}

export interface TokenScenario {
  kind: 'token';
  id: string;
  title: string;
  concurrency: number;
}

export interface MemoryScenario {
  kind: 'memory';
  id: string;
  title: string;
  clients: number;
}

/** pgbench through one Tessera with client TLS on, in plaintext (PGSSLMODE=disable) and over TLS (require). */
export interface TlsScenario {
  kind: 'tls';
  id: string;
  title: string;
  poolerDb: string;
  clients: number;
  flags: string[];
}

/** node-postgres clients running a parameterised query (the unnamed extended protocol) in a loop. */
export interface DriverScenario {
  kind: 'driver';
  id: string;
  title: string;
  poolerDb: string;
  clients: number;
}

export type Scenario = PgbenchScenario | TokenScenario | MemoryScenario | TlsScenario | DriverScenario;

export function scenarios(o: SizeOptions): Scenario[] {
  // 500 clients over 20 backends; --quick keeps the shape (many more clients than backends) smaller.
  const many = o.quick ? 60 : 500;
  return [
    { kind: 'pgbench', id: 'select-session', title: 'pgbench -S, 16 clients, session mode', poolerDb: DB_SESSION, clients: 16, flags: ['-S'] },
    { kind: 'pgbench', id: 'select-tx', title: 'pgbench -S, 16 clients, transaction mode', poolerDb: DB_TX, clients: 16, flags: ['-S'] },
    {
      kind: 'pgbench',
      id: 'select-tx-many',
      title: `pgbench -S, ${many} clients / ${o.poolSize} backends, transaction mode`,
      poolerDb: DB_TX,
      clients: many,
      flags: ['-S'],
    },
    { kind: 'pgbench', id: 'select-extended', title: 'pgbench -S -M extended, 16 clients, transaction mode', poolerDb: DB_TX, clients: 16, flags: ['-S', '-M', 'extended'] },
    {
      kind: 'pgbench',
      id: 'select-extended-auto',
      title: 'pgbench -S -M extended, 16 clients, transaction mode, Tessera auto_prepare on',
      poolerDb: DB_TX_AUTO,
      clients: 16,
      flags: ['-S', '-M', 'extended'],
    },
    { kind: 'pgbench', id: 'select-prepared', title: 'pgbench -S -M prepared, 16 clients, transaction mode', poolerDb: DB_TX, clients: 16, flags: ['-S', '-M', 'prepared'] },
    { kind: 'driver', id: 'node-postgres', title: 'node-postgres parameterised select, 16 clients, transaction mode', poolerDb: DB_TX, clients: 16 },
    { kind: 'driver', id: 'node-postgres-auto', title: 'node-postgres parameterised select, 16 clients, transaction mode, Tessera auto_prepare on', poolerDb: DB_TX_AUTO, clients: 16 },
    { kind: 'pgbench', id: 'connect', title: 'pgbench -S -C (connection per transaction), 16 clients', poolerDb: DB_TX, clients: 16, flags: ['-S', '-C'] },
    { kind: 'pgbench', id: 'tpcb', title: 'pgbench TPC-B-like, 16 clients, transaction mode', poolerDb: DB_TX, clients: 16, flags: [] },
    { kind: 'token', id: 'token-storm', title: `session-token connect/query/disconnect, ${o.tokenConcurrency} loops`, concurrency: o.tokenConcurrency },
    { kind: 'tls', id: 'tls-select', title: 'TLS cost: pgbench -S through Tessera, TLS vs plaintext, 16 clients', poolerDb: DB_TX, clients: 16, flags: ['-S'] },
    { kind: 'tls', id: 'tls-connect', title: 'TLS cost: pgbench -S -C through Tessera, TLS vs plaintext, 16 clients', poolerDb: DB_TX, clients: 16, flags: ['-S', '-C'] },
    { kind: 'memory', id: 'memory', title: `memory per idle client, ${o.memoryClients} clients`, clients: o.memoryClients },
  ];
}

export function unitOf(s: Scenario): string {
  return s.kind === 'pgbench' || s.kind === 'tls' ? 'tps' : s.kind === 'driver' ? 'queries/s' : s.kind === 'token' ? 'connections/s' : 'KB';
}
