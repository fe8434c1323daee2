import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseHba, hbaMethod, HbaError } from '../../src/auth/hba.js';

const rules = parseHba(
  [
    '# comment',
    'local   all      all                    trust',
    'host    app      alice  127.0.0.1/32    md5   # trailing comment',
    'host    all      all    10.0.0.0 255.0.0.0  scram-sha-256',
    'hostssl all      all    all             cert',
    'host    "a,b"    bob    ::1/128         reject',
    'host    db1,db2  carol  all             password',
  ].join('\n'),
  'pg_hba.conf',
);

const tcp = (database: string, user: string, address: string) => ({ local: false, ssl: false, database, user, address });

test('first matching rule wins; no match is null', () => {
  assert.is(hbaMethod(rules, { local: true, ssl: false, database: 'x', user: 'y', address: 'unix' }), 'trust');
  assert.is(hbaMethod(rules, tcp('app', 'alice', '127.0.0.1')), 'md5');
  assert.is(hbaMethod(rules, tcp('app', 'alice', '::ffff:127.0.0.1')), 'md5');
  assert.is(hbaMethod(rules, tcp('app', 'alice', '127.0.0.2')), null);
  assert.is(hbaMethod(rules, tcp('other', 'zed', '10.9.8.7')), 'scram-sha-256');
  assert.is(hbaMethod(rules, { ...tcp('x', 'y', '192.168.1.1'), ssl: true }), 'cert');
  assert.is(hbaMethod(rules, tcp('a,b', 'bob', '::1')), 'reject');
  assert.is(hbaMethod(rules, tcp('db2', 'carol', '172.16.0.1')), 'password');
  assert.is(hbaMethod(rules, tcp('db3', 'carol', '172.16.0.1')), null);
});

test('malformed lines are errors naming file:line', () => {
  const bad = (text: string, what: RegExp) => {
    try {
      parseHba(text, 'h.conf');
      assert.unreachable('no error');
    } catch (err) {
      assert.instance(err, HbaError);
      assert.match((err as Error).message, what);
    }
  };
  bad('\nhostx all all all trust', /^h\.conf:2: invalid connection type "hostx"/);
  bad('host all all 127.0.0.1 trust', /^h\.conf:1: expected an address with a \/prefix/);
  bad('host all all 300.0.0.1/8 trust', /invalid IP address/);
  bad('host all all 127.0.0.1/40 trust', /invalid prefix length/);
  bad('local all all ident', /expected one of trust, reject/);
});

test.run();
