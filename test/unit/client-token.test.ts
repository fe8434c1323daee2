// The client module (tessera/client): tokens must match what tessera.open_connection
// computes, nonces must never repeat, and no form may leak the session token.
import { createHash } from 'node:crypto';
import { inspect } from 'node:util';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { authentToken, escapeOption, SessionCredentials } from '../../src/client/index.js';
import { splitLikePostgres } from '../support/split-opts.js';

const TOKEN = '4f6e1c0a9b2d7e3f58a1c6d9e0b7f2a3c4d5e6f708192a3b4c5d6e7f80912a3b';
const ID = '3267412848362383';

function independent(token: string, nonce: number): string {
  return createHash('sha1').update(Buffer.from(token + nonce.toString(16), 'utf8')).digest().toString('base64');
}

test('authentToken matches sha1 over token || lower-case hex nonce', () => {
  for (const nonce of [0, 1, 2, 9, 10, 15, 16, 255, 4096, 0x7fffffff]) {
    assert.is(authentToken(TOKEN, nonce), independent(TOKEN, nonce), `nonce ${nonce}`);
  }
  // Lower-case and unpadded: nonce 255 hashes "abcff", not "abcFF" or "abc000000ff".
  assert.is(authentToken('abc', 255), independent('abc', 255));
  assert.is.not(authentToken('abc', 255), createHash('sha1').update('abcFF').digest('base64'));
});

test('authentToken agrees with PostgreSQL: encode(digest(\'abc\' || to_hex(255), \'sha1\'), \'base64\')', () => {
  // Computed by hand with psql against pgcrypto.
  assert.is(authentToken('abc', 255), '97+zgz9svUafW8vB6djJdLu2ziQ=');
});

test('authentToken rejects nonces PostgreSQL integer cannot hold', () => {
  for (const bad of [-1, 1.5, 0x80000000, Number.NaN]) {
    assert.throws(() => authentToken(TOKEN, bad), /nonce/);
  }
});

test('next() hands out 1, 2, 3, ... with matching tokens', () => {
  const c = new SessionCredentials(ID, TOKEN);
  for (let n = 1; n <= 5; n++) {
    const got = c.next();
    assert.equal(got, { sessionId: ID, nonce: n, authentToken: independent(TOKEN, n) });
  }
  assert.is(c.nextNonce, 6);
});

test('firstNonce, and a bigint session id', () => {
  const c = new SessionCredentials(BigInt(ID), TOKEN, { firstNonce: 2 });
  const got = c.next();
  assert.is(got.sessionId, ID);
  assert.is(got.nonce, 2);
});

test('bad session ids and tokens are refused', () => {
  for (const id of ['', '0', '-5', 'abc', '12 34', '9223372036854775808']) {
    assert.throws(() => new SessionCredentials(id, TOKEN), /sessionId/, id);
  }
  assert.throws(() => new SessionCredentials(ID, ''), /sessionToken/);
  assert.throws(() => new SessionCredentials(ID, TOKEN, { firstNonce: -1 }), /nonce/);
});

test('every form uses up its own nonce', () => {
  const c = new SessionCredentials(ID, TOKEN);
  const params = c.asStartupParams();
  assert.equal(params, {
    'tessera.session_id': ID,
    'tessera.nonce': '1',
    'tessera.authent_token': independent(TOKEN, 1),
  });
  const opts = c.asOptions();
  assert.is(
    opts,
    `-c tessera.session_id=${ID} -c tessera.nonce=2 -c tessera.authent_token=${independent(TOKEN, 2)}`,
  );
  assert.is(c.asPassword(), `${ID}:3:${independent(TOKEN, 3)}`);
  const pw = c.passwordFunction();
  assert.is(pw(), `${ID}:4:${independent(TOKEN, 4)}`);
  assert.is(pw(), `${ID}:5:${independent(TOKEN, 5)}`);
  assert.is(c.next().nonce, 6);
});

test('options escaping: backslashes and whitespace as the server splits them', () => {
  assert.is(escapeOption('a b'), 'a\\ b');
  assert.is(escapeOption('a\\b'), 'a\\\\b');
  assert.is(escapeOption('a\tb\nc'), 'a\\\tb\\\nc');
  assert.is(escapeOption('plain+/=:.'), 'plain+/=:.');
  // Undo it the way pg_split_opts does and get the words back.
  const odd = new SessionCredentials(ID, 'with space\\and backslash');
  const words = splitLikePostgres(odd.asOptions());
  assert.equal(words.slice(0, 4), ['-c', `tessera.session_id=${ID}`, '-c', 'tessera.nonce=1']);
  assert.is(words[5], `tessera.authent_token=${independent('with space\\and backslash', 1)}`);
});

test('no secret in toString, JSON or inspect', () => {
  const c = new SessionCredentials(ID, TOKEN);
  const next = authentToken(TOKEN, 1);
  for (const shown of [String(c), `${c}`, JSON.stringify(c), inspect(c), inspect({ c }, { depth: 5, showHidden: true })]) {
    assert.not.ok(shown.includes(TOKEN), shown);
    assert.not.ok(shown.includes(ID), shown);
    assert.not.ok(shown.includes(next), shown);
  }
});

test.run();
