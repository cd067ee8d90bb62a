/** `dispatcherctl nodes`, `inspect NODE`, `approve NODE...`. */
import { Option } from 'commander';
import type { CommandModule, CtlContext } from '../command.js';
import type { ActionResult, InspectResult, NodeDetail, NodeList, NodeView } from '../../api/schemas.js';
import { NODE_STATES } from '../../api/schemas.js';
import { formatAgo, formatDuration, formatMiB, keyValues, table, type Column } from '../output.js';
import { EXIT, usageError } from '../errors.js';

/** Longer than the dispatcher's own wait for the snapshot (30 s), so its answer arrives first. */
const INSPECT_TIMEOUT_MS = 45_000;

export const nodeCommands: CommandModule = {
  register(program, ctl) {
    program
      .command('nodes')
      .description('list nodes: state, addresses, image, CPU, memory, load, tasks, heartbeat')
      .addOption(new Option('--state <state>', 'only nodes in this state').choices(NODE_STATES))
      .option('--label <label>', 'only nodes with this label')
      .option('-q, --quiet', 'print node names only, one a line')
      .option('-w, --wide', 'more columns: UUID, agent version, boot count, labels, GPUs, whether cgroups enforce requests')
      .action(
        ctl.action(async (ctx, opts: { state?: string; label?: string; quiet?: boolean; wide?: boolean }) => {
          const list = await ctx.api.get<NodeList>('/api/v1/nodes', { state: opts.state, label: opts.label });
          if (opts.quiet && !ctx.json) return ctx.out(list.nodes.map((x) => x.name).join('\n'));
          ctx.print(list, (l) =>
            l.nodes.length ? nodeTable(l.nodes, ctx.now(), opts.wide === true) : 'no nodes yet: power a machine on in the node network\n',
          );
        }),
      );

    program
      .command('inspect')
      .description("ask a node's agent for a full snapshot: hardware, OS, load, memory, temperatures")
      .argument('<node>', 'node name, MAC or UUID')
      .action(
        ctl.action(async (ctx, node: string) => {
          // The agent gathers a full systeminformation snapshot: seconds on a busy machine.
          const r = await ctx.api.request<InspectResult>('GET', `/api/v1/nodes/${encodeURIComponent(node)}/inspect`, {
            timeoutMs: INSPECT_TIMEOUT_MS,
          });
          ctx.print(
            r,
            (x) =>
              `${x.node} (answered in ${x.ackMs} ms)\n${flatten(x.snapshot)
                .map(([k, v]) => `${k}: ${v}`)
                .join('\n')}\n`,
          );
        }),
      );

    program
      .command('set')
      .description(
        'change per-node settings: labels, UEFI first stage, fixed address, image (cluster-file nodes: the file wins at the next start)',
      )
      .argument('<node>', 'node name, MAC or UUID')
      .option('--labels <list>', 'comma-separated labels, replacing the current ones ("" for none)')
      .addOption(
        new Option(
          '--first-stage <file>',
          'UEFI first stage: snponly.efi for NICs whose UEFI driver needs it; "default" for ipxe.efi',
        ).choices(['ipxe.efi', 'snponly.efi', 'default']),
      )
      .option('--ip <address>', 'fixed address (a DHCP reservation), or "none"')
      .option('--image <name>', 'the image it boots from its next boot (`dispatcherctl images`), or "none" for its labels\' or the default')
      .action(
        ctl.action(async (ctx, node: string, opts: { labels?: string; firstStage?: string; ip?: string; image?: string }) => {
          const body: Record<string, unknown> = {};
          if (opts.labels !== undefined)
            body.labels = opts.labels
              .split(',')
              .map((l) => l.trim())
              .filter((l) => l.length > 0);
          if (opts.firstStage !== undefined) body.firstStage = opts.firstStage === 'default' ? null : opts.firstStage;
          if (opts.ip !== undefined) body.fixedIp = opts.ip === 'none' ? null : opts.ip;
          if (opts.image !== undefined) body.image = opts.image === 'none' ? null : opts.image;
          if (Object.keys(body).length === 0) throw usageError('nothing to change', 'give --labels, --first-stage, --ip or --image');
          const n = await ctx.api.patch<NodeDetail>(`/api/v1/nodes/${encodeURIComponent(node)}`, body);
          ctx.print(n, (x) =>
            keyValues([
              ['node', x.name],
              ['labels', x.labels.join(',') || '-'],
              ['first stage', x.firstStage ?? 'default'],
              ['fixed ip', x.fixedIp ?? '-'],
              ['image', `${x.image.image} (next boot: ${x.image.next ?? 'not built'})`],
            ]),
          );
        }),
      );

    program
      .command('health')
      .description("nodes' health checks and suspect drains: one node's check output and evidence, or every node that has either")
      .argument('[node]', 'node name, MAC or UUID')
      .action(
        ctl.action(async (ctx, node: string | undefined) => {
          if (node !== undefined) {
            const n = await ctx.api.get<NodeDetail>(`/api/v1/nodes/${encodeURIComponent(node)}`);
            return ctx.print(n, (x) => healthDetail(x, ctx.now()));
          }
          const list = await ctx.api.get<NodeList>('/api/v1/nodes');
          const shown = list.nodes.filter((x) => x.health || x.suspect);
          ctx.print({ nodes: shown }, (l) =>
            l.nodes.length ? healthTable(l.nodes, ctx.now()) : 'no health check reported and no suspect node\n',
          );
        }),
      );

    program
      .command('approve')
      .description('admit nodes waiting for approval (cluster file enrollment: approve)')
      .argument('<node...>', 'node names, MACs or UUIDs')
      .action(ctl.action(async (ctx, nodes: string[]) => perNode(ctx, nodes, 'approve')));
  },
};

