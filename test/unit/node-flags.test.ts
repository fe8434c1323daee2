// Tessera's Node.js flags (src/node-flags.ts) are written out in two places a user starts it
// from: the `tessera` command's shebang and `npm start`. They must say the same.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { NODE_FLAGS } from '../../src/node-flags.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const flags = NODE_FLAGS.join(' ');

test('the tessera command runs node with NODE_FLAGS', () => {
  const shebang = fs.readFileSync(path.join(ROOT, 'src/cli.ts'), 'utf8').split('\n')[0];
  assert.is(shebang, `#!/usr/bin/env -S node ${flags}`);
});

test('npm start runs node with NODE_FLAGS', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  // exec: node takes the shell's place, so the SIGTERM npm passes on reaches Tessera (.ci/front-door).
  assert.ok(pkg.scripts.start.startsWith(`exec node ${flags} dist/src/cli.js`), pkg.scripts.start);
});

test.run();
