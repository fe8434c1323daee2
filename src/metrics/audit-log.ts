/**
 * audit_log: one JSON line per transaction of an end user's login, appended to a file. Every
 * worker appends to the same file (O_APPEND; a line is one write, so lines never interleave).
 * Lines are queued in the stream, never awaited; a file that cannot be written is reported once
 * and then dropped, so a full disk never stops the relay.
 */
import fs from 'node:fs';
import { log } from '../log.js';

export interface AuditLine {
  time: string;
  accessor: string;
  session_id: string | null;
  database: string;
  client_id: number;
  duration_ms: number;
  status: 'ok' | 'error';
  /** audit_log_queries only. */
  statements?: string[];
}

export class AuditLog {
  private stream: fs.WriteStream | null;

  constructor(readonly path: string) {
    this.stream = fs.createWriteStream(path, { flags: 'a' });
    this.stream.on('error', (err) => {
      log.error({ audit_log: path, err: err.message }, 'audit_log cannot be written; audit lines are dropped until the next RELOAD');
      this.stream = null;
    });
  }

  /** The file could not be written; a RELOAD opens it again. */
  get broken(): boolean {
    return this.stream === null;
  }

  write(line: AuditLine): void {
    this.stream?.write(`${JSON.stringify(line)}\n`);
  }

  /** Flushes what is queued and closes the file. */
  close(): Promise<void> {
    const stream = this.stream;
    this.stream = null;
    return new Promise((resolve) => (stream ? stream.end(resolve) : resolve()));
  }
}