/** Runs one node action on each node (in parallel), prints each outcome; exit 1 if any failed. */
export async function perNode(ctx: CtlContext, nodes: readonly string[], action: string, body: unknown = {}): Promise<number> {
  const settled = await Promise.allSettled(
    nodes.map((node) => ctx.api.post<ActionResult>(`/api/v1/nodes/${encodeURIComponent(node)}/${action}`, body)),
  );
  const results: ActionResult[] = [];
  const failures: { node: string; error: { code: string; message: string; hint?: string } }[] = [];
  let exit: number = EXIT.OK;
  settled.forEach((s, i) => {
    if (s.status === 'fulfilled') results.push(s.value);
    else {
      const e = s.reason as { code?: string; message?: string; hint?: string; exitCode?: number };
      failures.push({
        node: nodes[i]!,
        error: { code: e.code ?? 'CTL_INTERNAL', message: e.message ?? String(e), ...(e.hint ? { hint: e.hint } : {}) },
      });
      // Unreachable or unauthorized is the same for every node: keep the most specific exit code.
      exit = Math.max(exit, e.exitCode ?? EXIT.FAILED);
    }
  });
  if (ctx.json) ctx.out(JSON.stringify({ results, failures }, null, 2));
  else {
    for (const r of results) ctx.out(`${r.node}: ${r.message}`);
    for (const f of failures) ctx.err(`dispatcherctl: ${f.node}: ${f.error.message}${f.error.hint ? `\n  hint: ${f.error.hint}` : ''}`);
  }
  return exit;
}

export function nodeTable(nodes: readonly NodeView[], now: number, wide = false): string {
  const cols: Column<NodeView>[] = [
    { header: 'NAME', value: (x) => x.name + (x.enrollment === 'pending' ? ' (pending)' : '') },
    // `!health`: its health check fails; `!suspect`: drained as a black hole (`dispatcherctl health NODE` says why).
    { header: 'STATE', value: (x) => `${x.state}${x.health && !x.health.ok ? ' !health' : ''}${x.suspect ? ' !suspect' : ''}` },
    { header: 'MAC', value: (x) => x.mac },
    { header: 'IP', value: (x) => x.ip },
    // `*`: a newer build of its image exists (stale); `→ next`: its next boot gets another image or version.
    {
      header: 'IMAGE',
      value: (x) =>
        x.imageVersion === null
          ? null
          : `${x.imageVersion}${x.image.stale ? '*' : ''}${x.image.next && x.imageVersion.includes('@') && x.image.next !== x.imageVersion ? ` → ${x.image.next}` : ''}`,
    },
    { header: 'CPU', value: (x) => (x.cpu && x.cpu.length > 28 ? x.cpu.slice(0, 27) + '…' : x.cpu) },
    { header: 'CORES', value: (x) => x.cores, right: true },
    {
      header: 'MEM',
      value: (x) =>
        x.memUsedMiB !== null && x.memoryMiB ? `${formatMiB(x.memUsedMiB)}/${formatMiB(x.memoryMiB)}` : formatMiB(x.memoryMiB),
    },
    { header: 'LOAD', value: (x) => (x.load1 === null ? null : x.load1.toFixed(2)), right: true },
    { header: 'TASKS', value: (x) => (x.connected ? `${x.tasks.length}/${x.slots ?? '?'}` : null), right: true },
    // Allocated to running tasks / handed out by the agent (their requests, `submit --cores --mem`).
    {
      header: 'ALLOC CORES',
      value: (x) => (x.resources ? `${x.resources.cores.allocated}/${x.resources.cores.total}` : null),
      right: true,
    },
    {
      header: 'ALLOC MEM',
      value: (x) => (x.resources ? `${formatMiB(x.resources.memoryMiB.allocated)}/${formatMiB(x.resources.memoryMiB.total)}` : null),
      right: true,
    },
    { header: 'UPTIME', value: (x) => (x.uptimeS === null ? null : formatDuration(x.uptimeS * 1000)) },
    { header: 'HEARTBEAT', value: (x) => formatAgo(x.lastHeartbeat, now) },
  ];
  if (wide)
    cols.push(
      { header: 'BOOTS', value: (x) => x.bootCount, right: true },
      { header: 'AGENT', value: (x) => x.agentVersion },
      { header: 'UUID', value: (x) => x.uuid },
      { header: 'LABELS', value: (x) => x.labels.join(',') },
      { header: 'GPUS', value: (x) => (x.resources?.gpus ? `${x.resources.gpus.allocated}/${x.resources.gpus.total}` : null) },
      { header: 'LIMITS', value: (x) => (x.resources ? (x.resources.enforced ? 'cgroup' : 'none') : null) },
    );
  return table(nodes, cols);
}

