// The one schema for proxy.config.json: it gives the TypeScript types, the
// validator (load.ts) and the shipped JSON Schema (write-schema.ts).
// Setting names and defaults follow PgBouncer so its users can carry their
// settings over; times are seconds (fractions allowed) unless stated.
import { Type, type Static, type TSchema } from '@sinclair/typebox';

// Every top-level setting is optional in the file and has a default.
const setting = <T extends TSchema>(schema: T) => Type.Optional(schema);

const seconds = (def: number, description: string) =>
  setting(Type.Number({ minimum: 0, default: def, description }));

const count = (def: number, description: string) =>
  setting(Type.Integer({ minimum: 0, default: def, description }));

const portNumber = (options: { default?: number; description: string }) =>
  Type.Integer({ minimum: 1, maximum: 65535, ...options });

const nonEmpty = (description: string) => Type.String({ minLength: 1, description });

const sslMode = (def: string, description: string) =>
  setting(
    Type.Union(
      [Type.Literal('disable'), Type.Literal('allow'), Type.Literal('prefer'), Type.Literal('require'), Type.Literal('verify-ca'), Type.Literal('verify-full')],
      { default: def, description },
    ),
  );

const poolMode = (options: { default?: string; description: string }) =>
  Type.Union([Type.Literal('session'), Type.Literal('transaction')], options);

// PgBouncer accepts "alice, bob"; we also accept a JSON array.
const UserList = (description: string) =>
  setting(Type.Union([Type.Array(Type.String()), Type.String()], { default: [], description }));

export const DatabaseSchema = Type.Object(
  {
    host: Type.Optional(
      nonEmpty('Server host name, IP address or Unix socket folder, or a comma-separated list of them (a primary and its standbys); give either host or "embedded": true.'),
    ),
    port: Type.Optional(
      Type.Union([portNumber({ description: 'One port for every host.' }), Type.String({ pattern: '^\\s*\\d+\\s*(,\\s*\\d+\\s*)*$', title: 'comma-separated list of ports', description: 'A comma-separated list: one port per host.' })], {
        default: 5432,
        description: 'Server port, or a comma-separated list with one port per host; not used with "embedded": true.',
      }),
    ),
    load_balance_hosts: Type.Optional(
      Type.Union([Type.Literal('disable'), Type.Literal('round-robin')], {
        description: 'With a host list: round-robin (the default, as PgBouncer) spreads new server connections over the hosts; disable tries them in the order written, as libpq does.',
      }),
    ),
    target_session_attrs: Type.Optional(
      Type.Union([Type.Literal('any'), Type.Literal('read-write'), Type.Literal('read-only'), Type.Literal('primary'), Type.Literal('standby'), Type.Literal('prefer-standby')], {
        description: "Which hosts of the list may serve this entry, with libpq's meanings: any (default), read-write, read-only, primary, standby, prefer-standby (a standby, else any host). Checked at every server login and every role_check_interval.",
      }),
    ),
    max_replica_lag: Type.Optional(
      nonEmpty('A standby further behind than this is not used for new transactions until it catches up: replayed WAL behind received WAL ("16MB", units B, kB, MB, GB) or age of the last replayed commit while replay is behind ("10s", units ms, s, min). Unset: no limit (Tessera setting).'),
    ),
    auto_prepare: Type.Optional(Type.Boolean({ description: 'auto_prepare for this database only; defaults to the global setting (Tessera setting).' })),
    embedded: Type.Optional(Type.Boolean({ default: false, description: 'Start an embedded PostgreSQL for this entry instead of connecting to host and port.' })),
    dbname: Type.Optional(nonEmpty('Database name on the server; defaults to the entry name, or for "*" to the name the client asked for.')),
    user: Type.Optional(nonEmpty('Server user every client of this database connects as, whatever user it logged in with.')),
    password: Type.Optional(Type.String({ description: 'Password for the forced server user.' })),
    pool_size: Type.Optional(Type.Integer({ minimum: 0, description: 'Server connections per user for this database; defaults to default_pool_size.' })),
    min_pool_size: Type.Optional(Type.Integer({ minimum: 0, description: 'Server connections kept open for this database; defaults to min_pool_size.' })),
    reserve_pool_size: Type.Optional(Type.Integer({ minimum: 0, description: 'Extra server connections for this database when clients wait; defaults to reserve_pool_size.' })),
    pool_mode: Type.Optional(poolMode({ description: 'Pool mode for this database (session or transaction); defaults to pool_mode.' })),
    max_db_connections: Type.Optional(Type.Integer({ minimum: 0, description: 'Most server connections to this database across all users; defaults to max_db_connections.' })),
    auth_user: Type.Optional(nonEmpty('auth_user for this database (overrides the global one).')),
    auth_query: Type.Optional(nonEmpty('auth_query for this database (overrides the global one).')),
    auth_type: Type.Optional(
      Type.Literal('session_token', {
        description: 'Set to "session_token" to log clients in with session tokens (open_connection on a pooled backend) instead of auth_file passwords; needs user and password, the pool role.',
      }),
    ),
    connect_query: Type.Optional(
      nonEmpty('Query run for each client right after its login, on the server connection it then keeps (e.g. "select tessera.hello()" for dedicated sessions); its error refuses the login. Needs pool_mode "session".'),
    ),
    release_query: Type.Optional(
      Type.String({
        description: 'Query that undoes connect_query when a client releases its server, before server_reset_query (Tessera setting); defaults to session_tokens.close_connection when connect_query is set; empty runs nothing.',
      }),
    ),
  },
  { additionalProperties: false, description: 'Where to send clients that ask for this database name.' },
);

