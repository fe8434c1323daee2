// The session protocol driven straight against PostgreSQL (no Tessera), as an application or a
// pooler would: connections as given roles, create_session, open_connection, the password login
// at nonce 1 and the continuation tokens after it. Shared by the SQL-level session tests.
import pg from 'pg';
import * as assert from 'uvu/assert';
import type { Cluster } from './cluster.js';
import { SessionCredentials } from '../../src/client/index.js';

export interface Session {
  id: string;
  token: string;
}
export interface Opened {
  success: boolean;
  errmsg: string | null;
}
export const OK: Opened = { success: true, errmsg: null };
export const fail = (errmsg: string): Opened => ({ success: false, errmsg });
/** sql/demo.sql's pool role. */
export const APP = { user: 'tessera_app', password: 'tessera-app-password' };

export class SessionDb {
  /** Every session token handed out, for tests that look for leaks. */
  readonly tokens: string[] = [];
  private readonly clients: pg.Client[] = [];

  constructor(
    private readonly cluster: Cluster,
    readonly db: string,
  ) {}

  /** As the superuser. */
  su(sql: string, params?: unknown[]): Promise<pg.QueryResult> {
    return this.cluster.query(sql, params, this.db);
  }

  async connectAs(who: { user: string; password: string }): Promise<pg.Client> {
    const c = new pg.Client({ host: this.cluster.host, port: this.cluster.port, database: this.db, ...who });
    c.on('error', () => {});
    await c.connect();
    this.clients.push(c);
    return c;
  }

  app(): Promise<pg.Client> {
    return this.connectAs(APP);
  }

  async createSession(c: pg.Client, user: string): Promise<Session> {
    const r = await c.query('select * from tessera.create_session($1)', [user]);
    assert.is(r.rows.length, 1);
    this.tokens.push(r.rows[0].session_token);
    return { id: r.rows[0].session_id, token: r.rows[0].session_token };
  }

  /** open_connection; with `addr`, the pooler's form that passes the client's address. */
  async open(c: pg.Client, id: string, nonce: number, token: string | null, addr?: string): Promise<Opened> {
    const r =
      addr === undefined
        ? await c.query('select * from tessera.open_connection($1, $2, $3)', [id, nonce, token])
        : await c.query('select * from tessera.open_connection($1, $2, $3, $4::inet)', [id, nonce, token, addr]);
    assert.is(r.rows.length, 1);
    return { success: r.rows[0].success, errmsg: r.rows[0].errmsg };
  }

  /** A session for `user`, authenticated with the password (nonce 1); credentials from nonce 2 on. */
  async login(c: pg.Client, user: 'alice' | 'bob'): Promise<{ s: Session; creds: SessionCredentials }> {
    const s = await this.createSession(c, user);
    assert.equal(await this.open(c, s.id, 1, `${user}-password`), OK);
    return { s, creds: new SessionCredentials(s.id, s.token, { firstNonce: 2 }) };
  }

  /** The next continuation token of `creds`. */
  cont(c: pg.Client, creds: SessionCredentials): Promise<Opened> {
    const n = creds.next();
    return this.open(c, n.sessionId, n.nonce, n.authentToken);
  }

  async closeAll(): Promise<void> {
    for (const c of this.clients.splice(0)) await c.end().catch(() => {});
  }
}

/** The accessor this connection's backend is bound to (null: nobody). */
export async function who(c: pg.Client): Promise<string | null> {
  return (await c.query('select tessera.current_accessor() as a')).rows[0].a;
}

/** The SQLSTATE a promise fails with, or "no error". */
export async function sqlState(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return 'no error';
}
