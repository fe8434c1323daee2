/**
 * Message codes and the server->client messages Tessera writes itself (login, errors).
 * Client->server messages towards PostgreSQL are serialized with pg-protocol's `serialize`.
 */
import { BodyReader } from './framing.js';

/** Message type bytes, by direction. The letter is in the comment. */
export const enum Frontend {
  Query = 0x51, // Q
  Parse = 0x50, // P
  Bind = 0x42, // B
  Execute = 0x45, // E
  Describe = 0x44, // D
  Close = 0x43, // C
  Sync = 0x53, // S
  Flush = 0x48, // H
  FunctionCall = 0x46, // F
  CopyData = 0x64, // d
  CopyDone = 0x63, // c
  CopyFail = 0x66, // f
  Terminate = 0x58, // X
  Password = 0x70, // p (password, SASLInitialResponse, SASLResponse)
}

export const enum Backend {
  Authentication = 0x52, // R
  ParameterStatus = 0x53, // S
  BackendKeyData = 0x4b, // K
  ReadyForQuery = 0x5a, // Z
  ErrorResponse = 0x45, // E
  NoticeResponse = 0x4e, // N
  NegotiateProtocolVersion = 0x76, // v
  CopyInResponse = 0x47, // G
  CopyOutResponse = 0x48, // H
  CopyBothResponse = 0x57, // W
  DataRow = 0x44, // D
  CommandComplete = 0x43, // C
}

export const enum AuthCode {
  Ok = 0,
  CleartextPassword = 3,
  MD5Password = 5,
  SASL = 10,
  SASLContinue = 11,
  SASLFinal = 12,
}

/** Builds one typed message: type byte, int32 length, then the body parts (a string NUL-terminated, a number as int32). */
export function message(type: number, ...parts: (Buffer | string | number)[]): Buffer {
  // Sized first, then written in place: one allocation per message (rewritten Binds and Parses
  // are made on the relay's path).
  let bodyLen = 0;
  for (const p of parts) bodyLen += typeof p === 'number' ? 4 : typeof p === 'string' ? Buffer.byteLength(p, 'utf8') + 1 : p.length;
  const out = Buffer.allocUnsafe(5 + bodyLen);
  out[0] = type;
  out.writeInt32BE(4 + bodyLen, 1);
  let pos = 5;
  for (const p of parts) {
    if (typeof p === 'number') pos = out.writeInt32BE(p, pos);
    else if (typeof p === 'string') {
      pos += out.write(p, pos, 'utf8');
      out[pos++] = 0;
    } else pos += p.copy(out, pos);
  }
  return out;
}

/** A simple Query message (Tessera's own, injected before a client's messages). */
export const simpleQuery = (sql: string): Buffer => message(0x51, sql);
/** AuthenticationOk: the same bytes for every login, so built once (never written to). */
const AUTH_OK = message(Backend.Authentication, AuthCode.Ok);
export const authOk = (): Buffer => AUTH_OK;
export const authCleartext = (): Buffer => message(Backend.Authentication, AuthCode.CleartextPassword);
export const authMD5 = (salt: Buffer): Buffer => message(Backend.Authentication, AuthCode.MD5Password, salt);
export const authSASL = (mechanisms: string[]): Buffer =>
  message(Backend.Authentication, AuthCode.SASL, ...mechanisms, Buffer.from([0]));
export const authSASLContinue = (data: string): Buffer =>
  message(Backend.Authentication, AuthCode.SASLContinue, Buffer.from(data, 'utf8'));
export const authSASLFinal = (data: string): Buffer =>
  message(Backend.Authentication, AuthCode.SASLFinal, Buffer.from(data, 'utf8'));
export const parameterStatus = (name: string, value: string): Buffer => message(Backend.ParameterStatus, name, value);

/** A login reply's ParameterStatus messages, one per entry (callers cache the block: session-settings.ts). */
export function parameterStatusBlock(status: ReadonlyMap<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of status) parts.push(parameterStatus(name, value));
  return Buffer.concat(parts);
}

const BACKEND_KEY_DATA_LENGTH = 13;
const READY_FOR_QUERY_LENGTH = 6;

/**
 * The reply that ends a login, in one buffer for one write: SCRAM's SASLFinal when there is one,
 * AuthenticationOk, the ParameterStatus block, BackendKeyData and ReadyForQuery (idle). Built with
 * one allocation: connection storms pay for every login.
 */
