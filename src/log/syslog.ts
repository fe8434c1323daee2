/**
 * `syslog = 1`: log lines go to the system log too, through util-linux's `logger` (Debian's
 * essential bsdutils package). Node.js cannot write to /dev/log, a Unix datagram socket, without a
 * native module, so one long-lived logger process is fed the lines on its standard input, each
 * with its own priority (`--prio-prefix`: `<facility * 8 + severity>` in front of the line), so
 * an error arrives as `err` and a warning as `warning`.
 *
 * Syslog is never worth a crash or a stall: when logger cannot reach the socket or dies (the
 * daemon restarted, say), standard error says so once, the other destinations go on, and the next
 * line RETRY_MS later starts it again (as syslog(3) reconnects by itself); it says so when a logger
 * runs again. A missing logger binary is said once and tried again only at SIGHUP or RELOAD. A
 * logger that stops reading holds at most MAX_QUEUED bytes here, then lines are dropped (said
 * once).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Config } from '../config/schema.js';
import { describe, parseLine } from './text-format.js';

export type SyslogFacility = Config['syslog_facility'];

/** The codes of PgBouncer's (libusual's) syslog_facility names, which the schema lists. */
const FACILITY_CODES: Record<SyslogFacility, number> = {
  auth: 4,
  authpriv: 10,
  daemon: 3,
  user: 1,
  local0: 16,
  local1: 17,
  local2: 18,
  local3: 19,
  local4: 20,
  local5: 21,
  local6: 22,
  local7: 23,
};

// pino's levels as syslog severities, after libusual's table (FATAL crit, ERROR err, WARNING
// warning, LOG info, DEBUG and NOISE debug).
const SEVERITY: Record<number, number> = { 60: 2, 50: 3, 40: 4, 30: 6, 20: 7, 10: 7 };
const INFO = 6;
/** Bytes waiting for logger to read before lines are dropped. */
const MAX_QUEUED = 1 << 20;
/** Longest message logger sends as one (its default, 1 KiB, would split stack traces). */
const MAX_MESSAGE = 8192;
/** What of logger's standard error is kept, for the one line that says why it stopped. */
const MAX_STDERR = 500;
/** After logger stopped, how long until a line starts it again; a logger alive this long after a restart works. */
export const RETRY_MS = 5000;

export interface SyslogTarget {
  ident: string;
  facility: SyslogFacility;
  /** The syslog daemon's socket (syslog_socket; /dev/log by default). */
  socket: string;
}

export const sameSyslogTarget = (a: SyslogTarget | null, b: SyslogTarget | null): boolean =>
  a === b || (a !== null && b !== null && a.ident === b.ident && a.facility === b.facility && a.socket === b.socket);

/** A pino destination writing each line it gets to a logger process. */
export class SyslogStream {
  private child: ChildProcess | null = null;
  private saidDropping = false;
  /** Stopped: when a line may start logger again (Infinity: not found, only SIGHUP/RELOAD try). */
  private retryAt = 0;
  /** Its stop was said on standard error: not again until a logger has run again. */
  private saidStopped = false;

  constructor(readonly target: SyslogTarget) {
    this.start();
  }

  write(chunk: string): void {
    if (this.child === null && Date.now() >= this.retryAt) this.start();
    const stdin = this.child?.stdin;
    if (!stdin?.writable) return;
    if (stdin.writableLength > MAX_QUEUED) {
      if (!this.saidDropping) {
        this.saidDropping = true;
        process.stderr.write(`tessera: syslog: logger is not keeping up (${this.target.socket}); dropping syslog lines until it does\n`);
      }
      return;
    }
    this.saidDropping = false;
    const facility = FACILITY_CODES[this.target.facility];
    let out = '';
    for (const line of chunk.split('\n')) {
      if (!line) continue;
      const entry = parseLine(line);
      const severity = (entry && SEVERITY[entry.level as number]) ?? INFO;
      // One line, one message: a stack trace's lines would otherwise each be a message of its own.
      const text = (entry ? describe(entry) : line).replace(/\s*\n\s*/g, ' | ');
      out += `<${facility * 8 + severity}>${text}\n`;
    }
    stdin.write(out);
  }

  /** SIGHUP and RELOAD: a logger that stopped (or was not found) is started again now. */
  restartIfStopped(): void {
    if (!this.child) this.start();
  }

  /** No more lines: logger sends what it has read and exits. */
  end(): void {
    const child = this.child;
    this.child = null;
    this.retryAt = Infinity;
    child?.stdin?.end();
  }

  private start(): void {
    const { ident, facility, socket } = this.target;
    const args = [
      // Exit with a reason when the socket cannot be reached, rather than drop every line unsaid.
      '--socket-errors=on',
      '--socket', socket,
      '--tag', ident,
      // The pid in `ident[pid]:` is Tessera's, not logger's.
      `--id=${process.pid}`,
      '--priority', `${facility}.info`,
      '--prio-prefix',
      '--size', String(MAX_MESSAGE),
    ];
    // logger ignores the signals a terminal or systemd sends the whole group (Ctrl-C, KillSignal):
    // it must outlive them, to pass on Tessera's shutdown lines, and exits when its input ends.
    const child = spawn('/bin/sh', ['-c', 'trap "" INT TERM HUP QUIT; exec logger "$@"', 'logger', ...args], {
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    this.child = child;
    let stderr = '';
    const stopped = (why: string, retryMs: number) => {
      // Not the current logger (end() was called, or a newer one runs): its end is no news.
      if (this.child !== child) return;
      this.child = null;
      this.retryAt = Date.now() + retryMs;
      if (this.saidStopped) return;
      this.saidStopped = true;
      const detail = stderr.trim().split('\n')[0];
      const again = retryMs === Infinity ? 'SIGHUP or RELOAD starts it again' : `starting it again in ${RETRY_MS / 1000} s, or at SIGHUP or RELOAD`;
      process.stderr.write(`tessera: syslog: ${why}${detail ? `: ${detail}` : ''}; logging to the other destinations only (${again})\n`);
    };
    if (this.saidStopped) {
      // A restart after a stop that was said: say when it works again (logger exits at once when the socket is not there).
      setTimeout(() => {
        if (this.child !== child || !this.saidStopped) return;
        this.saidStopped = false;
        process.stderr.write(`tessera: syslog: logger is running again (${socket})\n`);
      }, RETRY_MS).unref();
    }
    child.on('error', (err) => stopped(`cannot run logger (${err.message})`, Infinity));
    child.stderr!.on('data', (d: Buffer) => {
      if (stderr.length < MAX_STDERR) stderr += d.toString('utf8').slice(0, MAX_STDERR - stderr.length);
    });
    // 'close', not 'exit': by then logger's standard error (its reason) has been read.
    child.on('close', (code, signal) => {
      if (code === 127) stopped('logger was not found (Debian: apt-get install bsdutils)', Infinity);
      else stopped(`logger exited (${signal ?? `code ${code}`})`, RETRY_MS);
    });
    // A logger that is gone closes the pipe: writes then fail, and that is already said above.
    child.stdin!.on('error', () => {});
    // Neither the process nor its pipes keep Tessera running.
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
    (child.stderr as unknown as { unref?: () => void }).unref?.();
  }
}
