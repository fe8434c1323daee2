/**
 * What a client connection says before its startup packet: SSLRequest, GSSENCRequest, PostgreSQL
 * 17's direct TLS, or a CancelRequest instead of a session. Negotiation owns the startup reader and
 * what has been answered; it puts TLS on the socket when asked, and hands the client the startup
 * packet (or the cancel) once it is known. It is dropped when the startup packet has come.
 *
 * The client object exists from accept, as in PgBouncer: max_client_conn and client_login_timeout
 * count a connection from its first byte, negotiation included.
 */
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { ProtocolViolation } from '../protocol/framing.js';
import { InvalidStartupPacket, StartupReader, type StartupPacket } from '../protocol/startup.js';
import * as msg from '../protocol/messages.js';
import { PgError, SqlState } from '../protocol/messages.js';
import { ALPN, clientCertVerified, type ClientTls } from '../tls/contexts.js';
import { log } from '../log.js';
import { invalidStartupPacket } from '../log/events.js';

/** The one-byte answers to SSLRequest and GSSENCRequest. */
const NO_ENCRYPTION = Buffer.from('N');
const ENCRYPTION_FOLLOWS = Buffer.from('S');
/** First byte of a TLS handshake record: PostgreSQL 17's direct TLS starts with it, not a startup packet. */
const TLS_HANDSHAKE = 0x16;

/** What negotiation needs of the client connection it runs for. */
export interface NegotiatingClient {
  readonly id: number;
  readonly remoteAddress: string;
  /** The socket bytes arrive on (the TLS layer once upgraded). */
  readonly socket: Socket;
  /** The client closed or failed meanwhile. */
  readonly closed: boolean;
  /** Read from the startup packet, so that a refusal before the login names them in its log line. */
  user: string;
  database: string;
  fail(err: PgError): void;
  /** TLS goes on the socket: stop listening to the plaintext one. */
  unlistenPlaintext(): void;
  /** TLS is on: read from `secure` from now on. */
  useTls(secure: tls.TLSSocket): void;
  /** A verified client certificate's CN, once the handshake is done (null: none). */
  setCertificateName(name: string | null): void;
  /** Closes at once, without a reply: the other end does not speak the protocol. */
  drop(): void;
  /** A CancelRequest: the connection carries nothing else. */
  onCancelRequest(pid: number, secret: number): void;
  /** The startup packet (after any NegotiateProtocolVersion was sent); `leftover` came after it. */
  onStartup(params: Map<string, string>, leftover: Buffer): void;
}

export class Negotiation {
  private startup = new StartupReader();
  /** An SSLRequest / GSSENCRequest was answered already: each may come once, before the startup packet. */
  private sslAnswered = false;
  private gssAnswered = false;
  private encrypted = false;

  constructor(
    private readonly client: NegotiatingClient,
    /** The client TLS context (rebuilt on RELOAD), or null when client_tls_sslmode is disable. */
    private readonly clientTls: ClientTls | null,
  ) {}

  /** Bytes before the startup packet. Throws PgError or ProtocolViolation for the client's answer. */
  push(chunk: Buffer): void {
    const local = this.client.remoteAddress === 'unix';
    if (chunk[0] === TLS_HANDSHAKE && !this.sslAnswered && !this.gssAnswered && this.startup.empty && this.clientTls && !local) {
      // Direct TLS (PostgreSQL 17, sslnegotiation=direct): the ClientHello is the first byte.
      this.sslAnswered = true;
      return this.upgrade(this.clientTls, chunk);
    }
    let packet: StartupPacket | null;
    try {
      packet = this.startup.push(chunk);
    } catch (err) {
      if (!(err instanceof InvalidStartupPacket)) throw err;
      // As PostgreSQL: logged, and closed without an ErrorResponse.
      invalidStartupPacket(this.client.remoteAddress, err.message);
      return this.client.drop();
    }
    if (packet) this.onPacket(packet);
  }

