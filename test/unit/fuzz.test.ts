// The bulk of the fuzzing, in-process and fast: 100,000+ random and mutated front-end byte streams
// fed in random pieces to a real ClientConnection of a real Proxy (startup, every auth exchange,
// the admin console), plus the framers on their own, the admin console's parser and the config
// loaders. Properties: nothing throws past its own error type, nothing allocates more than it
// received, and every connection that ends says why with a known SQLSTATE (or closes cleanly).
// test/integration/fuzz-wire.test.ts sends a sample of the same cases over loopback to a Tessera
// in front of a real PostgreSQL. Replay a failure with TESSERA_FUZZ_SEED=<seed printed>.
import { EventEmitter } from 'node:events';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Framer, ProtocolViolation, type FrameSink } from '../../src/protocol/framing.js';
import { StartupReader } from '../../src/protocol/startup.js';
import { ClientConnection, ClientPhase } from '../../src/frontend/client-connection.js';
import { Pooler } from '../../src/pooler/pooler.js';
import { parseConfig, ConfigError } from '../../src/config/load.js';
import { loadAnyConfig } from '../../src/config/ini.js';
import { loadUserlist, parseUserlist, UserlistError } from '../../src/auth/userlist.js';
import { parseHba, HbaError } from '../../src/auth/hba.js';
import { parseAdminQuery } from '../../src/admin/parse.js';
import { md5Secret } from '../../src/auth/md5.js';
import { capturedLogs, freePort, ROOT } from '../support/tessera.js';
import { Rng, fuzzSeed, seeds, fuzzCase, chunks, readReply, mutate } from '../support/fuzz.js';

const SEED = fuzzSeed();
const CASES = Number(process.env.TESSERA_FUZZ_CASES ?? 100_000);
const KB64 = 64 * 1024;
/** What a refused or failed login may say: never XX000 (an internal error). */
const ALLOWED = new Set(['08P01', '28P01', '28000', '3D000', '53300', '0A000', '08006', '55000', '57P03', '22023', '42601', '42704']);

/**
 * Records the largest Buffer made while `fn` runs, by every way of making one: alloc,
 * allocUnsafe, allocUnsafeSlow, concat and from (Node's Buffer.alloc and Buffer.from do not go
 * through allocUnsafe, so watching that alone misses them). A Buffer.from over an existing
 * ArrayBuffer is a view, not an allocation, and is not counted.
 */
function watchAllocations<T>(fn: () => T): { result: T; largest: number } {
  let largest = 0;
  const seen = (b: Buffer): Buffer => {
    if (b.length > largest) largest = b.length;
    return b;
  };
  const B = Buffer as unknown as Record<'alloc' | 'allocUnsafe' | 'allocUnsafeSlow' | 'concat' | 'from', (...args: unknown[]) => Buffer>;
  const originals = { alloc: B.alloc, allocUnsafe: B.allocUnsafe, allocUnsafeSlow: B.allocUnsafeSlow, concat: B.concat, from: B.from };
  for (const name of ['alloc', 'allocUnsafe', 'allocUnsafeSlow', 'concat'] as const) {
    B[name] = (...args) => seen(originals[name].apply(Buffer, args));
  }
  B.from = (...args) => {
    const b = originals.from.apply(Buffer, args);
    const view = args[0] instanceof ArrayBuffer || args[0] instanceof SharedArrayBuffer;
    return view ? b : seen(b);
  };
  try {
    return { result: fn(), largest };
  } finally {
    Object.assign(B, originals);
  }
}

/** Just enough of net.Socket for ClientConnection: records what it writes and whether it hung up. */
class FakeSocket extends EventEmitter {
  writable = true;
  ended = false;
  out: Buffer[] = [];
  write(b: Buffer | string): boolean {
    if (this.writable) this.out.push(Buffer.from(b));
    return true;
  }
  end(b?: Buffer): void {
    if (b) this.write(b);
    this.ended = true;
    this.writable = false;
  }
  destroy(): void {
    this.ended = true;
    this.writable = false;
  }
  pause(): void {}
  resume(): void {}
}

