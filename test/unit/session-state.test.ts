// The classification of transaction-mode statements (src/frontend/session-state.ts), as a table:
// what pins (and why), what changes settings that follow the client, and what a RESET returns.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { outlivesTransaction, changesSettings, resetsToStartup, rebindsSession } from '../../src/frontend/session-state.js';

/** [statement, pin reason or null, changes settings, what it resets to startup values]. */
const TABLE: [string, string | null, boolean, 'all' | string[] | null][] = [
  ['select 1', null, false, null],
  ['update t set a = 1', null, false, null],
  ['LISTEN chan', 'listen', false, null],
  ['select pg_advisory_lock(1)', 'advisory_lock', false, null],
  ['select pg_try_advisory_lock_shared(1)', 'advisory_lock', false, null],
  ['select pg_advisory_xact_lock(1)', null, false, null],
  ['declare c cursor with hold for select 1', 'with_hold_cursor', false, null],
  ['create temp table x (a int)', 'temp_objects', false, null],
  ['CREATE TEMPORARY VIEW v AS SELECT 1', 'temp_objects', false, null],
  ['create or replace temp view v as select 1', 'temp_objects', false, null],
  ['create table pg_temp.x (a int)', 'temp_objects', false, null],
  ['SET search_path TO pg_temp', 'temp_objects', true, null],
  ['set session authorization alice', 'session_authorization', true, null],
  // Settings follow the client: no pin, read back after the transaction.
  ['SET extra_float_digits = 3', null, true, null],
  ['SET client_min_messages TO warning', null, true, null],
  ['set session work_mem = 1024', null, true, null],
  ['set search_path = public', null, true, null],
  ['SET TIME ZONE INTERVAL \'+00:00\' HOUR TO MINUTE', null, true, null],
  ['set role alice', null, true, null],
  ['select set_config(\'work_mem\', \'1MB\', false)', null, true, null],
  ['set session characteristics as transaction isolation level serializable', null, true, null],
  ['begin; set work_mem = 5; commit', null, true, null],
  // Transaction-scoped: nothing outlives the transaction.
  ['SET LOCAL work_mem = 1024', null, false, null],
  ['set transaction isolation level serializable', null, false, null],
  ['SET CONSTRAINTS ALL DEFERRED', null, false, null],
  // RESET and friends return to the session-start values: the client's own startup values.
  ['RESET ALL', null, true, 'all'],
  ['discard all', null, true, 'all'],
  ['reset search_path', null, true, ['search_path']],
  ['RESET "DateStyle"', null, true, ['datestyle']],
  ['reset time zone', null, true, ['timezone']],
  ['SET application_name TO DEFAULT', null, true, ['application_name']],
  ['set session statement_timeout = default; reset DateStyle', null, true, ['statement_timeout', 'datestyle']],
  ['set time zone local', null, true, ['timezone']],
  ['set work_mem = \'default\'', null, true, null],
  ['set search_path = default, public', null, true, null],
];

for (const [sql, pin, changes, resets] of TABLE) {
  test(`${sql}: pin ${pin ?? 'none'}, changes settings ${changes}, resets ${JSON.stringify(resets)}`, () => {
    assert.is(outlivesTransaction(sql), pin);
    assert.is(changesSettings(sql), changes);
    assert.equal(resetsToStartup(sql), resets);
  });
}

test('calls that re-bind a session-token backend', () => {
  assert.ok(rebindsSession('select open_connection(1, 2, $1)'));
  assert.ok(rebindsSession('SELECT tessera.close_connection()'));
  assert.not.ok(rebindsSession('select 1'));
});

test.run();
