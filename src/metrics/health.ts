/**
 * /healthz and /readyz, for Kubernetes probes and load balancers. Alive is the process answering
 * at all. Ready is: listening, not shutting down, and every configured database either has a live
 * server connection or a server it would use (hostsFor) accepts a TCP connection now. The JSON
 * body says which check failed, so an operator reading a probe failure needs no log.
 */
import net from 'node:net';
import type { DatabaseConfig } from '../config/schema.js';
import type { Pool } from '../pool/pool.js';
import { ServerState } from '../pool/server-connection.js';
import type { ObservedPooler } from './snapshot.js';

/** How long a TCP probe of a database's server may take before it counts as unreachable. */
const PROBE_TIMEOUT_MS = 2000;

export interface DatabaseReadiness {
  database: string;
  ok: boolean;
  /** "live server connection", "server accepts connections", or why not. */
  detail: string;
}

export interface Readiness {
  ready: boolean;
  listening: boolean;
  shutting_down: boolean;
  databases: DatabaseReadiness[];
}

export interface ReadinessSource extends ObservedPooler {
  /**
   * The hosts of a database entry its pools would use now (a live one of its target_session_attrs,
   * by what they have learned; every host before any pool exists), and each host's state for the body.
   */
  hostsFor(database: string, entry: DatabaseConfig): { fitting: { host: string; port: number }[]; attrs: string; describe(): string };
}

export async function readiness(pooler: ReadinessSource): Promise<Readiness> {
  const listening = pooler.isListening;
  const shuttingDown = pooler.isStopping;
  const live = new Set<string>();
  for (const pool of pooler.pools.values()) if (hasLiveServer(pool)) live.add(pooler.databaseNameOf(pool));
  const databases = await Promise.all(
    Object.entries(pooler.currentConfig.databases).map(async ([database, entry]): Promise<DatabaseReadiness> => {
      if (live.has(database)) return { database, ok: true, detail: 'live server connection' };
      let hosts;
      try {
        hosts = pooler.hostsFor(database, entry);
      } catch (err) {
        return { database, ok: false, detail: (err as Error).message };
      }
      if (hosts.fitting.length === 0) return { database, ok: false, detail: `no host matches target_session_attrs "${hosts.attrs}" now (${hosts.describe()})` };
      // The first host of the list that accepts is enough; the body names every one that did not.
      const failures: string[] = [];
      for (const { host, port } of hosts.fitting) {
        const failure = await probe(host, port);
        if (failure === null) return { database, ok: true, detail: 'server accepts connections' };
        failures.push(failure);
      }
      return { database, ok: false, detail: failures.join('; ') };
    }),
  );
  return { ready: listening && !shuttingDown && databases.every((d) => d.ok), listening, shutting_down: shuttingDown, databases };
}

/** All workers' answers as one: ready only when every worker is. */
export function mergeReadiness(all: readonly Readiness[]): Readiness {
  const byName = new Map<string, DatabaseReadiness>();
  for (const r of all) for (const d of r.databases) if (!byName.get(d.database) || !d.ok) byName.set(d.database, d);
  const databases = [...byName.values()];
  const listening = all.length > 0 && all.every((r) => r.listening);
  const shuttingDown = all.some((r) => r.shutting_down);
  return { ready: listening && !shuttingDown && databases.every((d) => d.ok), listening, shutting_down: shuttingDown, databases };
}

function hasLiveServer(pool: Pool): boolean {
  return pool.count(ServerState.Idle) + pool.count(ServerState.Active) > 0;
}

/** null when the server accepts a connection (closed at once), else why not. */
function probe(host: string, port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = host.startsWith('/') ? net.connect({ path: `${host}/.s.PGSQL.${port}` }) : net.connect({ host, port });
    const done = (why: string | null) => {
      socket.destroy();
      resolve(why);
    };
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done(`no answer from ${host}:${port} within ${PROBE_TIMEOUT_MS} ms`));
    socket.once('connect', () => done(null));
    socket.once('error', (err) => done(`cannot connect to ${host}:${port}: ${err.message}`));
  });
}
