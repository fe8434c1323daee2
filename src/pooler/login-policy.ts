/**
 * Who may log in, to what, and how they prove it: from a startup packet and what is known of the
 * connection, a plan (the user and database, whether it is the admin console, the authenticator
 * to run, and where the client's pool is once it has passed). Reading the pooler's state, changing
 * nothing: the caller applies the plan.
 */
import type { Config, DatabaseConfig } from '../config/schema.js';
import type { StoredSecret } from '../auth/secret.js';
import { hbaMethod, type HbaRules } from '../auth/hba.js';
import { PgError, SqlState } from '../protocol/messages.js';
import { lookupSecret } from '../pool/auth-query.js';
import { shareOf } from '../net/worker-identity.js';
import { isLoopback, type ServerTls } from '../tls/contexts.js';
import { PasswordAuthenticator, SessionTokenAuthenticator, LookupAuthenticator, takeSessionCredentials, refuse, type Authenticator, type AuthType } from '../frontend/client-auth.js';
import type { ClientConnection } from '../frontend/client-connection.js';
import type { Registry } from './registry.js';
import type { LoginLimiter } from './login-limiter.js';
import { databaseEntryFor, maxUserClientConnections, secretLookup } from '../config/effective.js';
import { socketOptions } from './settings.js';
import { hostChoice, hostsToTry, secretCredentials, type Address } from './server-targets.js';

/** The admin console's virtual database, as in PgBouncer. */
export const ADMIN_DB = 'pgbouncer';

const NOT_REPLICATION = new Set(['', 'false', 'off', 'no', '0']);
/** trust needs no secret, so no auth_query lookup. */
const NO_LOOKUP: { authUser: string | undefined; query: string } = { authUser: undefined, query: '' };

/** What the policy reads of the pooler. */
export interface LoginContext {
  config: Readonly<Config>;
  userlist: ReadonlyMap<string, StoredSecret>;
  hba: HbaRules;
  serverTls: ServerTls;
  embedded: Address | undefined;
  readonly stopping: boolean;
  registry: Registry;
  /** Databases closed to new clients by DISABLE. */
  disabled: ReadonlySet<string>;
  limiter: LoginLimiter;
}

/** What is known of the connection before it logs in. */
export type Connecting = Pick<ClientConnection, 'remoteAddress' | 'tlsSocket' | 'certificateName'>;

/** Where an authenticated client's pool is. */
export interface Destination {
  /** The database name the client asked for (which "*" may have matched). */
  name: string;
  entry: DatabaseConfig;
  /** The secret auth_query found for a user not in auth_file, once the lookup has run. */
  lookedUpSecret: StoredSecret | undefined;
}

export interface LoginPlan {
  /** '' when the startup packet named no user. */
  user: string;
  database: string;
  /** The admin console (database "pgbouncer") rather than a pooled database. */
  admin: boolean;
  /** Runs the password exchange, or refuses at once. */
  authenticator: Authenticator;
  /** null for the console and for a refused login. */
  destination: Destination | null;
}

