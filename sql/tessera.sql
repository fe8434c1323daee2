-- Tessera's session schema: per-user session tokens after Veil2's "shared sessions".
--
--   psql -v ON_ERROR_STOP=1 -f sql/tessera.sql      (as a superuser, once per database)
--
-- Running it again is harmless: objects are created only if missing, functions are
-- replaced, parameters already set are kept, roles are created only if missing.
--
-- The protocol, as an application sees it:
--   1. select * from tessera.create_session('alice');            -> session_id, session_token
--   2. select * from tessera.open_connection(id, 1, 'alice-password');   first call: the password
--   3. select * from tessera.open_connection(id, n, authent_token);     every later call, n = 2, 3, ...
--        authent_token = encode(digest(session_token || to_hex(n), 'sha1'), 'base64')
--   4. row-level security policies call (select tessera.current_accessor())
--   5. select tessera.close_connection();   before the backend serves anybody else
--   (transaction pooling: issue_ticket / redeem_ticket / revoke_tickets, the pooler's alone)
--   6. select tessera.end_session(id, n, authent_token);   logout: the session is gone, also
--        for backends still bound to it
--
-- Users with database credentials of their own get the same context from
-- `select tessera.hello()` (a dedicated session: binds the backend to the accessor
-- named session_user).
--
-- Session tokens are stored encrypted under a key kept in a file in the server's data
-- directory (tessera_<database oid>.key, created below when missing), never in a table:
-- a dump or a copy of the tables yields no usable token. tessera.rotate_key() replaces it.
--
-- Call open_connection in autocommit. It records failed attempts and used nonces and
-- then returns normally, so a caller that wraps it in a transaction and rolls back
-- undoes that bookkeeping (the binding goes with it too, so this cannot be used to gain
-- access, only to dodge the failure counter).
--
-- Nothing here is readable or writable by the roles that use it: all state lives in
-- tables only the installing superuser owns, reached through SECURITY DEFINER functions
-- whose search_path is pinned (pg_temp last, so a temp table cannot shadow a table).

begin;
-- Re-runs would otherwise print an "already exists, skipping" notice per object.
set local client_min_messages = warning;

-- ---------------------------------------------------------------------------
-- Roles (cluster-wide, so only created when missing).
--   tessera_user: may run the session protocol (create_session, open_connection, ...).
--   tessera_pool: the pooler; may also pass the client's real address to open_connection.
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'tessera_user') then
    create role tessera_user nologin;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'tessera_pool') then
    create role tessera_pool nologin;
  end if;
end
$$;

-- tessera_admin: may end any session (end_session_admin); granted to nobody by default.
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'tessera_admin') then
    create role tessera_admin nologin;
  end if;
end
$$;

create schema if not exists tessera;
revoke all on schema tessera from public;
grant usage on schema tessera to tessera_user, tessera_pool, tessera_admin;

-- ---------------------------------------------------------------------------
-- pgcrypto, called as tessera.<fn> everywhere below. A fresh install puts it in this
-- schema. Where the database already has it in another schema (often public), thin
-- wrappers with the same names forward to it, so the calls below stay the same.
create extension if not exists pgcrypto with schema tessera;

do $$
declare
  home name := (select n.nspname from pg_catalog.pg_extension e
                  join pg_catalog.pg_namespace n on n.oid = e.extnamespace
                 where e.extname = 'pgcrypto');
begin
  if home <> 'tessera' then
    execute format($f$
      create or replace function tessera.gen_random_bytes(integer) returns bytea
        language sql volatile strict as 'select %1$I.gen_random_bytes($1)';
      create or replace function tessera.digest(text, text) returns bytea
        language sql immutable strict as 'select %1$I.digest($1, $2)';
      create or replace function tessera.crypt(text, text) returns text
        language sql immutable strict as 'select %1$I.crypt($1, $2)';
      create or replace function tessera.gen_salt(text) returns text
        language sql volatile strict as 'select %1$I.gen_salt($1)';
    $f$, home);
  end if;
end
$$;

-- The same for the functions that encrypt session tokens at rest.
do $$
declare
  home name := (select n.nspname from pg_catalog.pg_extension e
                  join pg_catalog.pg_namespace n on n.oid = e.extnamespace
                 where e.extname = 'pgcrypto');
