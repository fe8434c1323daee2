/**
 * The pooler's life: listening on every listen_addr address and the Unix socket, accepting
 * clients, SUSPEND and RESUME of every socket, and shutting down in order (PgBouncer's three
 * modes).
 */
import net from 'node:net';
import { unlink } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import { PgError, SqlState } from '../protocol/messages.js';
import type { ShutdownMode } from '../admin/operations.js';
import type { ClientConnection } from '../frontend/client-connection.js';
import { applySocketOptions } from '../net/socket-options.js';
import { beginSuspension, endSuspension } from '../net/suspension.js';
import { workerCount } from '../net/worker-identity.js';
import { log, logsDebug } from '../log.js';
import type { Registry } from './registry.js';
import type { Janitor } from './janitor.js';

/** Shutting down, a transaction-mode client quiet this long between transactions is closed. */
const QUIET_CLOSE_MS = 1000;

/** What a client hears when shutdown closes its connection (PostgreSQL's SQLSTATE for it). */
const shutdownNotice = (): PgError => PgError.fatal(SqlState.AdminShutdown, 'terminating connection due to pooler shutdown');

export class Runtime {
  private readonly listeners: net.Server[] = [];
  private stopping = false;
  private stopped: Promise<void> = Promise.resolve();
  private shutdownDeadline = Infinity;
  /** Shutdown waits for clients to leave (SIGTERM), else only for servers to be released. */
  private waitForClients = true;

  constructor(
    private readonly registry: Registry,
    private readonly janitor: Janitor,
    private readonly config: () => Readonly<Config>,
    /** A client object for a socket just accepted. */
    private readonly newClient: (socket: net.Socket) => ClientConnection,
  ) {}

  get isStopping(): boolean {
    return this.stopping;
  }

  /** Some listen_addr address or the Unix socket accepts clients (/readyz). */
  get isListening(): boolean {
    return this.listeners.some((s) => s.listening);
  }

  /**
   * Starts listening on every listen_addr address and on the Unix socket, and the janitor;
   * resolves with the first TCP address (or null when there is none).
   */
  async listen(): Promise<net.AddressInfo | null> {
    const c = this.config();
    const hosts = c.listen_addr.split(',').map((h) => h.trim()).filter(Boolean);
    let first: net.AddressInfo | null = null;
    for (const host of hosts) {
      // "*": every address, IPv4 and IPv6 (Node's default dual-stack listen).
      const server = await this.listenOn({ host: host === '*' ? undefined : host, port: c.listen_port, backlog: 128, ...ownAcceptQueue(c.listen_port) });
      const address = server.address() as net.AddressInfo;
      first ??= address;
      log.info({ addr: address.address, port: address.port }, 'listening');
    }
    if (c.unix_socket_dir) {
      const path = `${c.unix_socket_dir}/.s.PGSQL.${c.listen_port}`;
      // With workers the primary clears a stale socket once, before any worker listens.
      if (workerCount === 1) await removeStaleSocket(path);
      await this.listenOn({ path });
      log.info({ socket: path }, 'listening');
    }
    this.janitor.start();
    return first;
  }

  private async listenOn(options: net.ListenOptions & { reusePort?: boolean }): Promise<net.Server> {
    const server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.listeners.push(server);
    return server;
  }

  private accept(socket: net.Socket): void {
    // The config carries the tcp_* settings under their own names: no copy per connection.
    applySocketOptions(socket, this.config());
    const client = this.newClient(socket);
    // Under SUSPEND it is let in (the console must stay reachable); its login waits for RESUME.
    this.registry.addClient(client);
    if (logsDebug()) log.debug({ client: client.id, addr: client.remoteAddress }, 'client connected');
  }