export const UserSchema = Type.Object(
  {
    pool_mode: Type.Optional(poolMode({ description: 'Pool mode for this user (session or transaction); overrides the database and global pool_mode.' })),
    pool_size: Type.Optional(Type.Integer({ minimum: 0, description: 'Server connections per database for this user; overrides the database and global pool size.' })),
    max_user_connections: Type.Optional(Type.Integer({ minimum: 0, description: 'Most server connections for this user across all databases; 0 means unlimited.' })),
    reserve_pool_size: Type.Optional(Type.Integer({ minimum: 0, description: 'Reserve pool size for this user; overrides the database and global setting.' })),
    max_user_client_connections: Type.Optional(Type.Integer({ minimum: 0, description: 'Most client connections for this user; 0 means unlimited.' })),
    query_timeout: Type.Optional(Type.Number({ minimum: 0, description: 'query_timeout for this user, in seconds.' })),
    idle_transaction_timeout: Type.Optional(Type.Number({ minimum: 0, description: 'idle_transaction_timeout for this user, in seconds.' })),
    client_idle_timeout: Type.Optional(Type.Number({ minimum: 0, description: 'client_idle_timeout for this user, in seconds.' })),
  },
  { additionalProperties: false, description: 'Settings for one client user name.' },
);

export const ConfigSchema = Type.Object(
  {
    $schema: Type.Optional(Type.String({ description: 'JSON Schema reference for editors; ignored by Tessera.' })),

    listen_addr: setting(Type.String({ default: '127.0.0.1', description: 'Addresses to accept TCP clients on, comma-separated; "*" means all addresses; empty means the Unix socket only.' })),
    listen_port: setting(portNumber({ default: 6432, description: 'TCP port to accept client connections on; also names the Unix socket (.s.PGSQL.<port>).' })),
    unix_socket_dir: setting(Type.String({ default: '/tmp', description: 'Folder for the Unix socket .s.PGSQL.<listen_port>, so `psql -h /tmp` works; empty disables it.' })),
    pool_mode: setting(poolMode({ default: 'session', description: 'When a server connection returns to the pool: when the client disconnects (session) or after each transaction (transaction).' })),
    default_pool_size: count(20, 'Server connections per user and database pair.'),
    min_pool_size: count(0, 'Server connections to keep open in each pool even when idle.'),
    reserve_pool_size: count(0, 'Extra server connections a pool may open when clients have waited reserve_pool_timeout.'),
    reserve_pool_timeout: seconds(5, 'Seconds a client waits before the reserve pool is used.'),
    max_client_conn: count(100, 'Most client connections accepted at once.'),
    max_db_connections: count(0, 'Most server connections per database across all users; 0 means unlimited.'),
    max_user_connections: count(0, 'Most server connections per user across all databases; 0 means unlimited.'),

    auth_type: setting(
      Type.Union([Type.Literal('trust'), Type.Literal('plain'), Type.Literal('md5'), Type.Literal('scram-sha-256'), Type.Literal('cert'), Type.Literal('hba'), Type.Literal('any')], {
        default: 'md5',
        description: 'How clients prove who they are: trust, plain, md5, scram-sha-256 (against auth_file), cert (a TLS client certificate whose CN is the user name, verified against client_tls_ca_file), hba (per connection, from auth_hba_file), or any (like trust, the user name ignored; every database needs a user).',
      }),
    ),
    auth_file: setting(nonEmpty('File of "user" "secret" lines, relative to this config file; required unless auth_type is trust.')),
    auth_user: setting(nonEmpty('User that looks up the secrets of users not in auth_file with auth_query; its own password comes from auth_file.')),
    auth_query: setting(
      Type.String({
        default: 'SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin',
        description: 'Query auth_user runs to fetch (name, secret) for a user; $1 is the user name.',
      }),
    ),
    auth_hba_file: setting(nonEmpty('pg_hba.conf-style rules for auth_type hba (local, host, hostssl, hostnossl; trust, reject, password, md5, scram-sha-256, cert), relative to this config file.')),
    admin_users: UserList('Users allowed every admin console command, as a list or comma-separated string.'),
    stats_users: UserList('Users allowed the read-only SHOW commands of the admin console, as a list or comma-separated string.'),

    max_prepared_statements: count(200, 'Protocol-level prepared statements kept per server connection in transaction mode (LRU); 0 passes Parse/Bind through untracked.'),
    auto_prepare: setting(
      Type.Boolean({
        default: false,
        description:
          'Transaction mode: an unnamed Parse whose text was seen before runs as a prepared statement shared per backend, so PostgreSQL skips parse and analysis (see "auto_prepare" in README); needs max_prepared_statements > 0 (Tessera setting).',
      }),
    ),
    server_reset_query: setting(Type.String({ default: 'DISCARD ALL', description: 'Query run on a server connection before another client gets it; empty disables it.' })),
    server_reset_query_always: setting(Type.Boolean({ default: false, description: 'Run server_reset_query in transaction mode too, not only in session mode.' })),
    server_connect_timeout: seconds(15, 'Seconds to wait for a server connection and login to finish.'),
    server_check_delay: seconds(30, 'Seconds a server may sit idle before it is checked with server_check_query when taken from the pool; 0 checks every time.'),
    server_check_query: setting(Type.String({ default: '', description: 'Query that checks an idle server before reuse; empty sends an empty query (the cheapest round trip).' })),
    server_login_retry: seconds(15, 'Seconds to wait before connecting again after a server login failed.'),
    server_idle_timeout: seconds(600, 'Seconds an idle server connection is kept before it is closed; 0 disables.'),
    server_lifetime: seconds(3600, 'Seconds after which an unused server connection is closed; 0 means it is used only once.'),
    client_login_timeout: seconds(60, 'Seconds a client has to finish logging in before it is disconnected.'),
    client_idle_timeout: seconds(0, 'Seconds an idle client may stay connected; 0 disables.'),
    query_wait_timeout: seconds(120, 'Seconds a query may wait for a server connection before the client is disconnected; 0 disables.'),
    query_timeout: seconds(0, 'Seconds a query may run before it is cancelled; 0 disables.'),
    idle_transaction_timeout: seconds(0, 'Seconds a client may sit idle inside a transaction before it is disconnected; 0 disables.'),
    cancel_wait_timeout: seconds(10, 'Seconds a cancel request may wait for a server connection; 0 disables.'),
    suspend_timeout: seconds(10, 'Seconds SUSPEND waits for every socket\'s output to be sent; a connection that has not flushed by then is closed.'),

    client_tls_sslmode: sslMode(
      'disable',
      'TLS for clients: disable (never), allow/prefer (when the client asks), require (plaintext clients are refused), verify-ca/verify-full (also a client certificate signed by client_tls_ca_file).',
    ),
    client_tls_key_file: setting(nonEmpty('Private key (PEM) of the certificate Tessera shows clients; required unless client_tls_sslmode is disable.')),
    client_tls_cert_file: setting(nonEmpty('Certificate (PEM, with any intermediates) Tessera shows clients; required unless client_tls_sslmode is disable.')),
    client_tls_ca_file: setting(nonEmpty('CA certificates (PEM) that client certificates must be signed by (verify-ca, verify-full, auth_type cert).')),
    client_tls_protocols: setting(
      Type.String({ default: 'secure', description: 'TLS versions clients may use: a comma list of tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, or all, secure (tlsv1.2,tlsv1.3), legacy (all).' }),
    ),
    client_tls_ciphers: setting(
      Type.String({ default: 'default', description: 'TLS 1.2 ciphers for clients in OpenSSL syntax, or default/secure/fast/normal (Node.js\'s secure default list), compat/legacy, insecure/all.' }),
    ),
    server_tls_sslmode: sslMode(
      'prefer',
      'TLS to PostgreSQL: disable and allow (plaintext), prefer (TLS when the server offers it), require (TLS or fail), verify-ca (and the server certificate signed by server_tls_ca_file), verify-full (and its host name matches).',
    ),
    server_tls_ca_file: setting(nonEmpty('CA certificates (PEM) PostgreSQL\'s certificate must be signed by (verify-ca, verify-full); unset means the system\'s trusted roots.')),
    server_tls_key_file: setting(nonEmpty('Private key (PEM) of a client certificate Tessera shows PostgreSQL (its cert authentication).')),
    server_tls_cert_file: setting(nonEmpty('Client certificate (PEM) Tessera shows PostgreSQL.')),
    server_tls_protocols: setting(Type.String({ default: 'secure', description: 'TLS versions used towards PostgreSQL, as client_tls_protocols.' })),
    server_tls_ciphers: setting(Type.String({ default: 'default', description: 'TLS 1.2 ciphers used towards PostgreSQL, as client_tls_ciphers.' })),
    allow_cleartext_without_tls: setting(
      Type.Boolean({
        default: false,
        description: 'Allow cleartext secrets (plain password logins, session-token logins) over TCP without TLS from non-loopback addresses; Unix sockets and loopback are always allowed (Tessera setting).',
      }),
    ),

    tcp_keepalive: setting(Type.Boolean({ default: true, description: 'Turn on TCP keepalive for client and server sockets.' })),
    tcp_keepidle: count(0, 'Whole seconds of idleness before the first keepalive probe; 0 keeps the system default.'),
    tcp_keepintvl: count(0, 'Whole seconds between keepalive probes; 0 keeps the system default.'),
    tcp_keepcnt: count(0, 'Unanswered keepalive probes before the connection is dropped; 0 keeps the system default.'),
    tcp_user_timeout: count(0, 'Milliseconds sent data may stay unacknowledged before the connection is dropped (TCP_USER_TIMEOUT); 0 keeps the system default.'),

    log_level: setting(
      Type.Union(
        [Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'), Type.Literal('info'), Type.Literal('debug'), Type.Literal('trace')],
        { default: 'info', description: 'Least severe log level that is written.' },
      ),
    ),
    log_format: setting(
      Type.Union([Type.Literal('auto'), Type.Literal('json'), Type.Literal('text')], {
        default: 'auto',
        description: 'Log line format: json (one JSON object a line), text (readable lines with local time), or auto (text when standard output is a terminal, else json) (Tessera setting).',
      }),
    ),
    logfile: setting(Type.String({ default: '', description: 'File the log is also written to (appended; reopened on SIGHUP, for logrotate); empty writes to standard output only.' })),
    syslog: setting(
      Type.Boolean({
        default: false,
        description: 'Also send log lines at info level and above to the system log, through util-linux\'s logger (one long-lived process); if logger stops (the syslog daemon went away), standard error says so once, the other destinations go on, and a line 5 s later starts it again; if it is missing, SIGHUP or RELOAD tries again.',
      }),
    ),
    syslog_ident: setting(Type.String({ minLength: 1, default: 'tessera', description: 'Program name syslog lines carry (PgBouncer\'s default is "pgbouncer").' })),
    syslog_facility: setting(
      Type.Union(
        [Type.Literal('auth'), Type.Literal('authpriv'), Type.Literal('daemon'), Type.Literal('user'), Type.Literal('local0'), Type.Literal('local1'), Type.Literal('local2'), Type.Literal('local3'), Type.Literal('local4'), Type.Literal('local5'), Type.Literal('local6'), Type.Literal('local7')],
        { default: 'daemon', description: 'Syslog facility of the lines: auth, authpriv, daemon, user or local0 to local7.' },
      ),
    ),
    syslog_socket: setting(Type.String({ minLength: 1, default: '/dev/log', description: 'Unix socket of the syslog daemon (journald\'s and rsyslog\'s is /dev/log) (Tessera setting).' })),
    pidfile: setting(Type.String({ default: '', description: 'File Tessera writes its process id to at start-up and removes at exit; empty writes none.' })),
    user: setting(Type.String({ default: '', description: 'When started as root: the OS user Tessera switches to once it listens and has opened its files (as PgBouncer\'s -u); empty stays as started.' })),
    log_connections: setting(Type.Boolean({ default: true, description: 'Log every client login and every server connection opened.' })),
    log_disconnections: setting(Type.Boolean({ default: true, description: 'Log every client and server connection closed, with the reason.' })),
    log_pooler_errors: setting(Type.Boolean({ default: true, description: 'Log every error Tessera itself sends to a client, refused logins included (never the secret).' })),
    log_stats: setting(Type.Boolean({ default: true, description: 'Log a line of per-database averages (transactions, queries, bytes, wait) every stats_period.' })),
    stats_period: seconds(60, 'Seconds between log_stats lines.'),
    verbose: count(0, 'More log detail: 1 logs at debug level, 2 at trace (log_level still applies when lower; -v on the command line adds one).'),
    autodb_idle_timeout: seconds(3600, 'Seconds after which a pool made through the "*" database entry, unused (no client, no server in use), is removed; 0 keeps them.'),
    embedded_password: setting(
      Type.String({ default: 'postgres', writeOnly: true, description: 'Password of the embedded PostgreSQL\'s superuser "postgres", set when its data folder is first created (Tessera setting); never shown by SHOW CONFIG.' }),
    ),
    metrics_listen: setting(Type.String({ default: '', description: 'host:port for the Prometheus /metrics endpoint, the live dashboard at /, /healthz and /readyz; empty disables it (Tessera setting).' })),
    metrics_format: setting(
      Type.Union([Type.Literal('tessera'), Type.Literal('pgbouncer_exporter'), Type.Literal('both')], {
        default: 'tessera',
        description: 'Series names /metrics uses: tessera (tessera_*), pgbouncer_exporter (the names of prometheus-community/pgbouncer_exporter, so its dashboards and alerts carry over), or both; /metrics/tessera and /metrics/pgbouncer always serve one each (Tessera setting).',
      }),
    ),
    metrics_per_accessor: setting(
      Type.Boolean({ default: false, description: 'Export tessera_accessor_* series: transactions, queries and errors per accessor (the end user of a session-token or connect_query login) (Tessera setting).' }),
    ),
    metrics_accessor_limit: count(100, 'Most accessors with series of their own (metrics_per_accessor); the rest are summed under accessor="(other)" (Tessera setting).'),
    audit_log: setting(Type.String({ default: '', description: 'File that gets one JSON line per transaction of a session-token or connect_query login (accessor, session id, database, duration, status, client id), relative to this config file; empty disables it (Tessera setting).' })),
    audit_log_queries: setting(
      Type.Boolean({ default: false, description: 'Also write the statements of each transaction to audit_log (transaction mode only, where Tessera reads whole messages); off by default, as query text may hold personal data (Tessera setting).' }),
    ),
    workers: setting(
      Type.Integer({
        minimum: 1,
        maximum: 64,
        default: 1,
        description: 'Processes sharing the listening port, each with its own pools; limits (pool sizes, max_client_conn, ...) are split between them so the totals stay as configured (Tessera setting, like PgBouncer peering on one host).',
      }),
    ),
    role_check_interval: seconds(
      5,
      'Seconds between checks of each host\'s role and replay lag, for databases with target_session_attrs other than any or with max_replica_lag, over one extra server connection per host and pool; 0 checks only at each server login (Tessera setting).',
    ),
    peer_id: setting(
      Type.Integer({ minimum: 0, maximum: 16383, default: 0, description: 'This instance\'s number among several Tessera (or PgBouncer) instances behind one address; its cancel keys carry it, so a cancel request that lands on another instance is forwarded here. 0: no peering.' }),
    ),
    peers: setting(
      Type.Record(
        Type.String({ pattern: '^[1-9][0-9]*$' }),
        Type.Object(
          {
            host: nonEmpty('Address of the peer instance (or a Unix socket folder).'),
            port: Type.Optional(portNumber({ default: 6432, description: 'Its listen_port.' })),
          },
          { additionalProperties: false },
        ),
        { default: {}, description: 'The other instances by peer_id: { "2": { "host": "10.0.0.2", "port": 6432 } }. A cancel request whose key names one of them is forwarded there; keys naming any other id are dropped.' },
      ),
    ),
    shutdown_timeout: seconds(30, 'Seconds SIGTERM waits for clients to leave (and SIGINT for servers to be released) before closing them (Tessera setting, not PgBouncer).'),

    session_tokens: setting(
      Type.Object(
        {
          preset: Type.Optional(
            Type.Union([Type.Literal('tessera'), Type.Literal('veil2')], {
              default: 'tessera',
              description: 'Session SQL of a known system, as one setting: "tessera" (sql/tessera.sql) or "veil2" (Veil2\'s veil2.open_connection and veil2.close_connection; no tickets, so session mode only; no KILL_SESSION). The other session_tokens queries override its values.',
            }),
          ),
          open_connection: Type.Optional(Type.String({
            default: 'select success, errmsg from tessera.open_connection($1::bigint, $2::integer, $3::text, $4::inet)',
            description: 'Query Tessera runs on a pooled backend to open a session-token login; $1 session id, $2 nonce, $3 authent_token, $4 the client address (only the parameters it references are bound). Must return (success boolean, errmsg text).',
          })),
          close_connection: Type.Optional(Type.String({
            default: 'select tessera.close_connection()',
            description: 'Query Tessera runs before a session-token backend goes back to the pool.',
          })),
          issue_ticket: Type.Optional(Type.String({
            default: 'select tessera.issue_ticket()',
            description: 'Transaction mode: query Tessera runs right after a successful open_connection; returns the ticket (kept by Tessera, never sent to the client) that re-binds other backends to the session. Empty: no tickets (session mode only); also the default when open_connection is not the preset\'s and no ticket query is set.',
          })),
          redeem_ticket: Type.Optional(Type.String({
            default: 'select tessera.redeem_ticket($1::text)',
            description: 'Transaction mode: query Tessera pipelines before a client\'s transaction on a backend bound to another session; $1 the ticket. Must unbind the backend, then return true once bound to the ticket\'s session (false otherwise).',
          })),
          revoke_tickets: Type.Optional(Type.String({
            default: 'select tessera.revoke_tickets($1::text[])',
            description: 'Transaction mode: query Tessera runs when clients have disconnected; $1 their tickets as a text array.',
          })),
          kill_session: Type.Optional(Type.String({
            default: 'select tessera.end_session_admin($1::bigint)',
            description: 'Query the admin console\'s KILL_SESSION runs, as each session-token database\'s pool role, to end a session; $1 the session id. Must return one boolean (true: the session existed). Empty: KILL_SESSION only disconnects the session\'s clients and says the session lives on.',
          })),
          release_check: Type.Optional(Type.String({
            default: '',
            description: 'Query run after close_connection and the reset, before a backend serves another session: unless it returns true the backend is closed instead (the veil2 preset\'s checks that no privileges are loaded). Empty: a backend whose client ran something that can disturb the session SQL\'s state is closed (README: which rule applies).',
          })),
          accessor_query: Type.Optional(Type.String({
            default: 'select tessera.current_accessor()',
            description: 'Query Tessera runs once per session, after its first successful open_connection, to learn the accessor (the end user row-level security sees) for SHOW SESSIONS, per-accessor metrics and audit_log; empty skips it (the accessor is then shown empty).',
          })),
          max_failures: Type.Optional(Type.Integer({ minimum: 0, default: 20, description: 'Failed session-token logins one client address may make in a minute before it is refused; 0 disables the limit.' })),
          ban_seconds: Type.Optional(Type.Number({ minimum: 0, default: 60, description: 'Seconds an address that passed max_failures is refused.' })),
        },
        { additionalProperties: false, default: {}, description: 'Session-token logins (databases with "auth_type": "session_token").' },
      ),
    ),

    databases: setting(Type.Record(Type.String(), DatabaseSchema, { default: {}, description: 'Databases clients may ask for, by name; "*" is the fallback for any other name.' })),
    users: setting(Type.Record(Type.String(), UserSchema, { default: {}, description: 'Per-user settings, by client user name.' })),
  },
  { additionalProperties: false, title: 'Tessera proxy.config.json', description: 'Tessera connection pooler configuration; setting names and defaults follow PgBouncer.' },
);

/** What proxy.config.json may contain: everything optional. */
export type ConfigInput = Static<typeof ConfigSchema>;
export type DatabaseInput = Static<typeof DatabaseSchema>;
/** A [users] entry; unset fields inherit from the database and global settings. */
export type UserConfig = Static<typeof UserSchema>;

type DatabaseCommon = Omit<DatabaseInput, 'host' | 'port' | 'embedded'>;

/**
 * A resolved database entry: either real servers (host + port, each possibly a comma list,
 * checked by the loader to pair up; pool/hosts.ts parseHostList reads them) or an embedded one.
 * dbname stays undefined when not set: it means the entry's name, or for "*" the
 * name the client asked for, which only the caller knows.
 * Pool settings left undefined inherit the global ones.
 */
export type DatabaseConfig =
  | (DatabaseCommon & { embedded: false; host: string; port: number | string })
  | (DatabaseCommon & { embedded: true; host?: undefined; port?: undefined });

export const TLS_FILE_SETTINGS = ['client_tls_key_file', 'client_tls_cert_file', 'client_tls_ca_file', 'server_tls_ca_file', 'server_tls_key_file', 'server_tls_cert_file'] as const;
type TlsFileSetting = (typeof TLS_FILE_SETTINGS)[number];
export type SslMode = 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';

/** The loaded config: every setting with a default is present. */
export type Config = Required<
  Omit<ConfigInput, '$schema' | 'auth_file' | 'auth_hba_file' | 'auth_user' | TlsFileSetting | 'admin_users' | 'stats_users' | 'databases' | 'users' | 'session_tokens'>
> & {
  session_tokens: Required<NonNullable<ConfigInput['session_tokens']>>;
  /** Absolute path, checked to be a readable file; unset only when auth_type is "trust". */
  auth_file?: string;
  /** Absolute path; set when auth_type is "hba". */
  auth_hba_file?: string;
  auth_user?: string;
  /** Absolute paths, checked to be readable files. */
  client_tls_key_file?: string;
  client_tls_cert_file?: string;
  client_tls_ca_file?: string;
  server_tls_ca_file?: string;
  server_tls_key_file?: string;
  server_tls_cert_file?: string;
  admin_users: string[];
  stats_users: string[];
  databases: Record<string, DatabaseConfig>;
  users: Record<string, UserConfig>;
};

/** The JSON Schema document shipped as proxy.config.schema.json. */
export function configJsonSchema(): Record<string, unknown> {
  // JSON round trip drops TypeBox's symbol keys; $id first so it reads as the header.
  return { $schema: 'http://json-schema.org/draft-07/schema#', $id: 'urn:tessera:proxy.config.schema.json', ...JSON.parse(JSON.stringify(ConfigSchema)) };
}