begin
  if home <> 'tessera' then
    execute format($f$
      create or replace function tessera.pgp_sym_encrypt(text, text, text) returns bytea
        language sql volatile strict as 'select %1$I.pgp_sym_encrypt($1, $2, $3)';
      create or replace function tessera.pgp_sym_decrypt(bytea, text) returns text
        language sql immutable strict as 'select %1$I.pgp_sym_decrypt($1, $2)';
    $f$, home);
  end if;
end
$$;

-- ---------------------------------------------------------------------------
-- Tables.

-- Tunables. Values are text; each function casts what it reads.
create table if not exists tessera.parameters (
  name  text primary key,
  value text not null
);
insert into tessera.parameters (name, value) values
  ('session_timeout', '20 minutes'),         -- interval: a session's life, renewed by each success
  ('max_failed_attempts', '5'),              -- more failed logins than this locks a session for good
  ('bind_sessions_to_address', 'false')      -- true: every new session is tied to the address that first authenticated
on conflict (name) do nothing;               -- an administrator's settings survive a re-install
insert into tessera.parameters (name, value) values
  ('key_directory', '')                      -- folder of the key file; empty: the data directory
on conflict (name) do nothing;

create table if not exists tessera.accessors (
  accessor_id   integer generated always as identity primary key,
  username      text not null unique,
  password_hash text not null,                  -- bcrypt, from crypt(password, gen_salt('bf'))
  bind_address  boolean not null default false, -- this user's sessions are tied to the first address
  created_at    timestamptz not null default now()
);

-- One row per create_session() call. fillfactor leaves room for HOT updates: every
-- open_connection rewrites the nonce window.
create table if not exists tessera.sessions (
  session_id      bigint primary key check (session_id > 0),  -- random, never a sequence
  accessor_id     integer references tessera.accessors on delete cascade,
                                                  -- null: created for an unknown name; can never succeed
  session_token_enc bytea not null,               -- the shared secret, encrypted (tessera.encrypt_token):
                                                  -- needed in clear to check tokens, useless without the key file
  authent_type    text not null,                  -- 'bcrypt' (the only one so far)
  authenticated   boolean not null default false, -- the password has been checked once
  expires_at      timestamptz not null,
  nonce_low       bigint,                         -- lowest nonce used; null before the first attempt
  nonce_high      bigint,                         -- highest nonce used
  nonce_bits      bigint not null default 0,      -- bit i set: nonce (nonce_high - i) used, i = 0..63
  failed_attempts integer not null default 0,
  locked          boolean not null default false, -- set once failed_attempts > max_failed_attempts
  bind_address    boolean not null default false, -- later calls must come from client_addr
  client_addr     inet,                           -- address of the first successful authentication
  created_at      timestamptz not null default now()
) with (fillfactor = 80);
create index if not exists sessions_expires_at on tessera.sessions (expires_at);

-- Which session each backend serves. Keyed by pid AND backend start time, so a new
-- backend that happens to get a dead one's pid does not inherit its binding.
-- Unlogged: a binding means nothing after a crash (every backend is gone) and writes stay cheap.
-- A token session binds session_id; a dedicated session (hello()) binds accessor_id directly:
-- it lasts as long as the backend's login, so it needs no session row, token or expiry.
create unlogged table if not exists tessera.bindings (
  pid           integer primary key,
  backend_start timestamptz not null,
  session_id    bigint references tessera.sessions on delete cascade,
  bound_at      timestamptz not null default now(),
  accessor_id   integer references tessera.accessors on delete cascade,  -- last, as an upgrade adds it
  constraint bindings_one_kind check (num_nonnulls(session_id, accessor_id) = 1)
);
create index if not exists bindings_session_id on tessera.bindings (session_id);

