/**
 * SUSPEND (admin console, as PgBouncer's): every client and server socket stops reading until
 * RESUME; the console's own connections go on, and new ones are let in, so an admin can always
 * RESUME. A new client of any other database is accepted but its login waits until RESUME
 * (whenResumed). Code that resumes a socket after backpressure goes through resumeReading(), so
 * it cannot undo a SUSPEND.
 */
import type { Socket } from 'node:net';

export const suspension = { active: false };

let resumed: { promise: Promise<void>; resolve: () => void } | null = null;

export function resumeReading(socket: Socket): void {
  if (!suspension.active) socket.resume();
}

export function beginSuspension(): void {
  suspension.active = true;
}

/** RESUME: logins held while suspended go on (their sockets are resumed by the caller). */
export function endSuspension(): void {
  suspension.active = false;
  resumed?.resolve();
  resumed = null;
}

/** Resolves at the next RESUME (at once when not suspended). */
export function whenResumed(): Promise<void> {
  if (!suspension.active) return Promise.resolve();
  if (!resumed) {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    resumed = { promise, resolve };
  }
  return resumed.promise;
}
