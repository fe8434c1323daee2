/**
 * The log lines an admin acts on, one function each, so every call site says the same thing in
 * the same fields: client logins and refusals, pooler-made and client-made disconnects, server
 * connections opened and closed (with the reason), errors Tessera sends itself. PgBouncer's
 * log_connections, log_disconnections and log_pooler_errors switch them; all are on by default.
 * Never a secret: only ids, user and database names, addresses, SQLSTATEs and Tessera's own
 * messages (which never quote a password or token).
 */
import { log, logsInfo } from '../log.js';

/** What the events read of a client (ClientConnection has these fields). */
export interface LoggedClient {
  readonly id: number;
  readonly user: string;
  readonly database: string;
  readonly remoteAddress: string;
  readonly connectedAt: number;
}

/** What the events read of a server connection. */
export interface LoggedServer {
  readonly id: number;
  readonly pid: number;
  readonly createdAt: number;
  readonly target: { host: string; port: number; database: string; user: string };
}

/** An error as Tessera sends it: SQLSTATE and message. */
export interface LoggedError {
  readonly code: string;
  readonly message: string;
}

export interface LogSwitches {
  log_connections: boolean;
  log_disconnections: boolean;
  log_pooler_errors: boolean;
}

let switches: LogSwitches = { log_connections: true, log_disconnections: true, log_pooler_errors: true };

/** Start-up, RELOAD and SET: the switches of the running config. */
export function applyLogSwitches(config: LogSwitches): void {
  switches = { log_connections: config.log_connections, log_disconnections: config.log_disconnections, log_pooler_errors: config.log_pooler_errors };
}

/**
 * A switch is on and info lines are logged: checked before a line's fields are gathered, so that
 * with log_level warn a connection storm builds no objects for lines nobody writes.
 */
const logging = (on: boolean): boolean => on && logsInfo();

const who = (c: LoggedClient) => ({ client: c.id, user: c.user || undefined, db: c.database || undefined, addr: c.remoteAddress });
const ageSeconds = (since: number) => Math.round((Date.now() - since) / 100) / 10;

export function clientLoggedIn(c: LoggedClient): void {
  if (logging(switches.log_connections)) log.info(who(c), 'client logged in');
}

/**
 * Tessera refused a login (wrong password, unknown user or database, SSL required, a limit, a
 * timeout before the login finished, the server unreachable): the line brute force shows up in.
 */
export function loginRefused(c: LoggedClient, err: LoggedError): void {
  if (logging(switches.log_pooler_errors)) log.info({ ...who(c), code: err.code, reason: err.message }, 'login refused');
}

/** An error Tessera sent a logged-in client that stays connected. */
export function poolerError(c: LoggedClient, err: LoggedError): void {
  if (logging(switches.log_pooler_errors)) log.info({ ...who(c), code: err.code, reason: err.message }, 'pooler error');
}

/**
 * A logged-in client's connection ended: `byPooler` when Tessera closed it (a timeout, KILL,
 * shutdown, its server lost), with the error it was sent; else the client left.
 */
export function clientClosed(c: LoggedClient, reason: string, byPooler: boolean, code?: string): void {
  if (logging(switches.log_disconnections)) log.info({ ...who(c), by: byPooler ? 'pooler' : 'client', code, reason, age_s: ageSeconds(c.connectedAt) }, 'client closed');
}

/** A startup packet that is not one (bad length, unknown request code): closed without a reply. */
export function invalidStartupPacket(addr: string, reason: string): void {
  log.info({ addr, reason }, 'invalid startup packet; connection closed');
}

const server = (pool: string, s: LoggedServer) => ({ pool, server: s.id, backend_pid: s.pid || undefined, host: s.target.host, port: s.target.port });

export function serverConnected(pool: string, s: LoggedServer): void {
  if (logging(switches.log_connections)) log.info(server(pool, s), 'server connection opened');
}

/** A logged-in server connection closed; `reason` says who ended it and why. */
export function serverClosed(pool: string, s: LoggedServer, reason: string): void {
  if (logging(switches.log_disconnections)) log.info({ ...server(pool, s), reason, age_s: ageSeconds(s.createdAt) }, 'server connection closed');
}

/** A server login failed; `retryInS`: when the pool tries again for the clients still waiting. */
export function serverLoginFailed(pool: string, err: LoggedError, retryInS: number): void {
  log.warn({ pool, code: err.code, reason: err.message, retry_in_s: retryInS }, 'server login failed');
}
