// The pure rules about session SQL: which parameters a query takes, what a client may run next
// to it, which release rule applies, and the session_tokens presets as config sees them.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { highestParameter, boundParameters, schemasCalled, sessionStateDisturbance, withoutValues, releaseRule } from '../../src/pool/session-sql.js';
import { parseConfig } from '../../src/config/load.js';
import { PRESETS } from '../../src/config/session-presets.js';
import { errorOf } from '../support/config-error.js';

const parse = (json: Record<string, unknown>) => parseConfig({ auth_type: 'trust', ...json }, 'proxy.config.json', '/tmp');
const tokenDb = (extra: Record<string, unknown> = {}) => ({ vpd: { host: 'db', auth_type: 'session_token', user: 'demouser', ...extra } });

test('highestParameter: the $n a query references, outside literals, identifiers and comments', () => {
  assert.is(highestParameter(PRESETS.tessera.open_connection), 4);
  assert.is(highestParameter(PRESETS.veil2.open_connection), 3);
  assert.is(highestParameter('select veil2.close_connection()'), 0);
  assert.is(highestParameter(`select '$9', "a$8", $1 -- $7\n /* $6 /* $5 */ */`), 1);
  assert.is(highestParameter(`select $q$ $4 $q$, $$ $3 $$, E'\\' $2', $2`), 2);
  assert.is(highestParameter('select $10::int, $2'), 10);
  assert.is(highestParameter('select a$1 from t'), 0, 'a$1 is an identifier');
  assert.equal(boundParameters(PRESETS.veil2.open_connection, ['1', '2', 'tok', '127.0.0.1']), ['1', '2', 'tok']);
  assert.equal(boundParameters('select true', ['1']), []);
});

test('schemasCalled: the schemas whose functions the session SQL calls', () => {
  assert.equal(schemasCalled([PRESETS.veil2.open_connection, PRESETS.veil2.close_connection]), ['veil2']);
  assert.equal(schemasCalled(['select "My App".open(1), pg_catalog.now(), x.y']), ['My App']);
  assert.equal(schemasCalled(['select true, pg_sleep(1)']), []);
});

test('sessionStateDisturbance: what can undo an unbinding, and what cannot', () => {
  const veil2 = ['veil2'];
  for (const [sql, what] of [
    ['DISCARD ALL', 'DISCARD'],
    ['discard temp', 'DISCARD'],
    [`do $$ begin execute 'discard temp'; end $$`, 'DISCARD'],
    ['reset all', 'RESET'],
    ['RESET /* x */ ROLE', 'RESET'],
    ['reset session authorization', 'RESET'],
    ['set role other', 'SET ROLE / SESSION AUTHORIZATION'],
    ['SET LOCAL ROLE other', 'SET ROLE / SESSION AUTHORIZATION'],
    ['set session session authorization other', 'SET ROLE / SESSION AUTHORIZATION'],
    [`select set_config('role', 'other', false)`, 'SET ROLE / SESSION AUTHORIZATION'],
    ['select * from veil2.session_privileges()', 'a call into schema veil2'],
    ['select "veil2" . become_user(1)', 'a call into schema veil2'],
  ] as const) {
    assert.is(sessionStateDisturbance(sql, veil2), what, sql);
  }
  for (const sql of ['select count(*) from demo.parties', 'set work_mem = 1000', 'reset work_mem', 'select discarded from t', 'set search_path = demo']) {
    assert.is(sessionStateDisturbance(sql, veil2), null, sql);
  }
});

test('withoutValues: bound values never reach a log line', () => {
  assert.is(withoutValues('invalid input syntax for type integer: "s3cret"', ['12', 's3cret', null, '']), 'invalid input syntax for type integer: "…"');
});

