/**
 * Who each transaction served: per-session and per-accessor counts for session-token and
 * connect_query logins (SHOW SESSIONS, the tessera_accessor_* series, audit_log). The accessor is
 * the end user PostgreSQL's row-level security sees (tessera.current_accessor()), not the pool
 * role. A logged-in client holds one ClientAccount; the relay only bumps its numbers (no
 * allocation, no await), and the audit line, when audit_log is on, is the one write per transaction.
 */
import type { Config } from '../config/schema.js';
import type { ServerConnection } from '../pool/server-connection.js';
import type { SessionSnapshot } from '../admin/snapshots.js';
import { AuditLog } from './audit-log.js';
import { log } from '../log.js';

/** Label of the series that sums the accessors past metrics_accessor_limit. */
export const OTHER_ACCESSORS = '(other)';
/** Sessions no client has used for this long leave SHOW SESSIONS (Tessera's default session expiry). */
const SESSION_KEPT_MS = 20 * 60_000;
const PRUNE_EVERY_MS = 10_000;
/** At most this many sessions are remembered; the longest unused go first. */
const MAX_SESSIONS = 10_000;
/** Per transaction, at most this much statement text goes to the audit log (audit_log_queries). */
const MAX_AUDIT_QUERY_CHARS = 4096;

export interface AccessorTotals {
  transactions: number;
  queries: number;
  errors: number;
}

/** One row of SHOW SESSIONS while it is remembered: a token session, or a connect_query accessor. */
export class SessionAccount {
  clients = 0;
  transactions = 0;
  queries = 0;
  errors = 0;
  lastActiveAt = Date.now();

  constructor(
    readonly sessionId: string | null,
    readonly accessor: string,
    readonly database: string,
    public address: string,
    readonly totals: AccessorTotals,
  ) {}
}

/** What the relay of one logged-in client reports to. */
export class ClientAccount {
  /** Statements of the running transaction (audit_log_queries only). */
  private statements: string[] | null = null;
  private statementChars = 0;

  constructor(
    readonly session: SessionAccount,
    private readonly clientId: number,
    private readonly audit: AuditLog | null,
    /** audit_log_queries: the relay hands over statement text (noteStatement). */
    readonly wantsStatements: boolean,
  ) {}

  noteQueries(n: number): void {
    this.session.queries += n;
    this.session.totals.queries += n;
  }

  /** A statement's text (Query or Parse), for audit_log_queries; capped per transaction. */
  noteStatement(sql: Buffer): void {
    if (this.statementChars >= MAX_AUDIT_QUERY_CHARS) return;
    const text = sql.toString('utf8', 0, Math.min(sql.length, MAX_AUDIT_QUERY_CHARS - this.statementChars)).replace(/\0+$/, '');
    this.statementChars += text.length;
    (this.statements ??= []).push(text);
  }

  /**
   * The client's transaction ended (a ReadyForQuery back to idle, at `endedAt`) after `us`
   * microseconds, with `errors` ErrorResponses from the server in it.
   */
  transactionEnded(endedAt: number, us: number, errors: number): void {
    const s = this.session;
    s.transactions++;
    s.totals.transactions++;
    if (errors > 0) {
      s.errors += errors;
      s.totals.errors += errors;
    }
    s.lastActiveAt = endedAt;
    if (this.audit === null) return;
    this.audit.write({
      time: new Date(endedAt).toISOString(),
      accessor: s.accessor,
      session_id: s.sessionId,
      database: s.database,
      client_id: this.clientId,
      duration_ms: Math.round(us) / 1000,
      status: errors > 0 ? 'error' : 'ok',
      ...(this.statements ? { statements: this.statements } : {}),
    });
    this.statements = null;
    this.statementChars = 0;
  }
}

/** The client fields accounting reads at login. */
export interface AccountedClient {
  readonly id: number;
  readonly sessionId: string | null;
  readonly user: string;
  readonly database: string;
  readonly remoteAddress: string;
}

export class Accounting {
  private readonly sessions = new Map<string, SessionAccount>();
  /** Accessors of the sessions seen (session id -> accessor), so each session is asked once. */
  private readonly accessorOfSession = new Map<string, string>();
  private readonly totals = new Map<string, AccessorTotals>();
  /** Counts nobody reads (metrics_per_accessor off): one shared object, so nothing grows. */
  private readonly unexported: AccessorTotals = { transactions: 0, queries: 0, errors: 0 };
  private perAccessor = false;
  private limit = 100;
  private accessorQuery = '';
  private auditQueries = false;
  private audit: AuditLog | null = null;
  private prunedAt = 0;

  constructor(config: Readonly<Config>) {
    this.configure(config);
  }