function healthTable(nodes: readonly NodeView[], now: number): string {
  return table(nodes, [
    { header: 'NAME', value: (x) => x.name },
    { header: 'STATE', value: (x) => x.state },
    { header: 'HEALTH', value: (x) => (x.health ? (x.health.ok ? 'ok' : 'FAILED') : null) },
    { header: 'SINCE', value: (x) => (x.health ? formatAgo(x.health.at, now) : null) },
    { header: 'CHECKED', value: (x) => (x.health?.checkedAt !== undefined ? formatAgo(x.health.checkedAt, now) : null) },
    { header: 'SUSPECT', value: (x) => (x.suspect ? `${x.suspect.failures.length} failed in a row` : null) },
    {
      header: 'OUTPUT',
      value: (x) => {
        const line = x.health && !x.health.ok ? (x.health.output.split('\n').find((l) => l.trim()) ?? '') : '';
        return line.length > 60 ? line.slice(0, 59) + '…' : line || null;
      },
    },
  ]);
}

function healthDetail(x: NodeDetail, now: number): string {
  let out = keyValues([
    ['node', x.name],
    ['state', x.state],
    ['health', x.health ? `${x.health.ok ? 'passes' : 'FAILS'} since ${formatAgo(x.health.at, now)}` : 'no check reported'],
    ['checked', x.health?.checkedAt !== undefined ? formatAgo(x.health.checkedAt, now) : null],
  ]);
  if (x.health?.output) out += `--- health check output\n${x.health.output}${x.health.output.endsWith('\n') ? '' : '\n'}`;
  const s = x.suspect;
  if (s) {
    out += `--- suspect since ${formatAgo(s.at, now)}: ${s.failures.length} tasks in a row failed here (\`dispatcherctl undrain ${x.name}\` clears it)\n`;
    for (const f of s.failures)
      out += `task ${f.taskId} (job ${f.jobId}, attempt ${f.attempt}): ${f.exitCode !== null ? `exit ${f.exitCode}` : (f.error ?? 'error')}\n`;
    for (const e of s.succeededElsewhere) out += `job ${e.jobId} succeeded on ${e.nodes.join(', ')}\n`;
  }
  return out;
}

/** An inspect snapshot as `a.b.c: value` lines (arrays of scalars joined, long lists cut). */
export function flatten(value: unknown, prefix = '', out: [string, string][] = [], depth = 0): [string, string][] {
  if (value === null || value === undefined) {
    if (prefix) out.push([prefix, '-']);
  } else if (Array.isArray(value)) {
    if (value.every((v) => v === null || typeof v !== 'object')) out.push([prefix, value.join(', ') || '-']);
    else value.slice(0, 32).forEach((v, i) => flatten(v, `${prefix}[${i}]`, out, depth + 1));
  } else if (typeof value === 'object' && depth < 6) {
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) flatten(v, prefix ? `${prefix}.${k}` : k, out, depth + 1);
  } else out.push([prefix, typeof value === 'object' ? JSON.stringify(value) : String(value)]);
  return out;
}

export { keyValues };
