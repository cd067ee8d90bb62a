/**
 * Commands that act on nodes through their agents: reboot (one, several, all, rolling),
 * poweroff, wake, drain, undrain, exec.
 */
import { InvalidArgumentError, type Command } from 'commander';
import type { CommandModule, CtlContext } from '../command.js';
import type { ExecLine, NodeList, OperationView } from '../../api/schemas.js';
import { perNode } from './nodes.js';
import { CtlError, EXIT, usageError } from '../errors.js';
import { formatDuration } from '../output.js';
import { setTimeout as sleep } from 'node:timers/promises';

/** How often `reboot --rolling` polls the operation's progress. */
const OPERATION_POLL_MS = 500;

export const controlCommands: CommandModule = {
  register(program, ctl) {
    program
      .command('reboot')
      .description('reboot nodes through their agents; --rolling drains and reboots a few at a time without losing a task')
      .argument('[node...]', 'node names, MACs or UUIDs')
      .option('--all', 'every node whose agent is connected')
      .option('--rolling', 'with --all or nodes: drain, wait for running tasks, reboot, wait until back, batch by batch')
      .option('--batch <n>', 'rolling: nodes rebooted at a time (default 1)', positiveInt)
      .option('--back-timeout <seconds>', 'rolling: stop if a node is not back after this long (default 600)', positiveInt)
      .option('--drain-timeout <seconds>', 'rolling: stop if running tasks take longer than this to finish (default: wait)', positiveInt)
      .option('--no-wait', 'rolling: start the operation and return (follow it with `dispatcherctl events --follow`)')
      .option('--firmware', 'through the firmware (POST and PXE), not kexec')
      .option('--hard', "a power cycle through the node's BMC (cluster file: bmc), for a node whose agent is gone or hung")
      .addHelpText('after', '\nA plain reboot does not drain: tasks running on the node are handed out again elsewhere.')
      .action(
        ctl.action(
          async (
            ctx,
            nodes: string[],
            opts: {
              all?: boolean;
              rolling?: boolean;
              batch?: number;
              backTimeout?: number;
              drainTimeout?: number;
              wait: boolean;
              firmware?: boolean;
              hard?: boolean;
            },
          ) => {
            if (opts.hard && (opts.all || opts.rolling || opts.firmware))
              throw usageError('--hard goes with node names only (not --all, --rolling or --firmware)');
            if (opts.all && nodes.length) throw usageError('give node names or --all, not both');
            if (!opts.all && !nodes.length)
              throw usageError(
                'which nodes? give node names, or --all',
                'e.g. dispatcherctl reboot node3, or dispatcherctl reboot --all --rolling',
              );
            if (!opts.rolling && (opts.batch || opts.backTimeout || opts.drainTimeout))
              throw usageError('--batch, --back-timeout and --drain-timeout go with --rolling');
            if (opts.rolling) return rollingReboot(ctx, opts.all ? undefined : nodes, opts);
            const targets = opts.all ? await connectedNodes(ctx) : nodes;
            if (!targets.length) {
              ctx.print({ results: [], failures: [] }, () => 'no node has its agent connected: nothing to reboot\n');
              return EXIT.OK;
            }
            return perNode(ctx, targets, 'reboot', opts.hard ? { hard: true } : opts.firmware ? { firmware: true } : {});
          },
        ),
      );

    nodeAction(program, ctl.action.bind(ctl), 'poweroff', 'power nodes off through their agents (wake them again with `wake`)');
    nodeAction(program, ctl.action.bind(ctl), 'wake', 'send a Wake-on-LAN magic packet to nodes that are off');
    nodeAction(program, ctl.action.bind(ctl), 'drain', 'let running tasks finish and hand the nodes no new ones');
    nodeAction(program, ctl.action.bind(ctl), 'undrain', 'hand tasks to drained nodes again');

    program
      .command('operations')
      .description('running and recent operations (rolling reboots) and the phase of each node; --cancel stops one')
      .option(
        '--cancel <id>',
        'stop this operation: no new node starts, draining nodes are released, rebooting ones are still waited for',
        positiveInt,
      )
      .action(
        ctl.action(async (ctx, opts: { cancel?: number }) => {
          if (opts.cancel !== undefined) {
            const op = await ctx.api.post<OperationView>(`/api/v1/operations/${opts.cancel}/cancel`);
            ctx.print(op, (o) => `operation #${o.id} ${o.state}: ${o.message}\n`);
            return EXIT.OK;
          }
          const list = await ctx.api.get<{ operations: OperationView[] }>('/api/v1/operations');
          ctx.print(list, (l) =>
            l.operations.length
              ? l.operations
                  .map(
                    (o) =>
                      `#${o.id} ${o.kind} ${o.state} (${o.batch} at a time): ${o.message}\n` +
                      o.nodes.map((n) => `  ${n.name}: ${n.phase}${n.error ? `: ${n.error}` : ''}`).join('\n'),
                  )
                  .join('\n') + '\n'
              : 'no operations since the dispatcher started\n',
          );
        }),
      );

    program
      .command('exec')
      .description('run a command on a node now, outside the task queue; streams its output and exits with its exit code')
      .argument('<node>', 'node name, MAC or UUID')
      .argument('<command...>', 'after --: argv run directly; a single argument is run by /bin/sh -c')
      .option('--timeout <seconds>', "kill the command after this long (default: the agent's)", positiveInt)
      .usage('[options] <node> -- <command...>')
      .addHelpText('after', "\nExamples:\n  dispatcherctl exec node3 -- uname -a\n  dispatcherctl exec node3 -- 'dmesg | tail -5'")
      .action(
        ctl.action(async (ctx, node: string, command: string[], opts: { timeout?: number }) => {
          const body = {
            ...(command.length === 1 ? { shell: command[0]! } : { argv: command }),
            ...(opts.timeout ? { timeoutMs: opts.timeout * 1000 } : {}),
          };
          return exec(ctx, node, body);
        }),
      );
  },
};