  private onPacket(packet: StartupPacket): void {
    const client = this.client;
    const local = client.remoteAddress === 'unix';
    switch (packet.kind) {
      case 'ssl': {
        // Once only, and never inside TLS: PostgreSQL refuses a second SSLRequest too.
        if (this.sslAnswered) throw new ProtocolViolation(this.encrypted ? 'SSLRequest on a connection that is already encrypted' : 'SSLRequest sent twice');
        this.sslAnswered = true;
        // No TLS on Unix sockets (they never leave the machine), as in PgBouncer.
        if (!this.clientTls || local) return this.answerAndContinue(NO_ENCRYPTION);
        if (this.startup.leftover.length > 0) {
          // Bytes sent before the handshake were not encrypted, and may have been injected by a
          // man in the middle: PostgreSQL refuses them, and so do we.
          throw PgError.fatal(SqlState.ProtocolViolation, 'received unencrypted data after SSL request');
        }
        client.socket.write(ENCRYPTION_FOLLOWS);
        return this.upgrade(this.clientTls, null);
      }
      case 'gssenc':
        // No GSSAPI encryption: 'N' tells the client to go on in plaintext or give up.
        if (this.gssAnswered || this.encrypted) throw new ProtocolViolation('unexpected GSSENCRequest');
        this.gssAnswered = true;
        return this.answerAndContinue(NO_ENCRYPTION);
      case 'cancel':
        return client.onCancelRequest(packet.pid, packet.secret);
      case 'startup': {
        client.user = packet.params.get('user') ?? '';
        client.database = packet.params.get('database') || client.user;
        if (!this.encrypted && !local && (this.clientTls?.mode === 'require' || this.clientTls?.requireCert)) {
          // As PgBouncer words it; SQLSTATE as PostgreSQL's hostssl-only rejection.
          throw PgError.fatal(SqlState.InvalidAuthorization, 'SSL required');
        }
        if (packet.minor > 0 || packet.unknownOptions.length > 0) {
          client.socket.write(msg.negotiateProtocolVersion(0, packet.unknownOptions));
        }
        return client.onStartup(packet.params, this.startup.leftover);
      }
    }
  }

  /** Answers a request with one byte; the client goes on with another packet on the same socket. */
  private answerAndContinue(answer: Buffer): void {
    const leftover = this.startup.leftover;
    this.startup = new StartupReader();
    this.client.socket.write(answer);
    if (leftover.length > 0) this.push(leftover);
  }

  /**
   * Puts TLS on the client's socket. `first` is a direct-TLS ClientHello already read: it goes
   * back into the socket, where the TLS layer reads it as if it had just arrived.
   */
  private upgrade(config: ClientTls, first: Buffer | null): void {
    const raw = this.client.socket;
    this.client.unlistenPlaintext();
    if (first) {
      raw.pause();
      raw.unshift(first);
    }
    const secure = new tls.TLSSocket(raw, {
      isServer: true,
      secureContext: config.context,
      requestCert: config.requestCert,
      // Checked after the handshake instead, so the client gets a PostgreSQL error, not an alert.
      rejectUnauthorized: false,
      ALPNProtocols: ALPN,
    });
    this.encrypted = true;
    this.startup = new StartupReader();
    this.client.useTls(secure);
    let secured = false;
    secure.on('error', (err: NodeJS.ErrnoException) => {
      // A failed handshake (plaintext after 'S', no shared protocol) closes this client only; 'close' follows.
      if (!secured) log.info({ client: this.client.id, addr: this.client.remoteAddress, reason: err.code ?? err.message }, 'TLS handshake failed');
    });
    secure.once('secure', () => {
      secured = true;
      this.onSecure(config, secure, first !== null);
    });
  }

  private onSecure(config: ClientTls, secure: tls.TLSSocket, direct: boolean): void {
    const client = this.client;
    if (client.closed) return;
    if (direct && secure.alpnProtocol !== 'postgresql') {
      return client.fail(PgError.fatal(SqlState.ProtocolViolation, 'received direct SSL connection request without ALPN protocol negotiation extension'));
    }
    let name: string | null = null;
    if (config.requestCert && clientCertVerified(secure)) {
      const cn = secure.getPeerCertificate().subject?.CN;
      name = typeof cn === 'string' ? cn : null;
    }
    client.setCertificateName(name);
    if (config.requireCert && name === null) {
      client.fail(PgError.fatal(SqlState.InvalidAuthorization, 'connection requires a valid client certificate'));
    }
  }
}
