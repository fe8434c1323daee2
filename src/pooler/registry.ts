/**
 * What is connected right now: the pools (one per database and server user), the clients, and
 * the clients by cancel key. The one owner of these lists; everything else reads them here.
 */
import type { Pool } from '../pool/pool.js';
import type { ClientConnection } from '../frontend/client-connection.js';

export class Registry {
  /** By `${database}\0${serverUser}`. */
  readonly pools = new Map<string, Pool>();
  readonly clients = new Set<ClientConnection>();
  private readonly byPid = new Map<number, ClientConnection>();
  /** The database name a pool serves (the name the client asked for, which "*" may have matched). */
  private readonly databaseOfPool = new WeakMap<Pool, string>();

  /** A new client; it draws cancel keys until its pid is unused (two live clients with one pid would leave the first without a way to cancel). */
  addClient(client: ClientConnection): void {
    this.clients.add(client);
    while (this.byPid.has(client.pid)) client.rekey();
    this.byPid.set(client.pid, client);
  }

  removeClient(client: ClientConnection): void {
    this.clients.delete(client);
    if (this.byPid.get(client.pid) === client) this.byPid.delete(client.pid);
  }

  /** The client a cancel key names, if its secret matches. */
  clientWithKey(pid: number, secret: number): ClientConnection | undefined {
    const client = this.byPid.get(pid);
    return client && client.secret === secret ? client : undefined;
  }

  /** The pool for a database and server user, made by `create` the first time. */
  poolFor(database: string, serverUser: string, create: () => Pool): { pool: Pool; created: boolean } {
    const key = `${database}\u0000${serverUser}`;
    const found = this.pools.get(key);
    if (found) return { pool: found, created: false };
    const pool = create();
    this.pools.set(key, pool);
    this.databaseOfPool.set(pool, database);
    return { pool, created: true };
  }

  /** A pool no longer kept (autodb_idle_timeout); the caller closes it. */
  removePool(pool: Pool): void {
    for (const [key, p] of this.pools) if (p === pool) this.pools.delete(key);
  }

  /** The pools some client (logged in or logging in) belongs to. */
  poolsWithClients(): Set<Pool> {
    const pools = new Set<Pool>();
    for (const client of this.clients) if (client.pool) pools.add(client.pool);
    return pools;
  }

  databaseNameOf(pool: Pool): string {
    return this.databaseOfPool.get(pool) ?? pool.name;
  }

  /** The pools of one database (every pool without one). */
  poolsOf(database?: string): Pool[] {
    return [...this.pools.values()].filter((p) => database === undefined || this.databaseNameOf(p) === database);
  }

  /** Server connections open now for a database and for a server user (max_db_connections, max_user_connections). */
  serverCounts(database: string, user: string): { database: number; user: number } {
    let db = 0;
    let usr = 0;
    for (const pool of this.pools.values()) {
      if (this.databaseNameOf(pool) === database) db += pool.servers.size;
      if (pool.target.user === user) usr += pool.servers.size;
    }
    return { database: db, user: usr };
  }

  /** Logged-in clients of a user other than `except` (max_user_client_connections). */
  clientsOfUser(user: string, except: object): number {
    let n = 0;
    for (const other of this.clients) if (other.user === user && other !== except) n++;
    return n;
  }
}
