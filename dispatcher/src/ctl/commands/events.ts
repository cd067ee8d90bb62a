/** `dispatcherctl events [--follow]` and `boot-log NODE` (the boot timeline). */
import { InvalidArgumentError } from 'commander';
import type { CommandModule, CtlContext } from '../command.js';
import type { ClusterEvent, EventList } from '../../api/schemas.js';
import type { BootsReply } from '../../api/boots/schemas.js';
import { formatTime, table } from '../output.js';
import { CtlError, EXIT } from '../errors.js';

const DEFAULT_LIMIT = 50;

export const eventCommands: CommandModule = {
  register(program, ctl) {
    program
      .command('events')
      .description('recent cluster events (state changes, commands, boots, jobs); --follow streams new ones')
      .option('-f, --follow', 'keep printing events as they happen (Ctrl-C to stop)')
      .option('--node <node>', 'only events of this node')
      .option('--kind <prefix>', 'only events whose kind starts with this (node, node.state, boot, job...)')
      .option('-n, --limit <n>', `how many recent events to show first (default ${DEFAULT_LIMIT})`, (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 10_000) throw new InvalidArgumentError('expected 0-10000');
        return n;
      })
      .action(
        ctl.action(async (ctx, opts: { follow?: boolean; node?: string; kind?: string; limit?: number }) => {
          const limit = opts.limit ?? DEFAULT_LIMIT;
          const list =
            limit > 0 ? await ctx.api.get<EventList>('/api/v1/events', { node: opts.node, kind: opts.kind, limit }) : { events: [] };
          if (!opts.follow) {
            ctx.print(list, (l) => (l.events.length ? l.events.map((e) => eventLine(e, ctx.now())).join('\n') + '\n' : 'no events\n'));
            return EXIT.OK;
          }
          // Following: one JSON object per line with --json (ndjson), so a script can read it as it comes.
          for (const e of list.events) ctx.out(ctx.json ? JSON.stringify(e) : eventLine(e, ctx.now()));
          const last = list.events.at(-1)?.id;
          const stream = ctx.api.sse('/api/v1/events/stream', {
            query: { node: opts.node, kind: opts.kind, ...(last !== undefined ? { after: last } : {}) },
            ...(ctx.signal ? { signal: ctx.signal } : {}),
          });
          try {
            for await (const msg of stream) {
              if (msg.event !== 'event') continue;
              const e = JSON.parse(msg.data) as ClusterEvent;
              ctx.out(ctx.json ? JSON.stringify(e) : eventLine(e, ctx.now()));
            }
          } catch (err) {
            if (ctx.signal?.aborted) return EXIT.OK;
            throw err;
          }
          if (ctx.signal?.aborted) return EXIT.OK;
          throw new CtlError('CTL_STREAM_CUT', 'the dispatcher closed the event stream', {
            hint: 'it may have restarted; run the command again',
          });
        }),
      );

    program
      .command('boot-log')
      .description('how far the boots of a node got, stage by stage: DHCP, TFTP, boot script, kernel, initrd, agent hello')
      .argument('<node>', 'node name, MAC or UUID')
      .option('--boots <n>', 'how many of the latest boots (default 3)', (v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1 || n > 100) throw new InvalidArgumentError('expected 1-100');
        return n;
      })
      .action(
        ctl.action(async (ctx, node: string, opts: { boots?: number }) => {
          const r = await ctx.api.get<BootsReply>('/api/v1/boots', { node, boots: opts.boots ?? 3 });
          ctx.print(r, (x) => renderBoots(x, node, ctx));
        }),
      );
  },
};

export function eventLine(e: ClusterEvent, now: number): string {
  return `${formatTime(e.ts, now)}  ${(e.node ?? '-').padEnd(10)}  ${e.kind.padEnd(14)}  ${e.message}`;
}

export function renderBoots(r: BootsReply, node: string, ctx: Pick<CtlContext, 'now'>): string {
  const boots = r.boots;
  if (!boots.length) return `${node}: no boot recorded yet\n`;
  const out: string[] = [];
  for (const b of boots) {
    const t0 = b.stages[0]?.ts ?? 0;
    out.push(`boot #${b.boot}  ${b.stages.length ? formatTime(t0, ctx.now()) : ''}`);
    out.push(
      table(b.stages, [
        { header: '  +TIME', value: (s) => `  +${((s.ts - t0) / 1000).toFixed(3)}s`, right: true },
        { header: 'STAGE', value: (s) => s.stage },
        {
          header: 'DETAIL',
          value: (s) =>
            s.detail
              ? Object.entries(s.detail)
                  .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
                  .join(' ')
              : '',
        },
      ]).trimEnd(),
    );
  }
  return out.join('\n') + '\n';
}