function nodeAction(program: Command, action: CtlAction, name: string, description: string): void {
  program
    .command(name)
    .description(description)
    .argument('<node...>', 'node names, MACs or UUIDs')
    .action(action(async (ctx, nodes: string[]) => perNode(ctx, nodes, name)));
}
type CtlAction = (h: (ctx: CtlContext, nodes: string[]) => Promise<number>) => (...args: unknown[]) => Promise<void>;

async function connectedNodes(ctx: CtlContext): Promise<string[]> {
  const list = await ctx.api.get<NodeList>('/api/v1/nodes');
  return list.nodes.filter((x) => x.connected && x.enrollment === 'admitted').map((x) => x.name);
}

async function rollingReboot(
  ctx: CtlContext,
  nodes: string[] | undefined,
  opts: { batch?: number; backTimeout?: number; drainTimeout?: number; wait: boolean; firmware?: boolean },
): Promise<number> {
  const op = await ctx.api.post<OperationView>('/api/v1/operations/rolling-reboot', {
    ...(opts.firmware ? { firmware: true } : {}),
    ...(nodes ? { nodes } : {}),
    ...(opts.batch ? { batch: opts.batch } : {}),
    ...(opts.backTimeout ? { backTimeoutS: opts.backTimeout } : {}),
    ...(opts.drainTimeout ? { drainTimeoutS: opts.drainTimeout } : {}),
  });
  if (!opts.wait) {
    ctx.print(op, (o) => `rolling reboot #${o.id} started: ${o.nodes.length} nodes, ${o.batch} at a time\n`);
    return EXIT.OK;
  }
  if (!ctx.json) ctx.out(`rolling reboot #${op.id}: ${op.nodes.length} nodes, ${op.batch} at a time`);
  const seen = new Map<string, string>();
  let cur = op;
  for (;;) {
    if (!ctx.json)
      for (const n of cur.nodes) {
        if (seen.get(n.name) === n.phase) continue;
        seen.set(n.name, n.phase);
        if (n.phase === 'waiting') continue;
        const extra = n.phase === 'draining' && n.runningTasks ? ` (${n.runningTasks} running tasks)` : n.error ? `: ${n.error}` : '';
        ctx.out(`  ${n.name}: ${n.phase}${extra}`);
      }
    if (cur.state !== 'running') break;
    try {
      await sleep(OPERATION_POLL_MS, undefined, ctx.signal ? { signal: ctx.signal } : {});
    } catch {
      ctx.err(
        `dispatcherctl: stopped following; the rolling reboot #${cur.id} goes on in the dispatcher (watch it: dispatcherctl operations; stop it: dispatcherctl operations --cancel ${cur.id})`,
      );
      return EXIT.FAILED;
    }
    cur = await ctx.api.get<OperationView>(`/api/v1/operations/${cur.id}`);
  }
  const took = formatDuration((cur.finishedAt ?? ctx.now()) - cur.startedAt);
  ctx.print(cur, (o) => `rolling reboot #${o.id} ${o.state} in ${took}: ${o.message}\n`);
  return cur.state === 'done' ? EXIT.OK : EXIT.FAILED;
}

const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

async function exec(ctx: CtlContext, node: string, body: { argv?: string[]; shell?: string; timeoutMs?: number }): Promise<number> {
  let exit: number = EXIT.FAILED;
  let ended = false;
  for await (const line of ctx.api.ndjson<ExecLine>('POST', `/api/v1/nodes/${encodeURIComponent(node)}/exec`, {
    body,
    ...(ctx.signal ? { signal: ctx.signal } : {}),
  })) {
    if (ctx.json) ctx.out(JSON.stringify(line));
    switch (line.type) {
      case 'started':
        break;
      case 'output':
        if (!ctx.json) ctx.write(line.stream, line.data);
        break;
      case 'exit':
        ended = true;
        // Shell convention: 128 + signal number when killed by a signal.
        exit = line.exitCode ?? (line.signal ? 128 + (SIGNALS[line.signal] ?? 0) : EXIT.FAILED);
        break;
      case 'error':
        throw new CtlError(line.error.code, line.error.message, line.error.hint ? { hint: line.error.hint } : {});
    }
  }
  if (!ended)
    throw new CtlError('CTL_STREAM_CUT', `the output of the command on ${node} stopped before its exit code came`, {
      hint: 'the node or the dispatcher may have gone; see `dispatcherctl events --node ' + node + '`',
    });
  return exit;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}
