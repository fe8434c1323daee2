/**
 * Which startup parameters are part of a transaction-mode pool's key (the server `variant`) and
 * which a session can set for itself, so that clients differing only in those share backends
 * (each gets its own values applied there; see frontend/session-settings.ts).
 *
 * In the key stay only what a session cannot change later (PostgreSQL's backend and
 * superuser-backend settings), client_encoding (which every byte Tessera reads depends on), and
 * any `options` word that is not a setting. Everything else, top-level (application_name,
 * DateStyle, TimeZone, search_path, extra_float_digits, statement_timeout, ...) or `-c name=value`
 * in `options`, is a per-client setting; an invalid one is still refused at login, in
 * PostgreSQL's own words (the login checks it with set_config).
 */
import { extractSettings, joinOptions, splitOptions } from '../protocol/options.js';

/** Settings PostgreSQL takes only at connection start (context backend / superuser-backend). */
const START_ONLY = new Set(['log_connections', 'log_disconnections', 'ignore_system_indexes', 'post_auth_delay', 'jit_debugging_support', 'jit_profiling_support']);

/** Startup parameters that are no settings, or that Tessera's own reading of the wire depends on. */
const KEPT_IN_KEY = new Set(['replication', 'client_encoding', 'options']);

/** A transaction-mode pool holds servers of at most this many distinct key parameter sets. */
export const MAX_SERVER_VARIANTS = 16;

export interface SplitParameters {
  /** What the server is started with (the pool key). */
  server: Map<string, string>;
  /** Settings applied per client on a shared backend: lower-case name -> value as given. */
  session: Map<string, string>;
}

export function splitStartupParameters(params: ReadonlyMap<string, string>): SplitParameters {
  const server = new Map<string, string>();
  const session = new Map<string, string>();
  const keepInKey = (name: string) => START_ONLY.has(name) || KEPT_IN_KEY.has(name);
  // PostgreSQL applies `options` first, then the other startup parameters (which win).
  const options = params.get('options');
  if (options !== undefined) {
    const { settings, rest } = extractSettings(options, '');
    const kept = rest === undefined ? [] : splitOptions(rest);
    for (const [name, value] of settings) {
      // `--name=value` spells dashes for underscores, as PostgreSQL reads it.
      const canonical = name.replace(/-/g, '_');
      if (keepInKey(canonical)) kept.push('-c', `${canonical}=${value}`);
      else session.set(canonical, value);
    }
    if (kept.length > 0) server.set('options', joinOptions(kept));
  }
  for (const [name, value] of params) {
    const lower = name.toLowerCase();
    if (lower === 'options') continue;
    if (keepInKey(lower)) server.set(name, value);
    else session.set(lower, value);
  }
  return { server, session };
}
