/**
 * auth_type "hba": pg_hba.conf rules (PgBouncer's subset) choose the login method per connection.
 * Lines: `local DATABASE USER METHOD` or `host|hostssl|hostnossl DATABASE USER ADDRESS METHOD`,
 * ADDRESS as CIDR, an address plus a mask column, or `all`; DATABASE and USER as `all`, names or
 * comma lists. First match wins; no match means reject, as in PostgreSQL.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';

export type HbaMethod = 'trust' | 'reject' | 'password' | 'md5' | 'scram-sha-256' | 'cert' | 'peer';
const METHODS = new Set<HbaMethod>(['trust', 'reject', 'password', 'md5', 'scram-sha-256', 'cert', 'peer']);

export class HbaError extends Error {}

interface Rule {
  type: 'local' | 'host' | 'hostssl' | 'hostnossl';
  databases: string[] | 'all';
  users: string[] | 'all';
  /** null: any address (local lines, or `all`). */
  network: { block: net.BlockList } | null;
  method: HbaMethod;
}

export interface HbaConnection {
  /** Unix socket or TCP. */
  local: boolean;
  ssl: boolean;
  database: string;
  user: string;
  address: string;
}

/** Splits a line into fields; a "quoted" field is one literal name (spaces, commas, even "all"). */
function fields(line: string): { text: string; quoted: boolean }[] {
  const out: { text: string; quoted: boolean }[] = [];
  const re = /"([^"]*)"|([^\s"]+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) out.push(m[1] !== undefined ? { text: m[1], quoted: true } : { text: m[2], quoted: false });
  return out;
}

const list = (f: { text: string; quoted: boolean }): string[] | 'all' =>
  f.quoted ? [f.text] : f.text === 'all' ? 'all' : f.text.split(',').filter(Boolean);

function network(address: string, mask: string | undefined, where: string): net.BlockList {
  const block = new net.BlockList();
  const [ip, bits] = address.split('/');
  const family = net.isIPv6(ip) ? 'ipv6' : net.isIPv4(ip) ? 'ipv4' : null;
  if (!family) throw new HbaError(`${where}: invalid IP address "${address}"`);
  let prefix: number;
  if (bits !== undefined) prefix = Number(bits);
  else if (mask !== undefined && net.isIP(mask)) {
    // An IPv4 netmask column: count its one bits.
    prefix = mask.split('.').reduce((n, octet) => n + Number(octet).toString(2).replace(/0/g, '').length, 0);
  } else throw new HbaError(`${where}: expected an address with a /prefix, or an address and a mask`);
  const max = family === 'ipv4' ? 32 : 128;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new HbaError(`${where}: invalid prefix length in "${address}"`);
  block.addSubnet(ip, prefix, family);
  if (family === 'ipv4') block.addSubnet(`::ffff:${ip}`, 96 + prefix, 'ipv6'); // IPv4-mapped clients
  return block;
}

export function parseHba(text: string, file: string): Rule[] {
  const rules: Rule[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const where = `${file}:${i + 1}`;
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') return;
    const parsed = fields(line);
    const f = parsed.map((p) => p.text);
    const type = f[0] as Rule['type'];
    if (!['local', 'host', 'hostssl', 'hostnossl'].includes(type)) throw new HbaError(`${where}: invalid connection type "${f[0]}"`);
    let rest = f.slice(3);
    let net_: Rule['network'] = null;
    if (type !== 'local') {
      const address = rest[0];
      if (address === undefined) throw new HbaError(`${where}: missing address`);
      if (address !== 'all') {
        const hasMask = rest[1] !== undefined && net.isIP(rest[1]) !== 0;
        net_ = { block: network(address, hasMask ? rest[1] : undefined, where) };
        rest = rest.slice(hasMask ? 2 : 1);
      } else rest = rest.slice(1);
    }
    const method = rest[0] as HbaMethod;
    if (f.length < 3 || !METHODS.has(method)) throw new HbaError(`${where}: expected one of ${[...METHODS].join(', ')} as the method, got "${rest[0] ?? ''}"`);
    rules.push({ type, databases: list(parsed[1]), users: list(parsed[2]), network: net_, method });
  });
  return rules;
}

export function loadHba(path: string): Rule[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new HbaError(`${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return parseHba(text, path);
}

/** The method of the first matching rule, or null (no entry: reject). */
export function hbaMethod(rules: readonly Rule[], c: HbaConnection): HbaMethod | null {
  for (const r of rules) {
    if (r.type === 'local' ? !c.local : c.local) continue;
    if (r.type === 'hostssl' && !c.ssl) continue;
    if (r.type === 'hostnossl' && c.ssl) continue;
    if (r.databases !== 'all' && !r.databases.includes(c.database)) continue;
    if (r.users !== 'all' && !r.users.includes(c.user)) continue;
    if (r.network && !r.network.block.check(c.address, net.isIPv6(c.address) ? 'ipv6' : 'ipv4')) continue;
    return r.method;
  }
  return null;
}

export type HbaRules = Rule[];
