/**
 * TCP settings applied to every socket, client side and server side alike: TCP_NODELAY (the
 * protocol is request/response; Nagle would add 40 ms stalls) and PgBouncer's keepalive settings.
 * Node sets SO_KEEPALIVE and TCP_KEEPIDLE itself; net-keepalive reaches TCP_KEEPINTVL,
 * TCP_KEEPCNT and TCP_USER_TIMEOUT, which Node's socket API lacks.
 */
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

export function applySocketOptions(socket: Socket, o: SocketOptions): void {
  if (socket.remoteFamily === undefined) return; // a Unix socket: no TCP options apply
  socket.setNoDelay(true);
  if (!o.tcp_keepalive) return;
  socket.setKeepAlive(true, o.tcp_keepidle * 1000);
  try {
    if (o.tcp_keepintvl > 0) keepalive.setKeepAliveInterval(socket, o.tcp_keepintvl * 1000);
    if (o.tcp_keepcnt > 0) keepalive.setKeepAliveProbes(socket, o.tcp_keepcnt);
    if (o.tcp_user_timeout > 0) keepalive.setUserTimeout(socket, o.tcp_user_timeout);
  } catch {
    // The socket closed between connect and here; nothing to tune.
  }
}
