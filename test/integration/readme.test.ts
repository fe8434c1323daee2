// README's front-door commands, run as written (only the port changed to a free one) against the
// shipped proxy.config.json, with its embedded entries pointed at the test cluster: the admin
// console line, `npx tessera cert` and its TLS psql line. Debian's psql (postgresql-common's
// wrapper) looks in /var/run/postgresql unless given a host, so these must name one.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PG_BIN, sharedCluster, type Cluster } from '../support/cluster.js';
import { spawnTessera, run, ROOT } from '../support/tessera.js';
import { shippedConfig } from '../support/shipped-config.js';

let cluster: Cluster;
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const TSX = path.join(ROOT, 'node_modules/tsx/dist/loader.mjs');
const PSQL = fs.existsSync('/usr/bin/psql') ? '/usr/bin/psql' : PG_BIN ? `${PG_BIN}/psql` : null;

/** The command README shows (inline or on a line of a code block) that is `start`, or else starts with it. */
function readmeCommand(start: string): string {
  const shown = [...[...README.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]), ...README.split('\n').map((l) => l.trim())];
  const found = shown.find((c) => c === start) ?? shown.find((c) => c.startsWith(start));
  assert.ok(found, `README has no \`${start}…\``);
  return found!;
}

/** Splits a shell command line into words (double quotes only, as the README lines use). */
function words(line: string): string[] {
  return [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]);
}

test.before(async () => {
  cluster = await sharedCluster();
});

(PSQL ? test : test.skip)('the admin console line works on the shipped config', async () => {
  const line = readmeCommand('psql -h 127.0.0.1 -p 6432 -U admin pgbouncer');
  const t = await spawnTessera(shippedConfig(cluster));
  try {
    const [, ...args] = words(line.replace('-p 6432', `-p ${t.port}`));
    const r = await run(PSQL!, [...args, '-X', '-At'], { input: 'SHOW VERSION;\n' });
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Tessera /);
  } finally {
    await t.stop();
  }
});

(PSQL ? test : test.skip)('npx tessera cert certs, then the TLS psql line; a second run keeps the server key and says so', async () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-readme-tls-'));
  try {
    // `npx tessera` is the CLI; run from source here, in `cwd`, as a user's shell would.
    const tessera = (args: string) => run('sh', ['-c', `cd "${cwd}" && "${process.execPath}" --import "${TSX}" "${path.join(ROOT, 'src/cli.ts')}" ${args}`]);
    const first = await tessera(words(readmeCommand('npx tessera cert certs')).slice(2).join(' '));
    assert.is(first.code, 0, first.stderr);
    const key = fs.readFileSync(path.join(cwd, 'certs/server.key'));
    const again = await tessera('cert certs --client alice');
    assert.is(again.code, 0, again.stderr);
    assert.ok(fs.readFileSync(path.join(cwd, 'certs/server.key')).equals(key), 'the server key was regenerated');
    assert.match(again.stdout, /Kept [^\n]*certs\/server\.key/);
    assert.match(again.stdout, /Wrote [^\n]*certs\/alice\.key/);
    // README's three settings, with the paths it gives (relative to the config's folder: cwd).
    const settings = README.match(/"client_tls_sslmode": "require",\n"client_tls_key_file": "([^"]+)",\n"client_tls_cert_file": "([^"]+)",/);
    assert.ok(settings, 'README shows the three TLS settings');
    const t = await spawnTessera(
      shippedConfig(cluster, { client_tls_sslmode: 'require', client_tls_key_file: path.join(cwd, settings![1]), client_tls_cert_file: path.join(cwd, settings![2]) }),
    );
    try {
      const line = readmeCommand('psql "host=localhost port=6432');
      const [, conninfo] = words(line);
      const r = await run('sh', ['-c', `cd "${cwd}" && "${PSQL}" -X -At "${conninfo.replace('port=6432', `port=${t.port}`)}"`], { input: 'select 1;\n' });
      assert.is(r.code, 0, r.stderr);
      assert.is(r.stdout.trim(), '1');
    } finally {
      await t.stop();
    }
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test.run();
