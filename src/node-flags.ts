/**
 * The Node.js flags Tessera runs with. The `tessera` command's shebang (src/cli.ts) and `npm start`
 * pass them; test/unit/node-flags.test.ts keeps the three in step, and bench/ starts Tessera with
 * them so it measures what users run.
 *
 * --max-semi-space-size=4: V8 grows its young generation up to 16 MB per semi-space under a burst
 * of logins and keeps it. Capped at 4 MB, 10,000 idle clients cost about 1.3 KB less each
 * (4.5 -> 3.0 KB RSS per client) with no throughput difference measured (pgbench -S, -S with 500
 * clients, -C). Workers inherit the flags (node:cluster forks with process.execArgv).
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4'];
