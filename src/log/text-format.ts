/**
 * Readable log lines for a terminal: pino's JSON line turned into
 * `2026-05-01 14:03:07.123 +02:00 [4711] INFO client logged in client=3 user=alice db=app`.
 * Only for people reading a terminal or choosing log_format "text"; pipes get the JSON.
 */
import { Writable } from 'node:stream';
import type { DestinationStream } from 'pino';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const OWN_FIELDS = new Set(['level', 'time', 'pid', 'msg', 'hostname']);

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/** Local time with its UTC offset, as PostgreSQL's log_line_prefix %m prints it. */
export function localTime(ms: number): string {
  const d = new Date(ms);
  const offset = -d.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const zone = `${sign}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)} ${zone}`;
}

function value(v: unknown): string {
  if (v !== null && typeof v === 'object') {
    const err = v as { message?: unknown; stack?: unknown };
    if (typeof err.stack === 'string') return `\n${err.stack}`;
    if (typeof err.message === 'string') return JSON.stringify(err.message);
    return JSON.stringify(v);
  }
  const s = String(v);
  return /^[^\s"=]+$/.test(s) ? s : JSON.stringify(s);
}

/** A JSON log line parsed, or undefined when it is not JSON. */
export function parseLine(json: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(json) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** `INFO client logged in client=3 ...`: the level, message and fields, without time and pid. */
export function describe(entry: Record<string, unknown>): string {
  const fields = Object.entries(entry)
    .filter(([k]) => !OWN_FIELDS.has(k))
    .map(([k, v]) => ` ${k}=${value(v)}`)
    .join('');
  const level = LEVELS[entry.level as number] ?? String(entry.level);
  return `${level} ${String(entry.msg ?? '')}${fields}`;
}

/** One JSON log line as text; a line that is not JSON passes through unchanged. */
export function textLine(json: string): string {
  const entry = parseLine(json);
  if (!entry) return json;
  return `${localTime(Number(entry.time ?? Date.now()))} [${String(entry.pid ?? process.pid)}] ${describe(entry)}\n`;
}

/** A stream for pino that writes each JSON line it gets to `out` as text. */
export function textLines(out: { write(s: string): unknown }): DestinationStream {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) out.write(textLine(line));
      done();
    },
  }) as unknown as DestinationStream;
}
