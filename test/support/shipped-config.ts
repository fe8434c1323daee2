// The shipped proxy.config.json as README's commands use it, its embedded entries pointed at a
// test cluster instead of the embedded server (which `npm start` would run).
import fs from 'node:fs';
import path from 'node:path';
import type { Cluster } from './cluster.js';
import { ROOT } from './tessera.js';

export function shippedConfig(cluster: Cluster, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const shipped = JSON.parse(fs.readFileSync(path.join(ROOT, 'proxy.config.json'), 'utf8'));
  delete shipped.$schema;
  delete shipped.listen_port;
  const databases: Record<string, unknown> = {};
  for (const [name, entry] of Object.entries(shipped.databases as Record<string, Record<string, unknown>>)) {
    const { embedded: _embedded, ...rest } = entry;
    databases[name] = { ...rest, host: cluster.host, port: cluster.port, ...(rest.user ? {} : { user: 'postgres', password: cluster.superPassword }) };
  }
  return { ...shipped, databases, ...extra };
}
