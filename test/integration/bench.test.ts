// The benchmark scripts run (issue 7: "tests may check that the bench scripts run on a tiny
// setting"): `bench/run.ts --quick --no-pgbouncer` starts its own PostgreSQL and Tessera, measures
// every scenario for about a second, prints the table and writes its files. Only that it runs and
// what it prints are checked, never a timing or a ratio.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { needing } from '../support/tools.js';
import { ROOT } from '../support/tessera.js';
import { defaultSizes, scenarios } from '../../bench/lib/scenarios.js';

function runBench(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench/run.ts'), ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    // SIGTERM lets the bench stop its PostgreSQL and Tessera; SIGKILL if even that hangs.
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

needing('psql', 'pgbench')('bench --quick --no-pgbouncer runs every scenario and prints the table', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-test-'));
  try {
    const r = await runBench(['--quick', '--no-pgbouncer', '--out', out], 150_000);
    assert.is(r.code, 0, `bench exited ${r.code}:\n${r.stderr.slice(-4000)}`);

    // The plain table's header, then the markdown version.
    assert.match(r.stdout, /^scenario\s+\|\s+direct \|\s+Tessera \|\s+PgBouncer \|\s+Tessera\/PgBouncer \|\s+Tessera\/direct$/m);
    assert.ok(r.stdout.includes('| scenario | direct | Tessera | PgBouncer | Tessera/PgBouncer | Tessera/direct |'), r.stdout);
    // A progress line per measurement went to stderr.
    assert.match(r.stderr, /\[1\/\d+\] select-session round 1\/1 direct: /);

    const lines = r.stdout.split('\n');
    const all = scenarios(defaultSizes(true));
    // TLS cost scenarios compare Tessera with itself: a line of their own with the ratio.
    for (const s of all.filter((x) => x.kind === 'tls')) {
      assert.match(r.stdout, new RegExp(`^${s.title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: plaintext [\\d.]+ tps, TLS [\\d.]+ tps, TLS/plaintext [\\d.]+$`, 'm'), r.stdout);
    }
    for (const s of all.filter((x) => x.kind !== 'tls')) {
      const row = lines.find((l) => l.startsWith(`| ${s.title} (`));
      assert.ok(row, `no markdown row for ${s.id} ("${s.title}") in:\n${r.stdout}`);
      const cells = row!.split(' | ');
      // Tessera produced a figure (a number, possibly flagged "!"), whatever its size.
      assert.match(cells[2], /^[\d,.]+!?$/, `Tessera cell for ${s.id}: ${row}`);
      assert.ok(lines.some((l) => l.startsWith(s.title) && l.includes(' | ')), `no plain row for ${s.id}`);
    }

    const json = JSON.parse(fs.readFileSync(path.join(out, 'latest.json'), 'utf8'));
    assert.equal(
      json.scenarios.map((s: { id: string }) => s.id),
      all.filter((s) => s.kind !== 'tls').map((s) => s.id),
    );
    assert.equal(
      json.tls.map((s: { id: string }) => s.id),
      all.filter((s) => s.kind === 'tls').map((s) => s.id),
    );
    assert.ok(fs.readFileSync(path.join(out, 'latest.svg'), 'utf8').startsWith('<svg'));
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

needing('psql', 'pgbench')('bench --server-socket: the poolers reach PostgreSQL over its Unix socket and still measure', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-test-'));
  try {
    const r = await runBench(['--quick', '--no-pgbouncer', '--server-socket', '--only', 'select-tx,token-storm', '--out', out], 120_000);
    assert.is(r.code, 0, `bench exited ${r.code}:\n${r.stderr.slice(-4000)}`);
    assert.match(r.stderr, /the poolers reach PostgreSQL over its Unix socket/);
    assert.match(r.stdout, / · poolers to PostgreSQL over its Unix socket$/m);
    // Tessera's server logins went to the socket folder: a wrong path would leave it without a figure.
    for (const s of scenarios(defaultSizes(true)).filter((x) => x.id === 'select-tx' || x.id === 'token-storm')) {
      const row = r.stdout.split('\n').find((l) => l.startsWith(`| ${s.title} (`));
      assert.ok(row, `no markdown row for ${s.id} in:\n${r.stdout}`);
      assert.match(row!.split(' | ')[2], /^[\d,.]+!?$/, `Tessera cell for ${s.id}: ${row}`);
    }
    assert.is(JSON.parse(fs.readFileSync(path.join(out, 'latest.json'), 'utf8')).options.serverSocket, true);
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test.run();
