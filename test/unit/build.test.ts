// `npm start` builds with tsc before it runs: a type error would break the front door even when
// every test (run through tsx, which does not type-check) passes. tsconfig.typecheck.json is
// `npm run typecheck`: src/ as built, plus test/ and bench/, which the build does not emit.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

test('src, test and bench type-check (npm run typecheck: tsc -p tsconfig.typecheck.json)', async () => {
  const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
  const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.typecheck.json')], { cwd: ROOT });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ code, out }));
  });
  assert.is(code, 0, out);
});

test.run();