-- Tickets: how a pooler in transaction mode binds the next backend to a client's session
-- without holding the session token or spending a nonce per transaction. issue_ticket()
-- hands one to the pooler right after a successful open_connection; the pooler keeps it
-- (the client never sees it), redeems it on each backend it moves the client to, and
-- revokes it when the client disconnects. Only a hash is stored, so a dump yields nothing
-- redeemable; tickets die with their session.
create table if not exists tessera.tickets (
  ticket_hash bytea primary key,                  -- sha256 of the ticket
  session_id  bigint not null references tessera.sessions on delete cascade,
  issued_at   timestamptz not null default now()
);
create index if not exists tickets_session_id on tessera.tickets (session_id);

-- Installs from before dedicated sessions: the same table, reached by altering the old one.
do $$
begin
  if not exists (select from pg_catalog.pg_attribute
                  where attrelid = 'tessera.bindings'::regclass and attname = 'accessor_id' and not attisdropped) then
    alter table tessera.bindings
      add column accessor_id integer references tessera.accessors on delete cascade,
      alter column session_id drop not null,
      add constraint bindings_one_kind check (num_nonnulls(session_id, accessor_id) = 1);
  end if;
end
$$;

-- Only the functions below touch these tables.
revoke all on all tables in schema tessera from public, tessera_user, tessera_pool;
revoke all on all sequences in schema tessera from public, tessera_user, tessera_pool;

-- ---------------------------------------------------------------------------
-- Functions. All SECURITY DEFINER (they run as the installing superuser) with a pinned
-- search_path; tables and pgcrypto are schema-qualified anyway.

-- ---------------------------------------------------------------------------
-- Secrets at rest. Session tokens are encrypted (pgcrypto, AES-256 in OpenPGP's
-- authenticated format) under a random key that lives in a file, never in a table, so
-- neither pg_dump nor a copy of the tables yields a usable token. Only these functions,
-- running as the superuser, read the file (pg_read_file); the roles that use Tessera
-- cannot. One file per database (by oid): rotating one database's key leaves the
-- others alone, and a dump restored into another database finds no key for its tokens.
-- The key is read from the file on each use (a small read), not cached: plpgsql has no
-- backend-private variable, and a GUC would be readable by the connected role.
-- COPY creates the file readable by all (0644): what keeps other OS users out is its
-- folder, the data directory, which PostgreSQL keeps 0700 (0750 with group access).
-- A file-level backup of the data directory copies the key file too: point the
-- key_directory parameter at another folder only the server's OS user can enter (and
-- move the file there) to keep them apart.

