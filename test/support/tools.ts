// The one policy for tests that need a program this machine may not have (psql, pgbench, java,
// ruby-pg, a python3 module, pgbouncer, chromium, logger, script): declare it with needing(), and where it is
// missing the test is not run, is counted as skipped in the summary line (`N passed, N failed,
// N skipped`) and is listed with the reason at the end of the output. Never `if (!tool) return`:
// that counts as passed a test that checked nothing.
//
// TESSERA_TEST_WITHOUT=pgbench,psql hides tools, to see what a machine without them would run.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test as uvuTest, type Test } from 'uvu';
import { machineBinDirs } from './cluster.js';

/** What a test can need. `python3:<module>` is /usr/bin/python3 able to import that module. */
export type Tool =
  | 'psql'
  | 'pgbench'
  | 'pg_dump'
  | 'pgbouncer'
  | 'java'
  | 'pgjdbc'
  | 'ruby-pg'
  | 'chromium'
  | 'logger'
  | 'script'
  | `python3:${string}`;

function executable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function onPath(name: string, extraDirs: string[] = []): string | undefined {
  const dirs = [...extraDirs, ...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean)];
  return dirs.map((d) => path.join(d, name)).find(executable);
}

/** The Debian python3 (with python3-psycopg2 etc.), before whatever PATH's python3 is. */
const python3 = (): string | undefined => (executable('/usr/bin/python3') ? '/usr/bin/python3' : onPath('python3'));

// Each entry: where the tool is (a path tests can run), or undefined, and where we looked.
const FINDERS: Record<string, { find: () => string | undefined; looked: string }> = {
  // The machine's PostgreSQL client tools (same version as the server the tests run), then PATH.
  psql: { find: () => onPath('psql', machineBinDirs()), looked: '/usr/lib/postgresql/*/bin, PATH' },
  pgbench: { find: () => onPath('pgbench', machineBinDirs()), looked: '/usr/lib/postgresql/*/bin, PATH' },
  pg_dump: { find: () => onPath('pg_dump', machineBinDirs()), looked: '/usr/lib/postgresql/*/bin, PATH' },
  pgbouncer: { find: () => onPath('pgbouncer', ['/usr/sbin']), looked: '/usr/sbin, PATH (apt-get install pgbouncer)' },
  java: { find: () => onPath('java'), looked: 'PATH (apt-get install default-jre-headless)' },
  pgjdbc: {
    find: () => (fs.existsSync('/usr/share/java/postgresql.jar') ? '/usr/share/java/postgresql.jar' : undefined),
    looked: '/usr/share/java/postgresql.jar (apt-get install libpostgresql-jdbc-java)',
  },
  'ruby-pg': {
    find: () => {
      const ruby = onPath('ruby');
      return ruby && spawnSync(ruby, ['-e', 'require "pg"'], { stdio: 'ignore', timeout: 20_000 }).status === 0 ? ruby : undefined;
    },
    looked: 'ruby on PATH able to require "pg" (apt-get install ruby-pg)',
  },
  chromium: { find: () => onPath('chromium') ?? onPath('chromium-browser'), looked: 'PATH (apt-get install chromium)' },
  // util-linux's, from Debian's essential bsdutils package.
  logger: { find: () => onPath('logger'), looked: 'PATH (apt-get install bsdutils)' },
  script: { find: () => onPath('script'), looked: 'PATH (apt-get install bsdutils)' },
};

function finder(tool: Tool): { find: () => string | undefined; looked: string } {
  if (tool.startsWith('python3:')) {
    const mod = tool.slice('python3:'.length);
    return {
      find: () => {
        const py = python3();
        return py && spawnSync(py, ['-c', `import ${mod}`], { stdio: 'ignore', timeout: 20_000 }).status === 0 ? py : undefined;
      },
      looked: `/usr/bin/python3 or PATH's python3 able to import ${mod} (apt-get install python3-${mod})`,
    };
  }
  const f = FINDERS[tool];
  if (!f) throw new Error(`test/support/tools.ts: unknown tool ${tool}`);
  return f;
}

const hidden = new Set((process.env.TESSERA_TEST_WITHOUT ?? '').split(',').map((s) => s.trim()).filter(Boolean));
const found = new Map<Tool, string | undefined>();

/** Where the tool is, or undefined (found once, then remembered). */
export function findTool(tool: Tool): string | undefined {
  if (!found.has(tool)) found.set(tool, hidden.has(tool) ? undefined : finder(tool).find());
  return found.get(tool);
}

/** The path of a tool the running test declared with needing(); a test that did not declare it fails here. */
export function tool(name: Tool): string {
  const at = findTool(name);
  if (!at) throw new Error(`${name} is missing: declare it with needing('${name}') so the test is skipped, not failed`);
  return at;
}

/** Why these tools cannot be used here, or undefined when all are there. */
export function missingTools(tools: Tool[]): string | undefined {
  const missing = tools.filter((t) => !findTool(t));
  if (missing.length === 0) return undefined;
  return missing.map((t) => (hidden.has(t) ? `${t} hidden by TESSERA_TEST_WITHOUT` : `no ${t} (looked in ${finder(t).looked})`)).join('; ');
}

interface Skip {
  file: string;
  name: string;
  reason: string;
}
const skips: Skip[] = [];

/** The tests not run because they could not run here; test/run.ts prints them at the end. */
export function skippedTests(): readonly Skip[] {
  return skips;
}

type Register = (name: string, handler: Parameters<Test>[1]) => void;

/**
 * `t` itself when `reason` is undefined; otherwise a stand-in that registers each test as
 * skipped (uvu counts it in "Skipped") and records why.
 */
export function testUnless(reason: string | undefined, t: Test = uvuTest): Register {
  if (reason === undefined) return (name, handler) => t(name, handler);
  return (name) => {
    // uvu/run imports the files one by one, so the newest queue entry is the file being loaded.
    const queue = (globalThis as { UVU_QUEUE?: unknown[][] }).UVU_QUEUE;
    const file = String(queue?.at(-1)?.[0] ?? '?');
    skips.push({ file, name, reason });
    t.skip(name);
  };
}

/** A test that runs only where every tool is there, and is counted as skipped elsewhere. */
export function needing(...tools: Tool[]): Register {
  return testUnless(missingTools(tools));
}

