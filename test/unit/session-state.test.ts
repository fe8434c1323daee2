// The statement classification behind transaction pooling's pins (src/frontend/session-state.ts):
// every trigger README promises ("LISTEN, session advisory locks, WITH HOLD cursors, temp
// tables, SET of unreported settings"), each spelling the pattern allows, and what must not pin.
// A case per alternative, so that narrowing any pattern (or dropping an exclusion) fails here.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { outlivesTransaction, rebindsSession, type PinReason } from '../../src/frontend/session-state.js';

/** [statement, reason on a server that does not report search_path (before PostgreSQL 18), reason on one that does] */
type Case = [sql: string, unreported: PinReason | null, reported?: PinReason | null];

const PINS: Case[] = [
  // LISTEN
  ['LISTEN chan', 'listen'],
  ['listen "Mixed Case"', 'listen'],
  ['select 1; listen later', 'listen'],
  // session advisory locks, every variant
  ['select pg_advisory_lock(42)', 'advisory_lock'],
  ['SELECT pg_advisory_lock(1, 2)', 'advisory_lock'],
  ['select pg_advisory_lock_shared(42)', 'advisory_lock'],
  ['select pg_try_advisory_lock(42)', 'advisory_lock'],
  ['select PG_TRY_ADVISORY_LOCK_SHARED(42)', 'advisory_lock'],
  ['select x from t where pg_try_advisory_lock(id)', 'advisory_lock'],
  // WITH HOLD cursors
  ['DECLARE c CURSOR WITH HOLD FOR select 1', 'with_hold_cursor'],
  ['declare c no scroll cursor with\n  hold for select 1', 'with_hold_cursor'],
  // temp tables, views and sequences, with every spelling
  ['create temp table t (x int)', 'temp_object'],
  ['CREATE TEMPORARY TABLE t (x int)', 'temp_object'],
  ['create global temporary table t (x int)', 'temp_object'],
  ['create local temp table t (x int)', 'temp_object'],
  ['create temp view v as select 1', 'temp_object'],
  ['create temporary sequence s', 'temp_object'],
  ['begin; create temp table t as select 1; commit', 'temp_object'],
  // SET of a setting the server does not report
  ['set work_mem = 65536', 'set_unreported'],
  ['SET work_mem TO 65536', 'set_unreported'],
  ['SET SESSION work_mem = 65536', 'set_unreported'],
  ['  set statement_timeout = 5', 'set_unreported'],
  ['select 1; set lock_timeout = 5', 'set_unreported'],
  ['set role postgres', 'set_unreported'],
  ['set session authorization postgres', 'set_unreported'],
  ['set _custom.x = 1', 'set_unreported'],
  // names that only begin like an exempt one
  ['set timezone_abbreviations = Default', 'set_unreported'],
  ['set transaction_timeout = 1000', 'set_unreported'],
  // the session's transaction defaults (default_transaction_read_only etc.) last beyond it
  ['SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY', 'set_unreported'],
  // search_path: unreported before PostgreSQL 18 (pins there), reported since (follows the client)
  ['set search_path = pg_catalog', 'set_unreported', null],
  ['SET SESSION search_path TO a, b', 'set_unreported', null],
  ['select 1; set search_path = a', 'set_unreported', null],
  // ... but anything else that outlives the transaction still pins where it is reported
  ['set search_path = a; listen chan', 'listen', 'listen'],
  ['set search_path = a; set work_mem = 1', 'set_unreported', 'set_unreported'],
  ['set search_path = a; select pg_advisory_lock(1)', 'advisory_lock', 'advisory_lock'],
  // several triggers: the first in README's order is named
  ['create temp table t (x int); listen c', 'listen'],
];

const STAYS: Case[] = [
  ['select 1', null],
  ['', null],
  // transaction-scoped SETs
  ['SET LOCAL work_mem = 65536', null],
  ['set local search_path = a', null],
  ['SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', null],
  ['SET CONSTRAINTS ALL DEFERRED', null],
  // reported parameters: Tessera carries them to each backend
  ['SET application_name = x', null],
  ['set session application_name = x', null],
  ['set DateStyle = ISO', null],
  ['SET TimeZone = UTC', null],
  ['set time zone UTC', null],
  ['set client_encoding = UTF8', null],
  ['SET IntervalStyle = postgres', null],
  ['set standard_conforming_strings = on', null],
  ['set session timezone = UTC', null],
  ['SET SESSION DateStyle = ISO', null],
  // "set" and the trigger words inside other words or statements
  ['update t set x = 1', null],
  ['reset work_mem', null],
  ['select offset_value from t', null],
  ['select * from listener', null],
  ['select listening from t', null],
  ['UNLISTEN *', null],
  ['select relisten()', null],
  ['select pg_advisory_xact_lock(42)', null],
  ['select pg_try_advisory_xact_lock(42)', null],
  ['select pg_advisory_unlock(42)', null],
  ['select pg_advisory_unlock_all()', null],
  ['select * from pg_advisory_locks_view', null],
  ['declare c cursor for select 1', null],
  ['declare c cursor without hold for select 1', null],
  ['with holdings as (select 1) select * from holdings', null],
  ['select forthwith hold from t', null],
  ['create table t (x int)', null],
  ['create view v as select 1', null],
  ['select * from temp_table', null],
  [`insert into notes values ('create temp tables here')`, null],
  ['create temporary_thing', null],
  ['drop table temp_t', null],
];

for (const [label, cases] of [['pins', PINS], ['does not pin', STAYS]] as const) {
  test(`outlivesTransaction: every statement that ${label}`, () => {
    for (const [sql, unreported, reported = unreported] of cases) {
      assert.is(outlivesTransaction(sql, false), unreported, `${JSON.stringify(sql)}, search_path not reported`);
      assert.is(outlivesTransaction(sql, true), reported, `${JSON.stringify(sql)}, search_path reported`);
    }
  });
}

test('rebindsSession: calls of the functions that bind or unbind a session, not look-alikes', () => {
  const yes = ['select tessera.open_connection($1, $2, $3)', 'select close_connection()', 'SELECT tessera.redeem_ticket($1)', 'select tessera.hello (1)', 'select 1; select hello(2)'];
  const no = ['select 1', 'select open_connections from stats', 'select hello_world()', 'select rehello(1)', 'select close_connection', 'select redeem_tickets($1)'];
  for (const sql of yes) assert.ok(rebindsSession(sql), sql);
  for (const sql of no) assert.not.ok(rebindsSession(sql), sql);
});

test.run();