/** Not closed, and waiting for the client's next bytes (not for a server): as PostgreSQL would. */
function awaitsInput(client: ClientConnection): boolean {
  return client.phase === ClientPhase.Startup || client.phase === ClientPhase.Auth || (client.phase === ClientPhase.Ready && !client.isWaiting);
}

test(`framer and startup reader: ${CASES} random streams, only ProtocolViolation, never an allocation beyond what arrived (seed ${SEED})`, () => {
  const rng = new Rng(SEED);
  const pool = seeds('fuzz', 'db');
  const sink: FrameSink = { onHeader: () => true, onBody: () => {} };
  for (let i = 0; i < CASES; i++) {
    const bytes = fuzzCase(rng, pool);
    // Everything after the first 8 bytes, as typed messages, with every body wanted up to 1 GB.
    const framer = new Framer(sink, 0x40000000, 0x40000000);
    const reader = new StartupReader();
    const { largest } = watchAllocations(() => {
      for (const piece of chunks(rng, bytes)) {
        try {
          framer.push(piece);
        } catch (err) {
          if (!(err instanceof ProtocolViolation)) throw new Error(`case ${i} (seed ${SEED}): framer threw ${err}`);
          break;
        }
      }
      for (const piece of chunks(rng, bytes)) {
        try {
          if (reader.push(piece)) break;
        } catch (err) {
          if (!(err instanceof ProtocolViolation)) throw new Error(`case ${i} (seed ${SEED}): startup reader threw ${err}`);
          break;
        }
      }
    });
    assert.ok(largest <= bytes.length + KB64, `case ${i} (seed ${SEED}): allocated ${largest} bytes after receiving ${bytes.length}`);
    assert.ok(framer.buffered <= bytes.length);
  }
});

