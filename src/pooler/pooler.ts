/**
 * The running pooler, one per process (per worker with `workers` > 1): it holds the current
 * configuration and hands each part what it needs: the runtime (listen, accept, suspend,
 * shutdown), the registry (pools, clients, cancel keys), the login policy, the janitor, reload,
 * and the admin console's view. It is the ClientHost every client talks to.
 */
import type net from 'node:net';
import type { Config, DatabaseConfig } from '../config/schema.js';
import type { StoredSecret } from '../auth/secret.js';
import { databaseEntryFor, databaseLimits, maxUserConnections } from '../config/effective.js';
import { PgError, SqlState } from '../protocol/messages.js';
import { Pool } from '../pool/pool.js';
import { ClientConnection, type ClientHost } from '../frontend/client-connection.js';
import type { Authenticator } from '../frontend/client-auth.js';
import type { ClientTls } from '../tls/contexts.js';
import type { ServerConnection } from '../pool/server-connection.js';
import { runAdminQuery, type AdminView } from '../admin/console.js';
import type { ShutdownMode } from '../admin/operations.js';
import { PoolerAdminView } from '../admin/pooler-view.js';
import { openClusterView } from '../workers/cluster-view.js';
import type { WorkerLink } from '../workers/worker-link.js';
import { shareOf, workerIndex, workerOfPid } from '../net/worker-identity.js';
import { log } from '../log.js';
import { applyLogSwitches } from '../log/events.js';
import { keepRestartOnly } from '../config/restart-only.js';
import { newWarnings } from '../config/warnings.js';
import { suspension, whenResumed } from '../net/suspension.js';
import { Registry } from './registry.js';
import { LoginLimiter } from './login-limiter.js';
import { Janitor } from './janitor.js';
import { Runtime } from './runtime.js';
import { planLogin, type Destination, type LoginContext } from './login-policy.js';
import { applyToPools, configurationOf, readConfiguration, withSetting, type Configuration } from './reload.js';
import { poolSettings } from './settings.js';
import { addressesOf, hostChoice, credentialsFor, type Address, type HostChoice } from './server-targets.js';
import { routeCancel, forwardCancel } from './peers.js';
import { warnOfPoolRolesBypassingRls, endSession, type TokenDatabaseContext } from './token-databases.js';
import { PoolerStats } from '../metrics/pooler-stats.js';
import type { ClientAccount } from '../metrics/accessors.js';
import { takeSnapshot } from '../metrics/snapshot.js';
import { readiness } from '../metrics/health.js';

export { removeStaleSocket } from './runtime.js';

export interface PoolerOptions {
  config: Readonly<Config>;
  /** Where the config came from, for RELOAD and SIGHUP. */
  configPath?: string;
  /** After a RELOAD or the console's SET applied `config` (the CLI re-points the log output). */
  onConfigChanged?: (config: Readonly<Config>) => void;
  /** What SHUTDOWN from the admin console does (the CLI exits the process). */
  onShutdown?: (mode: ShutdownMode) => void;
  /** auth_file's secrets by user name. */
  userlist: ReadonlyMap<string, StoredSecret>;
  /** Address of the embedded PostgreSQL, for database entries with "embedded": true. */
  embedded?: Address;
}

export class Pooler implements ClientHost {
  private readonly registry = new Registry();
  /** The configuration in force, swapped whole by RELOAD and SET. */
  private configuration: Configuration;
  private readonly embedded: Address | undefined;
  private readonly limiter: LoginLimiter;
  private readonly runtime: Runtime;
  /** Databases closed to new clients by DISABLE. */
  private readonly disabled = new Set<string>();
  /**
   * Where each client that is logging in goes once authenticated, until it has its pool (or
   * leaves: onClientClosed). A Map, not a WeakMap: an entry per login, short-lived, is much
   * cheaper to add and drop there (connection storms).
   */
  private readonly destinations = new Map<ClientConnection, Destination>();
  private readonly consoleView: PoolerAdminView;
  private workerLink: WorkerLink | undefined;
  /** The console connection that ran SUSPEND: when it goes, the pooler resumes (onClientClosed). */
  private suspendedBy: ClientConnection | null = null;
  /** Refused logins, client errors, session logins and the per-accessor accounting (metrics). */
  readonly stats: PoolerStats;
  private cachedLoginContext: LoginContext | null = null;
  /** The configuration cachedLoginContext was made from. */
  private loginContextOf: Configuration | null = null;

