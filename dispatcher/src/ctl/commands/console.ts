/** `dispatcherctl console NODE [--follow] [--kernel | --serial] [--lines N]`: a node's captured console. */
import { InvalidArgumentError, Option } from 'commander';
import type { CommandModule } from '../command.js';
import type { ConsoleLineView, ConsoleReply } from '../../api/console/schemas.js';
import { formatTime } from '../output.js';
import { CtlError, EXIT } from '../errors.js';

const DEFAULT_LINES = 50;

export const consoleCommands: CommandModule = {
  register(program, ctl) {
    program
      .command('console')
      .description("a node's last console lines: its kernel's messages (netconsole) and serial console, kept after it died")
      .argument('<node>', 'node name, MAC or UUID')
      .option('-f, --follow', 'keep printing lines as they arrive (Ctrl-C to stop)')
      .addOption(new Option('-k, --kernel', 'only kernel messages (netconsole)').conflicts('serial'))
      .option('-s, --serial', 'only the serial console (Serial-over-LAN through the BMC)')
      .option('-n, --lines <n>', `how many of the last lines to show first (default ${DEFAULT_LINES})`, (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 10_000) throw new InvalidArgumentError('expected 0-10000');
        return n;
      })
      .action(
        ctl.action(async (ctx, node: string, opts: { follow?: boolean; kernel?: boolean; serial?: boolean; lines?: number }) => {
          const limit = opts.lines ?? DEFAULT_LINES;
          const source = opts.kernel ? { kernel: true } : opts.serial ? { serial: true } : {};
          const r = await ctx.api.get<ConsoleReply>(`/api/v1/nodes/${encodeURIComponent(node)}/console`, {
            ...source,
            limit: Math.max(1, limit),
          });
          const shown = limit > 0 ? r.lines : [];
          const line = (l: ConsoleLineView) => (ctx.json ? JSON.stringify(l) : consoleLine(l, ctx.now()));
          if (!opts.follow) {
            ctx.print({ ...r, lines: shown }, (x) =>
              x.lines.length
                ? x.lines.map((l) => consoleLine(l, ctx.now())).join('\n') + '\n'
                : `${x.node}: no console lines captured yet\n`,
            );
            return EXIT.OK;
          }
          // Following: one JSON object per line with --json (ndjson).
          for (const l of shown) ctx.out(line(l));
          const last = r.lines.at(-1)?.id ?? 0;
          const stream = ctx.api.sse(`/api/v1/nodes/${encodeURIComponent(node)}/console/stream`, {
            query: { ...source, after: last },
            ...(ctx.signal ? { signal: ctx.signal } : {}),
          });
          try {
            for await (const msg of stream) if (msg.event === 'line') ctx.out(line(JSON.parse(msg.data) as ConsoleLineView));
          } catch (err) {
            if (ctx.signal?.aborted) return EXIT.OK;
            throw err;
          }
          if (ctx.signal?.aborted) return EXIT.OK;
          throw new CtlError('CTL_STREAM_CUT', 'the dispatcher closed the console stream', {
            hint: 'it may have restarted; run the command again',
          });
        }),
      );
  },
};

export function consoleLine(l: ConsoleLineView, now: number): string {
  return `${formatTime(l.ts, now)}  ${l.source === 'kernel' ? 'kernel' : 'serial'}  ${l.text}`;
}
