// Installs the project's .sql files into a test database the way README says:
// psql -v ON_ERROR_STOP=1 -f FILE, as the superuser.
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { type Cluster } from './cluster.js';
import { ROOT } from './tessera.js';
import { findTool } from './tools.js';

export async function psqlFile(cluster: Cluster, db: string, file: string): Promise<string> {
  const full = path.join(ROOT, file);
  const psql = findTool('psql');
  if (!psql) {
    // No psql on this machine: the files hold no psql meta-commands, so one simple query does.
    await cluster.query(await fsp.readFile(full, 'utf8'), undefined, db);
    return '';
  }
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('PG')) delete env[k];
  env.PGPASSWORD = cluster.superPassword;
  const args = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', cluster.host, '-p', String(cluster.port), '-U', 'postgres', '-d', db, '-f', full];
  return new Promise((resolve, reject) => {
    // Async: tests run a proxy in this same process.
    const child = spawn(psql, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`psql -f ${file} exited ${code}:\n${out}`))));
  });
}

/** A fresh database with sql/tessera.sql and sql/demo.sql installed. */
export async function demoDatabase(cluster: Cluster, db: string): Promise<void> {
  await cluster.query(`drop database if exists ${db} with (force)`);
  await cluster.query(`create database ${db}`);
  await psqlFile(cluster, db, 'sql/tessera.sql');
  await psqlFile(cluster, db, 'sql/demo.sql');
}
