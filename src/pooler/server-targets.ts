/**
 * Where a database entry's servers are and how Tessera logs in to them: the address (the entry's
 * host and port, or the embedded PostgreSQL's) and the credentials (a forced user's password, an
 * auth_file secret, or the SCRAM keys the client just proved).
 */
import type { DatabaseConfig } from '../config/schema.js';
import type { StoredSecret } from '../auth/secret.js';
import { PgError, SqlState } from '../protocol/messages.js';
import type { ServerCredentials } from '../pool/server-connection.js';
import { parseHostList, type HostAddress } from '../pool/hosts.js';

export type Address = HostAddress;

/** The entry's servers (a host list, see pool/hosts.ts); the embedded one's address when it says "embedded": true. */
export function addressesOf(entry: DatabaseConfig, embedded: Address | undefined): Address[] {
  if (!entry.embedded) return parseHostList(entry.host, entry.port);
  if (!embedded) throw PgError.fatal(SqlState.ConnectionFailure, 'the embedded PostgreSQL is not running');
  return [embedded];
}

/**
 * Where a one-off connection goes (auth_query, KILL_SESSION): the first host of a list, which
 * by convention is the primary; pools use every host (addressesOf).
 */
export function addressOf(entry: DatabaseConfig, embedded: Address | undefined): Address {
  return addressesOf(entry, embedded)[0]!;
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
