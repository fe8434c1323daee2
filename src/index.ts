// The package's programmatic entry: embed Tessera in another Node process, or load its config.
export { Proxy, type ProxyOptions } from './pooler/pooler.js';
export { loadConfig, parseConfig, ConfigError } from './config/load.js';
export type { Config } from './config/schema.js';
export { loadUserlist } from './auth/userlist.js';
