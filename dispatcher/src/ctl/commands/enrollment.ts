/** `dispatcherctl enroll-token create|list|revoke` and `dispatcherctl forget NODE`. */
import type { CommandModule } from '../command.js';
import type { ActionResult } from '../../api/schemas.js';
import type { EnrollTokenCreated, EnrollTokenList } from '../../api/enrollment/schemas.js';
import { formatAgo, keyValues, table } from '../output.js';
import { usageError } from '../errors.js';

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };

/** `90s`, `30m`, `12h`, `7d` → seconds. */
export function parseLifetime(text: string): number {
  const m = /^(\d+)([smhd])$/.exec(text.trim());
  if (!m) throw usageError(`--expires ${text}: expected a number and a unit, like 30m, 12h or 7d`);
  return Math.round((Number(m[1]) * UNIT_MS[m[2]!]!) / 1000);
}

export const enrollmentCommands: CommandModule = {
  register(program, ctl) {
    const tokens = program.command('enroll-token').description('enrollment tokens for hosts that do not PXE-boot (one MAC each, expiring)');
    tokens
      .command('create')
      .description('create a token (printed once): the agent joins with --enroll-token TOKEN')
      .option('--mac <mac>', 'the MAC it admits (default: the first MAC that uses it)')
      .option('--expires <lifetime>', 'lifetime: 30m, 12h, 7d (default 1d)')
      .action(
        ctl.action(async (ctx, opts: { mac?: string; expires?: string }) => {
          const body = { ...(opts.mac ? { mac: opts.mac } : {}), ...(opts.expires ? { expiresSeconds: parseLifetime(opts.expires) } : {}) };
          const r = await ctx.api.post<EnrollTokenCreated>('/api/v1/enrollment-tokens', body);
          ctx.print(r, (x) =>
            keyValues([
              ['token', x.token],
              ['id', x.info.id],
              ['admits', x.info.mac ?? 'the first MAC that uses it'],
              ['expires', new Date(x.info.expiresAt).toISOString()],
            ]),
          );
        }),
      );
    tokens
      .command('list')
      .description('list enrollment tokens (ids, MACs, expiry; never the tokens)')
      .action(
        ctl.action(async (ctx) => {
          const l = await ctx.api.get<EnrollTokenList>('/api/v1/enrollment-tokens');
          const now = ctx.now();
          ctx.print(l, (x) =>
            x.tokens.length
              ? table(x.tokens, [
                  { header: 'ID', value: (t) => t.id },
                  { header: 'MAC', value: (t) => t.mac ?? '(first to use it)' },
                  { header: 'EXPIRES', value: (t) => (t.expiresAt < now ? 'expired' : new Date(t.expiresAt).toISOString()) },
                  { header: 'USED', value: (t) => formatAgo(t.usedAt, now) ?? '-' },
                ])
              : 'no enrollment tokens\n',
          );
        }),
      );
    tokens
      .command('revoke')
      .description('revoke an enrollment token')
      .argument('<id>', 'token id (from enroll-token list)')
      .action(
        ctl.action(async (ctx, id: string) => {
          const r = await ctx.api.delete<{ id: string }>(`/api/v1/enrollment-tokens/${encodeURIComponent(id)}`);
          ctx.print(r, (x) => `revoked ${x.id}\n`);
        }),
      );

    program
      .command('forget')
      .description('forget a node that is not connected: its record, lease, boot stages and tokens')
      .argument('<node>', 'node name, MAC or UUID')
      .action(
        ctl.action(async (ctx, node: string) => {
          const r = await ctx.api.delete<ActionResult>(`/api/v1/nodes/${encodeURIComponent(node)}`);
          ctx.print(r, (x) => `${x.message}\n`);
        }),
      );
  },
};