-- Internal: the key file's path. plpgsql, not sql: a SECURITY DEFINER sql function is never
-- inlined and was planned afresh on every login (read_key runs it each time).
create or replace function tessera.key_path()
returns text
language plpgsql stable security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
begin
  return coalesce(nullif((select p.value from tessera.parameters p where p.name = 'key_directory'), ''),
                  pg_catalog.current_setting('data_directory'))
         || '/tessera_'
         || (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
         || '.key';
end
$$;

-- Internal: the key (64 hex digits).
create or replace function tessera.read_key()
returns text
language plpgsql stable security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
declare
  _path text := tessera.key_path();
  _key  text := btrim(pg_read_file(_path, 0, 1024, true), E' \t\r\n');
begin
  if _key is null or length(_key) < 32 then
    raise exception 'tessera: the key file % is missing or empty', _path
      using errcode = '58P01',
            hint = 'Run sql/tessera.sql again as a superuser to create one; sessions encrypted under a lost key cannot be used any more.';
  end if;
  return _key;
end
$$;

-- Internal: a session token, encrypted for the sessions table. s2k-mode=1: the key is
-- already 256 random bits, so no password stretching is needed.
create or replace function tessera.encrypt_token(token text, key text default null)
returns bytea
language sql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
  select tessera.pgp_sym_encrypt(token, coalesce(key, tessera.read_key()),
                                 'cipher-algo=aes256, s2k-mode=1, compress-algo=0');
$$;

-- Internal: the token back, or null when it was encrypted under another key (a lost or
-- replaced key file, a restored dump): such a session can only fail.
create or replace function tessera.decrypt_token(token_enc bytea, key text default null)
returns text
language plpgsql stable security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
begin
  return tessera.pgp_sym_decrypt(token_enc, coalesce(key, tessera.read_key()));
exception when sqlstate '39000' then  -- pgcrypto's "Wrong key or corrupt data"
  return null;
end
$$;

-- Administrators: replaces the key with a new random one and re-encrypts every live
-- session's token under it; returns how many. Sessions keep working, tokens do not change
-- (after a leak of both the key and the tables, end the sessions instead).
-- The new key is written by the server itself (COPY of a random value to a staging file,
-- read back), so it never appears in any statement's text, log line or error context.
create or replace function tessera.rotate_key()
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
declare
  _path    text := tessera.key_path();
  _staging text := tessera.key_path() || '.new';
  _old     text;
  _new     text;
  _count   integer;
begin
  -- No session may be created or re-encrypted under the old key meanwhile.
  lock table tessera.sessions in share row exclusive mode;
  _old := tessera.read_key();
  execute format('copy (select pg_catalog.encode(tessera.gen_random_bytes(32), %L)) to %L', 'hex', _staging);
  _new := btrim(pg_read_file(_staging), E' \t\r\n');
  update tessera.sessions s
     set session_token_enc = tessera.encrypt_token(tessera.decrypt_token(s.session_token_enc, _old), _new)
   where tessera.decrypt_token(s.session_token_enc, _old) is not null;
  get diagnostics _count = row_count;
  -- The key file last: an error above leaves the old key and the old ciphertexts together.
  execute format('copy (select pg_catalog.btrim(pg_catalog.pg_read_file(%L), E'' \t\r\n'')) to %L', _staging, _path);
  execute format('copy (select 1 where false) to %L', _staging);  -- empty the staging copy
  return _count;
end
$$;

-- The key file, created when missing, the same way.
do $$
declare
  _path text := tessera.key_path();
begin
  if pg_catalog.pg_stat_file(_path, true) is null then
    execute format('copy (select pg_catalog.encode(tessera.gen_random_bytes(32), %L)) to %L', 'hex', _path);
  end if;
end
$$;

-- Installs from before encryption: encrypt the tokens of live sessions, drop the clear ones.
-- (Their old row versions remain on disk until VACUUM reclaims them.)
do $$
begin
  if exists (select from pg_catalog.pg_attribute
              where attrelid = 'tessera.sessions'::regclass and attname = 'session_token' and not attisdropped) then
    alter table tessera.sessions add column if not exists session_token_enc bytea;
    execute 'update tessera.sessions set session_token_enc = tessera.encrypt_token(session_token)';
    alter table tessera.sessions alter column session_token_enc set not null, drop column session_token;
  end if;
end
$$;

-- Administrators only. Fails (unique_violation) if the name is taken.
create or replace function tessera.create_accessor(username text, password text)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
declare
  _id integer;
begin
  if username is null or password is null or password = '' then
    raise exception 'tessera.create_accessor: username and password are required'
      using errcode = '22023';
  end if;
  insert into tessera.accessors as a (username, password_hash)
  values (create_accessor.username, tessera.crypt(create_accessor.password, tessera.gen_salt('bf')))
  returning a.accessor_id into _id;
  return _id;
end
$$;

-- Always appears to succeed, so it cannot tell anybody which names exist: an unknown
-- name gets a real session row with no accessor, which behaves like any other session
-- (nonces, expiry, locking, a bcrypt's worth of work) except that it never authenticates.
create or replace function tessera.create_session(username text, authent_type text default 'bcrypt')
returns table (session_id bigint, session_token text, session_supplemental text)
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
#variable_conflict use_column
declare
  _accessor_id integer;
  _bind        boolean;
  _id          bigint;
  _token       text := encode(tessera.gen_random_bytes(32), 'hex');
  _timeout     interval := coalesce(
    (select p.value::interval from tessera.parameters p where p.name = 'session_timeout'), '20 minutes');
begin
  if create_session.authent_type is distinct from 'bcrypt' then
    raise exception 'tessera.create_session: unsupported authent_type %', create_session.authent_type
      using errcode = '22023';
  end if;
  select a.accessor_id, a.bind_address into _accessor_id, _bind
    from tessera.accessors a where a.username = create_session.username;
  _bind := coalesce(_bind, false) or coalesce(
    (select p.value::boolean from tessera.parameters p where p.name = 'bind_sessions_to_address'), false);
  loop
    -- 63 random bits, positive: neither guessable nor enumerable.
    _id := ('x' || encode(tessera.gen_random_bytes(8), 'hex'))::bit(64)::bigint & 9223372036854775807;
    continue when _id = 0;
    insert into tessera.sessions (session_id, accessor_id, session_token_enc, authent_type, expires_at, bind_address)
    values (_id, _accessor_id, tessera.encrypt_token(_token), 'bcrypt', now() + _timeout, _bind)
    on conflict do nothing;
    exit when found;  -- a collision (2^-63 per live session) just draws again
  end loop;
  return query select _id, _token, null::text;
end
$$;

-- Internal: the proof a session's holder gives, shared by open_connection and end_session.
-- Returns null when it holds, else the errmsg (AUTHFAIL, EXPIRED, NONCEFAIL, LOCKED).
-- Either way the nonce is used up and a failure counted; a success also marks the session
-- authenticated, records client_addr the first time, and renews its expiry.
-- client_addr is the real client's address, which the session records on first
-- authentication and, if bind_address is set, requires afterwards.
create or replace function tessera.check_proof(
  session_id bigint, nonce integer, authent_token text, client_addr inet)
returns text
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
#variable_conflict use_column
declare
  s          tessera.sessions%rowtype;
  _hash      text;
  _computed  text;
  _expected  text;
  _ok        boolean;
  _lowest    bigint;
  _gap       bigint;
  _limit     integer;
  _timeout   interval;
  -- Any well-formed bcrypt hash (cost 6, as gen_salt('bf') makes): sessions of unknown
  -- names are checked against it so that they cost the same as real ones. What it is the
  -- hash of does not matter: a session without an accessor never succeeds.
  _dummy     constant text := '$2a$06$QrjY2ylyRqoKlGBjvlQ3vOkjkO6r0DOZgrPBzf9HnTgaPWSQjz1MS';
begin
  -- By id, locked so that concurrent attempts on one session see each other's nonces.
  select * into s from tessera.sessions x where x.session_id = check_proof.session_id for update;
  if not found then
    return 'AUTHFAIL';
  end if;
  if s.locked then
    return 'LOCKED';
  end if;
  if s.expires_at <= now() then
    return 'EXPIRED';
  end if;

  -- Nonces, as Veil2: unused, not below the lowest one still kept, at most 64 above the
  -- highest used. The bitmap keeps the 64 nonces ending at nonce_high, so the lowest
  -- kept is the lowest ever used or, once the window has moved past it, its bottom edge.
  -- Unused nonces inside the window stay good: concurrent connections may arrive out of order.
  if nonce is null or nonce < 0 then
    return 'NONCEFAIL';
  end if;
  if s.nonce_high is not null then
    _lowest := greatest(s.nonce_low, s.nonce_high - 63);
    if nonce < _lowest or nonce > s.nonce_high + 64
       or (nonce <= s.nonce_high and (s.nonce_bits >> (s.nonce_high - nonce)::integer) & 1 = 1) then
      return 'NONCEFAIL';
    end if;
  end if;
  -- The nonce is now used up, whether the credentials below are right or not.
  s.nonce_low := least(s.nonce_low, nonce);  -- least() ignores the null of a first attempt
  if s.nonce_high is null then
    s.nonce_high := nonce;
    s.nonce_bits := 1;
  elsif nonce > s.nonce_high then
    _gap := nonce - s.nonce_high;
    s.nonce_bits := case when _gap >= 64 then 1 else (s.nonce_bits << _gap::integer) | 1 end;
    s.nonce_high := nonce;
  else
    s.nonce_bits := s.nonce_bits | (1::bigint << (s.nonce_high - nonce)::integer);
  end if;

  -- Credentials. Both sides are hashed once more before comparing, so the comparison's
  -- time says nothing about how much of a guess was right.
  if not s.authenticated then
    -- First call: the password, against the one hash this session's accessor has.
    select a.password_hash into _hash from tessera.accessors a where a.accessor_id = s.accessor_id;
    _hash := coalesce(_hash, _dummy);
    _computed := tessera.crypt(coalesce(authent_token, ''), _hash);
    _ok := s.accessor_id is not null
           and tessera.digest(_computed, 'sha256') = tessera.digest(_hash, 'sha256');
  else
    -- Continuation: base64(sha1(session_token || lower-case hex of nonce)), Veil2's formula.
    -- A token that no longer decrypts (its key is gone) gives a null _expected: a failure.
    _expected := encode(tessera.digest(tessera.decrypt_token(s.session_token_enc) || to_hex(nonce), 'sha1'), 'base64');
    _ok := coalesce(tessera.digest(coalesce(authent_token, ''), 'sha256') = tessera.digest(_expected, 'sha256'), false);
    if s.bind_address and s.client_addr is distinct from check_proof.client_addr then
      _ok := false;  -- right token, wrong place: same answer as a wrong token
    end if;
  end if;

  if not _ok then
    _limit := coalesce(
      (select p.value::integer from tessera.parameters p where p.name = 'max_failed_attempts'), 5);
    update tessera.sessions x
       set nonce_low = s.nonce_low,
           nonce_high = s.nonce_high,
           nonce_bits = s.nonce_bits,
           failed_attempts = x.failed_attempts + 1,
           locked = x.failed_attempts + 1 > _limit
     where x.session_id = s.session_id
    returning x.locked into s.locked;
    return case when s.locked then 'LOCKED' else 'AUTHFAIL' end;
  end if;

  _timeout := coalesce(
    (select p.value::interval from tessera.parameters p where p.name = 'session_timeout'), '20 minutes');
  update tessera.sessions x
     set nonce_low = s.nonce_low,
         nonce_high = s.nonce_high,
         nonce_bits = s.nonce_bits,
         authenticated = true,
         client_addr = case when x.authenticated then x.client_addr else check_proof.client_addr end,
         expires_at = now() + _timeout
   where x.session_id = s.session_id;
  return null;
end
$$;

-- The pooler's form: client_addr is the real client's address (see check_proof).
-- Only tessera_pool may call it (a relayed client must not choose its own address).
create or replace function tessera.open_connection(
  session_id bigint, nonce integer, authent_token text, client_addr inet)
returns table (success boolean, errmsg text)
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
declare
  _errmsg text;
begin
  -- Any attempt ends this backend's current binding, whatever its outcome.
  perform tessera.close_connection();
  _errmsg := tessera.check_proof(open_connection.session_id, open_connection.nonce,
                                 open_connection.authent_token, open_connection.client_addr);
  if _errmsg is null then
    insert into tessera.bindings (pid, backend_start, session_id)
    values (pg_backend_pid(),
            (select a.backend_start from pg_stat_get_activity(pg_backend_pid()) a),
            open_connection.session_id);
  end if;
  return query select _errmsg is null, _errmsg;
end
$$;

-- The ordinary form: the address is that of this connection's own client (null over a
-- Unix socket). Through a pooler that is the pooler's address, so a relayed client
-- calling this cannot pass the address check of a session tied to a real client.
-- (plpgsql only so that its plan is kept across calls.)
create or replace function tessera.open_connection(session_id bigint, nonce integer, authent_token text)
returns table (success boolean, errmsg text)
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
begin
  return query
    select * from tessera.open_connection(open_connection.session_id, open_connection.nonce,
                                          open_connection.authent_token, inet_client_addr());
end
$$;

-- ---------------------------------------------------------------------------
-- Logout. The session row goes (its bindings and anything else hanging off it with it),
-- so open_connection then answers AUTHFAIL, as for a session that never existed, and
-- current_accessor() on a backend still bound to it is null from the next statement on.

-- The holder's form: the same proof as open_connection (a fresh nonce and a token, or the
-- password while the session has never authenticated). False for a wrong proof and for
-- an unknown, expired or locked session alike; the attempt uses its nonce either way.
create or replace function tessera.end_session(
  session_id bigint, nonce integer, authent_token text, client_addr inet)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