test(`client connection: ${CASES} random startups and auth exchanges end in a known SQLSTATE or a clean close (seed ${SEED})`, async () => {
  const closedPort = await freePort(); // nothing listens: a login that gets through fails with 08006
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-fuzz-'));
  const userlist = `"fuzz" "${md5Secret('pw', 'fuzz')}"\n"stats" "pw"\n`;
  fs.writeFileSync(path.join(dir, 'userlist.txt'), userlist);
  const target = { host: '127.0.0.1', port: closedPort };
  const proxies = ['trust', 'md5', 'scram-sha-256', 'plain'].map(
    (auth_type) =>
      new Pooler({
        config: parseConfig(
          {
            auth_type,
            auth_file: 'userlist.txt',
            stats_users: 'stats',
            max_client_conn: 1000,
            server_login_retry: 60,
            // No janitor runs here to retry a refused connection: waiting clients hear 08006 at once.
            server_connect_timeout: 0.01,
            databases: { db: target, tok: { ...target, auth_type: 'session_token', user: 'pool', password: 'pool-pw' } },
          },
          'fuzz.json',
          dir,
        ),
        userlist: loadUserlist(path.join(dir, 'userlist.txt')),
      }),
  );

  const rng = new Rng(SEED ^ 0x5eed);
  const pool = [...seeds('fuzz', 'db'), ...seeds('stats', 'pgbouncer'), ...seeds('web', 'tok'), ...seeds('fuzz', 'nodb')];
  const errorsBefore = capturedLogs.filter((l) => l.includes('"level":50')).length;
  const open: { client: ClientConnection; socket: FakeSocket; i: number }[] = [];
  let closedWithError = 0;
  let closedSilently = 0;
  let stillOpen = 0;
  const check = (socket: FakeSocket, i: number) => {
    const reply = readReply(Buffer.concat(socket.out));
    for (const code of reply.codes) assert.ok(ALLOWED.has(code), `case ${i} (seed ${SEED}): SQLSTATE ${code}`);
    if (socket.ended) {
      assert.is(reply.trailing, 0, `case ${i} (seed ${SEED}): a partial message before the close`);
      if (reply.codes.length > 0) {
        assert.is(reply.types.at(-1), 'E', `case ${i} (seed ${SEED}): the error is the last word`);
        closedWithError++;
      } else closedSilently++;
    }
  };
  for (let i = 0; i < CASES; i++) {
    const bytes = fuzzCase(rng, pool);
    const socket = new FakeSocket();
    const client = new ClientConnection(socket as never, rng.pick(proxies), '10.0.0.1');
    const { largest } = watchAllocations(() => {
      for (const piece of chunks(rng, bytes)) socket.emit('data', piece);
    });
    assert.ok(largest <= bytes.length + KB64, `case ${i} (seed ${SEED}): allocated ${largest} bytes after receiving ${bytes.length}`);
    if (socket.ended || client.phase === ClientPhase.Closed) check(socket, i);
    else if (awaitsInput(client)) {
      // Waiting for bytes that will never come, as PostgreSQL would: the peer hangs up.
      check(socket, i);
      stillOpen++;
      socket.emit('close');
    } else open.push({ client, socket, i }); // waiting for a server (that port is closed)
    // Bound the work in flight: the rest of these hear from a closed port asynchronously.
    if (open.length >= 500) await settle(open);
  }
  for (let k = 0; k < 100 && open.length > 0; k++) await settle(open);
  assert.equal(open.slice(0, 5).map((o) => ({ i: o.i, phase: o.client.phase, waiting: o.client.isWaiting, reply: readReply(Buffer.concat(o.socket.out)).types.join('') })), [], 'every login that reached the pool got an answer');
  for (const p of proxies) await p.shutdown(0);
  fs.rmSync(dir, { recursive: true, force: true });
  const internalErrors = capturedLogs.filter((l) => l.includes('"level":50')).slice(errorsBefore);
  assert.equal(internalErrors, [], 'no unexpected error was logged');
  assert.ok(closedWithError > CASES / 10 && closedSilently > 0, `closed with an error ${closedWithError}, silently ${closedSilently}, left waiting ${stillOpen}`);

  async function settle(list: typeof open): Promise<void> {
    await new Promise((r) => setTimeout(r, 20));
    for (let k = list.length - 1; k >= 0; k--) {
      const { client, socket, i } = list[k];
      if (socket.ended || client.phase === ClientPhase.Closed) {
        check(socket, i);
        list.splice(k, 1);
      } else if (awaitsInput(client)) {
        check(socket, i);
        stillOpen++;
        socket.emit('close');
        list.splice(k, 1);
      }
    }
  }
});

test(`admin console parser: 100,000 random and mutated commands parse or are refused, in linear time (seed ${SEED})`, async () => {
  const rng = new Rng(SEED ^ 0xad);
  const words = ['show', 'SHOW', 'pools', 'clients', 'set', 'kill', 'pause', '"db"', '"a""b"', "'v'", "'a''b'", '=', 'to', ';', ' ', '\t', '\n', '"', "'", 'x'.repeat(70), '', '\0', 'é', '!'];
  for (let i = 0; i < 100_000; i++) {
    const n = rng.int(6);
    let q = Array.from({ length: n }, () => rng.pick(words)).join(rng.pick(['', ' ', '  ']));
    if (rng.int(4) === 0) q = mutate(rng, Buffer.from(q), [Buffer.from('show pools')]).toString('latin1');
    const r = parseAdminQuery(q);
    assert.ok(['command', 'set', 'invalid', 'bad_arguments'].includes(r.kind));
  }
  // Inputs that made the old WORD pattern backtrack exponentially (an admin or stats user could
  // freeze the whole pooler with one query). Run in a child so a regression is a clean failure
  // after a bounded wait, not a hung test run.
  const script = `
    const { parseAdminQuery } = await import(${JSON.stringify(path.join(ROOT, 'src/admin/parse.ts'))});
    for (const n of [30, 10000]) for (const q of ['show "' + 'ab'.repeat(n), '"' + 'a'.repeat(n), 'set "' + 'a'.repeat(n) + '" = x', 'set x = "' + 'a'.repeat(n), 'set x = ' + "'" + 'a'.repeat(n)]) parseAdminQuery(q);
    console.log('ok');`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await new Promise((r) => child.on('close', r));
  clearTimeout(guard);
  assert.is(out.trim(), 'ok', `pathological admin queries did not finish within 30 s (exit ${code}): ${out}`);
});

