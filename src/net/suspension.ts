/**
 * SUSPEND (admin console, as PgBouncer's): every client and server socket stops reading until
 * RESUME; the console's own connections go on. Code that resumes a socket after backpressure goes
 * through resumeReading(), so it cannot undo a SUSPEND.
 */
import type { Socket } from 'node:net';

export const suspension = { active: false };

export function resumeReading(socket: Socket): void {
  if (!suspension.active) socket.resume();
}