export function planLogin(ctx: LoginContext, client: Connecting, params: ReadonlyMap<string, string>): LoginPlan {
  const c = ctx.config;
  const user = params.get('user');
  if (!user) return refused('', '', PgError.fatal(SqlState.InvalidAuthorization, 'no PostgreSQL user name specified in startup packet'));
  const database = params.get('database') || user;

  if (ctx.stopping) return refused(user, database, PgError.fatal(SqlState.CannotConnectNow, 'the pooler is shutting down'));
  if (ctx.registry.clients.size > shareOf(c.max_client_conn)) {
    return refused(user, database, PgError.fatal(SqlState.TooManyConnections, 'no more connections allowed (max_client_conn)'));
  }
  const maxForUser = shareOf(maxUserClientConnections(c, user));
  if (maxForUser > 0 && ctx.registry.clientsOfUser(user, client) >= maxForUser) {
    return refused(user, database, PgError.fatal(SqlState.TooManyConnections, `no more connections allowed for user "${user}" (max_user_client_connections)`));
  }
  const replication = params.get('replication');
  if (replication !== undefined && !NOT_REPLICATION.has(replication.toLowerCase())) {
    return refused(user, database, PgError.fatal(SqlState.FeatureNotSupported, 'replication connections are not supported through Tessera'));
  }
  const method = authMethod(ctx, client, database, user);
  if (method instanceof PgError) return refused(user, database, method);
  if (database === ADMIN_DB) {
    return { user, database, admin: true, authenticator: new PasswordAuthenticator(method, user, ctx.userlist.get(user), new Map()), destination: null };
  }
  if (ctx.disabled.has(database)) {
    return refused(user, database, PgError.fatal('55000', `database "${database}" is not currently accepting connections (DISABLE)`));
  }
  const entry = databaseEntryFor(c, database);
  if (!entry) return refused(user, database, PgError.fatal(SqlState.InvalidCatalogName, `database "${database}" does not exist`));
  const destination: Destination = { name: database, entry, lookedUpSecret: undefined };

  // Everything but user, database and session credentials goes to the server as the client
  // sent it, so the server session runs with the client's application_name, options,
  // search_path, DateStyle, ...
  const { credentials, serverParams } = takeSessionCredentials(params);
  serverParams.delete('user');
  serverParams.delete('database');
  if (entry.auth_type === 'session_token') {
    // Every form carries a secret (the first login's password, later a token proof).
    if (cleartextRefused(ctx, client)) return refused(user, database, tlsRequired('session-token login'));
    if (ctx.limiter.isBanned(client.remoteAddress)) {
      return refused(user, database, PgError.fatal(SqlState.InvalidAuthorization, 'too many failed session logins from this address; try again later'));
    }
    return accepted(user, database, new SessionTokenAuthenticator(credentials, serverParams), destination);
  }
  const { authUser, query } = method === 'trust' ? NO_LOOKUP : secretLookup(c, entry);
  if (authUser && !ctx.userlist.has(user)) {
    // Not in auth_file: ask the database for the user's secret (auth_user + auth_query).
    // To a host the pool would use (a live one of the entry's target_session_attrs), not merely the first.
    const lookup = lookupSecret(
      {
        ...hostsToTry(hostChoice(entry, ctx.embedded, ctx.registry.poolsOf(database))),
        database: entry.dbname ?? database,
        authUser,
        credentials: secretCredentials(ctx.userlist.get(authUser)),
        query,
        connectTimeoutMs: c.server_connect_timeout * 1000,
        socket: socketOptions(c),
        tls: ctx.serverTls,
      },
      user,
    );
    const authenticator = new LookupAuthenticator(
      lookup,
      (secret) => new PasswordAuthenticator(method, user, secret, serverParams),
      (secret) => (destination.lookedUpSecret = secret),
    );
    return accepted(user, database, authenticator, destination);
  }
  return accepted(user, database, new PasswordAuthenticator(method, user, ctx.userlist.get(user), serverParams), destination);
}

function accepted(user: string, database: string, authenticator: Authenticator, destination: Destination): LoginPlan {
  return { user, database, admin: false, authenticator, destination };
}

function refused(user: string, database: string, error: PgError): LoginPlan {
  return { user, database, admin: false, authenticator: refuse(error), destination: null };
}

/** The login method for this connection: auth_type, or for "hba" the first matching rule's. */
function authMethod(ctx: LoginContext, client: Connecting, database: string, user: string): AuthType | PgError {
  const type = ctx.config.auth_type;
  let method: AuthType | 'cert';
  if (type === 'any') return 'trust';
  if (type !== 'hba') method = type;
  else {
    const local = client.remoteAddress === 'unix';
    const host = local ? '[local]' : client.remoteAddress.replace(/^::ffff:/, '');
    const ssl = client.tlsSocket !== null;
    const encryption = ssl ? 'SSL encryption' : 'no encryption';
    const rule = hbaMethod(ctx.hba, { local, ssl, database, user, address: client.remoteAddress });
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
  if (method === 'plain' && cleartextRefused(ctx, client)) return tlsRequired('cleartext password login');
  return method;
}

/** A cleartext secret would cross the network unencrypted: TCP, no TLS, not loopback, not allowed. */
function cleartextRefused(ctx: LoginContext, client: Connecting): boolean {
  return client.tlsSocket === null && !isLoopback(client.remoteAddress) && !ctx.config.allow_cleartext_without_tls;
}

function tlsRequired(what: string): PgError {
  return PgError.fatal(SqlState.InvalidAuthorization, `TLS required: a ${what} sends its secret in cleartext, which Tessera accepts only over TLS from a non-loopback address (connect with sslmode=require, or set allow_cleartext_without_tls)`);
}
