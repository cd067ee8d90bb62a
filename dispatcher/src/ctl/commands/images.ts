/**
 * `dispatcherctl images`: the images served, their versions (released, newest) and nodes;
 * `images rollout NAME` moves an image's nodes onto its newest build, canaries first;
 * `images rollback NAME` returns them to the version released before.
 */
import { InvalidArgumentError } from 'commander';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CommandModule, CtlContext } from '../command.js';
import type { ImageView, RolloutView } from '../../api/images/schemas.js';
import type { OperationView } from '../../api/schemas.js';
import { EXIT } from '../errors.js';
import { formatBytes, formatDuration, table } from '../output.js';

const POLL_MS = 1000;

export const imageCommands: CommandModule = {
  register(program, ctl) {
    const images = program
      .command('images')
      .description('the images served: versions (* released, newest last), size, source, the nodes on each')
      .action(
        ctl.action(async (ctx) => {
          const list = await ctx.api.get<{ images: ImageView[] }>('/api/v1/images');
          ctx.print(list, (l) => (l.images.length ? l.images.map(imageText).join('\n') : 'no image is built: run `make image`\n'));
        }),
      );

    images
      .command('rollout')
      .description("move an image's nodes onto its newest build: the canaries first (back and health check passed), then the rest")
      .argument('<image>', 'image name')
      .option('--canary <n>', 'nodes moved and checked first (default 1)', positiveInt)
      .option('--batch <n>', 'nodes rebooted at a time after the canaries (default 1)', positiveInt)
      .option('--firmware', 'reboot through the firmware (POST and PXE), not kexec')
      .option('--no-wait', 'start it and return (follow it with `dispatcherctl images`)')
      .action(
        ctl.action(async (ctx, image: string, opts: { canary?: number; batch?: number; firmware?: boolean; wait: boolean }) => {
          const body = {
            ...(opts.canary ? { canary: opts.canary } : {}),
            ...(opts.batch ? { batch: opts.batch } : {}),
            ...(opts.firmware ? { firmware: true } : {}),
          };
          const r = await ctx.api.post<RolloutView>(`/api/v1/images/${encodeURIComponent(image)}/rollout`, body);
          return follow(ctx, r, opts.wait);
        }),
      );

    images
      .command('rollback')
      .description('release the version of an image released before, and reboot its nodes onto it')
      .argument('<image>', 'image name')
      .option('--batch <n>', 'nodes rebooted at a time (default 1)', positiveInt)
      .option('--firmware', 'reboot through the firmware (POST and PXE), not kexec')
      .option('--no-wait', 'start it and return (follow it with `dispatcherctl images`)')
      .action(
        ctl.action(async (ctx, image: string, opts: { batch?: number; firmware?: boolean; wait: boolean }) => {
          const body = { ...(opts.batch ? { batch: opts.batch } : {}), ...(opts.firmware ? { firmware: true } : {}) };
          const r = await ctx.api.post<RolloutView>(`/api/v1/images/${encodeURIComponent(image)}/rollback`, body);
          return follow(ctx, r, opts.wait);
        }),
      );
  },
};

function imageText(img: ImageView): string {
  const versions = table([...img.versions].reverse(), [
    { header: 'VERSION', value: (v) => `${v.version}${v.released ? ' *' : ''}${v.newest ? ' (newest)' : ''}` },
    { header: 'SIZE', value: (v) => formatBytes(v.bytes), right: true },
    { header: 'SOURCE', value: (v) => v.source },
    { header: 'HEALTH CHECK', value: (v) => v.health ?? '-' },
  ]);
  const nodes = img.nodes.length
    ? img.nodes
        .map((n) => `${n.name} ${n.running ?? '-'}${n.stale ? ' (stale)' : ''}${n.next && n.next !== n.running ? ` → ${n.next}` : ''}`)
        .join(', ')
    : 'none';
  const rollout = img.rollout
    ? `  ${img.rollout.kind} ${img.rollout.from} → ${img.rollout.to}: ${img.rollout.state}: ${img.rollout.message}\n`
    : '';
  return `${img.name}  (${img.dir})\n${indent(versions)}  nodes: ${nodes}\n${rollout}`;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => (l ? `  ${l}` : l))
    .join('\n');
}

/** Prints the rollout's steps (and its rolling reboots' nodes) until it ends; exit 1 unless it is done. */
async function follow(ctx: CtlContext, start: RolloutView, wait: boolean): Promise<number> {
  if (!wait) {
    ctx.print(start, (r) => `${r.kind} of ${r.image} started: ${r.from} → ${r.to}\n`);
    return EXIT.OK;
  }
  if (!ctx.json) ctx.out(`${start.kind} of ${start.image}: ${start.from} → ${start.to}`);
  let cur = start;
  let said = '';
  const phases = new Map<string, string>();
  for (;;) {
    if (!ctx.json) {
      if (cur.message !== said) ctx.out(`  ${cur.state}: ${cur.message}`);
      said = cur.message;
      for (const id of cur.operations) {
        const op = await ctx.api.get<OperationView>(`/api/v1/operations/${id}`).catch(() => undefined);
        for (const n of op?.nodes ?? []) {
          const key = `${id}:${n.name}`;
          if (phases.get(key) === n.phase || n.phase === 'waiting') continue;
          phases.set(key, n.phase);
          ctx.out(`    ${n.name}: ${n.phase}${n.error ? `: ${n.error}` : ''}`);
        }
      }
    }
    if (cur.finishedAt !== null) break;
    try {
      await sleep(POLL_MS, undefined, ctx.signal ? { signal: ctx.signal } : {});
    } catch {
      ctx.err(`dispatcherctl: stopped following; the ${cur.kind} goes on in the dispatcher (watch it: dispatcherctl images)`);
      return EXIT.FAILED;
    }
    const list = await ctx.api.get<{ images: ImageView[] }>('/api/v1/images');
    cur = list.images.find((i) => i.name === start.image)?.rollout ?? cur;
  }
  const took = formatDuration((cur.finishedAt ?? ctx.now()) - cur.startedAt);
  ctx.print(cur, (r) => `${r.kind} of ${r.image} ${r.state} in ${took}: ${r.message}\n`);
  return cur.state === 'done' ? EXIT.OK : EXIT.FAILED;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}
