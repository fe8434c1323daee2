/**
 * Tessera's own connections to the session-token databases, outside every pool: KILL_SESSION's
 * kill_session call, and the start-up (and reload) check that a pool role does not defeat
 * row-level security. Each logs in as the database's pool role and closes when done.
 */
import type { Config } from '../config/schema.js';
import type { StoredSecret } from '../auth/secret.js';
import { PgError, SqlState } from '../protocol/messages.js';
import { ServerConnection, type ServerTarget } from '../pool/server-connection.js';
import type { ServerTls } from '../tls/contexts.js';
import { log } from '../log.js';
import { boundParameters } from '../pool/session-sql.js';
import { poolRoleCheck, killSessionUnset } from '../config/session-presets.js';
import type { Registry } from './registry.js';
import { databaseEntryFor } from '../config/effective.js';
import { socketOptions } from './settings.js';
import { hostChoice, hostsToTry, credentialsFor, type Address } from './server-targets.js';
import { openFitting, type TargetSessionAttrs } from '../pool/hosts.js';

/** Where one of Tessera's own out-of-pool connections goes (the hosts to try, in order), and as whom. */
type OneOffTarget = Omit<ServerTarget, 'host' | 'port' | 'params' | 'connectTimeoutMs' | 'socket' | 'tls'> & { hosts: readonly Address[]; attrs: TargetSessionAttrs };

/** What these connections read of the pooler. */
export interface TokenDatabaseContext {
  config: Readonly<Config>;
  userlist: ReadonlyMap<string, StoredSecret>;
  embedded: Address | undefined;
  serverTls: ServerTls;
  registry: Registry;
}

type TokenDatabase = { name: string; target: OneOffTarget } | { name: string; error: PgError };

/**
 * Each session-token database entry with a database to reach ("*" only with a dbname), and how
 * its pool role logs in there; an error when its server (the embedded one) is not running.
 */
function tokenDatabases(ctx: TokenDatabaseContext): TokenDatabase[] {
  const found: TokenDatabase[] = [];
  for (const [name, entry] of Object.entries(ctx.config.databases)) {
    // A session-token entry always names its pool role (checked when the config is loaded).
    if (entry.auth_type !== 'session_token' || !entry.user || (name === '*' && !entry.dbname)) continue;
    try {
      const credentials = credentialsFor(entry, { user: entry.user, lookedUpSecret: undefined, scramClientKey: undefined }, ctx.userlist, ctx.config.embedded_password);
      found.push({ name, target: { ...hostsToTry(hostChoice(entry, ctx.embedded, ctx.registry.poolsOf(name))), database: entry.dbname ?? name, user: entry.user, credentials } });
    } catch (err) {
      found.push({ name, error: err as PgError });
    }
  }
  return found;
}

/** A logged-in server connection of Tessera's own, outside any pool, on a host that fits (the caller closes it). */
function oneOffServer(ctx: TokenDatabaseContext, target: OneOffTarget, applicationName: string): Promise<ServerConnection> {
  const params = new Map([['application_name', applicationName]]);
  const { hosts, attrs, ...as } = target;
  return openFitting(hosts, attrs, ({ host, port }) =>
    new ServerConnection({ ...as, host, port, params, connectTimeoutMs: ctx.config.server_connect_timeout * 1000, socket: socketOptions(ctx.config), tls: ctx.serverTls }, '', () => {}),
  );
}

/**
 * Ends a session in every session-token database (session_tokens.kill_session, on a connection
 * of its own as the database's pool role, so no pooled server or waiting client is involved).
 * `ended`: some database had it.
 */
