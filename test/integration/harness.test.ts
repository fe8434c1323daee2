// Proves test/support/cluster.ts: a real server with one role per auth method.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { ROLES, TEST_DB, sharedCluster } from '../support/cluster.js';
import { needing, tool } from '../support/tools.js';

async function login(user: string, password?: string): Promise<string> {
  const c = await sharedCluster();
  const client = new pg.Client({ host: c.host, port: c.port, user, password, database: TEST_DB });
  await client.connect();
  try {
    const { rows } = await client.query<{ u: string }>('select current_user as u');
    return rows[0]!.u;
  } finally {
    await client.end();
  }
}

test('sharedCluster starts and is memoised', async () => {
  const a = await sharedCluster();
  const b = await sharedCluster();
  assert.is(a, b);
  const { rows } = await a.query('select 1 as one');
  assert.is(rows[0].one, 1);
});

for (const [kind, role] of Object.entries(ROLES)) {
  test(`${kind} role logs in over TCP`, async () => {
    assert.is(await login(role.user, 'password' in role ? role.password : undefined), role.user);
  });
}

test('hba forces the intended method per role', async () => {
  const c = await sharedCluster();
  // pg_hba_file_rules shows the parsed file; check the first matching line per user.
  const { rows } = await c.query(
    `select user_name[1] as u, auth_method from pg_hba_file_rules where type = 'host' and user_name[1] <> 'all'`,
  );
  const got = Object.fromEntries(rows.map((r) => [r.u, r.auth_method]));
  assert.equal(got, { trust_user: 'trust', md5_user: 'md5', plain_user: 'password', scram_user: 'scram-sha-256' });
});

test('wrong password for scram_user is refused with 28P01', async () => {
  try {
    await login(ROLES.scram.user, 'not-the-password');
    assert.unreachable('login should have failed');
  } catch (err) {
    assert.is((err as { code?: string }).code, '28P01');
  }
});

test('test roles can create tables in tessera_test', async () => {
  const c = await sharedCluster();
  const client = new pg.Client({ host: c.host, port: c.port, database: TEST_DB, ...ROLES.md5 });
  await client.connect();
  try {
    await client.query('create temp table t (x int)');
    await client.query('create table if not exists harness_probe (x int)');
  } finally {
    await client.end();
  }
});

needing('psql')('psql can connect', async () => {
  const c = await sharedCluster();
  const r = spawnSync(
    tool('psql'),
    ['-X', '-At', '-h', c.host, '-p', String(c.port), '-U', c.superuser, '-d', 'postgres', '-c', 'select 1'],
    { env: { ...process.env, PGPASSWORD: c.superPassword }, encoding: 'utf8', timeout: 10_000 },
  );
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stdout.trim(), '1');
});

test.run();
