/**
 * Where a database entry's servers are and how Tessera logs in to them: the address (the entry's
 * host and port, or the embedded PostgreSQL's) and the credentials (a forced user's password, an
 * auth_file secret, or the SCRAM keys the client just proved).
 */
import type { DatabaseConfig } from '../config/schema.js';
import type { StoredSecret } from '../auth/secret.js';
import { PgError, SqlState } from '../protocol/messages.js';
import type { ServerCredentials } from '../pool/server-connection.js';
import { parseHostList, addressKey, describeAddress, type HostAddress, type HostKnowledge, type TargetSessionAttrs } from '../pool/hosts.js';

export type Address = HostAddress;

/** The entry's servers (a host list, see pool/hosts.ts); the embedded one's address when it says "embedded": true. */
export function addressesOf(entry: DatabaseConfig, embedded: Address | undefined): Address[] {
  if (!entry.embedded) return parseHostList(entry.host, entry.port);
  if (!embedded) throw PgError.fatal(SqlState.ConnectionFailure, 'the embedded PostgreSQL is not running');
  return [embedded];
}

/** Where a connection outside the pools goes (auth_query, KILL_SESSION, the RLS check, /readyz). */
export interface HostChoice {
  /**
   * The hosts every pool of the database would use now, best first (HostSet.fitting): up, not
   * lagging, of a fitting role or not checked yet. Every host, as written, while no pool of the
   * database exists.
   */
  fitting: Address[];
  /** The others (down or of the wrong role, by what the pools know): a last resort for a connection that checks the role itself. */
  others: Address[];
  attrs: TargetSessionAttrs;
  /** Each host and what is known of it, for an error. */
  describe(): string;
}

export function hostChoice(entry: DatabaseConfig, embedded: Address | undefined, pools: readonly { hostKnowledge: HostKnowledge }[]): HostChoice {
  const all = addressesOf(entry, embedded);
  const attrs = entry.target_session_attrs ?? 'any';
  const first = pools[0]?.hostKnowledge;
  const describe = () => first?.describe() ?? all.map(describeAddress).join(', ');
  if (!first) return { fitting: all, others: [], attrs, describe };
  const now = Date.now();
  const listed = new Set(all.map(addressKey));
  const views = pools.map((p) => new Set(p.hostKnowledge.fitting(now).map(addressKey)));
  const fitting = first.fitting(now).filter((a) => listed.has(addressKey(a)) && views.every((v) => v.has(addressKey(a))));
  const chosen = new Set(fitting.map(addressKey));
  return { fitting, others: all.filter((a) => !chosen.has(addressKey(a))), attrs, describe };
}

/** A connection that checks its host's role itself (openFitting) tries the fitting hosts first, then the rest. */
export function hostsToTry(choice: HostChoice): { hosts: Address[]; attrs: TargetSessionAttrs } {
  return { hosts: [...choice.fitting, ...choice.others], attrs: choice.attrs };
}

/** What a client brings to the server login: its name, and the secrets its own login produced. */
export interface LoginSecrets {
  user: string;
  /** The secret auth_query found for a user not in auth_file. */
  lookedUpSecret: StoredSecret | undefined;
  /** The ClientKey a SCRAM login proved. */
  scramClientKey: Buffer | undefined;
}

/**
 * How the pool logs in to PostgreSQL: a forced user's configured password, else the auth_file
 * secret of the server user, else (SCRAM secrets) the keys the client just proved.
 */
export function credentialsFor(entry: DatabaseConfig, client: LoginSecrets, userlist: ReadonlyMap<string, StoredSecret>, embeddedPassword: string): ServerCredentials {
  if (entry.user && entry.password !== undefined) return { kind: 'password', password: entry.password };
  if (entry.embedded && (entry.user ?? client.user) === 'postgres') return { kind: 'password', password: embeddedPassword };
  const user = entry.user ?? client.user;
  const secret = userlist.get(user) ?? (entry.user ? undefined : client.lookedUpSecret);
  return secretCredentials(secret, entry.user ? undefined : client.scramClientKey);
}

/** How a stored secret logs in to the server; a SCRAM secret needs the keys a client proved. */
export function secretCredentials(secret: StoredSecret | undefined, scramClientKey?: Buffer): ServerCredentials {
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
