/**
 * `dispatcherctl power status|on|off|cycle|reset NODE...`: a node's power through its BMC
 * (cluster file: bmc, or a bmcs group), whatever its agent's state.
 * `dispatcherctl power policy`: what the queue's power policy would do now (a dry run).
 */
import type { CommandModule, CtlContext } from '../command.js';
import type { PowerPolicyView, PowerView } from '../../api/power/schemas.js';
import type { NodeList } from '../../api/schemas.js';
import { EXIT, usageError } from '../errors.js';

const OPS = ['status', 'on', 'off', 'cycle', 'reset'] as const;
type Op = (typeof OPS)[number];

export const powerCommands: CommandModule = {
  register(program, ctl) {
    program
      .command('power')
      .description("read or change nodes' power through their BMCs (IPMI or Redfish): status, on, off, cycle, reset")
      .argument('<action>', `${OPS.join(' | ')} | policy`)
      .argument('[node...]', 'node names, MACs or UUIDs (none for policy)')
      .option('--all', 'every admitted node that has a BMC')
      .option('-l, --label <label>', 'every admitted node with this label that has a BMC')
      .addHelpText(
        'after',
        '\noff, cycle and reset are hard: the OS is not asked. A BMC that failed is not called again for a while (back-off).\n' +
          "`power policy` shows what the queue's power policy (cluster file powerPolicy) would do now, node by node; it changes nothing.\n" +
          'With --all or --label, nodes without a BMC are skipped and named.\n' +
          'Examples:\n  dispatcherctl power status node1 node2\n  dispatcherctl power status --all\n  dispatcherctl power off --label rack3\n' +
          '  dispatcherctl power cycle node7\n  dispatcherctl power policy',
      )
      .action(
        ctl.action(async (ctx, action: string, nodes: string[], opts: { all?: boolean; label?: string }) => {
          const selected = opts.all || opts.label !== undefined;
          if (action === 'policy') {
            if (nodes.length || selected) throw usageError('power policy takes no node', 'dispatcherctl power policy');
            return policy(ctx);
          }
          if (!(OPS as readonly string[]).includes(action))
            throw usageError(`unknown power action "${action}"`, `one of ${OPS.join(', ')}, policy; e.g. dispatcherctl power status node1`);
          if (selected && nodes.length) throw usageError('give nodes, or --all / --label, not both', `dispatcherctl power ${action} --all`);
          if (!selected && !nodes.length)
            throw usageError(`power ${action} needs at least one node, --all or --label`, `dispatcherctl power ${action} node1`);
          return power(ctx, action as Op, selected ? await selectNodes(ctx, opts.label) : nodes, selected);
        }),
      );
  },
};

/** The policy's dry run: one line per node, actions first. */
async function policy(ctx: CtlContext): Promise<number> {
  const v = await ctx.api.get<PowerPolicyView>('/api/v1/power/policy');
  if (ctx.json) {
    ctx.out(JSON.stringify(v, null, 2));
    return EXIT.OK;
  }
  if (!v.enabled) {
    ctx.out('no power policy: the cluster file has no powerPolicy (see dispatcher/README.md)');
    return EXIT.OK;
  }
  for (const g of v.groups)
    ctx.out(`group ${g.name}: off after ${g.idleOffSeconds} s idle, at least ${g.minOn} on, boot timeout ${g.bootTimeoutSeconds} s`);
  ctx.out(`${v.queued} task(s) queued`);
  const order = { on: 0, off: 1, unreachable: 2, hold: 3 } as const;
  const width = Math.max(4, ...v.decisions.map((d) => d.node.length));
  for (const d of [...v.decisions].sort((a, b) => order[a.action] - order[b.action] || a.node.localeCompare(b.node))) {
    const what = d.action === 'hold' ? 'stays' : d.action === 'unreachable' ? 'unreachable' : `power ${d.action}`;
    const via = d.via
      ? ` (${d.via === 'bmc' ? 'BMC' : d.via === 'wol' ? 'Wake-on-LAN' : 'agent'}${d.attempt ? `, try ${d.attempt}` : ''})`
      : '';
    ctx.out(`${d.node.padEnd(width)}  ${what}${via}: ${d.reason}`);
  }
  return EXIT.OK;
}

/** The admitted nodes, or those with `label`. */
async function selectNodes(ctx: CtlContext, label: string | undefined): Promise<string[]> {
  const list = await ctx.api.get<NodeList>('/api/v1/nodes');
  return list.nodes.filter((n) => n.enrollment === 'admitted' && (label === undefined || n.labels.includes(label))).map((n) => n.name);
}

/**
 * One call per node, all at once (each BMC is its own machine); failures are listed per node.
 * For a selection (--all, --label), nodes without a BMC are not failures: they are named once.
 */
async function power(ctx: CtlContext, op: Op, nodes: readonly string[], selection = false): Promise<number> {
  const settled = await Promise.allSettled(
    nodes.map((node) => {
      const path = `/api/v1/nodes/${encodeURIComponent(node)}/power`;
      return op === 'status' ? ctx.api.get<PowerView>(path) : ctx.api.post<PowerView>(path, { action: op });
    }),
  );
  const results: PowerView[] = [];
  const failures: { node: string; error: { code: string; message: string; hint?: string } }[] = [];
  const noBmc: string[] = [];
  let exit: number = EXIT.OK;
  settled.forEach((s, i) => {
    if (s.status === 'fulfilled') results.push(s.value);
    else if (selection && (s.reason as { code?: string }).code === 'DSP_ERR_NO_BMC') noBmc.push(nodes[i]!);
    else {
      const e = s.reason as { code?: string; message?: string; hint?: string; exitCode?: number };
      failures.push({
        node: nodes[i]!,
        error: { code: e.code ?? 'CTL_INTERNAL', message: e.message ?? String(e), ...(e.hint ? { hint: e.hint } : {}) },
      });
      exit = Math.max(exit, e.exitCode ?? EXIT.FAILED);
    }
  });
  if (ctx.json) ctx.out(JSON.stringify({ results, failures, ...(selection ? { noBmc } : {}) }, null, 2));
  else {
    for (const r of results) ctx.out(op === 'status' ? `${r.node}: ${r.power} (${r.bmc})` : `${r.node}: ${r.message}`);
    if (noBmc.length) ctx.out(`skipped, no BMC: ${noBmc.join(', ')}`);
    if (selection && !nodes.length) ctx.out('no node selected');
    for (const f of failures) {
      // The dispatcher's message names the node already, unless the ref was a MAC or UUID.
      const named = f.error.message.startsWith(`${f.node}:`) || f.error.message.startsWith(`${f.node} `);
      ctx.err(`dispatcherctl: ${named ? '' : `${f.node}: `}${f.error.message}${f.error.hint ? `\n  hint: ${f.error.hint}` : ''}`);
    }
  }
  return exit;
}
