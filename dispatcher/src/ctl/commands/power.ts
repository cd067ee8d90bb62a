/**
 * `dispatcherctl power status|on|off|cycle|reset NODE...`: a node's power through its BMC
 * (cluster file: bmc, or a bmcs group), whatever its agent's state.
 */
import type { CommandModule, CtlContext } from '../command.js';
import type { PowerView } from '../../api/power/schemas.js';
import { EXIT, usageError } from '../errors.js';

const OPS = ['status', 'on', 'off', 'cycle', 'reset'] as const;
type Op = (typeof OPS)[number];

export const powerCommands: CommandModule = {
  register(program, ctl) {
    program
      .command('power')
      .description("read or change nodes' power through their BMCs (IPMI or Redfish): status, on, off, cycle, reset")
      .argument('<action>', OPS.join(' | '))
      .argument('<node...>', 'node names, MACs or UUIDs')
      .addHelpText(
        'after',
        '\noff, cycle and reset are hard: the OS is not asked. A BMC that failed is not called again for a while (back-off).\n' +
          'Examples:\n  dispatcherctl power status node1 node2\n  dispatcherctl power cycle node7',
      )
      .action(
        ctl.action(async (ctx, action: string, nodes: string[]) => {
          if (!(OPS as readonly string[]).includes(action))
            throw usageError(`unknown power action "${action}"`, `one of ${OPS.join(', ')}, e.g. dispatcherctl power status node1`);
          return power(ctx, action as Op, nodes);
        }),
      );
  },
};

/** One call per node, all at once (each BMC is its own machine); failures are listed per node. */
async function power(ctx: CtlContext, op: Op, nodes: readonly string[]): Promise<number> {
  const settled = await Promise.allSettled(
    nodes.map((node) => {
      const path = `/api/v1/nodes/${encodeURIComponent(node)}/power`;
      return op === 'status' ? ctx.api.get<PowerView>(path) : ctx.api.post<PowerView>(path, { action: op });
    }),
  );
  const results: PowerView[] = [];
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
      exit = Math.max(exit, e.exitCode ?? EXIT.FAILED);
    }
  });
  if (ctx.json) ctx.out(JSON.stringify({ results, failures }, null, 2));
  else {
    for (const r of results) ctx.out(op === 'status' ? `${r.node}: ${r.power} (${r.bmc})` : `${r.node}: ${r.message}`);
    for (const f of failures) {
      // The dispatcher's message names the node already, unless the ref was a MAC or UUID.
      const named = f.error.message.startsWith(`${f.node}:`) || f.error.message.startsWith(`${f.node} `);
      ctx.err(`dispatcherctl: ${named ? '' : `${f.node}: `}${f.error.message}${f.error.hint ? `\n  hint: ${f.error.hint}` : ''}`);
    }
  }
  return exit;
}
