-- A stand-in for Veil2 (github.com/marcmunro/veil2), written for Tessera's tests from Veil2's
-- documented behaviour; none of its code. CI cannot install Veil2 (it is in neither Debian nor
-- npm), so this gives the suite what Tessera meets there:
--   * its signatures: veil2.create_session(username, authent_type, context_type_id,
--     context_id) returns (session_id, session_token, session_supplemental);
--     veil2.open_connection(bigint, integer, text) returns (success boolean, errmsg text);
--     veil2.close_connection() returns void; veil2.session_privileges(); role veil_user;
--   * its nonce rules: each nonce once; none below the lowest seen, none more than 64 above
--     the highest; a failed attempt uses its nonce too. The first open_connection proves the
--     password (authent_type 'plaintext'), later ones base64(sha1(session_token || to_hex(nonce)));
--   * its backend state: the privileges open_connection loads live with the backend (Veil2 keeps
--     them in C memory), so DISCARD ALL does not touch them, and they are added to, not replaced;
--   * its reset rule: close_connection() (and open_connection's first step) clears them only
--     while the temp table veil2_ancestor_privileges exists; without it, it creates the table
--     and clears nothing.
-- Rows of demo.parties are visible by privilege in their corp: Bob (corp 1010) sees 13, Carol
-- (corp 1020) 9, as in veil2_demo. Run as a superuser in a database of its own.
create extension if not exists pgcrypto;

do $$ begin
  if not exists (select from pg_roles where rolname = 'veil_user') then create role veil_user; end if;
  if not exists (select from pg_roles where rolname = 'demouser') then
    create role demouser login password 'pass';
  end if;
end $$;
grant veil_user to demouser;

drop schema if exists veil2 cascade;
drop schema if exists demo cascade;
create schema veil2;
grant usage on schema veil2 to veil_user;

create table veil2.accessors (accessor_id integer primary key, username text not null, corp integer not null, password text not null);
insert into veil2.accessors values (1090, 'Bob', 1010, 'passwd2'), (1100, 'Carol', 1020, 'passwd3');

create table veil2.sessions (
  session_id bigint primary key,
  accessor_id integer,
  token text not null,
  expires timestamptz not null default now() + interval '20 minutes',
  has_authenticated boolean not null default false,
  nonces integer[] not null default '{}');

-- What Veil2 holds in backend memory, keyed by the backend (pid and start time, so a new
-- backend with a recycled pid starts empty, as a new process does).
create table veil2.backend_privileges (pid integer, backend_start timestamptz, corp integer);

create function veil2.backend_start() returns timestamptz language sql stable as
  $$ select backend_start from pg_stat_get_activity(pg_backend_pid()) $$;

create function veil2.create_session(
    username text, authent_type text, context_type_id integer default 1, context_id integer default 0,
    session_id out bigint, session_token out text, session_supplemental out text)
  returns record language plpgsql security definer set search_path = pg_catalog, public as $$
begin
  session_id := (floor(random() * 1e15))::bigint + 1;
  session_token := encode(gen_random_bytes(24), 'base64');
  session_supplemental := null;
  insert into veil2.sessions (session_id, accessor_id, token)
  values (create_session.session_id,
          (select a.accessor_id from veil2.accessors a where a.username = create_session.username and a.corp = context_id),
          session_token);
end $$;

create function veil2.reset_session() returns void language plpgsql security definer
  set search_path = pg_catalog, public as $$
begin
  if exists (select from pg_class c where c.relname = 'veil2_ancestor_privileges'
              and c.relpersistence = 't' and pg_table_is_visible(c.oid)) then
    delete from veil2.backend_privileges where pid = pg_backend_pid() and backend_start = veil2.backend_start();
  else
    create temporary table veil2_ancestor_privileges (corp integer);
  end if;
end $$;

create function veil2.close_connection() returns void language sql security definer
  as $$ select veil2.reset_session() $$;

create function veil2.open_connection(
    session_id bigint, nonce integer, authent_token text, success out boolean, errmsg out text)
  returns record language plpgsql security definer set search_path = pg_catalog, public
  set client_min_messages = 'error' as $$
declare
  s veil2.sessions;
begin
  perform veil2.reset_session();
  success := false;
  select * into s from veil2.sessions x where x.session_id = open_connection.session_id;
  if not found or s.accessor_id is null then
    errmsg := 'AUTHFAIL';
    return;
  elsif s.expires < now() then
    errmsg := 'EXPIRED';
  elsif nonce = any (s.nonces)
        or (cardinality(s.nonces) > 0 and (nonce < (select min(n) from unnest(s.nonces) n)
                                         or nonce > (select max(n) from unnest(s.nonces) n) + 64)) then
    errmsg := 'NONCEFAIL';
  elsif s.has_authenticated then
    success := encode(digest(s.token || to_hex(nonce), 'sha1'), 'base64') = authent_token;
  else
    success := (select a.password from veil2.accessors a where a.accessor_id = s.accessor_id) = authent_token;
  end if;
  if errmsg is null and not success then errmsg := 'AUTHFAIL'; end if;
  if success then
    -- Added to whatever the backend holds: Veil2's in-memory privileges are too.
    insert into veil2.backend_privileges
    select pg_backend_pid(), veil2.backend_start(), a.corp from veil2.accessors a where a.accessor_id = s.accessor_id;
  end if;
  update veil2.sessions x
     set nonces = x.nonces || nonce,
         has_authenticated = x.has_authenticated or success,
         expires = case when success then now() + interval '20 minutes' else x.expires end
   where x.session_id = open_connection.session_id;
end $$;

create function veil2.session_privileges() returns table (corp integer) language sql stable security definer as
  $$ select corp from veil2.backend_privileges where pid = pg_backend_pid() and backend_start = veil2.backend_start() $$;

create function veil2.i_have_priv_in_corp(corp integer) returns boolean language sql stable security definer as
  $$ select exists (select from veil2.session_privileges() p where p.corp = i_have_priv_in_corp.corp) $$;

revoke all on all functions in schema veil2 from public;
grant execute on function veil2.create_session(text, text, integer, integer), veil2.open_connection(bigint, integer, text),
  veil2.close_connection(), veil2.session_privileges(), veil2.i_have_priv_in_corp(integer) to veil_user;

create schema demo;
grant usage on schema demo to demouser;
create table demo.parties (party_id serial primary key, corp integer not null, party_name text not null);
insert into demo.parties (corp, party_name)
select 1010, 'Secured ' || g from generate_series(1, 13) g
union all select 1020, 'Protected ' || g from generate_series(1, 9) g
union all select 1030, 'Other ' || g from generate_series(1, 4) g;
alter table demo.parties enable row level security;
create policy parties_by_corp on demo.parties using (veil2.i_have_priv_in_corp(corp));
grant select on demo.parties to demouser;
