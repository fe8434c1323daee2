// The least a Node.js pooler can do, as a baseline for bench/floor.ts.
//
//   node bench/floor/relay.mjs relay LISTEN_PORT POSTGRES_PORT
//     A session-mode relay with no parsing at all: each client gets its own connection to
//     PostgreSQL and bytes are copied both ways with net.Socket's 'data' events and write().
//   node bench/floor/relay.mjs idle LISTEN_PORT
//     Answers any login with a fixed AuthenticationOk .. ReadyForQuery and keeps the socket open,
//     doing nothing else: the memory an idle client costs a Node.js process.
import net from 'node:net';

const [mode, listenPort, targetPort] = process.argv.slice(2);

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

if (mode !== 'relay' && mode !== 'idle') throw new Error('usage: relay.mjs relay|idle LISTEN_PORT [POSTGRES_PORT]');
net
  .createServer({ noDelay: true }, (client) => {
    client.on('error', () => {});
    (mode === 'relay' ? relay : idle)(client);
  })
  .listen(Number(listenPort), '127.0.0.1');
