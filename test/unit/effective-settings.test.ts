// config/effective.ts: a user's [users] entry over its database's entry over the global setting,
// and "*" for a database not listed; what the pools, the janitor, the limits and SHOW all read.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseConfig } from '../../src/config/load.js';
import { clientTimeouts, databaseEntryFor, databaseLimits, maxUserClientConnections, maxUserConnections, poolLimits, secretLookup } from '../../src/config/effective.js';

const config = parseConfig(
  {
    auth_type: 'trust',
    pool_mode: 'session',
    default_pool_size: 10,
    reserve_pool_size: 1,
    max_db_connections: 50,
    max_user_connections: 40,
    query_timeout: 30,
    auth_user: 'lookup',
    databases: {
      app: { host: 'db1', pool_mode: 'transaction', pool_size: 20, min_pool_size: 2, max_db_connections: 25, auth_query: 'select 1' },
      '*': { host: 'db2' },
    },
    users: { ann: { pool_mode: 'session', pool_size: 5, reserve_pool_size: 3, max_user_connections: 4, max_user_client_connections: 2, query_timeout: 7 } },
  },
  'proxy.config.json',
  '/tmp',
);
const app = config.databases.app;

test('a database not listed falls back to "*"; a listed one is its own', () => {
  assert.is(databaseEntryFor(config, 'app'), app);
  assert.is(databaseEntryFor(config, 'other'), config.databases['*']);
  const without = parseConfig({ auth_type: 'trust', databases: { app: { host: 'db1' } } }, 'proxy.config.json', '/tmp');
  assert.is(databaseEntryFor(without, 'other'), undefined);
});

test('pool mode and sizes: the user over the database over the global setting', () => {
  assert.equal(poolLimits(config, app, 'ann'), { mode: 'session', poolSize: 5, reservePoolSize: 3 });
  assert.equal(poolLimits(config, app, 'bob'), { mode: 'transaction', poolSize: 20, reservePoolSize: 1 });
  assert.equal(poolLimits(config, config.databases['*'], 'bob'), { mode: 'session', poolSize: 10, reservePoolSize: 1 });
});

test('database limits (SHOW DATABASES): the entry over the global setting', () => {
  assert.equal(databaseLimits(config, app), { poolSize: 20, minPoolSize: 2, reservePoolSize: 1, maxDbConnections: 25 });
  assert.equal(databaseLimits(config, config.databases['*']), { poolSize: 10, minPoolSize: 0, reservePoolSize: 1, maxDbConnections: 50 });
});

test('user limits and timeouts: the user over the global setting', () => {
  assert.is(maxUserConnections(config, 'ann'), 4);
  assert.is(maxUserConnections(config, 'bob'), 40);
  assert.is(maxUserClientConnections(config, 'ann'), 2);
  assert.is(maxUserClientConnections(config, 'bob'), 0);
  assert.is(clientTimeouts(config, 'ann').queryMs, 7000);
  assert.is(clientTimeouts(config, 'bob').queryMs, 30000);
});

test('auth_user and auth_query: the database entry over the global setting', () => {
  assert.equal(secretLookup(config, app), { authUser: 'lookup', query: 'select 1' });
  assert.is(secretLookup(config, config.databases['*']).query, config.auth_query);
});

test.run();
