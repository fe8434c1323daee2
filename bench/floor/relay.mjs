// The least a Node.js pooler can do, as a baseline for bench/floor.ts.
//
//   node bench/floor/relay.mjs relay LISTEN_PORT POSTGRES_PORT
//     A session-mode relay with no parsing at all: each client gets its own connection to
//     PostgreSQL and bytes are copied both ways with net.Socket's 'data' events and write().
//   node bench/floor/relay.mjs idle LISTEN_PORT
//     Answers any login with a fixed AuthenticationOk .. ReadyForQuery and keeps the socket open,
//     doing nothing else: the memory an idle client costs a Node.js process.
//   node bench/floor/relay.mjs pool LISTEN_PORT POSTGRES_PORT USER DATABASE
//     The least transaction pooling: 20 PostgreSQL connections opened at start (trust login);
//     clients get the fixed login reply, each simple Query goes to a free connection (or waits
//     for one) and the answer back, up to ReadyForQuery. No checks, no errors, no cleanup: what a
//     new connection per transaction (pgbench -C) costs a Node.js process at least.
import net from 'node:net';

const [mode, listenPort, targetPort, user, database] = process.argv.slice(2);

function message(type, body) {
  const out = Buffer.alloc(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}
const parameter = (name, value) => message('S', Buffer.from(`${name}\0${value}\0`));
const LOGIN_REPLY = Buffer.concat([
  message('R', Buffer.alloc(4)),
  parameter('server_version', '15'),
  parameter('client_encoding', 'UTF8'),
  parameter('DateStyle', 'ISO, MDY'),
  parameter('integer_datetimes', 'on'),
  parameter('standard_conforming_strings', 'on'),
  message('K', Buffer.alloc(8)),
  message('Z', Buffer.from('I')),
]);
const SSL_REQUEST = 80877103;

function relay(client) {
  const server = net.connect({ port: Number(targetPort), host: '127.0.0.1', noDelay: true });
  client.on('data', (d) => server.write(d));
  server.on('data', (d) => client.write(d));
  client.on('close', () => server.destroy());
  server.on('close', () => client.destroy());
  server.on('error', () => {});
}

function idle(client) {
  let answered = false;
  client.on('data', (d) => {
    if (answered) return;
    if (d.length === 8 && d.readInt32BE(4) === SSL_REQUEST) return void client.write('N');
    answered = true;
    client.write(LOGIN_REPLY);
  });
}

// ---- pool mode ----

const idleServers = [];
const waiting = [];

function startupPacket() {
  const body = Buffer.from(`user\0${user}\0database\0${database}\0\0`);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(196608, 4);
  return Buffer.concat([head, body]);
}

/** A logged-in PostgreSQL connection whose answers go to its current client until ReadyForQuery. */
function openServer() {
  return new Promise((resolve, reject) => {
    const server = net.connect({ port: Number(targetPort), host: '127.0.0.1', noDelay: true });
    let ready = false;
    server.client = null;
    server.on('error', reject);
    server.on('connect', () => server.write(startupPacket()));
    server.on('data', (d) => {
      // A reply ends with ReadyForQuery: 'Z', length 5, status (6 bytes); enough for pgbench -S.
      const done = d.length >= 6 && d[d.length - 6] === 0x5a;
      if (!ready) {
        if (done) (ready = true), resolve(server);
        return;
      }
      server.client.write(d);
      if (done) release(server);
    });
  });
}

function release(server) {
  server.client = null;
  const next = waiting.shift();
  if (next) next(server);
  else idleServers.push(server);
}

function pooled(client) {
  let loggedIn = false;
  client.on('data', (d) => {
    if (!loggedIn) {
      if (d.length === 8 && d.readInt32BE(4) === SSL_REQUEST) return void client.write('N');
      loggedIn = true;
      return void client.write(LOGIN_REPLY);
    }
    if (d[0] === 0x58) return void client.end(); // Terminate
    const run = (server) => {
      server.client = client;
      server.write(d);
    };
    const server = idleServers.pop();
    if (server) run(server);
    else waiting.push(run);
  });
}

const handlers = { relay, idle, pool: pooled };
if (!handlers[mode]) throw new Error('usage: relay.mjs relay|idle|pool LISTEN_PORT [POSTGRES_PORT [USER DATABASE]]');
if (mode === 'pool') for (let i = 0; i < 20; i++) idleServers.push(await openServer());
net
  .createServer({ noDelay: true }, (client) => {
    client.on('error', () => {});
    handlers[mode](client);
  })
  .listen(Number(listenPort), '127.0.0.1');
