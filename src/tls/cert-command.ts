/**
 * `tessera cert DIR`: a development CA, and a server key and certificate for localhost signed by
 * it, so TLS can be tried in three lines. The openssl command does the cryptography; nothing here
 * builds ASN.1. Client certificates for auth_type cert come from `--client NAME` (CN = NAME).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export const CERT_USAGE = `Usage: tessera cert DIR [--host NAME]... [--client USER]... [--force]

Writes into DIR (created if missing) a development CA (ca.crt, ca.key) and a key and certificate
for Tessera (server.key, server.crt) valid for localhost, 127.0.0.1 and ::1 (and every --host),
signed by that CA. --client USER adds USER.key and USER.crt, a client certificate with CN=USER
for auth_type cert. Files already in DIR are kept (a running Tessera may use them): a key is
never replaced, and a certificate only when --host asks for other names; --force makes
everything new. Needs the openssl command.
`;

const DAYS_CA = 3650;
// Clients (Apple's, browsers) refuse leaf certificates valid for longer than 825 days.
const DAYS_LEAF = 825;

export interface DevCertOptions {
  hosts?: string[];
  clients?: string[];
  /** The openssl binary (default: openssl on PATH). */
  openssl?: string;
  /** Make new keys and certificates even where DIR has them. */
  force?: boolean;
}

export interface DevCerts {
  dir: string;
  ca: string;
  serverKey: string;
  serverCert: string;
  /** Client certificate and key files by user name. */
  clients: Record<string, { cert: string; key: string }>;
  /** Files made by this run, and files that were there and left as they were. */
  written: string[];
  kept: string[];
}

/** Writes the CA (unless present), the server certificate and any client certificates. */
export function writeDevCerts(dirArg: string, opts: DevCertOptions = {}): DevCerts {
  const dir = path.resolve(dirArg);
  const openssl = opts.openssl ?? 'openssl';
  fs.mkdirSync(dir, { recursive: true });
  const file = (name: string) => path.join(dir, name);
  const run = (args: string[]) => {
    execFileSync(openssl, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  const newKey = (out: string) => {
    // Created private before openssl writes into it: never readable by others, not even briefly.
    fs.rmSync(out, { force: true });
    fs.writeFileSync(out, '', { mode: 0o600 });
    run(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', out]);
    // PostgreSQL and libpq refuse key files that others can read.
    fs.chmodSync(out, 0o600);
  };
  const written: string[] = [];
  const kept: string[] = [];
  const ca = file('ca.crt');
  const caKey = file('ca.key');
  if (opts.force || !fs.existsSync(ca) || !fs.existsSync(caKey)) {
    newKey(caKey);
    written.push(caKey, ca);
    run([
      'req', '-new', '-x509', '-key', caKey, '-out', ca, '-days', String(DAYS_CA), '-subj', '/CN=Tessera development CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ]);
  } else kept.push(caKey, ca);
  // One leaf: a key, a request, and the CA's signature with the extensions that say what it is for.
  // An existing key is kept (a new one would silently break whatever uses it); its certificate
  // too, unless `reissue` (other names asked for) or a new CA signs.
  const leaf = (name: string, cn: string, extensions: string[], reissue: boolean) => {
    const key = file(`${name}.key`);
    const cert = file(`${name}.crt`);
    const csr = file(`${name}.csr.tmp`);
    const ext = file(`${name}.ext.tmp`);
    const newCa = written.includes(ca);
    if (!opts.force && !newCa && fs.existsSync(key)) kept.push(key);
    else {
      newKey(key);
      written.push(key);
    }
    if (!reissue && !written.includes(key) && fs.existsSync(cert)) {
      kept.push(cert);
      return { cert, key };
    }
    written.push(cert);
    try {
      run(['req', '-new', '-key', key, '-out', csr, '-subj', `/CN=${cn}`]);
      fs.writeFileSync(ext, extensions.join('\n') + '\n');
      run(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-set_serial', `0x${randomBytes(16).toString('hex')}`, '-days', String(DAYS_LEAF), '-extfile', ext, '-out', cert]);
    } finally {
      fs.rmSync(csr, { force: true });
      fs.rmSync(ext, { force: true });
    }
    return { cert, key };
  };
  const names = ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1', ...(opts.hosts ?? []).map((h) => (/^[\d.]+$|:/.test(h) ? `IP:${h}` : `DNS:${h}`))];
  const server = leaf('server', 'localhost', [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    `subjectAltName=${[...new Set(names)].join(',')}`,
  ], (opts.hosts ?? []).length > 0);
  const clients: DevCerts['clients'] = {};
  for (const user of opts.clients ?? []) {
    if (!/^[\w.@-]+$/.test(user) || ['ca', 'server'].includes(user)) throw new Error(`--client ${JSON.stringify(user)}: expected a user name of letters, digits and . _ @ -, other than ca and server`);
    clients[user] = leaf(user, user, ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth'], false);
  }
  return { dir, ca, serverKey: server.key, serverCert: server.cert, clients, written, kept };
}

/** The CLI form: parses arguments, writes the files, prints how to turn TLS on. */
export function certCommand(argv: string[]): { out: string; code: number } {
  let dir: string | undefined;
  const hosts: string[] = [];
  const clients: string[] = [];
  let force = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') return { out: CERT_USAGE, code: 0 };
    if (a === '--force') {
      force = true;
      continue;
    }
    if (a === '--host' || a === '--client') {
      const value = argv[++i];
      if (!value) return { out: `tessera cert: ${a} needs a value\n${CERT_USAGE}`, code: 2 };
      (a === '--host' ? hosts : clients).push(value);
    } else if (a.startsWith('-') || dir !== undefined) {
      return { out: `tessera cert: unexpected argument "${a}"\n${CERT_USAGE}`, code: 2 };
    } else dir = a;
  }
  if (dir === undefined) return { out: `tessera cert: expected a folder\n${CERT_USAGE}`, code: 2 };
  let certs: DevCerts;
  try {
    certs = writeDevCerts(dir, { hosts, clients, force });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT' && e.path === 'openssl') return { out: 'tessera cert: the openssl command is needed and was not found on PATH\n', code: 1 };
    const detail = e.stderr?.toString().trim().split('\n')[0] ?? e.message;
    return { out: `tessera cert: ${detail}\n`, code: 1 };
  }
  const rel = (p: string) => (p.startsWith(process.cwd() + path.sep) ? path.relative(process.cwd(), p) : p);
  const list = (files: string[]) => files.map(rel).join(', ');
  const out = [
    certs.written.length ? `Wrote ${list(certs.written)}.` : 'Wrote nothing new.',
    ...(certs.kept.length ? [`Kept ${list(certs.kept)} (already there; --force makes new ones).`] : []),
    'Turn TLS on with these settings in proxy.config.json (client_tls_* in a pgbouncer.ini):',
    '  "client_tls_sslmode": "require",',
    `  "client_tls_key_file": ${JSON.stringify(certs.serverKey)},`,
    `  "client_tls_cert_file": ${JSON.stringify(certs.serverCert)},`,
    'then connect with the CA as the trusted root:',
    `  psql "host=localhost port=6432 user=postgres dbname=postgres sslmode=verify-full sslrootcert=${rel(certs.ca)}"`,
    '',
  ].join('\n');
  return { out, code: 0 };
}