export function loginReply(saslFinal: Buffer | null, statusBlock: Buffer, pid: number, secret: number): Buffer {
  const before = saslFinal === null ? 0 : saslFinal.length;
  const out = Buffer.allocUnsafe(before + AUTH_OK.length + statusBlock.length + BACKEND_KEY_DATA_LENGTH + READY_FOR_QUERY_LENGTH);
  let pos = saslFinal === null ? 0 : saslFinal.copy(out, 0);
  pos += AUTH_OK.copy(out, pos);
  pos += statusBlock.copy(out, pos);
  out[pos] = Backend.BackendKeyData;
  out.writeInt32BE(BACKEND_KEY_DATA_LENGTH - 1, pos + 1);
  out.writeInt32BE(pid, pos + 5);
  out.writeInt32BE(secret, pos + 9);
  pos += BACKEND_KEY_DATA_LENGTH;
  out[pos] = Backend.ReadyForQuery;
  out.writeInt32BE(READY_FOR_QUERY_LENGTH - 1, pos + 1);
  out[pos + 5] = 0x49; // I: idle
  return out;
}
export const backendKeyData = (pid: number, secret: number): Buffer => message(Backend.BackendKeyData, pid, secret);
export const readyForQuery = (status: number): Buffer => message(Backend.ReadyForQuery, Buffer.from([status]));
export const negotiateProtocolVersion = (minor: number, unsupported: string[]): Buffer =>
  message(Backend.NegotiateProtocolVersion, 0x30000 | minor, unsupported.length, ...unsupported);

/** The fields of an ErrorResponse/NoticeResponse, keyed by PostgreSQL's field letters. */
export interface PgErrorFields {
  severity: 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'LOG' | 'INFO' | 'DEBUG';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

function errorBody(f: PgErrorFields): (string | Buffer)[] {
  const parts: (string | Buffer)[] = ['S' + f.severity, 'V' + f.severity, 'C' + f.code, 'M' + f.message];
  if (f.detail) parts.push('D' + f.detail);
  if (f.hint) parts.push('H' + f.hint);
  parts.push(Buffer.from([0]));
  return parts;
}

export const errorResponse = (f: PgErrorFields): Buffer => message(Backend.ErrorResponse, ...errorBody(f));
export const noticeResponse = (f: PgErrorFields): Buffer => message(Backend.NoticeResponse, ...errorBody(f));

/** Decodes an ErrorResponse/NoticeResponse body into field letter -> value. */
export function parseErrorFields(body: Buffer): Map<string, string> {
  const fields = new Map<string, string>();
  const r = new BodyReader(body);
  while (!r.done) {
    const code = r.byte();
    if (code === 0) break;
    fields.set(String.fromCharCode(code), r.cstring());
  }
  return fields;
}

/** SQLSTATEs Tessera raises itself. */
export const SqlState = {
  ProtocolViolation: '08P01',
  ConnectionFailure: '08006',
  CannotConnectNow: '57P03',
  AdminShutdown: '57P01',
  QueryCanceled: '57014',
  InvalidPassword: '28P01',
  InvalidAuthorization: '28000',
  InvalidCatalogName: '3D000',
  TooManyConnections: '53300',
  ConfigurationLimitExceeded: '53400',
  FeatureNotSupported: '0A000',
  InvalidParameterValue: '22023',
  IdleSessionTimeout: '57P05',
  IdleInTransactionTimeout: '25P03',
} as const;

/** An error destined for a client as an ErrorResponse. */
export class PgError extends Error {
  constructor(
    readonly fields: PgErrorFields,
    /** The server's own ErrorResponse bytes, forwarded unchanged when we have them. */
    readonly raw?: Buffer,
  ) {
    super(fields.message);
  }

  get code(): string {
    return this.fields.code;
  }

  toMessage(): Buffer {
    return this.raw ?? errorResponse(this.fields);
  }

  static fatal(code: string, message: string, detail?: string): PgError {
    return new PgError({ severity: 'FATAL', code, message, detail });
  }

  /** Wraps a server's ErrorResponse body so it can be forwarded exactly as the server sent it. */
  static fromServer(body: Buffer): PgError {
    const f = parseErrorFields(body);
    const raw = Buffer.allocUnsafe(5 + body.length);
    raw[0] = Backend.ErrorResponse;
    raw.writeInt32BE(4 + body.length, 1);
    body.copy(raw, 5);
    return new PgError(
      {
        severity: (f.get('V') ?? f.get('S') ?? 'ERROR') as PgErrorFields['severity'],
        code: f.get('C') ?? 'XX000',
        message: f.get('M') ?? 'unknown server error',
        detail: f.get('D'),
        hint: f.get('H'),
      },
      raw,
    );
  }
}
