/**
 * The running pooler: accepts clients, resolves their database and pool, owns the pools, the
 * cancel-key registry and the janitor, and shuts down in order.
 */
import net from 'node:net';
import { unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Config, DatabaseConfig } from '../config/schema.js';
import type { StoredSecret } from '../auth/secret.js';
import { PgError, SqlState } from '../protocol/messages.js';
import { Pool, DISCARD_ALL_KEEPING_PLANS, isDiscardAll, type PoolSettings } from '../pool/pool.js';
import { ServerConnection, type ServerCredentials, type ServerTarget } from '../pool/server-connection.js';
import { ClientConnection, ClientPhase, type ClientHost } from './client-connection.js';
import { PasswordAuthenticator, SessionTokenAuthenticator, LookupAuthenticator, takeSessionCredentials, refuse, type Authenticator, type AuthType } from './client-auth.js';
import { lookupSecret } from '../pool/auth-query.js';
import { loadHba, hbaMethod, type HbaRules } from '../auth/hba.js';
import { LoginLimiter } from './login-limiter.js';
import { applySocketOptions, type SocketOptions } from './socket-options.js';
import { log } from '../log.js';
import { runAdminQuery } from '../admin/console.js';
import type { ShutdownMode } from '../admin/view.js';
import { ProxyAdminView } from './admin-view.js';
import { loadAnyConfig, convertSetting } from '../config/ini.js';
import { shareOf, workerCount, workerIndex, workerOfPid } from '../workers/identity.js';
import { suspension } from './suspension.js';
import type { WorkerLink } from '../workers/worker-link.js';
import { ClusterAdminView } from '../workers/merge.js';
import { parseConfig, ConfigError } from '../config/load.js';
import { loadUserlist } from '../auth/userlist.js';
import { tlsContextsFrom, isLoopback, TlsSettingError, type ClientTls, type ServerTls } from '../tls/contexts.js';
import { PoolerStats } from '../metrics/pooler-stats.js';

/** Where one of Tessera's own out-of-pool connections goes, and as whom. */
type OneOffTarget = Omit<ServerTarget, 'params' | 'connectTimeoutMs' | 'socket' | 'tls'>;

/** The admin console's virtual database, as in PgBouncer. */
const ADMIN_DB = 'pgbouncer';

export interface ProxyOptions {
  config: Readonly<Config>;
  /** Where the config came from, for RELOAD and SIGHUP. */
  configPath?: string;
  /** What SHUTDOWN from the admin console does (the CLI exits the process). */
  onShutdown?: (mode: ShutdownMode) => void;
  /** auth_file's secrets by user name. */
  userlist: ReadonlyMap<string, StoredSecret>;
  /** Address of the embedded PostgreSQL, for database entries with "embedded": true. */
  embedded?: { host: string; port: number };
}

/** Where a client's database name leads: the config entry and the name it matched under. */
interface ResolvedDatabase {
  name: string;
  entry: DatabaseConfig;
}

const JANITOR_INTERVAL_MS = 500;
const NOT_REPLICATION = new Set(['', 'false', 'off', 'no', '0']);

export class Proxy implements ClientHost {
  readonly pools = new Map<string, Pool>();
  readonly clients = new Set<ClientConnection>();
  private readonly byPid = new Map<number, ClientConnection>();
  private readonly databaseOf = new WeakMap<ClientConnection, ResolvedDatabase>();
  private readonly servers: net.Server[] = [];
  private janitor: NodeJS.Timeout | null = null;
  private config: Readonly<Config>;
  private userlist: ReadonlyMap<string, StoredSecret>;
  private readonly embedded?: { host: string; port: number };
  private stopping = false;
  private readonly limiter: LoginLimiter;
  /** auth_hba_file's rules (auth_type hba). */
  private hba: HbaRules;
  /** Databases closed to new clients by DISABLE. */
  private readonly disabled = new Set<string>();
  private readonly poolDatabase = new WeakMap<Pool, string>();
  private readonly adminView: ProxyAdminView;
  private readonly options: ProxyOptions;
  private stopped: Promise<void> = Promise.resolve();
  private shutdownDeadline = Infinity;
  private workerLink: WorkerLink | undefined;
  /** Shutdown waits for clients to leave (SIGTERM), else only for servers to be released. */
  private waitForClients = true;
  /** TLS contexts of the current config; a connection keeps the one it started with. */
  private tls: { client: ClientTls | null; server: ServerTls };

