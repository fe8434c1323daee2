/**
 * autodb_idle_timeout (PgBouncer's, default 3600 s): pools made through the "*" database entry,
 * for names the config does not list, are removed once they have had no client and no server in
 * use for that long, so made-up or retired database names do not keep pools, server connections
 * and metric series for the life of the process.
 */
import type { Config } from '../config/schema.js';
import type { Pool } from '../pool/pool.js';
import type { Registry } from './registry.js';

export class AutodbJanitor {
  /** Since when each unlisted pool has been unused. */
  private readonly unusedSince = new Map<Pool, number>();

  constructor(private readonly registry: Registry) {}

  /** Called by the janitor's sweep; autodb_idle_timeout 0 keeps every pool. */
  sweep(now: number, config: Readonly<Config>): void {
    const timeoutMs = config.autodb_idle_timeout * 1000;
    let withClients: Set<Pool> | null = null; // only worked out when there is an unlisted pool
    for (const pool of this.registry.pools.values()) {
      const database = this.registry.databaseNameOf(pool);
      if (database !== '*' && database in config.databases) continue;
      withClients ??= this.registry.poolsWithClients();
      if (withClients.has(pool) || pool.inUse()) {
        this.unusedSince.delete(pool);
        continue;
      }
      const since = this.unusedSince.get(pool) ?? now;
      this.unusedSince.set(pool, since);
      if (timeoutMs > 0 && now - since >= timeoutMs) {
        this.unusedSince.delete(pool);
        this.registry.removePool(pool);
        pool.close();
      }
    }
    // Pools removed some other way must not be remembered.
    if (this.unusedSince.size > 0) {
      const live = new Set(this.registry.pools.values());
      for (const pool of this.unusedSince.keys()) if (!live.has(pool)) this.unusedSince.delete(pool);
    }
  }
}
