/**
 * The untyped packets a client may open with: StartupMessage, SSLRequest, GSSENCRequest and
 * CancelRequest. They carry no type byte, only an int32 length and an int32 code.
 */
import { ProtocolViolation } from './framing.js';

/**
 * Not a startup packet at all (a length out of range): PostgreSQL logs it and closes the socket
 * without a reply (COMMERROR), since whatever is at the other end does not speak the protocol.
 */
export class InvalidStartupPacket extends ProtocolViolation {}

/** PostgreSQL refuses startup packets longer than this (MAX_STARTUP_PACKET_LENGTH). */
export const MAX_STARTUP_PACKET = 10000;

export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;
export const PROTOCOL_3 = 3;

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; pid: number; secret: number }
  | { kind: 'startup'; minor: number; params: Map<string, string>; /** `_pq_.` protocol options we do not know */ unknownOptions: string[] };

/**
 * Collects the bytes of one startup packet. push() returns the decoded packet once it is whole, or
 * null while more bytes are needed; bytes beyond the packet are kept in `leftover`.
 */
/** Shared by every reader for "nothing": never written to. */
const EMPTY = Buffer.alloc(0);

export class StartupReader {
  private buf: Buffer = EMPTY;
  leftover: Buffer = EMPTY;

  /** Nothing of a packet has arrived yet. */
  get empty(): boolean {
    return this.buf.length === 0;
  }

  push(chunk: Buffer): StartupPacket | null {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    if (this.buf.length < 4) return null;
    const length = this.buf.readInt32BE(0);
    if (length < 8 || length > MAX_STARTUP_PACKET) throw new InvalidStartupPacket(`invalid length of startup packet`);
    if (this.buf.length < length) return null;
    // Most packets arrive whole and alone: no views to cut then.
    const packet = this.buf.length === length ? this.buf : this.buf.subarray(0, length);
    this.leftover = this.buf.length === length ? EMPTY : this.buf.subarray(length);
    this.buf = EMPTY;
    return decodeStartup(packet);
  }
}

export function decodeStartup(packet: Buffer): StartupPacket {
  const code = packet.readInt32BE(4);
  if (code === SSL_REQUEST && packet.length === 8) return { kind: 'ssl' };
  if (code === GSSENC_REQUEST && packet.length === 8) return { kind: 'gssenc' };
  if (code === CANCEL_REQUEST) {
    if (packet.length !== 16) throw new InvalidStartupPacket('invalid length of cancel request');
    return { kind: 'cancel', pid: packet.readInt32BE(8), secret: packet.readInt32BE(12) };
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== PROTOCOL_3) {
    // PostgreSQL's answer, FATAL 0A000, so a client can tell it is talking to the wrong version.
    throw new ProtocolViolation(`unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`, '0A000');
  }
  const params = new Map<string, string>();
  const unknownOptions: string[] = [];
  let pos = 8;
  for (;;) {
    const keyEnd = packet.indexOf(0, pos);
    if (keyEnd < 0) throw new ProtocolViolation('invalid startup packet layout: expected terminator as last byte');
    if (keyEnd === pos) break; // the empty name that ends the list
    const key = packet.toString('utf8', pos, keyEnd);
    const valEnd = packet.indexOf(0, keyEnd + 1);
    if (valEnd < 0) throw new ProtocolViolation('invalid startup packet layout: expected terminator as last byte');
    const value = packet.toString('utf8', keyEnd + 1, valEnd);
    if (key.startsWith('_pq_.')) unknownOptions.push(key);
    else params.set(key, value);
    pos = valEnd + 1;
  }
  if (pos !== packet.length - 1) throw new ProtocolViolation('invalid startup packet layout: expected terminator as last byte');
  return { kind: 'startup', minor, params, unknownOptions };
}