  constructor(opts: ProxyOptions) {
    this.options = opts;
    this.config = opts.config;
    this.userlist = opts.userlist;
    this.hba = opts.config.auth_hba_file ? loadHba(opts.config.auth_hba_file) : [];
    this.tls = tlsContextsFrom(opts.config);
    this.embedded = opts.embedded;
    this.stats = new PoolerStats(opts.config);
    const st = opts.config.session_tokens;
    this.limiter = new LoginLimiter(st.max_failures, st.ban_seconds * 1000);
    this.adminView = new ProxyAdminView(this, {
      reload: () => this.reload(),
      set: (key, value) => this.set(key, value),
      shutdown: (mode) => (opts.onShutdown ? opts.onShutdown(mode) : void this.shutdown(this.config.shutdown_timeout * 1000, mode)),
      disabled: this.disabled,
      databaseNameOf: (pool) => this.databaseNameOf(pool),
    });
  }

  /** Refused logins, client errors, session logins and the per-accessor accounting (metrics). */
  readonly stats: PoolerStats;

  databaseNameOf(pool: Pool): string {
    return this.poolDatabase.get(pool) ?? pool.name;
  }

  onLoginFailed(client: ClientConnection, reason: string): void {
    this.stats.loginFailed(reason);
  }

  get clientTls(): ClientTls | null {
    return this.tls.client;
  }

  get currentConfig(): Readonly<Config> {
    return this.config;
  }

  /** The admin console's view, for signals that act like its commands (SIGUSR1 = PAUSE). */
  get admin(): ProxyAdminView {
    return this.adminView;
  }

  get isStopping(): boolean {
    return this.stopping;
  }

  /** Some listen_addr address or the Unix socket accepts clients (/readyz). */
  get isListening(): boolean {
    return this.servers.some((s) => s.listening);
  }

  /**
   * RELOAD / SIGHUP: read the config file, auth_file and the TLS key and certificate files again.
   * New settings apply to pools and connections from now on; servers started under the old
   * settings are replaced as they come free, and established TLS connections keep going. A bad
   * file leaves everything as it was.
   */
  async reload(): Promise<void> {
    if (!this.options.configPath) throw new Error('no config file to reload');
    const { config, warnings } = loadAnyConfig(this.options.configPath);
    const userlist = config.auth_file ? loadUserlist(config.auth_file) : new Map();
    const hba = config.auth_hba_file ? loadHba(config.auth_hba_file) : [];
    const tlsContexts = tlsContextsFrom(config);
    for (const w of warnings) log.warn(w);
    this.userlist = userlist;
    this.hba = hba;
    this.applyConfig(config, tlsContexts);
    log.info({ config: this.options.configPath }, 'configuration reloaded');
  }

  /** workers > 1: the channel to the primary (cancel forwarding, the console across workers). */
  attachWorkerLink(link: WorkerLink): void {
    this.workerLink = link;
  }

  /** SET key = value from the admin console: the running config with one setting changed. */
  set(key: string, value: string): void {
    const changed = parseConfig({ ...this.config, [key]: convertSetting(key, value) }, 'SET', this.options.configPath ? dirname(this.options.configPath) : process.cwd());
    let tlsContexts;
    try {
      tlsContexts = tlsContextsFrom(changed);
    } catch (err) {
      if (err instanceof TlsSettingError) throw new ConfigError(`SET: ${err.key}: ${err.message}`);
      throw err;
    }
    this.applyConfig(changed, tlsContexts);
    log.info({ key }, 'setting changed from the admin console');
  }

  /**
   * New settings apply to every pool at once. A database whose address or name changed (or that
   * is gone) reconnects gracefully: idle servers close now, busy ones when their clients let go.
   */
  private applyConfig(config: Readonly<Config>, tlsContexts: { client: ClientTls | null; server: ServerTls }): void {
    this.config = config;
    this.tls = tlsContexts;
    this.stats.configure(config);
    for (const [key, pool] of this.pools) {
      const name = this.poolDatabase.get(pool) ?? key.split('\u0000')[0];
      const entry = config.databases[name] ?? config.databases['*'];
      if (!entry) {
        pool.reconnect();
        continue;
      }
      pool.settings = this.poolSettings(entry, pool.target.user);
      const address = this.address(entry);
      const target = { host: address.host, port: address.port, database: entry.dbname ?? name, user: pool.target.user };
      if (target.host !== pool.target.host || target.port !== pool.target.port || target.database !== pool.target.database) {
        pool.target = target;
        pool.reconnect();
      }
    }
    // A changed pool role may now defeat row-level security: say so (as at start-up).
    this.checkTokenRoles();
  }

