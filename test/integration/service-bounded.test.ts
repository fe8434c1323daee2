// State stays bounded at the front door: pools made through "*" go after autodb_idle_timeout,
// clients that never authenticate leave no pool behind, and a packet that is not a startup packet
// is logged and closed without a reply, as PostgreSQL does.
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROLES, TEST_DB, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, until, capturedLogs } from '../support/tessera.js';

let cluster: Cluster;
const user = ROLES.trust.user;

/** Sends `bytes` on a fresh connection; resolves with everything received until the server closed. */
function exchange(port: number, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve) => {
    const got: Buffer[] = [];
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
    s.on('data', (d) => got.push(d));
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(got)));
  });
}

const packet = (length: number, code: number) => {
  const b = Buffer.alloc(8);
  b.writeInt32BE(length, 0);
  b.writeInt32BE(code, 4);
  return b;
};

test.before(async () => {
  cluster = await sharedCluster();
});

test('autodb_idle_timeout: pools made through "*" for unused names are removed; listed and busy ones stay', async () => {
  const t = await startTessera({ autodb_idle_timeout: 1, admin_users: 'admin', databases: { [TEST_DB]: clusterEntry(cluster), '*': clusterEntry(cluster, { dbname: TEST_DB }) } });
  try {
    const made = Array.from({ length: 5 }, (_, i) => `made_up_${i}`);
    for (const name of made) {
      const c = await connect(t.conn(user, undefined, name));
      await c.query('select 1');
      await c.end();
    }
    const kept = await connect(t.conn(user, undefined, 'made_up_busy'));
    await kept.query('select 1');
    const listed = await connect(t.conn(user));
    await listed.query('select 1');
    await listed.end();
    const a = await connect(t.conn('admin', undefined, 'pgbouncer'));
    const names = async () => (await a.query('SHOW POOLS')).rows.map((r) => r.database as string);
    for (const name of made) assert.ok((await names()).includes(name), `pool for ${name}`);
    await until('the unused autodb pools to go', async () => !(await names()).some((n) => made.includes(n)), 10000);
    const left = await names();
    assert.ok(left.includes(TEST_DB), 'a listed database keeps its pool');
    assert.ok(left.includes('made_up_busy'), 'a pool with a client is kept');
    assert.is((await kept.query('select 2 as two')).rows[0].two, 2);
    await kept.end();
    await a.end();
  } finally {
    await t.stop();
  }
});

test('a flood of failed logins to made-up database names leaves no pool', async () => {
  const t = await startTessera({ auth_type: 'md5', databases: { '*': clusterEntry(cluster) } }, `"${ROLES.md5.user}" "${ROLES.md5.password}"\n`);
  try {
    for (let i = 0; i < 30; i++) {
      const err = await rejection(connect(t.conn(i % 2 ? ROLES.md5.user : `ghost_${i}`, 'wrong', `random_db_${i}_${Math.random().toString(36).slice(2)}`)));
      assert.is(err.code, '28P01');
    }
    assert.is(t.proxy.pools.size, 0);
  } finally {
    await t.stop();
  }
});

test('a startup packet with an impossible length is logged and closed without an ErrorResponse, as PostgreSQL does', async () => {
  const t = await startTessera({ databases: { [TEST_DB]: clusterEntry(cluster) } });
  const from = capturedLogs.length;
  try {
    for (const length of [3, 100000, -1]) {
      const reply = await exchange(t.port, packet(length, 196608));
      assert.is(reply.length, 0, `length ${length}: got ${reply.toString('latin1')}`);
    }
    assert.ok(
      capturedLogs.slice(from).some((l) => {
        const j = JSON.parse(l);
        return j.msg === 'invalid startup packet; connection closed' && j.addr === '127.0.0.1' && j.reason === 'invalid length of startup packet';
      }),
    );
    // An unknown protocol version gets PostgreSQL's own FATAL 0A000, so the client learns why.
    const reply = await exchange(t.port, packet(8, 0x12345678));
    assert.is(String.fromCharCode(reply[0]), 'E');
    assert.match(reply.toString('latin1'), 'C0A000');
    assert.match(reply.toString('latin1'), 'unsupported frontend protocol 4660.22136');
  } finally {
    await t.stop();
  }
});

test.run();
