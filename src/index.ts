// The package's programmatic entry: embed Tessera in another Node process, or load its config.
export { Pooler, type PoolerOptions } from './pooler/pooler.js';
/** The earlier name of Pooler, kept for code that embeds Tessera. */
export { Pooler as Proxy, type PoolerOptions as ProxyOptions } from './pooler/pooler.js';
export { loadConfig, parseConfig, ConfigError } from './config/load.js';
export type { Config } from './config/schema.js';
export { loadUserlist } from './auth/userlist.js';