  constructor(private readonly options: PoolerOptions) {
    this.configuration = configurationOf(options.config, options.userlist);
    applyLogSwitches(options.config);
    this.embedded = options.embedded;
    const st = options.config.session_tokens;
    this.limiter = new LoginLimiter(st.max_failures, st.ban_seconds * 1000);
    this.stats = new PoolerStats(options.config);
    const janitor = new Janitor(this.registry, [this.limiter, this.stats.accounting], () => this.config);
    this.runtime = new Runtime(this.registry, janitor, () => this.config, (socket) => new ClientConnection(socket, this, socket.remoteAddress ?? 'unix'));
    const pooler = this;
    this.consoleView = new PoolerAdminView({
      pools: this.registry.pools,
      clients: this.registry.clients,
      databaseNameOf: (pool) => this.registry.databaseNameOf(pool),
      get config() {
        return pooler.config;
      },
      get isStopping() {
        return pooler.runtime.isStopping;
      },
      disabled: this.disabled,
      suspend: () => this.runtime.suspend(),
      unsuspend: () => this.unsuspend(),
      reload: () => this.reload(),
      set: (key, value) => this.set(key, value),
      shutdown: (mode) => (options.onShutdown ? options.onShutdown(mode) : void this.shutdown(this.config.shutdown_timeout * 1000, mode)),
      endSession: (sessionId) => endSession(this.tokenDatabaseContext(), sessionId),
      sessions: () => this.stats.accounting.snapshot(),
      metrics: () => takeSnapshot(this),
      readiness: () => readiness(this),
    });
  }

  get pools(): ReadonlyMap<string, Pool> {
    return this.registry.pools;
  }

  get clients(): ReadonlySet<ClientConnection> {
    return this.registry.clients;
  }

  databaseNameOf(pool: Pool): string {
    return this.registry.databaseNameOf(pool);
  }

  get currentConfig(): Readonly<Config> {
    return this.config;
  }

  private get config(): Readonly<Config> {
    return this.configuration.config;
  }

  /** The admin console's view, for signals that act like its commands (SIGUSR1 = PAUSE). */
  get adminView(): PoolerAdminView {
    return this.consoleView;
  }

  get isStopping(): boolean {
    return this.runtime.isStopping;
  }

  /** Some listen_addr address or the Unix socket accepts clients (/readyz). */
  get isListening(): boolean {
    return this.runtime.isListening;
  }

  /** /readyz: the hosts of a database entry its pools would use now (the embedded server for "embedded": true). */
  hostsFor(database: string, entry: DatabaseConfig): HostChoice {
    return hostChoice(entry, this.embedded, this.registry.poolsOf(database));
  }

  /** workers > 1: the channel to the primary (cancel forwarding, the console across workers). */
  attachWorkerLink(link: WorkerLink): void {
    this.workerLink = link;
  }

  /** Listens on every listen_addr address and the Unix socket; resolves with the first TCP address. */
  async listen(): Promise<net.AddressInfo | null> {
    const first = await this.runtime.listen();
    warnOfPoolRolesBypassingRls(this.tokenDatabaseContext());
    return first;
  }

  /** Stops accepting and closes every connection, as the SHUTDOWN modes say (runtime.ts). */
  async shutdown(graceMs: number, mode: ShutdownMode = 'wait_for_clients'): Promise<void> {
    await this.runtime.shutdown(graceMs, mode);
    await this.stats.close(); // the audit log's last lines
  }

  suspend(): Promise<void> {
    return this.runtime.suspend();
  }

  unsuspend(): void {
    this.suspendedBy = null;
    this.runtime.unsuspend();
  }

  /**
   * RELOAD / SIGHUP: read the config file, auth_file and the TLS key and certificate files again.
   * A bad file leaves everything as it was (see reload.ts).
   */
  async reload(): Promise<void> {
    const configPath = this.options.configPath;
    if (!configPath) throw new Error('no config file to reload');
    let read: ReturnType<typeof readConfiguration>;
    try {
      read = readConfiguration(configPath);
    } catch (err) {
      // The console says "see logs" and SIGHUP has no one to tell: the reason is here.
      log.error({ config: configPath, err: (err as Error).message }, 'reload failed; keeping the running configuration');
      throw err;
    }
    for (const w of newWarnings(read.warnings)) log.warn({ config: configPath }, w);
    // listen_port, metrics_listen, ...: SHOW CONFIG keeps showing what is in effect.
    const { config, notApplied } = keepRestartOnly(this.config, read.configuration.config);
    for (const setting of notApplied) log.warn({ setting }, 'setting changed in the config file needs a restart; not applied');
    this.applyConfiguration({ ...read.configuration, config });
    log.info({ config: configPath }, 'configuration reloaded');
    this.options.onConfigChanged?.(config);
  }

