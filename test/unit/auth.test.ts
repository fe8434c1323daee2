import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { parseSecret, formatSecret, type StoredSecret } from '../../src/auth/secret.js';
import { parseUserlist, loadUserlist, UserlistError } from '../../src/auth/userlist.js';
import { md5Secret, md5Response, verifyMd5Response, verifyPlainPassword } from '../../src/auth/md5.js';
import { scramSecret, scramKeys, ScramServer, ScramClient, ScramError } from '../../src/auth/scram.js';

const md5hex = (s: string | Buffer) => createHash('md5').update(s).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();
const hmac = (k: Buffer, d: string) => createHmac('sha256', k).update(d).digest();

function throwsWith(fn: () => unknown, cls: Function, check: (e: Error) => void = () => {}) {
  try {
    fn();
  } catch (e) {
    assert.instance(e, cls);
    check(e as Error);
    return;
  }
  assert.unreachable('expected an error');
}

// ---------- userlist ----------

test('userlist: quotes, "" escapes, comments, blank lines, trailing text', () => {
  const text = [
    '; a comment',
    '   # another comment',
    '',
    '"alice" "secret1"',
    '  "bob ""the builder""" "pa""ss"  trailing junk is ignored',
    '\t',
    '"carol" "md5' + md5hex('pwcarol') + '"\r',
    '"dave" ""',
  ].join('\n');
  const users = parseUserlist(text, 'users.txt');
  assert.equal([...users.keys()], ['alice', 'bob "the builder"', 'carol', 'dave']);
  assert.equal(users.get('alice'), { kind: 'plain', password: 'secret1' });
  assert.equal(users.get('bob "the builder"'), { kind: 'plain', password: 'pa"ss' });
  assert.equal(users.get('carol')?.kind, 'md5');
  assert.equal(users.get('dave'), { kind: 'plain', password: '' });
});

test('userlist: a later line for the same user wins', () => {
  const users = parseUserlist('"a" "one"\n"a" "two"\n', 'f');
  assert.equal(users.get('a'), { kind: 'plain', password: 'two' });
});

test('userlist: malformed lines name file:line and never the secret', () => {
  const bad = [
    'alice "hunter2"',          // no opening quote
    '"alice hunter2',           // unterminated username
    '"alice"',                  // no secret
    '"alice" "hunter2',         // unterminated secret
    '"" "hunter2"',             // empty username
  ];
  for (const line of bad) {
    throwsWith(() => parseUserlist(`; header\n"ok" "fine"\n${line}\n`, '/etc/tessera/users.txt'), UserlistError, (e) => {
      const err = e as UserlistError;
      assert.ok(err.message.startsWith('/etc/tessera/users.txt:3: '), err.message);
      assert.is(err.file, '/etc/tessera/users.txt');
      assert.is(err.line, 3);
      assert.not.match(err.message, 'hunter2');
      assert.not.match(String(err.stack), 'hunter2');
    });
  }
});

