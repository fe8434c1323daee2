// Veil2's shared sessions through Tessera, against test/support/veil2-shaped.sql (Veil2's
// signatures, nonce rules and backend state; see that file).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, type RunningTessera } from '../support/tessera.js';
import { psqlFile } from '../support/sql.js';

const DB = 'tessera_veil2_test';
const POOL = { user: 'demouser', password: 'pass' };
const PASSWORDS = { Bob: 'passwd2', Carol: 'passwd3' } as const;
const CORPS = { Bob: 1010, Carol: 1020 } as const;
type Who = keyof typeof PASSWORDS;

let cluster: Cluster;

async function createSession(who: Who): Promise<{ id: string; token: string }> {
  const c = new pg.Client({ host: cluster.host, port: cluster.port, database: DB, ...POOL });
  await c.connect();
  try {
    const { rows } = await c.query('select session_id, session_token from veil2.create_session($1, $2, 4, $3)', [who, 'plaintext', CORPS[who]]);
    return { id: rows[0].session_id, token: rows[0].session_token };
  } finally {
    await c.end();
  }
}

const parties = async (c: pg.Client): Promise<number> => (await c.query('select count(*)::int as n from demo.parties')).rows[0].n;

test.before(async () => {
  cluster = await sharedCluster();
  await cluster.query(`drop database if exists ${DB} with (force)`);
  await cluster.query(`create database ${DB}`);
  await psqlFile(cluster, DB, 'test/support/veil2-shaped.sql');
});

test.after(async () => {
  await cluster.query(`drop database if exists ${DB} with (force)`).catch(() => {});
});

test('DISCARD ALL before leaving does not hand Bob\'s privileges to Carol (pool_size 1)', async () => {
  const t = await startTessera({
    session_tokens: {
      open_connection: 'select success, errmsg from veil2.open_connection($1::bigint, $2::integer, $3::text) where $4::text is null or true',
      close_connection: 'select veil2.close_connection()',
    },
    databases: { vpd: clusterEntry(cluster, { dbname: DB, auth_type: 'session_token', ...POOL, pool_size: 1 }) },
  });
  try {
    const bob = await createSession('Bob');
    const b = await connect({ host: '127.0.0.1', port: t.port, database: 'vpd', user: 'web', password: `${bob.id}:1:passwd2` });
    assert.is(await parties(b), 13);
    await b.query('discard all');
    await b.end();
    const carol = await createSession('Carol');
    const c = await connect({ host: '127.0.0.1', port: t.port, database: 'vpd', user: 'web', password: `${carol.id}:1:passwd3` });
    assert.is(await parties(c), 9, 'Carol sees her own 9 rows only');
    await c.end();
  } finally {
    await t.stop();
  }
});

test.run();