test(`config loaders: mutated proxy.config.json, pgbouncer.ini, userlist and hba files fail only with their own errors (seed ${SEED})`, () => {
  const rng = new Rng(SEED ^ 0xc0);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-fuzz-cfg-'));
  try {
    fs.writeFileSync(path.join(dir, 'userlist.txt'), '"u" "p"\n');
    fs.writeFileSync(path.join(dir, 'hba.conf'), 'host all all 127.0.0.1/32 md5\n');
    const json = JSON.stringify({
      listen_port: 6432,
      auth_type: 'md5',
      auth_file: 'userlist.txt',
      pool_mode: 'transaction',
      session_tokens: { max_failures: 5 },
      users: { u: { pool_mode: 'session', query_timeout: 5 } },
      databases: { app: { host: '127.0.0.1', port: 5432, dbname: 'x', pool_size: 5 }, tok: { host: 'h', auth_type: 'session_token', user: 'p', pool_mode: 'session' }, '*': { host: 'db' } },
    });
    const ini = `[databases]\napp = host=127.0.0.1 port=5432 dbname=x user=u password='p''w'\n* = host=db\n[users]\nu = pool_mode=session\n[pgbouncer]\nlisten_port = 6432\nauth_type = md5\nauth_file = userlist.txt\nadmin_users = u, v\n%include extra.ini\n`;
    fs.writeFileSync(path.join(dir, 'extra.ini'), '[pgbouncer]\npool_mode = transaction\n');
    const iniFile = path.join(dir, 'pgbouncer.ini');
    const expected = (err: unknown) => err instanceof ConfigError || err instanceof UserlistError || err instanceof HbaError;
    parseConfig(JSON.parse(json), 'fuzz.json', dir); // the unmutated one is valid
    fs.writeFileSync(iniFile, ini);
    loadAnyConfig(iniFile);
    let accepted = 0;
    for (let i = 0; i < 3000; i++) {
      const text = mutate(rng, Buffer.from(json), [Buffer.from(json)]).toString('utf8');
      try {
        parseConfig(JSON.parse(text), 'fuzz.json', dir);
        accepted++;
      } catch (err) {
        if (!(err instanceof SyntaxError) && !expected(err)) throw new Error(`case ${i} (seed ${SEED}): parseConfig threw ${err} for ${text}`);
      }
      const iniText = mutate(rng, Buffer.from(ini), [Buffer.from(ini)]).toString('utf8');
      fs.writeFileSync(iniFile, iniText);
      try {
        loadAnyConfig(iniFile);
      } catch (err) {
        if (!expected(err)) throw new Error(`case ${i} (seed ${SEED}): loadAnyConfig threw ${err} for\n${iniText}`);
      }
      const ul = mutate(rng, Buffer.from('"u" "p"\n"md5" "md5abcdefabcdefabcdefabcdefabcdefab"\n"s" "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5"\n'), [Buffer.from("x")]).toString('utf8');
      try {
        parseUserlist(ul, 'userlist.txt');
      } catch (err) {
        if (!expected(err)) throw new Error(`case ${i} (seed ${SEED}): parseUserlist threw ${err} for\n${ul}`);
      }
      const hba = mutate(rng, Buffer.from('local all all trust\nhost all u 10.0.0.0/8 md5\nhost db all ::1 ffff:: scram-sha-256\nhostssl all all 0.0.0.0 0.0.0.0 cert\n'), [Buffer.from("x")]).toString('utf8');
      try {
        parseHba(hba, 'hba.conf');
      } catch (err) {
        if (!expected(err)) throw new Error(`case ${i} (seed ${SEED}): parseHba threw ${err} for\n${hba}`);
      }
    }
    assert.ok(accepted > 0, 'some mutations are still valid configs');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
