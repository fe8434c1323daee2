/**
 * SET key = value. As PgBouncer: the parameters drivers set on every connection
 * (client_encoding, DateStyle, ...) are acknowledged with a "SET ignored" notice for anyone;
 * real settings need admin access and must be SHOW CONFIG keys that are changeable.
 */
import { noticeResponse, SqlState } from '../../protocol/messages.js';
import { commandComplete } from '../wire.js';
import { AdminError } from '../view.js';
import { requireAdmin, type CommandContext } from './context.js';
import { configRows, FAKE_PARAMS } from './show.js';

export async function runSet(ctx: CommandContext, key: string, value: string): Promise<Buffer> {
  if (FAKE_PARAMS.has(key.toLowerCase())) {
    return Buffer.concat([noticeResponse({ severity: 'NOTICE', code: '00000', message: 'SET ignored' }), commandComplete('SET')]);
  }
  requireAdmin(ctx);
  const row = configRows(ctx.view.config()).find((r) => r.key.toLowerCase() === key.toLowerCase());
  if (!row) throw new AdminError('SET failed', SqlState.ProtocolViolation, `unknown parameter "${key}"`);
  if (!row.changeable) throw new AdminError('SET failed', SqlState.ProtocolViolation, `"${row.key}" cannot be changed while running`);
  if (!ctx.view.set) {
    throw new AdminError(
      `SET ${row.key} is not supported yet`,
      SqlState.FeatureNotSupported,
      'Change the setting in the configuration file and run RELOAD.',
    );
  }
  await ctx.view.set(row.key, value);
  return commandComplete(`SET ${row.key}=${value}`);
}
