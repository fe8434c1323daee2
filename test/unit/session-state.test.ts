// The statement classification behind transaction pooling (src/frontend/session-state.ts): every
// pin README promises ("LISTEN, session advisory locks, WITH HOLD cursors, temp objects, SET
// SESSION AUTHORIZATION"), each spelling the pattern allows, and what must not pin; which
// statements change settings (read back after the transaction instead of pinning); and what a
// RESET returns to the client's startup values. A case per alternative, so that narrowing any
// pattern (or dropping an exclusion) fails here.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { outlivesTransaction, changesSettings, resetsToStartup, rebindsSession, mayAffectSession, type PinReason } from '../../src/frontend/session-state.js';

/** [statement, why it pins or null] */
type Case = [sql: string, reason: PinReason | null];

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
  ['create or replace temp view v as select 1', 'temp_object'],
  // pg_temp: a search_path through it creates the backend's temp namespace
  ['create table pg_temp.x (a int)', 'temp_object'],
  ['SET search_path TO pg_temp', 'temp_object'],
  ['set search_path = public, pg_temp', 'temp_object'],
  // not a setting set_config can carry
  ['set session authorization postgres', 'session_authorization'],
  ['SET SESSION SESSION AUTHORIZATION DEFAULT', 'session_authorization'],
  // a SET does not hide what else a statement does
  ['set search_path = a; listen chan', 'listen'],
  ['set work_mem = 1; select pg_advisory_lock(1)', 'advisory_lock'],
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
  // settings: Tessera carries them to each backend (read back after the transaction), reported or not
  ['set work_mem = 65536', null],
  ['SET work_mem TO 65536', null],
  ['SET SESSION work_mem = 65536', null],
  ['  set statement_timeout = 5', null],
  ['select 1; set lock_timeout = 5', null],
  ['set role postgres', null],
  ['set _custom.x = 1', null],
  ['set timezone_abbreviations = Default', null],
  ['SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY', null],
  ['set search_path = pg_catalog', null],
  ['SET SESSION search_path TO a, b', null],
  ['SET extra_float_digits = 3', null],
  ['SET client_min_messages TO warning', null],
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
  ['select * from pg_temporary', null],
  ['drop table temp_t', null],
];

for (const [label, cases] of [['pins', PINS], ['does not pin', STAYS]] as const) {
  test(`outlivesTransaction: every statement that ${label}`, () => {
    for (const [sql, reason] of cases) assert.is(outlivesTransaction(sql), reason, JSON.stringify(sql));
  });
}

/** [statement, changes settings (read back after its transaction), what it returns to startup values] */
const SETTINGS: [string, boolean, 'all' | string[] | null][] = [
  ['select 1', false, null],
  ['update t set a = 1', false, null],
  ['select offset_value from t', false, null],
  ['SET extra_float_digits = 3', true, null],
  ['SET client_min_messages TO warning', true, null],
  ['set session work_mem = 1024', true, null],
  ["SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE", true, null],
  ['set role alice', true, null],
  ["select set_config('work_mem', '1MB', false)", true, null],
  ['select pg_catalog.set_config ($1, $2, false)', true, null],
  ['set session characteristics as transaction isolation level serializable', true, null],
  ['begin; set work_mem = 5; commit', true, null],
  ['set "work_mem" = 5', true, null],
  // transaction-scoped: nothing outlives the transaction
  ['SET LOCAL work_mem = 1024', false, null],
  ['set transaction isolation level serializable', false, null],
  ['SET CONSTRAINTS ALL DEFERRED', false, null],
  // RESET and friends return to the session-start values: the client's own startup values
  ['RESET ALL', true, 'all'],
  ['discard all', true, 'all'],
  ['DISCARD PLANS', false, null],
  ['reset search_path', true, ['search_path']],
  ['RESET "DateStyle"', true, ['datestyle']],
  ['reset time zone', true, ['timezone']],
  ['SET application_name TO DEFAULT', true, ['application_name']],
  ['set session statement_timeout = default; reset DateStyle', true, ['statement_timeout', 'datestyle']],
  ['set time zone local', true, ['timezone']],
  ['reset work_mem; reset all', true, 'all'],
  // DEFAULT as a value among others, or quoted, is a value
  ["set work_mem = 'default'", true, null],
  ['set search_path = default, public', true, null],
];

test('changesSettings and resetsToStartup: every form of SET, RESET, set_config and DISCARD ALL', () => {
  for (const [sql, changes, resets] of SETTINGS) {
    assert.is(changesSettings(sql), changes, JSON.stringify(sql));
    assert.equal(resetsToStartup(sql), resets, JSON.stringify(sql));
  }
});

test('rebindsSession: calls of the functions that bind or unbind a session, not look-alikes', () => {
  const yes = ['select tessera.open_connection($1, $2, $3)', 'select close_connection()', 'SELECT tessera.redeem_ticket($1)', 'select tessera.hello (1)', 'select 1; select hello(2)'];
  const no = ['select 1', 'select open_connections from stats', 'select hello_world()', 'select rehello(1)', 'select close_connection', 'select redeem_tickets($1)'];
  for (const sql of yes) assert.ok(rebindsSession(sql), sql);
  for (const sql of no) assert.not.ok(rebindsSession(sql), sql);
});