  /** At start and on every RELOAD/SET: the settings apply to logins from now on. */
  configure(config: Readonly<Config>): void {
    if (this.perAccessor !== config.metrics_per_accessor || this.limit !== config.metrics_accessor_limit) this.totals.clear();
    this.perAccessor = config.metrics_per_accessor;
    this.limit = config.metrics_accessor_limit;
    this.accessorQuery = config.session_tokens.accessor_query;
    this.auditQueries = config.audit_log_queries;
    if (this.audit?.path !== config.audit_log || this.audit?.broken) {
      this.audit?.close();
      this.audit = config.audit_log ? new AuditLog(config.audit_log) : null;
    }
  }

  /**
   * A session-token login succeeded on `server`: learn the session's accessor (accessor_query,
   * once per session), then `done`. A failing query only leaves the accessor empty.
   */
  identify(sessionId: string, server: ServerConnection, done: () => void): void {
    if (this.accessorOfSession.has(sessionId) || this.accessorQuery === '') return done();
    server.query(this.accessorQuery, []).then(
      (rows) => {
        this.remember(sessionId, rows[0]?.[0] ?? '');
        done();
      },
      (err: { code?: string }) => {
        log.warn({ code: err.code }, 'session_tokens.accessor_query failed; the session\'s accessor stays unknown');
        this.remember(sessionId, '');
        done();
      },
    );
  }

  private remember(sessionId: string, accessor: string): void {
    if (this.accessorOfSession.size >= MAX_SESSIONS) this.accessorOfSession.delete(this.accessorOfSession.keys().next().value!);
    this.accessorOfSession.set(sessionId, accessor);
  }

  /**
   * A client finished logging in: its account, or null when it is no end user's (a plain login).
   * connect_query logins (dedicated sessions) serve the accessor named like their login role.
   */
  open(client: AccountedClient, connectQuery: boolean): ClientAccount | null {
    let key: string;
    let accessor: string;
    if (client.sessionId !== null) {
      key = `s${client.sessionId}`;
      accessor = this.accessorOfSession.get(client.sessionId) ?? '';
    } else if (connectQuery) {
      key = `u${client.database}\u0000${client.user}`;
      accessor = client.user;
    } else {
      return null;
    }
    let session = this.sessions.get(key);
    if (!session) {
      session = new SessionAccount(client.sessionId, accessor, client.database, client.remoteAddress, this.totalsOf(accessor));
      this.sessions.set(key, session);
    } else {
      // Most recently used last, so pruning drops the longest unused first.
      this.sessions.delete(key);
      this.sessions.set(key, session);
      session.address = client.remoteAddress;
    }
    session.clients++;
    session.lastActiveAt = Date.now();
    return new ClientAccount(session, client.id, this.audit, this.audit !== null && this.auditQueries);
  }

  close(account: ClientAccount): void {
    account.session.clients--;
  }

  private totalsOf(accessor: string): AccessorTotals {
    if (!this.perAccessor) return this.unexported;
    let t = this.totals.get(accessor);
    if (t) return t;
    const name = this.totals.size < this.limit ? accessor : OTHER_ACCESSORS;
    t = this.totals.get(name) ?? { transactions: 0, queries: 0, errors: 0 };
    this.totals.set(name, t);
    return t;
  }

  /** Shutdown: flushes and closes the audit log. */
  async closeAudit(): Promise<void> {
    const audit = this.audit;
    this.audit = null;
    await audit?.close();
  }

  /** The janitor: forget sessions no client has used for a while (a pass every 10 s is plenty). */
  prune(now: number): void {
    if (now - this.prunedAt < PRUNE_EVERY_MS) return;
    this.prunedAt = now;
    for (const [key, s] of this.sessions) {
      if (s.clients === 0 && (now - s.lastActiveAt >= SESSION_KEPT_MS || this.sessions.size > MAX_SESSIONS)) this.sessions.delete(key);
    }
  }

  /** SHOW SESSIONS rows, most recently active first. */
  snapshot(): SessionSnapshot[] {
    return [...this.sessions.values()]
      .map((s) => ({
        session_id: s.sessionId,
        accessor: s.accessor,
        database: s.database,
        clients: s.clients,
        transactions: s.transactions,
        queries: s.queries,
        errors: s.errors,
        last_active: new Date(s.lastActiveAt),
        addr: s.address,
      }))
      .sort((a, b) => b.last_active.getTime() - a.last_active.getTime());
  }

  /** The tessera_accessor_* series (metrics_per_accessor), every accessor seen so far. */
  accessorSeries(): ({ accessor: string } & AccessorTotals)[] {
    if (!this.perAccessor) return [];
    return [...this.totals].map(([accessor, t]) => ({ accessor, ...t }));
  }
}
