// `npm test` entry point: `tsx test/run.ts [filter...]`.
//
// Runs every test/unit and test/integration file named *.test.ts under uvu in
// ONE child process (so test/support/cluster.ts's sharedCluster() is shared by
// all files), streams uvu's output unchanged, lists the tests that could not run here
// (test/support/tools.ts: a missing psql, pgbench, java...), then prints as the very last line
// `N passed, N failed, N skipped` and exits non-zero if anything failed. Skipped is never passed.
//
// Filters are regexes (case-insensitive) matched against the path relative to
// test/, e.g. `npm test -- unit` or `npm test -- integration/harness`; several
// filters are OR-ed.
//
// The same file doubles as the child (`--child <suites-json>`) so the runner
// needs no extra files; the child is started as `node --import tsx` because
// uvu imports the test files itself.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(SELF), '..');
const BASE_PATTERN = /^(unit|integration)[\\/].*\.test\.ts$/;

/** Seconds before a wedged run is killed (a test awaiting forever would hang CI otherwise). */
const TIMEOUT_S = Number(process.env.TESSERA_TEST_TIMEOUT ?? 900);
/** After uvu's summary, how long the child may keep running before we force it out. */
const LINGER_MS = 2000;

interface Suite {
  name: string;
  file: string;
}

if (process.argv[2] === '--child') {
  await child(JSON.parse(process.argv[3] ?? '[]') as Suite[]);
} else {
  await parent(process.argv.slice(2));
}

async function child(suites: Suite[]): Promise<void> {
  const { run } = await import('uvu/run');
  await run(suites, { bail: false });
  const { skippedTests } = await import('./support/tools.js');
  const skipped = skippedTests();
  if (skipped.length > 0) {
    process.stdout.write(`  Skipped, cannot run on this machine:\n`);
    for (const s of skipped) process.stdout.write(`    ${s.file}: "${s.name}": ${s.reason}\n`);
    process.stdout.write('\n');
  }
  // uvu has set process.exitCode. Leaked sockets/servers would keep us alive
  // forever; name them (they are bugs) and exit, which also fires the cluster
  // cleanup 'exit' handlers.
  setTimeout(() => {
    const busy = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap');
    process.stderr.write(
      `\nrun.ts: tests finished but the process was still busy after ${LINGER_MS} ms ` +
        `(${busy.join(', ') || 'unknown'}); exiting anyway — close what your tests open.\n`,
    );
    process.exit();
  }, LINGER_MS).unref();
}

function toRegex(filter: string): RegExp {
  const f = filter.replace(/^(\.\/)?test[\\/]/, '');
  try {
    return new RegExp(f, 'i');
  } catch {
    return new RegExp(f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'i');
  }
}

function finish(passed: number, failed: number, skipped = 0): void {
  // Must stay the last line of output: CI reads it.
  process.stdout.write(`${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  process.exitCode = failed > 0 ? 1 : 0;
}

async function parent(filters: string[]): Promise<void> {
  const { parse } = await import('uvu/parse');
  const { suites } = await parse(path.join(ROOT, 'test'), BASE_PATTERN, { cwd: ROOT });
  const wanted = filters.map(toRegex);
  const selected = suites.filter((s) => wanted.length === 0 || wanted.some((r) => r.test(s.name)));
  if (selected.length === 0) {
    process.stderr.write(`run.ts: no test files match ${filters.length ? filters.join(' ') : BASE_PATTERN}\n`);
    return finish(0, 1);
  }

  const env = { ...process.env };
  // Our pipe makes uvu (kleur) think it is not on a terminal; keep colours when we are.
  if (process.stdout.isTTY && env.NO_COLOR === undefined && env.FORCE_COLOR === undefined) env.FORCE_COLOR = '1';

  const proc = spawn(process.execPath, ['--import', 'tsx', SELF, '--child', JSON.stringify(selected)], {
    cwd: ROOT, // `--import tsx` resolves from here
    env,
    stdio: ['inherit', 'pipe', 'inherit'],
  });

  let out = '';
  proc.stdout.on('data', (chunk: Buffer) => {
    process.stdout.write(chunk);
    out += chunk.toString('utf8');
    if (out.length > 1 << 20) out = out.slice(-(1 << 16)); // only the summary at the end matters
  });

  // Ctrl-C reaches the child through the process group; a targeted kill of us is
  // forwarded so the child can stop its PostgreSQL servers before dying.
  const forward = (sig: NodeJS.Signals) => () => proc.kill(sig);
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((s) => [s, forward(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);

  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    process.stderr.write(`\nrun.ts: tests still running after ${TIMEOUT_S}s (TESSERA_TEST_TIMEOUT); killing them\n`);
    proc.kill('SIGTERM');
    setTimeout(() => proc.kill('SIGKILL'), 10_000).unref();
  }, TIMEOUT_S * 1000);

  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    proc.on('error', (err) => {
      process.stderr.write(`run.ts: could not start uvu: ${err.message}\n`);
      resolve([1, null]);
    });
    proc.on('close', (c, s) => resolve([c, s]));
  });
  clearTimeout(timer);
  for (const [s, h] of handlers) process.removeListener(s, h);

  // eslint-disable-next-line no-control-regex
  const plain = out.replace(/\x1b\[[0-9;]*m/g, '');
  const summaries = [...plain.matchAll(/Total:\s+(\d+)\s+Passed:\s+(\d+)\s+Skipped:\s+(\d+)\s+Duration:/g)];
  const last = summaries.at(-1);
  if (!last || timedOut) {
    // uvu crashed (e.g. a test file threw while loading) or hung: no trustworthy counts.
    if (!timedOut) process.stderr.write(`run.ts: uvu exited (code ${code}, signal ${signal}) without a summary\n`);
    return finish(0, 1);
  }
  const total = Number(last[1]);
  const passed = Number(last[2]);
  const skipped = Number(last[3]);
  // uvu's Total already excludes skipped tests (test.skip; non-.only tests when
  // .only is used), so whatever did not pass failed — including tests that never
  // ran because a before() hook threw, which uvu itself silently counts as OK.
  let failed = Math.max(0, total - passed);
  if (failed === 0 && code !== 0) {
    process.stderr.write(`run.ts: all tests passed but the test process exited with code ${code}, signal ${signal}\n`);
    failed = 1;
  }
  finish(passed, failed, skipped);
}
