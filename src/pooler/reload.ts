/**
 * RELOAD / SIGHUP and the console's SET: a new configuration read (or changed) whole before
 * anything uses it, so a bad file or value leaves everything as it was; then applied to every
 * pool. New settings apply to pools and connections from now on; servers started under the old
 * settings are replaced as they come free, and established TLS connections keep going.
 */
import { dirname } from 'node:path';
import type { Config } from '../config/schema.js';
import type { StoredSecret } from '../auth/secret.js';
import { loadHba, type HbaRules } from '../auth/hba.js';
import { loadUserlist } from '../auth/userlist.js';
import { loadAnyConfig, convertSetting } from '../config/ini.js';
import { parseConfig, ConfigError } from '../config/load.js';
import { tlsContextsFrom, TlsSettingError, type ClientTls, type ServerTls } from '../tls/contexts.js';
import type { Registry } from './registry.js';
import { databaseEntryFor } from '../config/effective.js';
import { poolSettings } from './settings.js';
import { addressesOf, type Address } from './server-targets.js';

/** Everything read from the configuration files, as one value that is swapped whole. */
export interface Configuration {
  config: Readonly<Config>;
  /** auth_file's secrets by user name. */
  userlist: ReadonlyMap<string, StoredSecret>;
  /** auth_hba_file's rules (auth_type hba). */
  hba: HbaRules;
  /** TLS contexts of this config; a connection keeps the one it started with. */
  tls: { client: ClientTls | null; server: ServerTls };
}

/** The files a config names, read for a config already loaded (start-up). */
export function configurationOf(config: Readonly<Config>, userlist: ReadonlyMap<string, StoredSecret>): Configuration {
  return { config, userlist, hba: config.auth_hba_file ? loadHba(config.auth_hba_file) : [], tls: tlsContextsFrom(config) };
}

/** The config file, auth_file, auth_hba_file and the TLS key and certificate files, read again. */
export function readConfiguration(configPath: string): { configuration: Configuration; warnings: string[] } {
  const { config, warnings } = loadAnyConfig(configPath);
  const userlist = config.auth_file ? loadUserlist(config.auth_file) : new Map();
  return { configuration: configurationOf(config, userlist), warnings };
}

/** SET key = value from the admin console: the running configuration with one setting changed. */
export function withSetting(current: Configuration, key: string, value: string, configPath: string | undefined): Configuration {
  const config = parseConfig({ ...current.config, [key]: convertSetting(key, value) }, 'SET', configPath ? dirname(configPath) : process.cwd());
  try {
    return { ...current, config, tls: tlsContextsFrom(config) };
  } catch (err) {
    if (err instanceof TlsSettingError) throw new ConfigError(`SET: ${err.key}: ${err.message}`);
    throw err;
  }
}

/**
 * New settings apply to every pool at once. A database whose address or name changed (or that
 * is gone) reconnects gracefully: idle servers close now, busy ones when their clients let go.
 */
export function applyToPools(registry: Registry, configuration: Configuration, embedded: Address | undefined): void {
  const { config } = configuration;
  for (const pool of registry.pools.values()) {
    const name = registry.databaseNameOf(pool);
    const entry = databaseEntryFor(config, name);
    if (!entry) {
      pool.reconnect();
      continue;
    }
    pool.settings = poolSettings(config, entry, pool.target.user, configuration.tls.server);
    const target = { hosts: addressesOf(entry, embedded), database: entry.dbname ?? name, user: pool.target.user };
    const moved = target.hosts.length !== pool.target.hosts.length || target.hosts.some((h, i) => h.host !== pool.target.hosts[i]!.host || h.port !== pool.target.hosts[i]!.port);
    if (moved || target.database !== pool.target.database) {
      pool.target = target;
      pool.reconnect();
    }
  }
}