/** What the relay decodes a statement for (transaction-relay.ts noteStatement), on the text of its first 8 KB. */
const REBINDS: string[] = ['select tessera.open_connection($1, $2, $3)', 'select close_connection()', 'SELECT tessera.redeem_ticket($1)', 'select tessera.hello (1)', 'select 1; select hello(2)'];
const fullCheck = (text: string): boolean => outlivesTransaction(text) !== null || changesSettings(text) || rebindsSession(text) || /listen/i.test(text);
const LIMIT = 8192;
const prefilter = (bytes: Buffer): boolean => mayAffectSession(bytes, Math.min(bytes.length, LIMIT));
const decoded = (bytes: Buffer): string => bytes.toString('utf8', 0, Math.min(bytes.length, LIMIT));

/** Spellings the patterns allow that a byte-level look could miss: case, white space that is not ASCII, statements after ';'. */
const TRICKY: string[] = [
  'SeT work_mem = 1',
  '\u00a0set work_mem = 1', // no-break space: \s to the pattern, two bytes that are not ASCII
  '\ufeffSET search_path = a', // a byte order mark is \s too
  'select 1;\u3000reset all',
  'select 1;\v\fdiscard all',
  'select 1;\n\tSET SESSION AUTHORIZATION DEFAULT',
  'select 1;set x.y = 1',
  'select é; listen ünïcode',
  'SELECT PG_CATALOG.SET_CONFIG($1, $2, false)',
  'select "pg_temp"."x"',
  'DECLARE c CURSOR WITH\r\nHOLD FOR select 1',
  'select x from t where PG_ADVISORY_LOCK(1) is not null',
  'UNLISTEN *',
  'select tessera.OPEN_CONNECTION(1, 2, 3)',
  'select REDEEM_TICKET($1)',
  'select HELLO()',
  'notify c; listen c',
  'select 1\u0000\u0000\u0000\u0017', // a Parse tail: the text, its NUL, then parameter type OIDs
];

test('mayAffectSession never skips a statement the full checks catch (pins, settings, LISTEN, session re-binding)', () => {
  const all = [...PINS.map(([sql]) => sql), ...STAYS.map(([sql]) => sql), ...SETTINGS.map(([sql]) => sql), ...REBINDS, ...TRICKY];
  let caught = 0;
  for (const sql of all) {
    const bytes = Buffer.from(sql, 'utf8');
    if (fullCheck(decoded(bytes))) {
      caught++;
      assert.ok(prefilter(bytes), `skipped: ${JSON.stringify(sql)}`);
    }
  }
  // The table holds catches of every kind, or this test would prove nothing.
  assert.ok(caught > PINS.length + REBINDS.length, `only ${caught} statements caught`);
});

test('mayAffectSession lets plain statements go by undecoded', () => {
  const plain = [
    'SELECT abalance FROM pgbench_accounts WHERE aid = 48251;',
    'select 1',
    '',
    'UPDATE pgbench_accounts SET abalance = abalance + -4119 WHERE aid = 91727;',
    'insert into t (a, b) values ($1, $2) returning id',
    'BEGIN',
    'COMMIT',
    'select count(*) as n from demo.notes',
    'select * from orders where id = any($1) order by created_at desc limit 10 offset 20',
    'délète from tâble',
  ];
  for (const sql of plain) {
    const bytes = Buffer.from(sql, 'utf8');
    assert.not.ok(fullCheck(decoded(bytes)), sql);
    assert.not.ok(prefilter(bytes), `decoded for nothing: ${sql}`);
  }
});

test('mayAffectSession agrees with the full checks on generated statements, up to the 8 KB the relay decodes', () => {
  const pieces = ['set', 'SeT', 'reset', 'DISCARD', 'all', ' ', '\t', '\n', ';', '\u00a0', '\ufeff', 'é', 'x', 'select 1', 'session', 'authorization',
    'listen', 'LiStEn', 'temp', 'pg_', 'advisory_lock', 'with hold', 'hold', 'set_config(', 'open_connection(', 'close_connection(', 'redeem_ticket(', 'hello(', '(', '"', 'local', 'offset'];
  let seed = 7;
  // The high bits of an LCG: its low bits repeat too soon.
  const next = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2147483648) >>> 16) % n;
  let caught = 0;
  for (let n = 0; n < 20000; n++) {
    let text = '';
    for (let i = next(8); i >= 0; i--) text += pieces[next(pieces.length)];
    const bytes = Buffer.from(text, 'utf8');
    if (fullCheck(decoded(bytes))) {
      caught++;
      assert.ok(prefilter(bytes), `skipped: ${JSON.stringify(text)}`);
    }
  }
  assert.ok(caught > 5000, `only ${caught} generated statements caught`);
  // Past the limit: what is cut off is not looked at, by either (a keyword cut in two is no
  // keyword); what ends inside it is.
  const filler = 'x'.repeat(LIMIT - 4);
  for (const tail of ['listen c', 'lis', 'tem', 'hol', '']) {
    const bytes = Buffer.from(filler + tail, 'utf8');
    assert.not.ok(fullCheck(decoded(bytes)), tail);
    assert.not.ok(prefilter(bytes), tail);
  }
  const near = Buffer.from('x'.repeat(LIMIT - 6) + 'listen and more', 'utf8');
  assert.ok(fullCheck(decoded(near)) && prefilter(near));
});

test.run();
