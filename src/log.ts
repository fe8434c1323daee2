/**
 * One pino logger for the process, and where its lines go: standard output (JSON, or readable text
 * on a terminal), the `logfile`, reopened on SIGHUP for logrotate, and syslog (log/syslog.ts). Callers log ids, addresses,
 * users and databases; never passwords, tokens or query text at info level. The named events an
 * admin acts on (logins, refusals, disconnects, server connections, stats) are in log/events.ts.
 */
import { pino, type Logger, type DestinationStream } from 'pino';
import { textLines } from './log/text-format.js';
import { SyslogStream, sameSyslogTarget, type SyslogTarget } from './log/syslog.js';

export type { Logger };

const OPTIONS = {
  base: { pid: process.pid },
  // Belt and braces: even if a secret-bearing field slips into a log call, it is censored.
  redact: {
    paths: ['password', '*.password', 'secret', '*.secret', 'token', '*.token', 'authent_token', '*.authent_token'],
    censor: '[redacted]',
  },
};

export let log: Logger = pino({ level: process.env.TESSERA_LOG_LEVEL ?? 'info', ...OPTIONS });

/** pino's numbers for the levels; a level is logged when its number is at least the logger's. */
const INFO = 30;
const DEBUG = 20;

/**
 * Whether info (debug) lines are written: for lines on a connection's path, asked before their
 * fields are gathered, so that under log_level warn a connection storm builds nothing for them.
 */
export const logsInfo = (): boolean => log.levelVal <= INFO;
export const logsDebug = (): boolean => log.levelVal <= DEBUG;

export function setLogLevel(level: string): void {
  log.level = level;
}

/** Replaces the process logger (tests capture log lines this way). */
export function setLogger(logger: Logger): void {
  log = logger;
}

export interface LogOutput {
  level: string;
  /** json, text, or auto: text when standard output is a terminal. */
  format: 'auto' | 'json' | 'text';
  /** Also append to this file; '' for none. */
  logfile: string;
  /** -q: nothing on standard output (the logfile still gets every line). */
  quiet: boolean;
  /** syslog = 1: where lines at info and above also go (as PgBouncer sends them); null for none. */
  syslog: SyslogTarget | null;
}

let file: ReturnType<typeof pino.destination> | null = null;
let syslog: SyslogStream | null = null;
let current: LogOutput | null = null;

const sameDestinations = (a: LogOutput, b: LogOutput) =>
  a.format === b.format && a.logfile === b.logfile && a.quiet === b.quiet && sameSyslogTarget(a.syslog, b.syslog);

/**
 * Points the process logger at standard output and/or the logfile. Called at start-up, and on
 * RELOAD when a log setting changed; throws (before changing anything) when the logfile cannot be
 * opened, so the caller can name the setting.
 */
export function configureLogOutput(out: LogOutput): void {
  if (current && sameDestinations(current, out)) {
    log.level = out.level;
    current = out;
    syslog?.restartIfStopped();
    return;
  }
  const text = (stream: { isTTY?: boolean }) => out.format === 'text' || (out.format === 'auto' && stream.isTTY === true);
  const streams: { stream: DestinationStream; level: pino.Level }[] = [];
  let opened: ReturnType<typeof pino.destination> | null = null;
  if (out.logfile) {
    // Opened synchronously so that a bad path is an error now, not a crash later.
    opened = pino.destination({ dest: out.logfile, append: true, mkdir: false, sync: true });
    streams.push({ stream: out.format === 'text' ? textLines(opened) : opened, level: 'trace' });
  }
  if (!out.quiet) {
    const stdout = pino.destination({ dest: 1, sync: true });
    streams.push({ stream: text(process.stdout) ? textLines(stdout) : stdout, level: 'trace' });
  }
  // Kept when its target did not change: a RELOAD of another log setting does not restart logger.
  const keptSyslog = syslog && out.syslog && sameSyslogTarget(syslog.target, out.syslog) ? syslog : null;
  const openedSyslog = out.syslog ? (keptSyslog ?? new SyslogStream(out.syslog)) : null;
  if (openedSyslog) streams.push({ stream: openedSyslog, level: 'info' });
  const previous = { file, syslog };
  file = opened;
  syslog = openedSyslog;
  current = out;
  log = pino({ level: out.level, ...OPTIONS }, pino.multistream(streams));
  previous.file?.end();
  if (previous.syslog !== openedSyslog) previous.syslog?.end();
}

/**
 * SIGHUP: the logfile was moved away (logrotate), write to a fresh file at the same path; a
 * logger that stopped (the syslog daemon restarted) is started again.
 */
export function reopenLogDestinations(): void {
  file?.reopen();
  syslog?.restartIfStopped();
}