export async function endSession(ctx: TokenDatabaseContext, sessionId: string): Promise<{ ended: boolean; errors: PgError[] }> {
  const c = ctx.config;
  if (c.session_tokens.kill_session === '') return { ended: false, errors: [killSessionUnset(c.session_tokens.preset)] };
  const targets = new Map<string, OneOffTarget>();
  const unreachable: PgError[] = [];
  // One call per database and role, wherever its hosts are listed.
  const add = (target: OneOffTarget) => targets.set(JSON.stringify([target.hosts.map((h) => [h.host, h.port]).sort(), target.database, target.user]), target);
  for (const db of tokenDatabases(ctx)) {
    if ('error' in db) unreachable.push(db.error); // the embedded server is not running
    else add(db.target);
  }
  // "*" entries: the databases clients have asked for so far.
  for (const pool of ctx.registry.pools.values()) {
    const name = ctx.registry.databaseNameOf(pool);
    const entry = databaseEntryFor(c, name);
    if (entry?.auth_type !== 'session_token') continue;
    try {
      add({ ...hostsToTry(hostChoice(entry, ctx.embedded, ctx.registry.poolsOf(name))), database: pool.target.database, user: pool.target.user, credentials: pool.credentials });
    } catch (err) {
      unreachable.push(err as PgError); // the embedded server is not running
    }
  }
  const results = await Promise.all(
    [...targets.values()].map(async (target) => {
      let server: ServerConnection | null = null;
      try {
        server = await oneOffServer(ctx, target, 'tessera KILL_SESSION');
        const rows = await server.query(c.session_tokens.kill_session, boundParameters(c.session_tokens.kill_session, [sessionId]));
        return { ended: rows[0]?.[0] === 't' };
      } catch (err) {
        log.warn({ db: target.database, code: (err as PgError).code }, 'KILL_SESSION could not end the session');
        return { error: err instanceof PgError ? err : PgError.fatal(SqlState.ConnectionFailure, String(err)) };
      } finally {
        server?.close();
      }
    }),
  );
  const ended = results.some((r) => r.ended === true);
  log.info({ session: sessionId, ended }, 'KILL_SESSION');
  return { ended, errors: [...unreachable, ...results.flatMap((r) => (r.error ? [r.error] : []))] };
}

/**
 * Warns (start-up and reload) when a session-token database logs in as a superuser or BYPASSRLS
 * role: row-level security does not apply to it, so per-user security would be defeated. One
 * short-lived connection per such database; it never delays start-up or fails it.
 */
export function warnOfPoolRolesBypassingRls(ctx: TokenDatabaseContext): void {
  for (const db of tokenDatabases(ctx)) {
    if ('error' in db) continue;
    const { name, target } = db;
    const role = target.user;
    const check = poolRoleCheck(ctx.config.session_tokens);
    const opened = oneOffServer(ctx, target, 'tessera role check');
    opened
      .then((server) => server.query(check.query, [check.functions]))
      .then(
        (rows) => {
          const [superuser, bypassrls, missing] = rows[0] ?? [];
          if (missing) log.warn({ db: name, role, missing }, `session_token pool role cannot execute the session functions (every login will fail): ${check.grant} ${role}`);
          if (superuser === 't' || bypassrls === 't') {
            log.warn(
              { db: name, role, superuser: superuser === 't', bypassrls: bypassrls === 't' },
              'session_token database logs in as a superuser or BYPASSRLS role: row-level security does not apply to it, so per-user security is defeated',
            );
          }
        },
        (err: PgError) => {
          if (err.code !== SqlState.InvalidPassword && err.code !== SqlState.InvalidAuthorization) {
            return log.info({ db: name, role, code: err.code, reason: err.message }, 'could not check the session_token pool role');
          }
          // First start: the pool role of the walkthrough does not exist yet.
          log.warn(
            { db: name, role, code: err.code, reason: err.message },
            `session_token database "${name}": its pool role "${role}" cannot log in; create it (sql/tessera.sql and sql/demo.sql set up the walkthrough's, see README "Walkthrough", step 1) or fix the entry's user and password`,
          );
        },
      )
      .finally(() => opened.then((server) => server.close(), () => {}));
  }
}
