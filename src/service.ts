/**
 * What running as a service needs from the process itself, as PgBouncer does it: a pidfile
 * written at start-up and removed at exit, and switching to an unprivileged OS user (`user`,
 * `-u`) once the listening sockets and files are open.
 */
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';

export class ServiceError extends Error {}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Writes this process's pid to `path`; refuses when it names another process that is running (a
 * second Tessera on the same config), replaces one left by a process that died. Removed at exit.
 */
export function writePidfile(path: string): void {
  let previous: number | null = null;
  try {
    previous = Number.parseInt(fs.readFileSync(path, 'utf8'), 10);
  } catch {
    // none yet
  }
  if (previous && previous !== process.pid && alive(previous)) {
    throw new ServiceError(`pidfile ${path} names process ${previous}, which is running: is Tessera already started?`);
  }
  try {
    fs.writeFileSync(path, `${process.pid}\n`, { mode: 0o644 });
  } catch (err) {
    throw new ServiceError(`pidfile: cannot write ${path}: ${(err as Error).message}`);
  }
  process.on('exit', () => {
    try {
      if (Number.parseInt(fs.readFileSync(path, 'utf8'), 10) === process.pid) fs.unlinkSync(path);
    } catch {
      // already gone, or the folder is not writable after dropping privileges
    }
  });
}

/**
 * Becomes `user` (its primary group and supplementary groups too) when running as root; as that
 * user already, nothing to do; as anyone else, an error (only root can switch users).
 */
export function dropPrivileges(user: string): void {
  // Node has initgroups on POSIX; @types/node does not declare it.
  const initgroups = (process as unknown as { initgroups?: (user: string, group: number) => void }).initgroups;
  if (!process.getuid || !process.setuid || !process.setgid || !initgroups) throw new ServiceError('user: switching users is not supported on this platform');
  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  } catch {
    throw new ServiceError(`user: no such OS user "${user}"`);
  }
  if (process.getuid() === uid) return;
  if (process.getuid() !== 0) throw new ServiceError(`user: switching to "${user}" needs root (Tessera runs as uid ${process.getuid()})`);
  initgroups(user, gid);
  process.setgid(gid);
  process.setuid(uid);
}
