/**
 * One pino logger for the process: one JSON line per event. Callers log ids, addresses, users and
 * databases; never passwords, tokens or query text at info level.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export let log: Logger = pino({
  level: process.env.TESSERA_LOG_LEVEL ?? 'info',
  base: { pid: process.pid },
  // Belt and braces: even if a secret-bearing field slips into a log call, it is censored.
  redact: {
    paths: ['password', '*.password', 'secret', '*.secret', 'token', '*.token', 'authent_token', '*.authent_token'],
    censor: '[redacted]',
  },
});

export function setLogLevel(level: string): void {
  log.level = level;
}

/** Replaces the process logger (tests capture log lines this way). */
export function setLogger(logger: Logger): void {
  log = logger;
}
