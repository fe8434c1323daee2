// Which simple Queries Tessera relays as LISTEN/UNLISTEN without a pin, and the channel names
// PostgreSQL would use for them (case folding, quoting, truncation to 63 bytes).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { listenStatements } from '../../src/frontend/notifications.js';

const L = (channel: string) => ({ kind: 'listen', channel });
const U = (channel: string) => ({ kind: 'unlisten', channel });

const CASES: [string, unknown][] = [
  ['LISTEN foo', [L('foo')]],
  ['listen FooBar;', [L('foobar')]],
  ['LISTEN "FooBar"', [L('FooBar')]],
  ['LISTEN"a""b"', [L('a"b')]],
  ['  -- a comment\n LISTEN /* nested /* comment */ */ x ; ', [L('x')]],
  ['LISTEN a; LISTEN b;; UNLISTEN c; UNLISTEN *', [L('a'), L('b'), U('c'), { kind: 'unlisten_all' }]],
  ['LISTEN Ünï', [L('Ünï')]],
  ['LISTEN _x$1', [L('_x$1')]],
  [`LISTEN ${'a'.repeat(70)}`, [L('a'.repeat(63))]],
  [`LISTEN "${'é'.repeat(40)}"`, [L('é'.repeat(31))]],
  // Anything else is not Tessera's to relay (it pins, as before, and the server answers).
  ['LISTEN *', null],
  ['LISTEN', null],
  ['LISTEN ""', null],
  ['LISTEN "open', null],
  ['LISTEN select', null],
  ['LISTEN a b', null],
  ['LISTEN a; select 1', null],
  ['select 1; LISTEN a', null],
  ['LISTEN U&"d\\0061t"', null],
  ['LISTEN a /* open', null],
  ['listening a', null],
  ['', null],
  [';', null],
  ['UNLISTEN', null],
];

for (const [text, want] of CASES) {
  test(`listenStatements(${JSON.stringify(text.length > 40 ? text.slice(0, 40) + '…' : text)})`, () => {
    assert.equal(listenStatements(text), want);
  });
}

test.run();