test('loadUserlist: reads a file; a missing file is a line-0 error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-auth-'));
  try {
    const file = join(dir, 'userlist.txt');
    writeFileSync(file, '"u" "p"\n');
    assert.equal(loadUserlist(file).get('u'), { kind: 'plain', password: 'p' });
    const missing = join(dir, 'nope.txt');
    throwsWith(() => loadUserlist(missing), UserlistError, (e) => {
      assert.is((e as UserlistError).line, 0);
      assert.is(e.message, `${missing}:0: auth file does not exist`);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------- parseSecret ----------

test('parseSecret: plain, md5, scram, and look-alikes that are plain', () => {
  assert.equal(parseSecret('hello'), { kind: 'plain', password: 'hello' });
  const md5 = 'md5' + md5hex('x');
  assert.equal(parseSecret(md5), { kind: 'md5', hash: md5 });
  assert.is(parseSecret(md5.toUpperCase()).kind, 'plain'); // PostgreSQL wants lowercase
  assert.is(parseSecret('md5abc').kind, 'plain');

  const text = 'SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$' +
    'WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=';
  const s = parseSecret(text);
  assert.is(s.kind, 'scram');
  if (s.kind !== 'scram') return;
  assert.is(s.iterations, 4096);
  assert.is(s.salt.toString('base64'), 'W22ZaJ0SNY7soEsUEjb6gQ==');
  assert.is(s.storedKey.length, 32);
  assert.is(formatSecret(s), text);
  // Malformed SCRAM strings are plaintext passwords, as in PostgreSQL.
  assert.is(parseSecret(text.replace('4096', 'x')).kind, 'plain');
  assert.is(parseSecret(text.slice(0, -4)).kind, 'plain');
  assert.is(parseSecret('SCRAM-SHA-256$0:' + text.split(':').slice(1).join(':')).kind, 'plain');
});

test('secrets do not show their value in toString, JSON or inspect', () => {
  for (const s of [parseSecret('hunter2'), parseSecret(md5Secret('hunter2', 'u')), scramSecret('hunter2')]) {
    const shown = [String(s), `${s}`, JSON.stringify(s), JSON.stringify({ s }), inspect(s), inspect({ s })];
    for (const text of shown) {
      assert.not.match(text, 'hunter2');
      assert.not.match(text, md5Secret('hunter2', 'u').slice(3));
      assert.match(text, s.kind);
    }
  }
});

// ---------- md5 ----------

test('md5Secret: known vector and independent computation', () => {
  // The well-known postgres/postgres value, and md5('passwordpostgres') (checked with md5sum).
  assert.is(md5Secret('postgres', 'postgres'), 'md53175bce1d3201d16594cebf9d7eb3f9d');
  assert.is(md5Secret('password', 'postgres'), 'md532e12f215ba27cb750c9e093ce4b5127');
  assert.is(md5Secret('secret', 'user'), 'md5' + md5hex('secretuser'));
});

test('md5Response and verifyMd5Response', () => {
  const salt = Buffer.from([1, 2, 3, 250]);
  const stored = md5Secret('secret', 'user');
  const expected = 'md5' + md5hex(Buffer.concat([Buffer.from(stored.slice(3)), salt]));
  assert.is(md5Response(stored, salt), expected);

  assert.ok(verifyMd5Response(parseSecret(stored), 'user', salt, expected));
  assert.ok(verifyMd5Response(parseSecret('secret'), 'user', salt, expected));
  assert.not.ok(verifyMd5Response(parseSecret('secret'), 'other', salt, expected));
  assert.not.ok(verifyMd5Response(parseSecret(stored), 'user', Buffer.from([0, 0, 0, 0]), expected));
  assert.not.ok(verifyMd5Response(parseSecret(stored), 'user', salt, expected.slice(0, -1)));
  assert.not.ok(verifyMd5Response(scramSecret('secret'), 'user', salt, expected));
  const emptyResp = md5Response(md5Secret('', 'user'), salt);
  assert.not.ok(verifyMd5Response(parseSecret(''), 'user', salt, emptyResp));
});

test('verifyPlainPassword for plain, md5 and scram secrets', () => {
  const secrets: StoredSecret[] = [
    parseSecret('s3cret'),
    parseSecret(md5Secret('s3cret', 'bob')),
    scramSecret('s3cret', 1000),
    parseSecret(formatSecret(scramSecret('s3cret'))),
  ];
  for (const s of secrets) {
    assert.ok(verifyPlainPassword(s, 'bob', 's3cret'), s.kind);
    assert.not.ok(verifyPlainPassword(s, 'bob', 's3cret!'), s.kind);
    assert.not.ok(verifyPlainPassword(s, 'bob', ''), s.kind);
  }
  assert.not.ok(verifyPlainPassword(parseSecret(md5Secret('s3cret', 'bob')), 'alice', 's3cret'));
  assert.not.ok(verifyPlainPassword(parseSecret(''), 'bob', ''));
});

// ---------- SCRAM ----------

test('scramKeys: the keys PBKDF2 gives, for a repeat and for every change of password, salt or iterations', () => {
  const direct = (password: string, salt: Buffer, iterations: number) => {
    const salted = pbkdf2Sync(Buffer.from(password, 'utf8'), salt, iterations, 32, 'sha256');
    return { clientKey: hmac(salted, 'Client Key'), serverKey: hmac(salted, 'Server Key') };
  };
  const salt = Buffer.from('salt-one');
  const cases: [string, Buffer, number][] = [
    ['pw', salt, 4096],
    ['pw', salt, 4096], // the same again: kept keys
    ['pw2', salt, 4096], // a changed password
    ['pw', Buffer.from('salt-two'), 4096], // a changed salt (ALTER ROLE ... PASSWORD draws one)
    ['pw', salt, 4097],
    // Where one (salt, password) pair ends and the next begins must not matter.
    [':c', Buffer.from('ab'), 1000],
    ['c', Buffer.from('ab:'), 1000],
    ['ünïcødé', salt, 1000],
  ];
  for (const [password, s, iterations] of cases) {
    const want = direct(password, s, iterations);
    for (const remember of [true, false]) {
      const got = scramKeys(password, s, iterations, remember);
      assert.equal(got.clientKey, want.clientKey, `${password} ${s} ${iterations}`);
      assert.equal(got.serverKey, want.serverKey, `${password} ${s} ${iterations}`);
    }
  }
});

test('verifyPlainPassword against a SCRAM secret: a right password stays right and a wrong one wrong, in any order', () => {
  const secret = scramSecret('right-password', 1000);
  for (const guess of ['wrong-password', 'right-password', 'wrong-password', 'right-password', 'right-password!']) {
    assert.is(verifyPlainPassword(secret, 'u', guess), guess === 'right-password', guess);
  }
  // The same password against another salt (a re-created secret) is checked against that salt.
  const other = scramSecret('right-password', 1000);
  assert.ok(verifyPlainPassword(other, 'u', 'right-password'));
  assert.not.ok(verifyPlainPassword(scramSecret('another-password', 1000), 'u', 'right-password'));
});


// RFC 7677 section 3.
const RFC = {
  clientFirst: 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal: 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
};

test('ScramClient: RFC 7677 test vector', () => {
  const c = new ScramClient({ password: 'pencil' }, { nonce: 'rOprNGfwEbeRWgbNEkqO', user: 'user' });
  assert.is(c.clientFirst(), RFC.clientFirst);
  assert.is(c.clientFinal(RFC.serverFirst), RFC.clientFinal);
  c.verifyServerFinal(RFC.serverFinal);
});

test('ScramServer: RFC 7677 test vector', () => {
  const secret = scramSecret('pencil', 4096, Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'));
  const s = new ScramServer(secret, 'user', { nonce: '%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0' });
  assert.is(s.serverFirst(Buffer.from(RFC.clientFirst)), RFC.serverFirst);
  const r = s.serverFinal(Buffer.from(RFC.clientFinal));
  assert.ok(r.ok);
  if (r.ok) assert.is(r.message, RFC.serverFinal);
});

test('ScramClient default client-first shape', () => {
  assert.match(new ScramClient({ password: 'x' }).clientFirst(), /^n,,n=\*,r=[A-Za-z0-9+/]{32}$/);
});

function exchange(server: ScramServer, client: ScramClient) {
  const serverFirst = server.serverFirst(Buffer.from(client.clientFirst()));
  const result = server.serverFinal(Buffer.from(client.clientFinal(serverFirst)));
  if (result.ok) client.verifyServerFinal(result.message);
  return { serverFirst, result };
}

test('SCRAM round trip with a scram secret, a plain secret and a parsed secret', () => {
  for (const secret of [scramSecret('pw'), parseSecret('pw'), parseSecret(formatSecret(scramSecret('pw', 10000)))]) {
    const { result } = exchange(new ScramServer(secret, 'alice'), new ScramClient({ password: 'pw' }));
    assert.ok(result.ok, secret.kind);
  }
});

test('SCRAM pass-through: the proven clientKey plus serverKey logs in again', () => {
  const secret = scramSecret('pw');
  const first = exchange(new ScramServer(secret, 'alice'), new ScramClient({ password: 'pw' })).result;
  assert.ok(first.ok);
  if (!first.ok || secret.kind !== 'scram') return;
  assert.equal(first.clientKey, scramKeys('pw', secret.salt, secret.iterations).clientKey);
  const again = exchange(
    new ScramServer(secret, 'alice'),
    new ScramClient({ clientKey: first.clientKey, serverKey: secret.serverKey }),
  ).result;
  assert.ok(again.ok);
});

test('SCRAM fails with a wrong password', () => {
  for (const secret of [scramSecret('pw'), parseSecret('pw')]) {
    const { result } = exchange(new ScramServer(secret, 'alice'), new ScramClient({ password: 'wrong' }));
    assert.is(result.ok, false);
  }
});

test('SCRAM mock exchange: unknown, md5 and empty-password users look real but fail', () => {
  const first = (secret: StoredSecret | undefined, user: string) =>
    new ScramServer(secret, user).serverFirst(Buffer.from('n,,n=,r=abc'));
  const salt = (sf: string) => sf.split(',')[1];
  const a1 = first(undefined, 'ghost');
  const a2 = first(undefined, 'ghost');
  assert.match(a1, /^r=abc[A-Za-z0-9+/]{24},s=[A-Za-z0-9+/]{22}==,i=4096$/);
  assert.is(salt(a1), salt(a2)); // stable salt, like a real user
  assert.is.not(salt(a1), salt(first(undefined, 'ghost2')));
  // A plain-password user gets the same kind of deterministic salt.
  assert.is(salt(first(parseSecret('pw'), 'carol')), salt(first(parseSecret('pw'), 'carol')));

  for (const secret of [undefined, parseSecret(md5Secret('pw', 'ghost')), parseSecret('')]) {
    const { result } = exchange(new ScramServer(secret, 'ghost'), new ScramClient({ password: 'pw' }));
    assert.is(result.ok, false);
  }
  const { result } = exchange(new ScramServer(parseSecret(''), 'ghost'), new ScramClient({ password: '' }));
  assert.is(result.ok, false);
});

test('ScramServer accepts the y,, header when c= matches it', () => {
  const secret = scramSecret('pw');
  if (secret.kind !== 'scram') return;
  const server = new ScramServer(secret, 'u');
  const serverFirst = server.serverFirst(Buffer.from('y,,n=,r=nonce1'));
  const nonce = serverFirst.split(',')[0].slice(2);
  const withoutProof = `c=${Buffer.from('y,,').toString('base64')},r=${nonce}`;
  const authMessage = `n=,r=nonce1,${serverFirst},${withoutProof}`;
  const { clientKey } = scramKeys('pw', secret.salt, secret.iterations);
  const sig = hmac(sha256(clientKey), authMessage);
  const proof = Buffer.from(clientKey.map((b, i) => b ^ sig[i]));
  assert.ok(server.serverFinal(Buffer.from(`${withoutProof},p=${proof.toString('base64')}`)).ok);

  // ...and rejects c=biws after a y,, header.
  const s2 = new ScramServer(secret, 'u');
  const client = new ScramClient({ password: 'pw' });
  const sf = s2.serverFirst(Buffer.from(client.clientFirst().replace(/^n/, 'y')));
  throwsWith(() => s2.serverFinal(Buffer.from(client.clientFinal(sf))), ScramError);
});

test('ScramServer: malformed client messages raise ScramError', () => {
  const badFirst = ['p=tls-server-end-point,,n=,r=abc', 'n,a=admin,n=,r=abc', 'x,,n=,r=abc', 'n,,r=abc',
    'n,,n=', 'n,,m=ext,n=,r=abc', 'n,,n=,r=', 'garbage', ''];
  for (const msg of badFirst) {
    throwsWith(() => new ScramServer(scramSecret('pw', 1), 'u').serverFirst(Buffer.from(msg)), ScramError);
  }

  const mk = () => {
    const server = new ScramServer(scramSecret('pw', 1), 'u');
    const client = new ScramClient({ password: 'pw' });
    const final = client.clientFinal(server.serverFirst(Buffer.from(client.clientFirst())));
    return { server, final };
  };
  const mutations: Array<(f: string) => string> = [
    (f) => f.replace('c=biws', 'c=eSws'),          // wrong channel-binding header
    (f) => f.replace(/,r=[^,]+/, ',r=other'),       // wrong nonce
    (f) => f.replace(/,p=.*/, ''),                  // no proof
    (f) => f.replace(/,p=.*/, ',p=AAAA'),           // proof too short
    (f) => f.replace(/,p=.*/, ',p=!!!!'),           // not base64
    (f) => f + ',x=trailing',                       // garbage after the proof
    (f) => f.replace('c=biws,', ''),                // missing c=
  ];
  for (const mutate of mutations) {
    const { server, final } = mk();
    throwsWith(() => server.serverFinal(Buffer.from(mutate(final))), ScramError);
  }

  // Out of order.
  throwsWith(() => new ScramServer(undefined, 'u').serverFinal(Buffer.from('c=biws,r=x,p=AAAA')), ScramError);
  const { server, final } = mk();
  server.serverFinal(Buffer.from(final));
  throwsWith(() => server.serverFinal(Buffer.from(final)), ScramError);
});

test('ScramClient: bad server messages raise ScramError without secrets', () => {
  const serverFirst = (c: ScramClient, rest = ',s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096') =>
    `r=${c.clientFirst().split(',r=')[1]}xyz${rest}`;
  const cases: Array<(c: ScramClient) => string> = [
    () => 'r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',     // nonce not ours
    (c) => `r=${c.clientFirst().split(',r=')[1]},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096`, // no server part
    (c) => serverFirst(c, ',s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0'),
    (c) => serverFirst(c, ',s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1'),
    (c) => serverFirst(c, ',s=W22ZaJ0SNY7soEsUEjb6gQ==,i=abc'),
    (c) => serverFirst(c, ',s=,i=4096'),
    (c) => serverFirst(c, ',s=not*base64,i=4096'),
    (c) => serverFirst(c, ',i=4096'),
    () => 'm=ext,r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
    () => 'nonsense',
  ];
  for (const make of cases) {
    const c = new ScramClient({ password: 'hunter2' });
    throwsWith(() => c.clientFinal(make(c)), ScramError, (e) => assert.not.match(e.message, 'hunter2'));
  }

  // Server-final problems.
  const c = new ScramClient({ password: 'hunter2' });
  throwsWith(() => c.verifyServerFinal('v=AAAA'), ScramError); // before clientFinal
  c.clientFinal(serverFirst(c));
  throwsWith(() => c.verifyServerFinal('e=invalid-proof'), ScramError, (e) => assert.match(e.message, 'invalid-proof'));
  throwsWith(() => c.verifyServerFinal(RFC.serverFinal), ScramError, (e) => assert.is(e.message, 'server signature mismatch'));
  throwsWith(() => c.verifyServerFinal('x=1'), ScramError);
});

test('scramSecret produces PostgreSQL format', () => {
  const text = formatSecret(scramSecret('pw'));
  assert.match(text, /^SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/);
  throwsWith(() => scramSecret('pw', 0), RangeError);
});

test.run();