test('releaseRule: a check where configured, none for tessera.sql, else close-if-disturbed', () => {
  assert.equal(releaseRule([PRESETS.veil2.open_connection], PRESETS.veil2.release_check), { check: PRESETS.veil2.release_check, watch: null });
  assert.equal(releaseRule([PRESETS.tessera.open_connection, PRESETS.tessera.close_connection], ''), { check: '', watch: null });
  assert.equal(releaseRule([PRESETS.veil2.open_connection, PRESETS.veil2.close_connection], ''), { check: '', watch: ['veil2'] });
  assert.equal(releaseRule(['select app.hello()', PRESETS.tessera.close_connection], ''), { check: '', watch: ['app', 'tessera'] });
});

test('preset veil2: Veil2\'s session SQL, no tickets, no kill_session, a release check; written keys win', () => {
  const st = parse({ session_tokens: { preset: 'veil2' }, databases: tokenDb() }).session_tokens;
  assert.is(st.open_connection, 'select success, errmsg from veil2.open_connection($1::bigint, $2::integer, $3::text)');
  assert.is(st.close_connection, 'select veil2.close_connection()');
  assert.equal([st.issue_ticket, st.redeem_ticket, st.revoke_tickets, st.kill_session], ['', '', '', '']);
  assert.is(st.release_check, 'select not exists (select from veil2.session_privileges())');
  const mine = parse({ session_tokens: { preset: 'veil2', release_check: '' }, databases: tokenDb() }).session_tokens;
  assert.is(mine.release_check, '');
  const tessera = parse({ databases: tokenDb() }).session_tokens;
  assert.is(tessera.preset, 'tessera');
  assert.is(tessera.issue_ticket, 'select tessera.issue_ticket()');
});

test('tickets and kill_session come with the preset\'s own open_connection only', () => {
  const custom = parse({ session_tokens: { open_connection: PRESETS.veil2.open_connection }, databases: tokenDb() }).session_tokens;
  assert.equal([custom.issue_ticket, custom.redeem_ticket, custom.revoke_tickets, custom.kill_session], ['', '', '', '']);
  const written = parse({ session_tokens: { open_connection: 'select * from app.open($1, $2, $3)', issue_ticket: 'select app.t()', redeem_ticket: 'select app.r($1)', revoke_tickets: 'select app.v($1)' }, pool_mode: 'transaction', databases: tokenDb() }).session_tokens;
  assert.is(written.issue_ticket, 'select app.t()');
});

test('config errors: transaction mode without tickets, parameters Tessera does not bind, half the ticket queries', () => {
  assert.is(
    errorOf(() => parse({ session_tokens: { preset: 'veil2' }, databases: tokenDb({ pool_mode: 'transaction' }) })),
    'proxy.config.json: databases.vpd.pool_mode: must be "session": transaction mode re-binds each backend with a ticket, and the session SQL has none (Veil2 has no tickets)',
  );
  // A database in session mode under a global transaction default is fine.
  parse({ pool_mode: 'transaction', session_tokens: { preset: 'veil2' }, databases: tokenDb({ pool_mode: 'session' }) });
  assert.is(
    errorOf(() => parse({ session_tokens: { open_connection: 'select * from app.open($1, $2, $3, $4, $5)' }, databases: tokenDb() })),
    'proxy.config.json: session_tokens.open_connection: references $5, but Tessera binds only $1 (session id), $2 (nonce), $3 (authent_token), $4 (client address)',
  );
  assert.is(
    errorOf(() => parse({ session_tokens: { release_check: 'select $1' }, databases: tokenDb() })),
    'proxy.config.json: session_tokens.release_check: references $1, but Tessera binds no parameters to it',
  );
  assert.is(
    errorOf(() => parse({ session_tokens: { redeem_ticket: 'select true' }, databases: tokenDb() })),
    'proxy.config.json: session_tokens.redeem_ticket: must use $1 (the ticket)',
  );
  assert.is(
    errorOf(() => parse({ session_tokens: { issue_ticket: '' }, databases: tokenDb() })),
    'proxy.config.json: session_tokens.issue_ticket: expected a query: tickets need all of issue_ticket, redeem_ticket and revoke_tickets',
  );
  assert.match(errorOf(() => parse({ session_tokens: { preset: 'other' } })), 'session_tokens.preset: expected one of "tessera", "veil2"');
});

test.run();
