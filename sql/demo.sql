-- The README walkthrough's data: two accessors, a table whose rows each belong to one
-- of them, a row-level security policy on tessera.current_accessor(), and the login
-- role the pooler (and this demo) connects as.
--
--   psql -v ON_ERROR_STOP=1 -f sql/tessera.sql -f sql/demo.sql      (as a superuser)
--
-- Idempotent like tessera.sql. Demo passwords only: never use these anywhere real.

begin;
set local client_min_messages = warning;

-- create_accessor refuses a taken name, so only call it for missing ones.
select tessera.create_accessor(v.username, v.password)
  from (values ('alice', 'alice-password'), ('bob', 'bob-password')) v (username, password)
 where not exists (select from tessera.accessors a where a.username = v.username);

create schema if not exists demo;
create table if not exists demo.notes (
  owner text not null,   -- an accessor's username
  body  text not null
);
insert into demo.notes (owner, body)
select v.owner, v.body
  from (values ('alice', 'alice: buy oat milk'),
               ('alice', 'alice: the launch code is 1234'),
               ('bob',   'bob: fix the bike'),
               ('bob',   'bob: alice owes me lunch')) v (owner, body)
 where not exists (select from demo.notes n where n.owner = v.owner and n.body = v.body);

-- FORCE: the policy binds the table's owner too (superusers still bypass it).
alter table demo.notes enable row level security;
alter table demo.notes force row level security;
-- (select ...) makes current_accessor() an init plan: one call per query, not per row.
drop policy if exists notes_owner on demo.notes;
create policy notes_owner on demo.notes
  using (owner = (select tessera.current_accessor()));

-- The pooler's login role: runs the session protocol (tessera_user), may pass client
-- addresses (tessera_pool), and is neither superuser nor BYPASSRLS, or the policy
-- would not apply to it.
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'tessera_app') then
    create role tessera_app login;
  end if;
end
$$;
alter role tessera_app login nosuperuser nobypassrls nocreatedb nocreaterole
  password 'tessera-app-password';
grant tessera_user, tessera_pool to tessera_app;
grant usage on schema demo to tessera_app;
grant select on demo.notes to tessera_app;

commit;