  /**
   * Stops accepting, then waits for up to `graceMs`, as PgBouncer's SHUTDOWN modes: until every
   * client has left (`wait_for_clients`, SIGTERM), until no server is in use (`wait_for_servers`,
   * SIGINT: idle clients are then cut off), or not at all (`immediate`, SIGQUIT). A later call can
   * only shorten the wait. Resolves when every client and server connection is closed.
   */
  async shutdown(graceMs: number, mode: ShutdownMode = 'wait_for_clients'): Promise<void> {
    const deadline = mode === 'immediate' ? Date.now() : Date.now() + graceMs;
    this.shutdownDeadline = Math.min(this.shutdownDeadline, deadline);
    if (mode === 'wait_for_servers') {
      this.waitForClients = false;
      // As PAUSE: no server for a new transaction; running ones finish (stillBusy waits for them).
      for (const pool of this.registry.pools.values()) void pool.pause();
    }
    if (this.stopping) return this.stopped;
    // First, so a readiness check reading isStopping (issue 17's endpoint) goes unready before
    // anything else changes.
    this.stopping = true;
    this.waitForClients = mode === 'wait_for_clients';
    for (const server of this.listeners) server.close();
    // Transaction-mode clients inside a transaction leave as it ends; the loop below closes the quiet ones.
    for (const client of this.registry.clients) client.leaveAtTransactionEnd(shutdownNotice());
    const pools = this.registry.pools;
    this.stopped = (async () => {
      while (this.stillBusy() && Date.now() < this.shutdownDeadline) {
        // Idle servers are not needed by anyone new; close them early.
        for (const pool of pools.values()) pool.closeIdle();
        // SIGTERM under a load balancer: a transaction-mode client leaves at its next transaction
        // boundary and reconnects elsewhere; session-mode clients are waited for as before.
        // (Clients inside a transaction close themselves as it ends: leaveAtTransactionEnd above.)
        if (this.waitForClients) this.closeBetweenTransactions();
        // WAIT_FOR_SERVERS: a client waiting for a server would wait for nothing; tell it now.
        if (!this.waitForClients) {
          for (const client of this.registry.clients) if (client.isWaiting) client.fail(shutdownNotice());
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const client of [...this.registry.clients]) {
        // A query still running would otherwise go on in PostgreSQL after we hang up.
        if (client.server && client.server.outstanding > 0) client.server.cancel();
        client.fail(shutdownNotice());
      }
      for (const pool of pools.values()) pool.close();
      this.janitor.stop();
      // Give Terminate and cancel messages a moment to leave.
      await new Promise((r) => setTimeout(r, 50));
    })();
    return this.stopped;
  }

  /**
   * Transaction-mode clients that have been quiet a while (idle in an application's pool): a
   * busy one is closed as its transaction ends instead, the notice riding with its last
   * ReadyForQuery (ClientConnection.endTransaction), while closing one that has just finished
   * could meet the next transaction it is sending.
   */
  private closeBetweenTransactions(): void {
    const quietSince = Date.now() - QUIET_CLOSE_MS;
    for (const client of [...this.registry.clients]) {
      if (client.betweenTransactions && client.lastActiveAt < quietSince) client.fail(shutdownNotice());
    }
  }

  private stillBusy(): boolean {
    if (this.waitForClients) return this.registry.clients.size > 0;
    for (const pool of this.registry.pools.values()) if (pool.inUse()) return true;
    return false;
  }

  /**
   * SUSPEND: every client (but the admin console's) and server socket stops reading; resolves once
   * all their output has been sent. One that has not flushed within suspend_timeout is closed.
   */
  async suspend(): Promise<void> {
    beginSuspension();
    const sockets = this.suspendableSockets();
    for (const s of sockets) s.pause();
    const deadline = Date.now() + this.config().suspend_timeout * 1000;
    while (sockets.some((s) => !s.destroyed && s.writableLength > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const s of sockets) if (!s.destroyed && s.writableLength > 0) s.destroy();
    log.info({ sockets: sockets.length }, 'suspended');
  }

  /** RESUME after SUSPEND. */
  unsuspend(): void {
    endSuspension();
    for (const s of this.suspendableSockets()) s.resume();
    log.info('resumed after SUSPEND');
  }

  private suspendableSockets(): net.Socket[] {
    const sockets: net.Socket[] = [];
    for (const c of this.registry.clients) if (!c.admin) sockets.push(c.socket);
    for (const pool of this.registry.pools.values()) for (const s of pool.servers) sockets.push(s.socket);
    return sockets;
  }
}

/**
 * A socket file left by a Tessera that died is removed; one that answers belongs to a running
 * server, and listening would fail with EADDRINUSE as it should.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (!alive) await unlink(path).catch(() => {});
}

/** Node 22.12 and later can listen with SO_REUSEPORT (net.Server.listen's reusePort). */
const [major, minor] = process.versions.node.split('.').map(Number);
export const REUSE_PORT_SUPPORTED = major > 22 || (major === 22 && minor >= 12);

/**
 * With workers, each worker listens on its own SO_REUSEPORT socket where Node can, so the kernel
 * gives each connection to one worker's accept queue; node:cluster's shared socket (SCHED_NONE)
 * wakes every worker for each connection instead. A port of 0 would give each worker its own
 * random port, so it keeps the shared socket.
 */
function ownAcceptQueue(port: number): { exclusive?: boolean; reusePort?: boolean } {
  if (workerCount === 1 || port === 0 || !REUSE_PORT_SUPPORTED) return {};
  return { exclusive: true, reusePort: true };
}
