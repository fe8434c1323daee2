/**
 * The console's action commands, with PgBouncer's checks, messages and CommandComplete tags.
 * All of them need admin access; the database-name checks use the view's snapshots so the
 * proxy's actions only ever see databases that exist (or that "*" will create).
 */
import { PgError, SqlState } from '../../protocol/messages.js';
import { commandComplete } from '../wire.js';
import { AdminError, type ShutdownMode } from '../view.js';
import { ADMIN_DB, checkDatabase, invalidCommand, requireAdmin, type CommandContext, type CommandHandler } from './context.js';

function notWhilePaused(ctx: CommandContext): void {
  const s = ctx.view.state();
  if (s.paused || s.suspended) throw new AdminError('already suspended/paused');
}

/** Checks a database argument: known (or auto-registered through "*"), and not the console's own. */
function targetDatabase(ctx: CommandContext, db: string, autoRegister: boolean, refusal: string): void {
  checkDatabase(ctx, db, autoRegister);
  if (db === ADMIN_DB) throw new AdminError(`${refusal}: ${db}`);
}

const pause: CommandHandler = async (ctx, arg) => {
  requireAdmin(ctx);
  notWhilePaused(ctx);
  if (arg) targetDatabase(ctx, arg, true, 'cannot pause admin db');
  await ctx.view.pause(arg || undefined);
  return commandComplete('PAUSE');
};

const resume: CommandHandler = async (ctx, arg) => {
  requireAdmin(ctx);
  if (!arg) {
    const s = ctx.view.state();
    if (s.shuttingDown) throw new AdminError('pooler is shutting down');
    if (!s.paused && !s.suspended) throw new AdminError('pooler is not paused/suspended');
  } else {
    checkDatabase(ctx, arg, false);
    if (!ctx.view.databases().find((d) => d.name === arg)?.paused) throw new AdminError(`database ${arg} is not paused`);
  }
  await ctx.view.resume(arg || undefined);
  return commandComplete('RESUME');
};

const suspend: CommandHandler = async (ctx, arg) => {
  if (arg) throw invalidCommand(ctx.query);
  requireAdmin(ctx);
  notWhilePaused(ctx);
  if (ctx.view.databases().some((d) => d.paused)) throw new AdminError('cannot suspend with paused databases');
  if (!ctx.view.suspend) {
    throw new AdminError('SUSPEND is not supported', SqlState.FeatureNotSupported, 'Use PAUSE to stop handing out server connections.');
  }
  await ctx.view.suspend();
  return commandComplete('SUSPEND');
};

const reconnect: CommandHandler = async (ctx, arg) => {
  requireAdmin(ctx);
  if (arg) targetDatabase(ctx, arg, true, 'cannot reconnect admin db');
  await ctx.view.reconnect(arg || undefined);
  return commandComplete('RECONNECT');
};

const reload: CommandHandler = async (ctx, arg) => {
  if (arg) throw invalidCommand(ctx.query);
  requireAdmin(ctx);
  try {
    await ctx.view.reload();
  } catch (err) {
    if (err instanceof PgError) throw err;
    throw new AdminError('RELOAD failed, see logs for additional details', 'F0000', err instanceof Error ? err.message : String(err));
  }
  return commandComplete('RELOAD');
};

const kill: CommandHandler = async (ctx, arg) => {
  requireAdmin(ctx);
  notWhilePaused(ctx);
  if (arg) targetDatabase(ctx, arg, true, 'cannot kill admin db');
  await ctx.view.kill(arg || undefined);
  return commandComplete('KILL');
};

const killClient: CommandHandler = async (ctx, arg) => {
  requireAdmin(ctx);
  // PgBouncer reads the id with sscanf("%llu"): leading digits count, the rest is ignored.
  const m = /^[ \t\n\r]*\+?(\d+)/.exec(arg);
  const id = m ? Number(m[1]) : NaN;
  if (!Number.isSafeInteger(id)) throw new AdminError('invalid client pointer supplied');
  if (!(await ctx.view.killClient(id))) throw new AdminError('client not found');
  return commandComplete('KILL_CLIENT');
};

/** Session ids are positive bigints (tessera.sessions.session_id). */
const MAX_SESSION_ID = 2n ** 63n - 1n;

const killSession: CommandHandler = async (ctx, arg) => {
  requireAdmin(ctx);
  if (!/^[0-9]{1,19}$/.test(arg) || BigInt(arg) === 0n || BigInt(arg) > MAX_SESSION_ID) throw new AdminError('invalid session id supplied');
  if (!ctx.view.killSession) throw new AdminError('KILL_SESSION is not supported', SqlState.FeatureNotSupported);
  const result = await ctx.view.killSession(BigInt(arg).toString());
  const failed = result.errors[0];
  if (!result.ended && failed) {
    // The clients are gone either way; the session itself may still be usable: say so.
    throw new PgError({
      severity: 'ERROR',
      code: failed.code,
      message: `KILL_SESSION disconnected ${result.clients} client(s) but could not end the session: ${failed.message}`,
      hint: failed.code === '42501' /* insufficient_privilege */ ? 'The pool role needs EXECUTE on tessera.end_session_admin: grant tessera_admin to it.' : failed.hint,
    });
  }
  if (!result.ended && result.clients === 0) throw new AdminError('session not found');
  return commandComplete('KILL_SESSION');
};

const SHUTDOWN_MODES: Record<string, ShutdownMode> = {
  '': 'immediate',
  wait_for_servers: 'wait_for_servers',
  wait_for_clients: 'wait_for_clients',
};

const shutdown: CommandHandler = async (ctx, arg) => {
  const mode = SHUTDOWN_MODES[arg.toLowerCase()];
  if (!mode) throw invalidCommand(ctx.query);
  requireAdmin(ctx);
  await ctx.view.shutdown(mode);
  return commandComplete('SHUTDOWN');
};

const waitClose: CommandHandler = async (ctx, arg) => {
  requireAdmin(ctx);
  if (arg) targetDatabase(ctx, arg, true, 'cannot wait in admin db');
  await ctx.view.waitClose(arg || undefined);
  return commandComplete('WAIT_CLOSE');
};

const enable: CommandHandler = async (ctx, arg) => {
  requireAdmin(ctx);
  if (!arg) throw new AdminError('a database is required');
  targetDatabase(ctx, arg, false, 'cannot enable admin db');
  await ctx.view.enable(arg);
  return commandComplete('ENABLE');
};

const disable: CommandHandler = async (ctx, arg) => {
  requireAdmin(ctx);
  if (!arg) throw new AdminError('a database is required');
  targetDatabase(ctx, arg, true, 'cannot disable admin db');
  await ctx.view.disable(arg);
  return commandComplete('DISABLE');
};

export const CONTROL_COMMANDS: ReadonlyMap<string, CommandHandler> = new Map<string, CommandHandler>([
  ['disable', disable],
  ['enable', enable],
  ['kill', kill],
  ['kill_client', killClient],
  ['kill_session', killSession],
  ['pause', pause],
  ['reconnect', reconnect],
  ['reload', reload],
  ['resume', resume],
  ['shutdown', shutdown],
  ['suspend', suspend],
  ['wait_close', waitClose],
]);