  /** SET key = value from the admin console: the running config with one setting changed. */
  set(key: string, value: string): void {
    this.applyConfiguration(withSetting(this.configuration, key, value, this.options.configPath));
    log.info({ key }, 'setting changed from the admin console');
    // log_level, logfile, syslog, ...: as after a RELOAD.
    this.options.onConfigChanged?.(this.config);
  }

  private applyConfiguration(configuration: Configuration): void {
    this.configuration = configuration;
    applyLogSwitches(configuration.config);
    applyToPools(this.registry, configuration, this.embedded);
    this.stats.configure(configuration.config);
    // A changed pool role may now defeat row-level security: say so (as at start-up).
    warnOfPoolRolesBypassingRls(this.tokenDatabaseContext());
  }

  private tokenDatabaseContext(): TokenDatabaseContext {
    const { config, userlist, tls } = this.configuration;
    return { config, userlist, embedded: this.embedded, serverTls: tls.server, registry: this.registry };
  }

  // ---- ClientHost ----

  get clientTls(): ClientTls | null {
    return this.configuration.tls.client;
  }

  get openConnectionSql(): string {
    return this.config.session_tokens.open_connection;
  }

  /** The login policy's plan, applied to the client: its user, database and console flag. */
  beginLogin(client: ClientConnection, params: Map<string, string>): Authenticator {
    const plan = planLogin(this.loginContext(), client, params);
    if (plan.user) client.user = plan.user;
    if (plan.database) client.database = plan.database;
    if (plan.admin) client.admin = true;
    if (plan.destination) this.destinations.set(client, plan.destination);
    // Under SUSPEND a login (but the console's) waits, unread, for RESUME, as in PgBouncer.
    if (!suspension.active || client.admin) return plan.authenticator;
    client.socket.pause();
    const auth = plan.authenticator;
    const resumed = whenResumed();
    return { start: () => ({ kind: 'later', next: resumed.then(() => auth.start()) }), receive: (body) => auth.receive(body) };
  }

  /** What the login policy reads, made once per configuration rather than per login. */
  private loginContext(): LoginContext {
    if (this.loginContextOf === this.configuration) return this.cachedLoginContext!;
    const { config, userlist, hba, tls } = this.configuration;
    const runtime = this.runtime;
    this.loginContextOf = this.configuration;
    return (this.cachedLoginContext = {
      config,
      userlist,
      hba,
      serverTls: tls.server,
      embedded: this.embedded,
      get stopping() {
        return runtime.isStopping;
      },
      registry: this.registry,
      disabled: this.disabled,
      limiter: this.limiter,
    });
  }

  poolFor(client: ClientConnection): Pool {
    const destination = this.destinations.get(client)!;
    // Needed only until the client has its pool; an idle client should not carry it.
    this.destinations.delete(client);
    const { name, entry } = destination;
    const { config, userlist, tls } = this.configuration;
    const serverUser = entry.user ?? client.user;
    const credentials = credentialsFor(entry, { user: client.user, lookedUpSecret: destination.lookedUpSecret, scramClientKey: client.scramClientKey }, userlist, config.embedded_password);
    const { pool, created } = this.registry.poolFor(name, serverUser, () => {
      return new Pool(
        `${name}/${serverUser}`,
        { hosts: addressesOf(entry, this.embedded), database: entry.dbname ?? name, user: serverUser },
        poolSettings(config, entry, serverUser, tls.server),
        credentials,
        () => this.mayOpen(name, serverUser),
      );
    });
    // What the latest login brings replaces what the pool had: keys a client just proved, or the
    // auth_file secret as it stands since the last RELOAD (the password may have changed). A login
    // that brings nothing (a SCRAM secret whose keys this client did not prove) keeps the old.
    if (!created && credentials.kind !== 'none') pool.credentials = credentials;
    return pool;
  }