  adminLogin(client: ClientConnection): ReadonlyMap<string, string> {
    const c = this.config;
    const isAdmin = c.admin_users.includes(client.user);
    // With auth_type trust PgBouncer still only lets listed users in.
    if (!isAdmin && !c.stats_users.includes(client.user)) {
      throw PgError.fatal(SqlState.ProtocolViolation, 'not allowed');
    }
    return new Map([
      ['server_version', `${this.adminView.version()}/bouncer`],
      ['client_encoding', 'UTF8'],
      ['server_encoding', 'UTF8'],
      ['DateStyle', 'ISO'],
      ['TimeZone', 'GMT'],
      ['standard_conforming_strings', 'on'],
      ['is_superuser', isAdmin ? 'on' : 'off'],
    ]);
  }

  adminQuery(client: ClientConnection, sql: string): Promise<Buffer> {
    const c = this.config;
    const who = { user: client.user, isAdmin: c.admin_users.includes(client.user), isStats: c.stats_users.includes(client.user) };
    if (!this.workerLink) return runAdminQuery(sql, this.adminView, who);
    // workers > 1: SHOW sums every worker, commands run on every worker.
    return ClusterAdminView.open(this.workerLink, () => this.config, () => this.adminView.version()).then(
      (view) => runAdminQuery(sql, view, who),
      (err: PgError) => err.toMessage(),
    );
  }

  get openConnectionSql(): string {
    return this.config.session_tokens.open_connection;
  }

  /**
   * Ends a session in every session-token database (session_tokens.kill_session, on a connection
   * of its own as the database's pool role, so no pooled server or waiting client is involved).
   * `ended`: some database had it.
   */
  async endSession(sessionId: string): Promise<{ ended: boolean; errors: PgError[] }> {
    const c = this.config;
    const targets = new Map<string, { target: OneOffTarget }>();
    const unreachable: PgError[] = [];
    const add = (host: string, port: number, database: string, user: string, credentials: ServerCredentials) =>
      targets.set(JSON.stringify([host, port, database, user]), { target: { host, port, database, user, credentials } });
    for (const db of this.tokenDatabases()) {
      if ('error' in db) unreachable.push(db.error); // the embedded server is not running
      else add(db.target.host, db.target.port, db.target.database, db.target.user, db.target.credentials);
    }
    // "*" entries: the databases clients have asked for so far.
    for (const pool of this.pools.values()) {
      const entry = c.databases[this.databaseNameOf(pool)] ?? c.databases['*'];
      if (entry?.auth_type === 'session_token') add(pool.target.host, pool.target.port, pool.target.database, pool.target.user, pool.credentials);
    }
    const results = await Promise.all(
      [...targets.values()].map(async ({ target }) => {
        const server = this.oneOffServer(target, 'tessera KILL_SESSION');
        try {
          await server.login();
          const rows = await server.query(c.session_tokens.kill_session, [sessionId]);
          return { ended: rows[0]?.[0] === 't' };
        } catch (err) {
          log.warn({ db: target.database, code: (err as PgError).code }, 'KILL_SESSION could not end the session');
          return { error: err instanceof PgError ? err : PgError.fatal(SqlState.ConnectionFailure, String(err)) };
        } finally {
          server.close();
        }
      }),
    );
    const ended = results.some((r) => r.ended === true);
    log.info({ session: sessionId, ended }, 'KILL_SESSION');
    return { ended, errors: [...unreachable, ...results.flatMap((r) => (r.error ? [r.error] : []))] };
  }

  onSessionLogin(client: ClientConnection, ok: boolean): void {
    this.stats.sessionLogin(ok);
    if (ok) return; // logged as any login is
    this.limiter.recordFailure(client.remoteAddress);
    log.warn({ client: client.id, user: client.user, db: client.database, addr: client.remoteAddress }, 'session-token login failed');
  }

