/**
 * Settings that take effect only at start-up (PgBouncer's "changeable = no"): the listening
 * sockets, the process's identity and files, the embedded server's password, the worker count. A
 * RELOAD keeps their running values, so SHOW CONFIG shows what is in effect, and says which
 * changed in the file without being applied.
 */
import type { Config } from './schema.js';

export const RESTART_ONLY_SETTINGS: ReadonlySet<string> = new Set([
  'listen_addr', 'listen_port', 'listen_backlog', 'unix_socket_dir', 'unix_socket_mode', 'unix_socket_group',
  'user', 'pidfile', 'pkt_buf', 'so_reuseport', 'peer_id', 'embedded_password', 'metrics_listen', 'workers',
]);

/** `loaded` with the restart-only settings of `running`; `notApplied` names those that differ. */
export function keepRestartOnly(running: Readonly<Config>, loaded: Readonly<Config>): { config: Readonly<Config>; notApplied: string[] } {
  const notApplied: string[] = [];
  const kept: Record<string, unknown> = { ...loaded };
  for (const key of RESTART_ONLY_SETTINGS) {
    const was = (running as Record<string, unknown>)[key];
    if (!(key in running) || JSON.stringify(was) === JSON.stringify((loaded as Record<string, unknown>)[key])) continue;
    notApplied.push(key);
    kept[key] = was;
  }
  return { config: notApplied.length ? (Object.freeze(kept) as unknown as Readonly<Config>) : loaded, notApplied };
}
