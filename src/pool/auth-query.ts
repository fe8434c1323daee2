/**
 * auth_user + auth_query: the secret of a user who is not in auth_file, fetched from the database
 * over a connection that logs in as auth_user. The query is parameterised ($1 = the user name),
 * never built from strings.
 */
import { ServerConnection, type ServerCredentials } from './server-connection.js';
import { parseSecret, type StoredSecret } from '../auth/secret.js';
import type { SocketOptions } from '../net/socket-options.js';
import type { ServerTls } from '../tls/contexts.js';
import { openFitting, type HostAddress, type TargetSessionAttrs } from './hosts.js';

export interface AuthQueryTarget {
  /** The hosts to try, in order, and the role the entry needs (see openFitting). */
  hosts: readonly HostAddress[];
  attrs: TargetSessionAttrs;
  database: string;
  authUser: string;
  credentials: ServerCredentials;
  query: string;
  connectTimeoutMs: number;
  socket: SocketOptions;
  tls: ServerTls;
}

/** The user's stored secret, or undefined when the query returns no row or a null password. */
export async function lookupSecret(t: AuthQueryTarget, user: string): Promise<StoredSecret | undefined> {
  const server = await openFitting(t.hosts, t.attrs, ({ host, port }) =>
    new ServerConnection({ host, port, database: t.database, user: t.authUser, credentials: t.credentials, params: new Map(), connectTimeoutMs: t.connectTimeoutMs, socket: t.socket, tls: t.tls }, '', () => {}),
  );
  try {
    const rows = await server.query(t.query, [user]);
    const secret = rows[0]?.[1];
    return secret ? parseSecret(secret) : undefined;
  } finally {
    server.close();
  }
}