  /**
   * Starts listening on every listen_addr address and on the Unix socket; resolves with the first
   * TCP address (or null when there is none).
   */
  async listen(): Promise<net.AddressInfo | null> {
    const c = this.config;
    const hosts = c.listen_addr.split(',').map((h) => h.trim()).filter(Boolean);
    let first: net.AddressInfo | null = null;
    for (const host of hosts) {
      // "*": every address, IPv4 and IPv6 (Node's default dual-stack listen).
      const server = await this.listenOn({ host: host === '*' ? undefined : host, port: c.listen_port, backlog: 128 });
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
    this.janitor = setInterval(() => this.tick(), JANITOR_INTERVAL_MS);
    this.janitor.unref();
    this.checkTokenRoles();
    return first;
  }

  /**
   * Each session-token database entry with a database to reach ("*" only with a dbname), and how
   * its pool role logs in there; an error when its server (the embedded one) is not running.
   */
  private tokenDatabases(): ({ name: string; target: OneOffTarget } | { name: string; error: PgError })[] {
    const found: ({ name: string; target: OneOffTarget } | { name: string; error: PgError })[] = [];
    for (const [name, entry] of Object.entries(this.config.databases)) {
      // A session-token entry always names its pool role (checked when the config is loaded).
      if (entry.auth_type !== 'session_token' || !entry.user || (name === '*' && !entry.dbname)) continue;
      try {
        const { host, port } = this.address(entry);
        const credentials = this.credentialsFor(entry, { user: entry.user, lookedUpSecret: undefined, scramClientKey: undefined });
        found.push({ name, target: { host, port, database: entry.dbname ?? name, user: entry.user, credentials } });
      } catch (err) {
        found.push({ name, error: err as PgError });
      }
    }
    return found;
  }

  /** A server connection of Tessera's own, outside any pool (the caller logs in and closes it). */
  private oneOffServer(target: OneOffTarget, applicationName: string): ServerConnection {
    const c = this.config;
    const params = new Map([['application_name', applicationName]]);
    return new ServerConnection({ ...target, params, connectTimeoutMs: c.server_connect_timeout * 1000, socket: this.socketOptions(), tls: this.tls.server }, '', () => {});
  }

  /**
   * Warns (start-up and reload) when a session-token database logs in as a superuser or BYPASSRLS
   * role: row-level security does not apply to it, so per-user security would be defeated. One
   * short-lived connection per such database; it never delays start-up or fails it.
   */
  checkTokenRoles(): void {
    for (const db of this.tokenDatabases()) {
      if ('error' in db) continue;
      const { name, target } = db;
      const role = target.user;
      const server = this.oneOffServer(target, 'tessera role check');
      server
        .login()
        .then(() => server.query('select rolsuper, rolbypassrls from pg_catalog.pg_roles where rolname = current_user', []))
        .then(
          (rows) => {
            const [superuser, bypassrls] = rows[0] ?? [];
            if (superuser === 't' || bypassrls === 't') {
              log.warn(
                { db: name, role, superuser: superuser === 't', bypassrls: bypassrls === 't' },
                'session_token database logs in as a superuser or BYPASSRLS role: row-level security does not apply to it, so per-user security is defeated',
              );
            }
          },
          (err: PgError) => log.info({ db: name, role, code: err.code }, 'could not check the session_token pool role'),
        )
        .finally(() => server.close());
    }
  }

  private async listenOn(options: net.ListenOptions): Promise<net.Server> {
    const server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.servers.push(server);
    return server;
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
    if (mode === 'wait_for_servers') this.waitForClients = false;
    if (this.stopping) return this.stopped;
    this.stopping = true;
    this.waitForClients = mode === 'wait_for_clients';
    for (const server of this.servers) server.close();
    this.stopped = (async () => {
      while (this.stillBusy() && Date.now() < this.shutdownDeadline) {
        // Idle servers are not needed by anyone new; close them early.
        for (const pool of this.pools.values()) pool.closeIdle();
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const client of [...this.clients]) {
        // A query still running would otherwise go on in PostgreSQL after we hang up.
        if (client.server && client.server.outstanding > 0) client.server.cancel();
        client.fail(PgError.fatal(SqlState.AdminShutdown, 'terminating connection due to pooler shutdown'));
      }
      for (const pool of this.pools.values()) pool.close();
      if (this.janitor) clearInterval(this.janitor);
      await this.stats.close(); // the audit log's last lines
      // Give Terminate and cancel messages a moment to leave.
      await new Promise((r) => setTimeout(r, 50));
    })();
    return this.stopped;
  }

  /**
   * SUSPEND: every client (but the admin console's) and server socket stops reading; resolves once
   * all their output has been sent. One that has not flushed within suspend_timeout is closed.
   */
  async suspend(): Promise<void> {
    suspension.active = true;
    const sockets = this.suspendableSockets();
    for (const s of sockets) s.pause();
    const deadline = Date.now() + this.config.suspend_timeout * 1000;
    while (sockets.some((s) => !s.destroyed && s.writableLength > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const s of sockets) if (!s.destroyed && s.writableLength > 0) s.destroy();
    log.info({ sockets: sockets.length }, 'suspended');
  }

  /** RESUME after SUSPEND. */
  unsuspend(): void {
    suspension.active = false;
    for (const s of this.suspendableSockets()) s.resume();
    log.info('resumed after SUSPEND');
  }

  private suspendableSockets(): net.Socket[] {
    const sockets: net.Socket[] = [];
    for (const c of this.clients) if (!c.admin) sockets.push(c.socket);
    for (const pool of this.pools.values()) for (const s of pool.servers) sockets.push(s.socket);
    return sockets;
  }

  private stillBusy(): boolean {
    if (this.waitForClients) return this.clients.size > 0;
    for (const pool of this.pools.values()) if (pool.inUse()) return true;
    return false;
  }

  // ---- ClientHost ----

  beginLogin(client: ClientConnection, params: Map<string, string>): Authenticator {
    const c = this.config;
    const user = params.get('user');
    if (!user) return refuse(PgError.fatal(SqlState.InvalidAuthorization, 'no PostgreSQL user name specified in startup packet'));
    const database = params.get('database') || user;
    client.user = user;
    client.database = database;

    if (this.stopping) return refuse(PgError.fatal(SqlState.CannotConnectNow, 'the pooler is shutting down'));
    if (this.clients.size > shareOf(c.max_client_conn)) {
      return refuse(PgError.fatal(SqlState.TooManyConnections, 'no more connections allowed (max_client_conn)'));
    }
    const maxForUser = shareOf(c.users[user]?.max_user_client_connections ?? 0);
    if (maxForUser > 0 && [...this.clients].filter((other) => other.user === user && other !== client).length >= maxForUser) {
      return refuse(PgError.fatal(SqlState.TooManyConnections, `no more connections allowed for user "${user}" (max_user_client_connections)`));
    }
    const replication = params.get('replication');
    if (replication !== undefined && !NOT_REPLICATION.has(replication.toLowerCase())) {
      return refuse(PgError.fatal(SqlState.FeatureNotSupported, 'replication connections are not supported through Tessera'));
    }
    const method = this.authMethod(client, database, user);
    if (method instanceof PgError) return refuse(method);
    if (database === ADMIN_DB) {
      client.admin = true;
      return new PasswordAuthenticator(method, user, this.userlist.get(user), new Map());
    }
    if (this.disabled.has(database)) {
      return refuse(PgError.fatal('55000', `database "${database}" is not currently accepting connections (DISABLE)`));
    }
    const entry = c.databases[database] ?? c.databases['*'];
    if (!entry) return refuse(PgError.fatal(SqlState.InvalidCatalogName, `database "${database}" does not exist`));
    this.databaseOf.set(client, { name: database, entry });

    // Everything but user, database and session credentials goes to the server as the client
    // sent it, so the server session runs with the client's application_name, options,
    // search_path, DateStyle, ...
    const { credentials, serverParams } = takeSessionCredentials(params);
    serverParams.delete('user');
    serverParams.delete('database');
    if (entry.auth_type === 'session_token') {
      // Every form carries a secret (the first login's password, later a token proof).
      if (this.cleartextRefused(client)) return refuse(this.tlsRequired('session-token login'));
      if (this.limiter.isBanned(client.remoteAddress)) {
        return refuse(PgError.fatal(SqlState.InvalidAuthorization, 'too many failed session logins from this address; try again later'));
      }
      return new SessionTokenAuthenticator(credentials, serverParams);
    }
    const authUser = entry.auth_user ?? c.auth_user;
    if (method !== 'trust' && authUser && !this.userlist.has(user)) {
      // Not in auth_file: ask the database for the user's secret (auth_user + auth_query).
      const lookup = lookupSecret(
        {
          ...this.address(entry),
          database: entry.dbname ?? database,
          authUser,
          credentials: this.secretCredentials(this.userlist.get(authUser)),
          query: entry.auth_query ?? c.auth_query,
          connectTimeoutMs: c.server_connect_timeout * 1000,
          socket: this.socketOptions(),
          tls: this.tls.server,
        },
        user,
      );
      return new LookupAuthenticator(
        lookup,
        (secret) => new PasswordAuthenticator(method, user, secret, serverParams),
        (secret) => (client.lookedUpSecret = secret),
      );
    }
    return new PasswordAuthenticator(method, user, this.userlist.get(user), serverParams);
  }

  poolFor(client: ClientConnection): Pool {
    const { name, entry } = this.databaseOf.get(client)!;
    // Needed only until the client has its pool; an idle client should not carry it.
    this.databaseOf.delete(client);
    const serverUser = entry.user ?? client.user;
    const key = `${name}\u0000${serverUser}`;
    let pool = this.pools.get(key);
    const credentials = this.credentialsFor(entry, client);
    if (!pool) {
      const address = this.address(entry);
      pool = new Pool(
        `${name}/${serverUser}`,
        { host: address.host, port: address.port, database: entry.dbname ?? name, user: serverUser },
        this.poolSettings(entry, serverUser),
        credentials,
        () => this.mayOpen(name, entry, serverUser),
      );
      this.pools.set(key, pool);
      this.poolDatabase.set(pool, name);
    } else if (credentials.kind === 'scram-keys' || pool.credentials.kind === 'none') {
      // Keys proven by the latest client replace older ones (the password may have changed).
      pool.credentials = credentials;
    }
    return pool;
  }

  cancel(pid: number, secret: number): void {
    // Another worker's client (workers > 1): the key names the worker; the primary passes it on.
    if (workerOfPid(pid) !== workerIndex) {
      log.info({ worker: workerOfPid(pid) }, 'cancel request for another worker; forwarding it');
      return this.workerLink?.forwardCancel(pid, secret);
    }
    const client = this.byPid.get(pid);
    // Only a client's own key cancels, and only a query that is running on its server right now.
    if (!client || client.secret !== secret) return;
    const server = client.server;
    if (server && server.outstanding > 0) {
      log.info({ client: client.id, server: server.id }, 'forwarding cancel request');
      server.cancel();
    }
  }

  onClientClosed(client: ClientConnection): void {
    this.clients.delete(client);
    if (this.byPid.get(client.pid) === client) this.byPid.delete(client.pid);
    if (client.account) this.stats.accounting.close(client.account);
    log.debug({ client: client.id }, 'client closed');
  }

  // ---- internals ----

  private accept(socket: net.Socket): void {
    applySocketOptions(socket, this.socketOptions());
    const client = new ClientConnection(socket, this, socket.remoteAddress ?? 'unix');
    this.clients.add(client);
    // Two live clients with one pid would leave the first without a way to cancel.
    while (this.byPid.has(client.pid)) client.rekey();
    this.byPid.set(client.pid, client);
    // Under SUSPEND a new client waits, unread, until RESUME (as PgBouncer).
    if (suspension.active) socket.pause();
    log.debug({ client: client.id, addr: client.remoteAddress }, 'client connected');
  }

  private tick(): void {
    const now = Date.now();
    for (const pool of this.pools.values()) pool.tick(now);
    this.limiter.prune(now);
    this.stats.accounting.prune(now);
    const c = this.config;
    const loginTimeout = c.client_login_timeout * 1000;
    for (const client of this.clients) {
      // A [users] entry may set its own timeouts, as in PgBouncer.
      const u = c.users[client.user];
      const idleTimeout = (u?.client_idle_timeout ?? c.client_idle_timeout) * 1000;
      const queryTimeout = (u?.query_timeout ?? c.query_timeout) * 1000;
      const idleInTxTimeout = (u?.idle_transaction_timeout ?? c.idle_transaction_timeout) * 1000;
      if (client.phase === ClientPhase.Startup || client.phase === ClientPhase.Auth) {
        if (loginTimeout > 0 && now - client.connectedAt > loginTimeout) {
          client.fail(PgError.fatal(SqlState.ProtocolViolation, 'client_login_timeout'));
        }
        continue;
      }
      if (client.phase !== ClientPhase.Ready) continue;
      const server = client.server;
      if (!server || (server.outstanding === 0 && !server.isIdleInTransaction)) {
        if (idleTimeout > 0 && !client.isWaiting && now - client.lastActiveAt > idleTimeout) {
          client.fail(PgError.fatal(SqlState.IdleSessionTimeout, 'terminating connection due to client_idle_timeout'));
        }
      } else if (server.outstanding > 0) {
        if (queryTimeout > 0 && now - server.queryStartedAt > queryTimeout) {
          // The pool cancels and drains the server when the client is gone.
          client.fail(PgError.fatal(SqlState.QueryCanceled, 'canceling statement due to query_timeout'));
        }
      } else if (server.isIdleInTransaction) {
        if (idleInTxTimeout > 0 && now - server.lastReadyAt > idleInTxTimeout) {
          client.fail(PgError.fatal(SqlState.IdleInTransactionTimeout, 'terminating connection due to idle_transaction_timeout'));
        }
      }
    }
  }

  /** The login method for this connection: auth_type, or for "hba" the first matching rule's. */
  private authMethod(client: ClientConnection, database: string, user: string): AuthType | PgError {
    const type = this.config.auth_type;
    let method: AuthType | 'cert';
    if (type === 'any') return 'trust';
    if (type !== 'hba') method = type;
    else {
      const local = client.remoteAddress === 'unix';
      const host = local ? '[local]' : client.remoteAddress.replace(/^::ffff:/, '');
      const ssl = client.tlsSocket !== null;
      const encryption = ssl ? 'SSL encryption' : 'no encryption';
      const rule = hbaMethod(this.hba, { local, ssl, database, user, address: client.remoteAddress });
      switch (rule) {
        case null:
          return PgError.fatal(SqlState.InvalidAuthorization, `no pg_hba.conf entry for host "${host}", user "${user}", database "${database}", ${encryption}`);
        case 'reject':
          return PgError.fatal(SqlState.InvalidAuthorization, `pg_hba.conf rejects connection for host "${host}", user "${user}", database "${database}", ${encryption}`);
        case 'peer':
          return PgError.fatal(SqlState.InvalidAuthorization, 'peer authentication is not supported by Tessera');
        case 'password':
          method = 'plain';
          break;
        default:
          method = rule;
      }
    }
    if (method === 'cert') {
      // The certificate verified against client_tls_ca_file during the handshake; its CN is the user.
      if (client.certificateName === null) return PgError.fatal(SqlState.InvalidAuthorization, 'connection requires a valid client certificate');
      if (client.certificateName !== user) return PgError.fatal(SqlState.InvalidAuthorization, `certificate authentication failed for user "${user}"`);
      return 'trust';
    }
    if (method === 'plain' && this.cleartextRefused(client)) return this.tlsRequired('cleartext password login');
    return method;
  }

  /** A cleartext secret would cross the network unencrypted: TCP, no TLS, not loopback, not allowed. */
  private cleartextRefused(client: ClientConnection): boolean {
    return client.tlsSocket === null && !isLoopback(client.remoteAddress) && !this.config.allow_cleartext_without_tls;
  }

  private tlsRequired(what: string): PgError {
    return PgError.fatal(SqlState.InvalidAuthorization, `TLS required: a ${what} sends its secret in cleartext, which Tessera accepts only over TLS from a non-loopback address (connect with sslmode=require, or set allow_cleartext_without_tls)`);
  }

  /** max_db_connections and max_user_connections: limits across all pools of a database or user. */
  private mayOpen(database: string, entry: DatabaseConfig, user: string): boolean {
    const c = this.config;
    const maxDb = shareOf(entry.max_db_connections ?? c.max_db_connections);
    const maxUser = shareOf(c.users[user]?.max_user_connections ?? c.max_user_connections);
    if (maxDb === 0 && maxUser === 0) return true;
    let db = 0;
    let usr = 0;
    for (const [key, pool] of this.pools) {
      if (key.startsWith(`${database}\u0000`)) db += pool.servers.size;
      if (pool.target.user === user) usr += pool.servers.size;
    }
    return (maxDb === 0 || db < maxDb) && (maxUser === 0 || usr < maxUser);
  }

  /** A user's [users] entry overrides its database's entry, which overrides the global settings. */
  private poolSettings(entry: DatabaseConfig, user: string): PoolSettings {
    const c = this.config;
    const u = c.users[user] ?? {};
    const token = entry.auth_type === 'session_token';
    const connectQuery = entry.connect_query ?? '';
    // What undoes connect_query (tessera.hello()'s binding) unless the entry says otherwise.
    const release = entry.release_query ?? (connectQuery ? c.session_tokens.close_connection : '');
    const closeQueries = new Set([token ? c.session_tokens.close_connection : '', release].filter((q) => q !== ''));
    return {
      // connect_query's effect belongs to one client's login: the backend must stay with that client.
      mode: connectQuery ? 'session' : (u.pool_mode ?? entry.pool_mode ?? c.pool_mode),
      // workers > 1: each worker's pools get their part, so the totals stay as configured.
      size: shareOf(u.pool_size ?? entry.pool_size ?? c.default_pool_size),
      minSize: shareOf(entry.min_pool_size ?? c.min_pool_size),
      reserveSize: shareOf(u.reserve_pool_size ?? entry.reserve_pool_size ?? c.reserve_pool_size),
      reserveTimeoutMs: c.reserve_pool_timeout * 1000,
      // Logins here run Tessera's session functions: keep their plans across releases (see
      // DISCARD_ALL_KEEPING_PLANS); everything else DISCARD ALL resets is still reset.
      resetQuery: closeQueries.size > 0 && isDiscardAll(c.server_reset_query) ? DISCARD_ALL_KEEPING_PLANS : c.server_reset_query,
      // A session-token or connect_query backend is unbound before anyone else can have it.
      closeQuery: [...closeQueries].join('; '),
      connectQuery,
      tickets: token ? { issue: c.session_tokens.issue_ticket, redeem: c.session_tokens.redeem_ticket, revoke: c.session_tokens.revoke_tickets } : null,
      resetAlways: c.server_reset_query_always,
      idleTimeoutMs: c.server_idle_timeout * 1000,
      lifetimeMs: c.server_lifetime * 1000,
      queryWaitTimeoutMs: c.query_wait_timeout * 1000,
      connectTimeoutMs: c.server_connect_timeout * 1000,
      cancelWaitTimeoutMs: c.cancel_wait_timeout * 1000,
      loginRetryMs: c.server_login_retry * 1000,
      checkDelayMs: c.server_check_delay * 1000,
      checkQuery: c.server_check_query,
      maxPreparedStatements: c.max_prepared_statements,
      socket: this.socketOptions(),
      tls: this.tls.server,
    };
  }

  private socketOptions(): SocketOptions {
    const c = this.config;
    return {
      tcp_keepalive: c.tcp_keepalive,
      tcp_keepidle: c.tcp_keepidle,
      tcp_keepintvl: c.tcp_keepintvl,
      tcp_keepcnt: c.tcp_keepcnt,
      tcp_user_timeout: c.tcp_user_timeout,
    };
  }

  /**
   * How the pool logs in to PostgreSQL: a forced user's configured password, else the auth_file
   * secret of the server user, else (SCRAM secrets) the keys the client just proved.
   */
  private credentialsFor(entry: DatabaseConfig, client: Pick<ClientConnection, 'user' | 'lookedUpSecret' | 'scramClientKey'>): ServerCredentials {
    if (entry.user && entry.password !== undefined) return { kind: 'password', password: entry.password };
    if (entry.embedded && (entry.user ?? client.user) === 'postgres') return { kind: 'password', password: this.config.embedded_password };
    const user = entry.user ?? client.user;
    const secret = this.userlist.get(user) ?? (entry.user ? undefined : client.lookedUpSecret);
    return this.secretCredentials(secret, entry.user ? undefined : client.scramClientKey);
  }

  /** How a stored secret logs in to the server; a SCRAM secret needs the keys a client proved. */
  private secretCredentials(secret: StoredSecret | undefined, scramClientKey?: Buffer): ServerCredentials {
    switch (secret?.kind) {
      case 'plain':
        return { kind: 'password', password: secret.password };
      case 'md5':
        return { kind: 'md5', hash: secret.hash };
      case 'scram':
        return scramClientKey ? { kind: 'scram-keys', clientKey: scramClientKey, serverKey: secret.serverKey } : { kind: 'none' };
      default:
        return { kind: 'none' };
    }
  }

  /** Where a database entry's server is (the embedded one's address for "embedded": true). */
  address(entry: DatabaseConfig): { host: string; port: number } {
    const address = entry.embedded ? this.embedded : { host: entry.host!, port: entry.port! };
    if (!address) throw PgError.fatal(SqlState.ConnectionFailure, 'the embedded PostgreSQL is not running');
    return address;
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
