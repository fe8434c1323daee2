/**
 * TCP settings applied to every socket, client side and server side alike: TCP_NODELAY (the
 * protocol is request/response; Nagle would add 40 ms stalls) and PgBouncer's keepalive settings.
 * Node sets SO_KEEPALIVE and TCP_KEEPIDLE itself; net-keepalive reaches TCP_KEEPINTVL,
 * TCP_KEEPCNT and TCP_USER_TIMEOUT, which Node's socket API lacks.
 */
import fs from 'node:fs';
import type { Socket } from 'node:net';
import keepalive from 'net-keepalive';

export interface SocketOptions {
  tcp_keepalive: boolean;
  /** Seconds; 0 leaves the OS default. */
  tcp_keepidle: number;
  tcp_keepintvl: number;
  tcp_keepcnt: number;
  /** Milliseconds, as PgBouncer; 0 leaves the OS default. */
  tcp_user_timeout: number;
}

/** The system's keepalive interval and probe count (Linux), read once; 75 s and 9 elsewhere. */
function systemDefault(file: string, fallback: number): number {
  try {
    const v = Number(fs.readFileSync(`/proc/sys/net/ipv4/${file}`, 'utf8').trim());
    return Number.isInteger(v) && v > 0 ? v : fallback;
  } catch {
    return fallback;
  }
}
let systemKeepalive: { intvl: number; cnt: number } | null = null;

export function applySocketOptions(socket: Socket, o: SocketOptions): void {
  if (socket.remoteFamily === undefined) return; // a Unix socket: no TCP options apply
  socket.setNoDelay(true);
  if (!o.tcp_keepalive) return;
  socket.setKeepAlive(true, o.tcp_keepidle * 1000);
  try {
    // Given an idle time, Node (libuv) also sets TCP_KEEPINTVL to 1 s and TCP_KEEPCNT to 10; a 0
    // setting means the system's value, so that one is put back.
    const reset = o.tcp_keepidle > 0;
    if (reset) systemKeepalive ??= { intvl: systemDefault('tcp_keepalive_intvl', 75), cnt: systemDefault('tcp_keepalive_probes', 9) };
    if (o.tcp_keepintvl > 0 || reset) keepalive.setKeepAliveInterval(socket, (o.tcp_keepintvl || systemKeepalive!.intvl) * 1000);
    if (o.tcp_keepcnt > 0 || reset) keepalive.setKeepAliveProbes(socket, o.tcp_keepcnt || systemKeepalive!.cnt);
    if (o.tcp_user_timeout > 0) keepalive.setUserTimeout(socket, o.tcp_user_timeout);
  } catch {
    // The socket closed between connect and here; nothing to tune.
  }
}
