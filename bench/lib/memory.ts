// Memory per idle client: raw sockets that complete a trust login (StartupMessage, then read up to
// ReadyForQuery) and then sit idle. Per client = (RSS with N clients - RSS of the warmed, empty
// process) / N.
import net from 'node:net';
import { isAborted, rssBytes, sleep } from './proc.js';

function startupPacket(params: Record<string, string>): Buffer {
  const body = Buffer.from(Object.entries(params).map(([k, v]) => `${k}\0${v}\0`).join('') + '\0', 'utf8');
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(196608, 4); // protocol 3.0
  return Buffer.concat([head, body]);
}

/** Opens one connection and resolves when the login reached ReadyForQuery. */
export function idleLogin(port: number, user: string, database: string, timeoutMs = 20_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error('login timed out')), timeoutMs);
    const fail = (err: Error) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    };
    sock.on('error', fail);
    sock.on('connect', () => sock.write(startupPacket({ user, database })));
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      for (;;) {
        if (buf.length < 5) return;
        const type = String.fromCharCode(buf[0]);
        const len = buf.readInt32BE(1);
        if (buf.length < 1 + len) return;
        const body = buf.subarray(5, 1 + len);
        buf = buf.subarray(1 + len);
        if (type === 'E') return fail(new Error(`login failed: ${body.toString('utf8').replace(/\0/g, ' ').trim()}`));
        if (type === 'R' && body.readInt32BE(0) !== 0) return fail(new Error(`pooler asked for authentication ${body.readInt32BE(0)}`));
        if (type === 'Z') {
          clearTimeout(timer);
          sock.removeAllListeners('data');
          sock.removeListener('error', fail);
          sock.on('error', () => {});
          return resolve(sock);
        }
      }
    });
  });
}

export interface MemoryResult {
  perClientKB: number | null;
  emptyKB: number | null;
  withClientsKB: number | null;
  clients: number;
  error: string | null;
}

/** Smallest RSS over a few samples: lets allocator and GC noise settle. */
async function settledRss(pid: number | undefined): Promise<number | undefined> {
  let best: number | undefined;
  for (let i = 0; i < 5; i++) {
    await sleep(300);
    const v = rssBytes(pid);
    if (v !== undefined && (best === undefined || v < best)) best = v;
  }
  return best;
}

export async function measureIdleClients(pid: number | undefined, port: number, user: string, database: string, n: number): Promise<MemoryResult> {
  const sockets: net.Socket[] = [];
  try {
    // Warm: the first login opens a server connection and fills the pooler's caches.
    for (let i = 0; i < 3; i++) (await idleLogin(port, user, database)).destroy();
    const empty = await settledRss(pid);
    const BATCH = 50;
    for (let i = 0; i < n && !isAborted(); i += BATCH) {
      const batch = await Promise.all(Array.from({ length: Math.min(BATCH, n - i) }, () => idleLogin(port, user, database)));
      sockets.push(...batch);
    }
    const full = await settledRss(pid);
    if (empty === undefined || full === undefined) {
      return { perClientKB: null, emptyKB: null, withClientsKB: null, clients: sockets.length, error: 'no RSS (not Linux?)' };
    }
    return {
      perClientKB: (full - empty) / sockets.length / 1024,
      emptyKB: empty / 1024,
      withClientsKB: full / 1024,
      clients: sockets.length,
      error: null,
    };
  } catch (err) {
    return { perClientKB: null, emptyKB: null, withClientsKB: null, clients: sockets.length, error: (err as Error).message };
  } finally {
    for (const s of sockets) s.destroy();
  }
}
