/**
 * TLS settings -> what node:tls needs: the SecureContext clients are upgraded with, and the one
 * Tessera connects to PostgreSQL with. Built at start and again on RELOAD; a connection keeps the
 * context it was upgraded with, so new certificates never disturb established connections.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Config, SslMode } from '../config/schema.js';

/** A TLS setting that cannot be used; load.ts turns it into a ConfigError naming the key. */
export class TlsSettingError extends Error {
  constructor(
    readonly key: string,
    problem: string,
  ) {
    super(problem);
  }
}

export interface ClientTls {
  mode: Exclude<SslMode, 'disable'>;
  context: tls.SecureContext;
  /** Ask for a client certificate (a CA to check it against is configured). */
  requestCert: boolean;
  /** verify-ca / verify-full: a client without a valid certificate is refused. */
  requireCert: boolean;
}

export interface ServerTls {
  mode: SslMode;
  /** null when no SSLRequest is sent (disable, allow). */
  context: tls.SecureContext | null;
}

/** ALPN protocol of PostgreSQL 17's direct TLS; offered and accepted on both sides. */
export const ALPN = ['postgresql'];

const VERSIONS = ['tlsv1.0', 'tlsv1.1', 'tlsv1.2', 'tlsv1.3'] as const;
const NODE_VERSION: Record<(typeof VERSIONS)[number], tls.SecureVersion> = { 'tlsv1.0': 'TLSv1', 'tlsv1.1': 'TLSv1.1', 'tlsv1.2': 'TLSv1.2', 'tlsv1.3': 'TLSv1.3' };
const PROTOCOL_SHORTCUTS: Record<string, string[]> = { all: [...VERSIONS], legacy: [...VERSIONS], secure: ['tlsv1.2', 'tlsv1.3'] };

/** PgBouncer's protocol list (e.g. "secure", "tlsv1.2,tlsv1.3") as Node's min and max version. */
export function tlsVersions(value: string, key: string): { minVersion: tls.SecureVersion; maxVersion: tls.SecureVersion } {
  const picked = new Set<number>();
  for (const word of value.toLowerCase().split(/[\s,:]+/).filter(Boolean)) {
    const names = PROTOCOL_SHORTCUTS[word] ?? [word];
    for (const name of names) {
      const i = VERSIONS.indexOf(name as (typeof VERSIONS)[number]);
      if (i < 0) throw new TlsSettingError(key, `expected a comma list of tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, all, secure or legacy, got ${JSON.stringify(word)}`);
      picked.add(i);
    }
  }
  if (picked.size === 0) throw new TlsSettingError(key, 'expected at least one TLS version');
  // Node takes a range: a list with gaps is widened to its lowest and highest version.
  return { minVersion: NODE_VERSION[VERSIONS[Math.min(...picked)]], maxVersion: NODE_VERSION[VERSIONS[Math.max(...picked)]] };
}

/** PgBouncer's cipher shortcuts; anything else is an OpenSSL cipher string. */
function cipherList(value: string): string | undefined {
  switch (value.toLowerCase()) {
    case 'default':
    case 'secure':
    case 'fast':
    case 'normal':
      return undefined; // Node.js's own list: forward secret, AEAD first
    case 'compat':
    case 'legacy':
      return 'HIGH:!aNULL';
    case 'insecure':
    case 'all':
      return 'ALL:!aNULL';
    default:
      return value;
  }
}