begin
  if tessera.check_proof(end_session.session_id, end_session.nonce,
                         end_session.authent_token, end_session.client_addr) is not null then
    return false;
  end if;
  delete from tessera.sessions s where s.session_id = end_session.session_id;
  return true;
end
$$;

-- The ordinary form, with this connection's own client address (as open_connection's).
create or replace function tessera.end_session(session_id bigint, nonce integer, authent_token text)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
begin
  return tessera.end_session(end_session.session_id, end_session.nonce,
                             end_session.authent_token, inet_client_addr());
end
$$;

-- Administrators (superuser, owner, members of tessera_admin): ends any session by id.
-- True when there was one.
create or replace function tessera.end_session_admin(session_id bigint)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
begin
  delete from tessera.sessions s where s.session_id = end_session_admin.session_id;
  return found;
end
$$;

-- ---------------------------------------------------------------------------
-- Dedicated sessions (Veil2's hello()): a user who logs in with database credentials of
-- their own gets the context of the accessor of the same name. Binds this backend to the
-- accessor whose username is session_user (the login role: SET ROLE does not change it)
-- and returns true; returns false and binds nothing when there is no such accessor, so
-- such a user sees what an unbound backend sees. Never binds the login role of a pooler
-- (a tessera_pool member), which serves many users. Ended by close_connection().
create or replace function tessera.hello()
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
declare
  _accessor_id integer;
begin
  perform tessera.close_connection();
  if pg_has_role(session_user, 'tessera_pool', 'member') then
    return false;
  end if;
  select a.accessor_id into _accessor_id from tessera.accessors a where a.username = session_user;
  if not found then
    return false;
  end if;
  insert into tessera.bindings (pid, backend_start, accessor_id)
  values (pg_backend_pid(),
          (select a.backend_start from pg_stat_get_activity(pg_backend_pid()) a),
          _accessor_id);
  return true;
end
$$;

-- Unbinds this backend (a token or a dedicated session). DISCARD ALL does not do this:
-- the pooler must call it. plpgsql so that its plan is kept: as a (never inlined) SECURITY
-- DEFINER sql function it was planned afresh on every release.
create or replace function tessera.close_connection()
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
begin
  delete from tessera.bindings b where b.pid = pg_catalog.pg_backend_pid();
end
$$;

-- What row-level security policies call, as (select tessera.current_accessor()) so that
-- it runs once per query. Null unless this very backend (pid and start time) is bound
-- to a session that still exists, has not expired and is not locked (logout, expiry and
-- locking take effect on open connections too), or to an accessor by hello().
-- plpgsql rather than sql: plpgsql keeps its plan for the life of the backend, a
-- non-inlined sql function replans on every query. The backend_start look-up (the
-- costly part: it snapshots every backend's status) runs only when a binding exists.
-- PARALLEL RESTRICTED: a parallel worker has its own pid, so only the leader may ask.
create or replace function tessera.current_session_id()
returns bigint
language plpgsql stable parallel restricted security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
begin
  return (
    select s.session_id
      from tessera.bindings b
      join tessera.sessions s on s.session_id = b.session_id
     where b.pid = pg_backend_pid()
       and b.backend_start = (select a.backend_start from pg_stat_get_activity(pg_backend_pid()) a)
       and s.expires_at > now()
       and not s.locked);
end
$$;

create or replace function tessera.current_accessor()
returns text
language plpgsql stable parallel restricted security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
begin
  -- One look-up for both kinds of binding; a token session's checks are those of
  -- current_session_id() (keep the two in step).
  return (
    select a.username
      from tessera.bindings b
      left join tessera.sessions s on s.session_id = b.session_id
      join tessera.accessors a on a.accessor_id = coalesce(s.accessor_id, b.accessor_id)
     where b.pid = pg_backend_pid()
       and b.backend_start = (select x.backend_start from pg_stat_get_activity(pg_backend_pid()) x)
       and (b.session_id is null or (s.expires_at > now() and not s.locked)));
end
$$;

-- The pooler, right after open_connection succeeded on this backend: a new ticket for the
-- session this backend is now bound to. Raises 28000 when the backend is not bound.
create or replace function tessera.issue_ticket()
returns text
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
declare
  _session_id bigint := tessera.current_session_id();
  _ticket     text;
begin
  if _session_id is null then
    raise exception 'tessera.issue_ticket: this backend is not bound to a live session'
      using errcode = '28000';
  end if;
  _ticket := encode(tessera.gen_random_bytes(32), 'hex');
  insert into tessera.tickets (ticket_hash, session_id)
  values (tessera.digest(_ticket, 'sha256'), _session_id);
  return _ticket;
end
$$;

-- The pooler, before a client's transaction on a backend not yet bound to its session:
-- ends this backend's binding, then binds it to the ticket's session if the ticket is
-- known and the session is live. False (and no binding) otherwise; never raises on a bad
-- ticket, so the unbinding is never rolled back. The ticket is looked up by its hash: no
-- comparison whose time depends on how much of a guess was right.
create or replace function tessera.redeem_ticket(ticket text)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
declare
  _session_id bigint;
begin
  perform tessera.close_connection();
  select t.session_id into _session_id
    from tessera.tickets t
    join tessera.sessions s on s.session_id = t.session_id
   where t.ticket_hash = tessera.digest(coalesce(redeem_ticket.ticket, ''), 'sha256')
     and s.expires_at > now()
     and not s.locked;
  if _session_id is null then
    return false;
  end if;
  insert into tessera.bindings (pid, backend_start, session_id)
  values (pg_backend_pid(),
          (select a.backend_start from pg_stat_get_activity(pg_backend_pid()) a),
          _session_id);
  return true;
end
$$;

-- The pooler, when clients holding these tickets have disconnected: they can no longer be
-- redeemed. Returns how many were known.
create or replace function tessera.revoke_tickets(tickets text[])
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
declare
  _deleted integer;
begin
  delete from tessera.tickets t
   where t.ticket_hash in (select tessera.digest(x, 'sha256') from unnest(revoke_tickets.tickets) x);
  get diagnostics _deleted = row_count;
  return _deleted;
end
$$;

-- For a schedule (cron, pg_cron): deletes expired sessions (their bindings go with
-- them) and returns how many. Also drops bindings left by backends that have exited.
create or replace function tessera.delete_expired_sessions()
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, tessera, pg_temp
as $$
declare
  _deleted integer;
begin
  delete from tessera.sessions s where s.expires_at <= now();
  get diagnostics _deleted = row_count;
  delete from tessera.bindings b
   where not exists (select from pg_stat_get_activity(null) a
                      where a.pid = b.pid and a.backend_start = b.backend_start);
  return _deleted;
end
$$;

-- ---------------------------------------------------------------------------
-- Grants: nothing by default, then exactly what each role needs.
revoke execute on function
  tessera.create_accessor(text, text),
  tessera.create_session(text, text),
  tessera.open_connection(bigint, integer, text, inet),
  tessera.open_connection(bigint, integer, text),
  tessera.close_connection(),
  tessera.issue_ticket(),
  tessera.redeem_ticket(text),
  tessera.revoke_tickets(text[]),
  tessera.current_session_id(),
  tessera.current_accessor(),
  tessera.delete_expired_sessions()
from public;

grant execute on function
  tessera.create_session(text, text),
  tessera.open_connection(bigint, integer, text),
  tessera.close_connection(),
  tessera.current_session_id(),
  tessera.current_accessor()
to tessera_user;

grant execute on function
  tessera.open_connection(bigint, integer, text, inet),
  tessera.close_connection(),
  tessera.issue_ticket(),
  tessera.redeem_ticket(text),
  tessera.revoke_tickets(text[])
to tessera_pool;

-- Logout, dedicated sessions and the key. The internal helpers (check_proof, key_path,
-- read_key, encrypt_token, decrypt_token) and rotate_key stay the owner's alone.
revoke execute on function
  tessera.check_proof(bigint, integer, text, inet),
  tessera.key_path(),
  tessera.read_key(),
  tessera.encrypt_token(text, text),
  tessera.decrypt_token(bytea, text),
  tessera.rotate_key(),
  tessera.end_session(bigint, integer, text, inet),
  tessera.end_session(bigint, integer, text),
  tessera.end_session_admin(bigint),
  tessera.hello()
from public;

grant execute on function
  tessera.end_session(bigint, integer, text),
  tessera.hello()
to tessera_user;

grant execute on function
  tessera.end_session(bigint, integer, text, inet)
to tessera_pool;

grant execute on function
  tessera.end_session_admin(bigint)
to tessera_admin;

commit;
