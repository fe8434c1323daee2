// README's session-token walkthrough, run by bash as written. Only what ties it to `npm start` is
// changed: the embedded PostgreSQL's port (5433) and superuser password become a throwaway
// cluster's, Tessera's port (6432) a free one, and `npx tessera` the CLI from source. Then the
// same steps 2-4 for bob, as README says, must show only bob's rows.
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startCluster } from '../support/cluster.js';
import { spawnTessera, run, ROOT, type TesseraProcess } from '../support/tessera.js';
import { needing, tool } from '../support/tools.js';
import { shippedConfig } from '../support/shipped-config.js';

const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const TSX = path.join(ROOT, 'node_modules/tsx/dist/loader.mjs');

/** The first ```sh block after the walkthrough's heading. */
function walkthrough(): string {
  const at = README.indexOf('### Walkthrough');
  assert.ok(at >= 0, 'README has the walkthrough');
  const block = /```sh\n([\s\S]*?)```/.exec(README.slice(at));
  assert.ok(block, 'the walkthrough has a sh block');
  return block[1];
}

needing('psql')('README walkthrough: psql through Tessera sees only alice\'s rows, then only bob\'s', async () => {
  const cluster = await startCluster();
  let t: TesseraProcess | undefined;
  try {
    // Step 1 installs sql/tessera.sql, which creates the roles the shipped demo entry logs in as.
    t = await spawnTessera(shippedConfig(cluster));
    const psqlDir = path.dirname(tool('psql'));
    const script = walkthrough()
      .replaceAll('-p 5433', `-p ${cluster.port}`)
      .replaceAll('PGPASSWORD=postgres ', `PGPASSWORD='${cluster.superPassword}' `)
      .replaceAll('-p 6432', `-p ${t.port}`)
      .replaceAll('npx tessera', `"${process.execPath}" --import "${TSX}" "${path.join(ROOT, 'src/cli.ts')}"`);
    const env = { PATH: `${psqlDir}:${process.env.PATH}` };
    const alice = await run('bash', ['-e', '-o', 'pipefail', '-c', script], { env, timeoutMs: 60_000 });
    assert.is(alice.code, 0, alice.stderr + alice.stdout);
    assert.match(alice.stdout, /alice: buy oat milk/);
    assert.not.match(alice.stdout, /bob: fix the bike/);
    // "run steps 2-4 with bob and bob-password and only bob's do" (step 1 ran already).
    const steps = script.slice(script.indexOf('# 2.')).replaceAll("'alice'", "'bob'").replaceAll('alice-password', 'bob-password');
    const bob = await run('bash', ['-e', '-o', 'pipefail', '-c', `export PGHOST=127.0.0.1\n${steps}`], { env, timeoutMs: 60_000 });
    assert.is(bob.code, 0, bob.stderr + bob.stdout);
    assert.match(bob.stdout, /bob: fix the bike/);
    assert.not.match(bob.stdout, /alice: buy oat milk/);
  } finally {
    await t?.stop();
    await cluster.stop();
  }
});

test.run();