function readPem(file: string, key: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new TlsSettingError(key, `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}

interface ContextFiles {
  key?: [string, string];
  cert?: [string, string];
  ca?: [string, string];
  protocols: [string, string];
  ciphers: [string, string];
}

function secureContext(f: ContextFiles): tls.SecureContext {
  const options: tls.SecureContextOptions = { ...tlsVersions(f.protocols[1], f.protocols[0]) };
  const ciphers = cipherList(f.ciphers[1]);
  if (ciphers !== undefined) options.ciphers = ciphers;
  // Each part is checked on its own first, so an error names the setting at fault. OpenSSL's
  // messages name what is wrong, never key material.
  attempt(f.ciphers[0], () => tls.createSecureContext(options));
  if (f.ca) {
    const ca = readPem(f.ca[1], f.ca[0]);
    attempt(f.ca[0], () => new X509Certificate(ca));
    options.ca = ca;
  }
  if (f.cert && f.key) {
    const cert = readPem(f.cert[1], f.cert[0]);
    const key = readPem(f.key[1], f.key[0]);
    attempt(f.cert[0], () => new X509Certificate(cert));
    attempt(f.key[0], () => createPrivateKey(key));
    options.cert = cert;
    options.key = key;
  }
  // Without a CA file, Node's bundled root certificates are the trust store.
  return attempt(f.key?.[0] ?? f.ca?.[0] ?? f.ciphers[0], () => tls.createSecureContext(options));
}

function attempt<T>(key: string, what: () => T): T {
  try {
    return what();
  } catch (err) {
    throw new TlsSettingError(key, `cannot use it: ${(err as Error).message}`);
  }
}

/** The context clients are upgraded with, or null when client_tls_sslmode is disable. */
export function clientTlsFrom(c: Readonly<Config>): ClientTls | null {
  if (c.client_tls_sslmode === 'disable') return null;
  if (!c.client_tls_key_file) throw new TlsSettingError('client_tls_key_file', `expected a file path (required when client_tls_sslmode is "${c.client_tls_sslmode}")`);
  if (!c.client_tls_cert_file) throw new TlsSettingError('client_tls_cert_file', `expected a file path (required when client_tls_sslmode is "${c.client_tls_sslmode}")`);
  const requireCert = c.client_tls_sslmode === 'verify-ca' || c.client_tls_sslmode === 'verify-full';
  if (requireCert && !c.client_tls_ca_file) throw new TlsSettingError('client_tls_ca_file', `expected a file path (required when client_tls_sslmode is "${c.client_tls_sslmode}")`);
  const context = secureContext({
    key: ['client_tls_key_file', c.client_tls_key_file],
    cert: ['client_tls_cert_file', c.client_tls_cert_file],
    ca: c.client_tls_ca_file ? ['client_tls_ca_file', c.client_tls_ca_file] : undefined,
    protocols: ['client_tls_protocols', c.client_tls_protocols],
    ciphers: ['client_tls_ciphers', c.client_tls_ciphers],
  });
  return { mode: c.client_tls_sslmode, context, requestCert: c.client_tls_ca_file !== undefined, requireCert };
}

/** The context Tessera connects to PostgreSQL with. */
export function serverTlsFrom(c: Readonly<Config>): ServerTls {
  const mode = c.server_tls_sslmode;
  if ((c.server_tls_key_file === undefined) !== (c.server_tls_cert_file === undefined)) {
    const missing = c.server_tls_key_file === undefined ? 'server_tls_key_file' : 'server_tls_cert_file';
    throw new TlsSettingError(missing, 'expected a file path (server_tls_key_file and server_tls_cert_file go together)');
  }
  if (mode === 'disable' || mode === 'allow') return { mode, context: null };
  const context = secureContext({
    key: c.server_tls_key_file ? ['server_tls_key_file', c.server_tls_key_file] : undefined,
    cert: c.server_tls_cert_file ? ['server_tls_cert_file', c.server_tls_cert_file] : undefined,
    ca: c.server_tls_ca_file ? ['server_tls_ca_file', c.server_tls_ca_file] : undefined,
    protocols: ['server_tls_protocols', c.server_tls_protocols],
    ciphers: ['server_tls_ciphers', c.server_tls_ciphers],
  });
  return { mode, context };
}

/** As SHOW CLIENTS/SERVERS print it: "TLSv1.3/TLS_AES_256_GCM_SHA384[/ECDH=X25519]", '' when not TLS. */
export function describeTls(socket: net.Socket): string {
  if (!(socket instanceof tls.TLSSocket)) return '';
  const protocol = socket.getProtocol();
  if (!protocol || protocol === 'unknown') return '';
  const parts = [protocol, socket.getCipher().standardName];
  // Only the connecting side of a handshake learns the key exchange group.
  const kx = socket.getEphemeralKeyInfo();
  if (kx && 'type' in kx && kx.type && kx.name) parts.push(`${kx.type}=${kx.name}`);
  return parts.join('/');
}

/**
 * Whether the client's certificate verified against client_tls_ca_file. Node fills in
 * `authorized` only for sockets a tls.Server accepted itself; a socket upgraded after SSLRequest
 * asks OpenSSL's verdict the way Node's own server does. Fails closed if that ever changes.
 */
export function clientCertVerified(socket: tls.TLSSocket): boolean {
  const handle = (socket as unknown as { _handle?: { verifyError?: () => Error | null | undefined } })._handle;
  if (typeof handle?.verifyError !== 'function') return false;
  const peer = socket.getPeerCertificate();
  return !handle.verifyError() && peer !== null && Object.keys(peer).length > 0;
}

/** Loopback and Unix-socket clients may send cleartext secrets without TLS. */
export function isLoopback(address: string): boolean {
  if (address === 'unix') return true;
  const ip = address.startsWith('::ffff:') ? address.slice(7) : address;
  if (net.isIPv4(ip)) return ip.startsWith('127.');
  return ip === '::1';
}

/** Both sides' TLS of a config: what a connection keeps from its start; RELOAD and SET swap it. */
export function tlsContextsFrom(config: Readonly<Config>): { client: ClientTls | null; server: ServerTls } {
  return { client: clientTlsFrom(config), server: serverTlsFrom(config) };
}
