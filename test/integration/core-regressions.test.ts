// Regressions of the connection core (issue 14): state that had two owners.
import net from 'node:net';
import fs from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Parser } from 'pg-protocol/dist/parser.js';
import { serialize } from 'pg-protocol';
import { ROLES, sharedCluster, type Cluster } from '../support/cluster.js';
import { startTessera, clusterEntry, connect, rejection, capturedLogs, type RunningTessera } from '../support/tessera.js';

const user = ROLES.trust.user;
let cluster: Cluster;

test.before(async () => {
  cluster = await sharedCluster();
});

async function reloadWith(t: RunningTessera, changes: Record<string, unknown>): Promise<void> {
  const json = JSON.parse(fs.readFileSync(t.file, 'utf8'));
  fs.writeFileSync(t.file, JSON.stringify({ ...json, ...changes }));
  await t.proxy.reload();
}

test('RELOAD from session to transaction mode: a client connected before keeps its session, nobody else sees it', async () => {
  const t = await startTessera({ pool_mode: 'session', default_pool_size: 2, databases: { '*': clusterEntry(cluster) } });
  const a = await connect(t.conn(user));
  try {
    await a.query('create temp table a_private (x int)');
    await a.query('insert into a_private values (1)');
    await reloadWith(t, { pool_mode: 'transaction' });
    await a.query('select 1');
    const b = await connect(t.conn(user));
    try {
      // Before the fix, A's backend went back to the pool after `select 1`, unreset, and B got it.
      const err = await rejection(b.query('select x from a_private'));
      assert.is(err.code, '42P01');
    } finally {
      await b.end();
    }
    // A's own session is intact: its temp table is still there.
    assert.equal((await a.query('select x from a_private')).rows, [{ x: 1 }]);
  } finally {
    await a.end();
    await t.stop();
  }
});

test('RELOAD from session to transaction mode: new clients are pooled per transaction', async () => {
  const t = await startTessera({ pool_mode: 'session', default_pool_size: 1, databases: { '*': clusterEntry(cluster) } });
  try {
    await reloadWith(t, { pool_mode: 'transaction' });
    const a = await connect(t.conn(user));
    const b = await connect(t.conn(user));
    try {
      // One backend serves both, one transaction at a time: only transaction pooling allows that.
      const pa = (await a.query('select pg_backend_pid() p')).rows[0].p;
      const pb = (await b.query('select pg_backend_pid() p')).rows[0].p;
      assert.is(pa, pb);
    } finally {
      await a.end();
      await b.end();
    }
  } finally {
    await t.stop();
  }
});

test('RELOAD from transaction to session mode: a connected client keeps its backend from its next transaction on', async () => {
  const t = await startTessera({ pool_mode: 'transaction', default_pool_size: 2, databases: { '*': clusterEntry(cluster) } });
  const a = await connect(t.conn(user));
  try {
    await a.query('select 1');
    await reloadWith(t, { pool_mode: 'session' });
    const first = (await a.query('select pg_backend_pid() p')).rows[0].p;
    await a.query('create temp table t_private (x int)');
    assert.is((await a.query('select pg_backend_pid() p')).rows[0].p, first);
    assert.equal((await a.query('select count(*)::int n from t_private')).rows, [{ n: 0 }]);
    const b = await connect(t.conn(user));
    try {
      assert.is((await rejection(b.query('select x from t_private'))).code, '42P01');
    } finally {
      await b.end();
    }
  } finally {
    await a.end();
    await t.stop();
  }
});

/** Logs in with trust, sends `bytes`, and collects backend messages until an ErrorResponse or close. */
function rawSession(port: number, bytes: Buffer): Promise<{ name: string; code?: string; severity?: string; message?: string }[]> {
  return new Promise((resolve, reject) => {
    const seen: { name: string; code?: string; severity?: string; message?: string }[] = [];
    const socket = net.connect(port, '127.0.0.1');
    const parser = new Parser();
    let loggedIn = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no error within 5 s; saw ${seen.map((m) => m.name).join(', ')}`));
    }, 5000);
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(seen);
    };
    socket.on('connect', () => socket.write(serialize.startup({ user, database: 'tessera_test' })));
    socket.on('data', (chunk) =>
      parser.parse(chunk, (m) => {
        const e = m as unknown as { name: string; code?: string; severity?: string; message?: string };
        seen.push({ name: e.name, code: e.code, severity: e.severity, message: e.message });
        if (e.name === 'readyForQuery' && !loggedIn) {
          loggedIn = true;
          socket.write(bytes);
        }
        if (e.name === 'error') done();
      }),
    );
    socket.on('close', done);
    socket.on('error', () => {});
  });
}

test('transaction mode: a malformed Parse is a protocol violation (08P01), not an internal error', async () => {
  const t = await startTessera({ pool_mode: 'transaction', databases: { '*': clusterEntry(cluster) } });
  try {
    const logsBefore = capturedLogs.length;
    // A Parse whose statement name has no terminator.
    const body = Buffer.from('abc');
    const parse = Buffer.alloc(5 + body.length);
    parse[0] = 0x50;
    parse.writeInt32BE(4 + body.length, 1);
    body.copy(parse, 5);
    const seen = await rawSession(t.port, Buffer.concat([parse, serialize.sync()]));
    const error = seen.find((m) => m.name === 'error');
    assert.ok(error, `an ErrorResponse, got ${seen.map((m) => m.name).join(', ')}`);
    assert.is(error.code, '08P01');
    assert.is(error.message, 'invalid string in message');
    const unexpected = capturedLogs.slice(logsBefore).filter((l) => l.includes('unexpected error'));
    assert.equal(unexpected, []);
  } finally {
    await t.stop();
  }
});

test.run();
