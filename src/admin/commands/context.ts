/** What every console command handler gets, and the checks several of them share. */
import { AdminError, type AdminView, type AdminWho } from '../view.js';

/** The console's own virtual database. */
export const ADMIN_DB = 'pgbouncer';

export interface CommandContext {
  view: AdminView;
  who: AdminWho;
  /** The query as the client sent it (for the "invalid command" message). */
  query: string;
}

/** Handles one command; `arg` is '' when none was given. Throws AdminError to answer with an error. */
export type CommandHandler = (ctx: CommandContext, arg: string) => Promise<Buffer> | Buffer;

/** PgBouncer caps console error messages at 1023 bytes; we cap the echoed query likewise. */
export function invalidCommand(query: string): AdminError {
  const q = query.length > 960 ? query.slice(0, 960) + '...' : query;
  return new AdminError(`invalid command '${q}', use SHOW HELP;`);
}

export function requireAdmin(ctx: CommandContext): void {
  if (!ctx.who.isAdmin) throw new AdminError('admin access needed');
}

function knownDatabase(ctx: CommandContext, name: string): boolean {
  return name === ADMIN_DB || ctx.view.databases().some((d) => d.name === name);
}

/**
 * PgBouncer's find_database(): the name must be a known database entry.
 * find_or_register_database() (autoRegister) also accepts any name when a "*" fallback exists,
 * since PgBouncer creates the entry on the spot; the proxy's action must then do likewise.
 */
export function checkDatabase(ctx: CommandContext, name: string, autoRegister: boolean): void {
  if (knownDatabase(ctx, name)) return;
  if (autoRegister && Object.hasOwn(ctx.view.config().databases ?? {}, '*')) return;
  throw new AdminError(`no such database: ${name}`);
}