  /** max_db_connections and max_user_connections: limits across all pools of a database or user. */
  private mayOpen(database: string, user: string): boolean {
    const c = this.config;
    const entry = databaseEntryFor(c, database);
    const maxDb = entry ? shareOf(databaseLimits(c, entry).maxDbConnections) : 0;
    const maxUser = shareOf(maxUserConnections(c, user));
    if (maxDb === 0 && maxUser === 0) return true;
    const open = this.registry.serverCounts(database, user);
    return (maxDb === 0 || open.database < maxDb) && (maxUser === 0 || open.user < maxUser);
  }

  get peerId(): number {
    return this.config.peer_id;
  }

  cancel(pid: number, keySecret: number): void {
    // Another instance's client (peering): sent on to that peer, or dropped.
    const route = routeCancel(this.config, keySecret);
    if (route.kind === 'drop') return log.info({ reason: route.reason }, 'cancel request dropped: its key is not one of ours');
    if (route.kind === 'forward') {
      log.info({ peer: route.peerId }, 'cancel request for another instance; forwarding it to its peer');
      return forwardCancel(route, pid);
    }
    const secret = route.secret;
    // Another worker's client (workers > 1): the key names the worker; the primary passes it on.
    if (workerOfPid(pid) !== workerIndex) {
      log.info({ worker: workerOfPid(pid) }, 'cancel request for another worker; forwarding it');
      return this.workerLink?.forwardCancel(pid, secret);
    }
    // Only a client's own key cancels, and only a query that is running on its server right now.
    const client = this.registry.clientWithKey(pid, secret);
    const server = client?.server;
    if (client && server && server.outstanding > 0) {
      log.info({ client: client.id, server: server.id }, 'forwarding cancel request');
      server.cancel();
    }
  }

  onClientClosed(client: ClientConnection): void {
    this.registry.removeClient(client);
    this.destinations.delete(client);
    if (client.account) this.stats.accounting.close(client.account);
    if (client === this.suspendedBy && suspension.active) {
      log.warn({ client: client.id, user: client.user }, 'admin disappeared when suspended, doing RESUME');
      // The console's own RESUME, so that with workers every worker resumes.
      this.suspendedBy = null;
      void this.consoleOperations().then((view) => view.resume(), () => this.consoleView.resume());
    }
  }

  onLoginFailed(client: ClientConnection, reason: string): void {
    this.stats.loginFailed(reason);
  }

  onClientError(client: ClientConnection, err: PgError): void {
    this.stats.clientError(err);
  }

  openAccount(client: ClientConnection): ClientAccount | null {
    return this.stats.accounting.open(client, client.pool!.settings.connectQuery !== '');
  }

  identifySession(sessionId: string, server: ServerConnection, done: () => void): void {
    this.stats.accounting.identify(sessionId, server, done);
  }

  onSessionLogin(client: ClientConnection, ok: boolean): void {
    this.stats.sessionLogin(ok);
    if (ok) return; // logged as any login is
    this.limiter.recordFailure(client.remoteAddress);
    log.warn({ client: client.id, user: client.user, db: client.database, addr: client.remoteAddress }, 'session-token login failed');
  }

  adminLogin(client: ClientConnection): ReadonlyMap<string, string> {
    const c = this.config;
    const isAdmin = c.admin_users.includes(client.user);
    // With auth_type trust PgBouncer still only lets listed users in.
    if (!isAdmin && !c.stats_users.includes(client.user)) {
      throw PgError.fatal(SqlState.ProtocolViolation, 'not allowed');
    }
    return new Map([
      ['server_version', `${this.consoleView.version()}/bouncer`],
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
    const wasSuspended = suspension.active;
    return this.consoleOperations()
      .then(
        (view) => runAdminQuery(sql, view, who),
        (err: PgError) => err.toMessage(),
      )
      .finally(() => {
        // Who suspended: when that connection goes, the pooler resumes (onClientClosed).
        if (!wasSuspended && suspension.active) this.suspendedBy = client;
      });
  }

  /** What the console's commands run against: this process, or (workers > 1) every worker as admin/operations.ts says. */
  private consoleOperations(): Promise<AdminView> {
    if (!this.workerLink) return Promise.resolve(this.consoleView);
    return openClusterView(this.workerLink, () => this.config, () => this.consoleView.version());
  }
}
