/**
 * The admin console: one simple-protocol query in, the answer's wire bytes out.
 *
 * The caller (the proxy, for a client of the virtual database `pgbouncer`) sends the returned
 * bytes and then ReadyForQuery itself. Every failure is an ErrorResponse inside the returned
 * bytes (severity ERROR, SQLSTATE 08P01 like PgBouncer unless stated otherwise), so the
 * connection stays usable; runAdminQuery does not reject.
 */
import { errorResponse, PgError, SqlState } from '../protocol/messages.js';
import { parseAdminQuery } from './parse.js';
import { AdminError, type AdminView, type AdminWho } from './view.js';
import { invalidCommand, type CommandContext, type CommandHandler } from './commands/context.js';
import { show } from './commands/show.js';
import { CONTROL_COMMANDS } from './commands/control.js';
import { runSet } from './commands/set.js';

export { AdminError } from './view.js';
export type { AdminView, AdminWho } from './view.js';

/**
 * Command name (lower case) -> handler. SELECT is PgBouncer's alias of SHOW. What each one may
 * ask of the pooler is an operation of admin/operations.ts, which lists the commands that run it
 * (test/unit/admin-operations.test.ts checks the two lists agree).
 */
const COMMANDS: ReadonlyMap<string, CommandHandler> = new Map<string, CommandHandler>([
  ['show', show],
  ['select', show],
  ...CONTROL_COMMANDS,
]);

/** Every command the console answers, `set` (parsed on its own) included. */
export const CONSOLE_COMMAND_NAMES: readonly string[] = [...COMMANDS.keys(), 'set'];

function toErrorResponse(err: unknown): Buffer {
  if (err instanceof PgError) {
    // The console connection stays open, so whatever the source said, this is an ERROR.
    return errorResponse({ ...err.fields, severity: 'ERROR' });
  }
  const message = err instanceof Error ? err.message : String(err);
  return errorResponse({ severity: 'ERROR', code: SqlState.ProtocolViolation, message });
}

async function dispatch(ctx: CommandContext): Promise<Buffer> {
  // PgBouncer refuses anyone else at login ("not allowed"); refuse every query likewise.
  if (!ctx.who.isAdmin && !ctx.who.isStats) throw new AdminError('not allowed');
  const parsed = parseAdminQuery(ctx.query);
  switch (parsed.kind) {
    case 'invalid':
      throw invalidCommand(ctx.query);
    case 'bad_arguments':
      throw new AdminError('bad arguments');
    case 'set':
      return runSet(ctx, parsed.key, parsed.value);
    case 'command': {
      const handler = COMMANDS.get(parsed.command.toLowerCase());
      if (!handler) throw invalidCommand(ctx.query);
      return handler(ctx, parsed.arg);
    }
  }
}

/**
 * Runs one admin console query for `who` against the proxy's `view` and returns the answer
 * (RowDescription/DataRows/CommandComplete, or CommandComplete, or NoticeResponse +
 * CommandComplete, or ErrorResponse) without the final ReadyForQuery.
 */
export async function runAdminQuery(sql: string, view: AdminView, who: AdminWho): Promise<Buffer> {
  try {
    return await dispatch({ view, who, query: sql });
  } catch (err) {
    return toErrorResponse(err);
  }
}
