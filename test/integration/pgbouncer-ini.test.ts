// The drop-in path: the same pgbouncer.ini and userlist.txt PgBouncer would read, run by Tessera.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster } from '../support/cluster.js';
import { needing, tool } from '../support/tools.js';
import { freePort, connect, rejection, run, startTessera, clusterEntry } from '../support/tessera.js';
import { loadAnyConfig } from '../../src/config/ini.js';
import { loadUserlist } from '../../src/auth/userlist.js';
import { Pooler } from '../../src/pooler/pooler.js';

/** A pgbouncer.ini + userlist.txt as PgBouncer would read them, loaded and served by a Pooler. */
async function fromIni(): Promise<{ port: number; warnings: string[]; config: ReturnType<typeof loadAnyConfig>['config']; dir: string; stop(): Promise<void> }> {
  const cluster = await sharedCluster();
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-ini-'));
  fs.writeFileSync(path.join(dir, 'userlist.txt'), `"${ROLES.md5.user}" "${ROLES.md5.password}"\n"${ROLES.trust.user}" ""\n`);
  fs.writeFileSync(
    path.join(dir, 'pgbouncer.ini'),
    [
      '; as PgBouncer reads it',
      '[databases]',
      `${TEST_DB} = host=${cluster.host} port=${cluster.port} dbname=${TEST_DB}`,
      '',
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'auth_type = md5',
      'auth_file = userlist.txt',
      'pool_mode = transaction',
      'default_pool_size = 4',
      'dns_max_ttl = 15',
      'server_round_robin = 1',
      '',
    ].join('\n'),
  );
  const { config, warnings } = loadAnyConfig(path.join(dir, 'pgbouncer.ini'));
  const proxy = new Pooler({ config, userlist: loadUserlist(config.auth_file!) });
  await proxy.listen();
  return {
    port,
    warnings,
    config,
    dir,
    async stop() {
      await proxy.shutdown(0);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

test('a pgbouncer.ini with userlist.txt serves node-postgres; unsupported settings are warned about', async () => {
  const ini = await fromIni();
  try {
    assert.ok(ini.warnings.some((w) => w.includes('pgbouncer.ini:12') && w.includes('dns_max_ttl')), ini.warnings.join('\n'));
    assert.ok(ini.warnings.some((w) => w.includes('server_round_robin')));
    assert.is(ini.config.pool_mode, 'transaction');
    const c = await connect({ host: '127.0.0.1', port: ini.port, user: ROLES.md5.user, password: ROLES.md5.password, database: TEST_DB });
    assert.is((await c.query('select current_user as u')).rows[0].u, ROLES.md5.user);
    await c.end();
    assert.is((await rejection(connect({ host: '127.0.0.1', port: ini.port, user: ROLES.md5.user, password: 'wrong', database: TEST_DB }))).code, '28P01');
  } finally {
    await ini.stop();
  }
});

needing('psql', 'pgbench')('a pgbouncer.ini with userlist.txt serves psql and pgbench', async () => {
  const ini = await fromIni();
  try {
    const env = { PGPASSWORD: ROLES.md5.password };
    const q = await run(tool('psql'), ['-X', '-At', '-h', '127.0.0.1', '-p', String(ini.port), '-U', ROLES.md5.user, '-d', TEST_DB, '-c', 'select 40 + 2'], { env });
    assert.is(q.stdout.trim(), '42', q.stderr);
    const script = path.join(ini.dir, 'select.sql');
    fs.writeFileSync(script, 'select 1;\n');
    const bench = await run(tool('pgbench'), ['-n', '-c', '8', '-t', '50', '-h', '127.0.0.1', '-p', String(ini.port), '-U', ROLES.md5.user, '-f', script, TEST_DB], { env });
    assert.is(bench.code, 0, bench.stderr);
    assert.match(bench.stdout, /number of failed transactions: 0/);
  } finally {
    await ini.stop();
  }
});

test('Unix socket and a listen_addr list', async () => {
  const cluster = await sharedCluster();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-sock-'));
  const t = await startTessera({ unix_socket_dir: dir, listen_addr: '127.0.0.1, 127.0.0.2', databases: { '*': clusterEntry(cluster) } });
  try {
    assert.ok(fs.existsSync(path.join(dir, `.s.PGSQL.${t.port}`)));
    for (const host of [dir, '127.0.0.2']) {
      const c = await connect({ ...t.conn(ROLES.trust.user), host });
      assert.is((await c.query('select 1 as one')).rows[0].one, 1);
      await c.end();
    }
  } finally {
    await t.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

needing('psql')('psql -h DIR reaches Tessera over its Unix socket', async () => {
  const cluster = await sharedCluster();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-sock-'));
  const t = await startTessera({ unix_socket_dir: dir, databases: { '*': clusterEntry(cluster) } });
  try {
    const r = await run(tool('psql'), ['-X', '-At', '-h', dir, '-p', String(t.port), '-U', ROLES.trust.user, '-d', TEST_DB, '-c', 'select 7']);
    assert.is(r.stdout.trim(), '7', r.stderr);
  } finally {
    await t.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
