/**
 * `dispatcherctl boot-servers` (every boot server of another segment and its state) and
 * `dispatcherctl boot-server add|remove NAME` (its token, shown once; removing revokes it).
 */
import type { CommandModule } from '../command.js';
import type { BootServerAdded, BootServerList, BootServerView } from '../../api/boot-servers/schemas.js';
import { formatAgo, formatBytes, keyValues, table } from '../output.js';

export const bootServerCommands: CommandModule = {
  register(program, ctl) {
    program
      .command('boot-servers')
      .description('boot servers of other segments: state, address, cache (files, bytes, refused), latest error')
      .action(
        ctl.action(async (ctx) => {
          const l = await ctx.api.get<BootServerList>('/api/v1/boot-servers');
          const now = ctx.now();
          ctx.print(l, (x) =>
            x.bootServers.length
              ? table(x.bootServers, [
                  { header: 'NAME', value: (b) => b.name },
                  { header: 'STATE', value: (b) => b.state },
                  { header: 'ADDRESS', value: (b) => b.address ?? '-' },
                  { header: 'URL', value: (b) => b.report?.url ?? '-' },
                  { header: 'LAST SEEN', value: (b) => formatAgo(b.lastSeen, now) ?? '-' },
                  {
                    header: 'CACHE',
                    value: (b) => (b.report ? `${b.report.cache.files} files, ${formatBytes(b.report.cache.bytes)}` : '-'),
                  },
                  { header: 'REFUSED', value: (b) => String(b.report?.cache.refused ?? '-') },
                  { header: 'SCRIPTS', value: (b) => String(b.scripts) },
                  { header: 'LAST ERROR', value: lastError },
                ])
              : 'no boot servers: dispatcherctl boot-server add NAME\n',
          );
        }),
      );

    const one = program.command('boot-server').description('register or remove a boot server of another segment');
    one
      .command('add')
      .description('register a boot server; prints its token (once): the boot server reads it from <data-dir>/leader.token')
      .argument('<name>', 'a-z, 0-9 and -')
      .action(
        ctl.action(async (ctx, name: string) => {
          const r = await ctx.api.post<BootServerAdded>('/api/v1/boot-servers', { name });
          ctx.print(r, (x) =>
            keyValues([
              ['name', x.name],
              ['token', x.token],
              [
                'next',
                'write the token to <data-dir>/leader.token (mode 0600) on the boot server, then start it with --role boot --leader URL',
              ],
            ]),
          );
        }),
      );
    one
      .command('remove')
      .description('remove a boot server: its token stops working at once')
      .argument('<name>', 'boot server name')
      .action(
        ctl.action(async (ctx, name: string) => {
          const r = await ctx.api.delete<{ name: string }>(`/api/v1/boot-servers/${encodeURIComponent(name)}`);
          ctx.print(r, (x) => `removed boot server ${x.name}\n`);
        }),
      );
  },
};

function lastError(b: BootServerView): string {
  const e = b.report?.errors.at(-1);
  return e ? e.message.slice(0, 80) : '-';
}
