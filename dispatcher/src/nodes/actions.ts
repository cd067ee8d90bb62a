/**
 * What the operator can do to a node (API routes, the CLI and the web page all come here):
 * reboot, poweroff, inspect, exec, drain/undrain, approve, wake. Each action checks that the
 * node exists and is in a state that allows it (else a DispatcherError that says why and what
 * to do, and nothing changes), goes to the node's agent through NodeControl, and records its
 * outcome as an event (kind `node.command`).
 */
import { DispatcherError } from '../errors.js';
import type { Logger } from '../log.js';
import type { EventLog } from '../events/event-log.js';
import type { NodeControl, ControlOutcome, AgentLiveStatus } from '../agents/control-contract.js';
import type { NodeRegistry, NodeRecord } from './registry.js';
import type { Mac } from './mac.js';
import { sendWake, type WakeTarget, type WakeOptions } from './wol.js';
import type { BootTimeline } from '../boot/timeline.js';
import type { PlannedKexec } from '../boot/kexec-plan.js';
import type { RebootPath } from '../protocol/messages.js';

/** How long a reboot/poweroff/drain waits for the agent's acknowledgement. */
export const DEFAULT_ACK_TIMEOUT_MS = 10_000;
/** A kexec reboot is done when the agent has fetched and loaded the next image (tens of MiB). */
export const KEXEC_LOAD_TIMEOUT_MS = 5 * 60_000;
/** How long inspect waits for the snapshot (systeminformation can take a few seconds). */
export const DEFAULT_INSPECT_TIMEOUT_MS = 30_000;
/** exec without its own timeout: the agent kills the command after this long. */
export const DEFAULT_EXEC_TIMEOUT_MS = 10 * 60_000;

/** NodeControl when no agent hub is attached: no agent is ever connected. */
export const NO_AGENTS: NodeControl = {
  isConnected: () => false,
  connected: () => [],
  send: async () => {
    throw new DispatcherError('DSP_ERR_NODE_OFFLINE', 'no agent hub in this dispatcher');
  },
  setDraining: () => {},
  isDraining: () => false,
  liveStatus: () => undefined,
};

export interface ActionOutcome {
  node: string;
  action: string;
  state: NodeRecord['state'];
  ackMs: number | null;
  message: string;
}

export interface InspectOutcome {
  node: string;
  at: number;
  ackMs: number;
  snapshot: unknown;
}

export interface ExecOutcome {
  exitCode: number | null;
  signal: string | null;
  durationMs: number | null;
  ackMs: number;
}

export interface NodeActionsDeps {
  nodes: NodeRegistry;
  events: EventLog;
  log: Logger;
  /** The agent hub (late-bound: the hub is created after the API). */
  control: () => NodeControl;
  wakeTarget: () => WakeTarget;
  wakeOptions?: WakeOptions;
  now?: () => number;
  /** The next boot of a node as a kexec plan (late-bound: the boot services come after the API). */
  kexec?: () => ((n: NodeRecord) => Promise<PlannedKexec>) | undefined;
  /** Where reboots record the path they took. */
  timeline?: BootTimeline;
}

export interface RebootOptions {
  /** Rolling reboot: the hub hands the node no task until the operation says it is back. */
  keepDraining?: boolean;
  /** Through the firmware (POST, PXE) even when kexec could do it. */
  firmware?: boolean;
}

export class NodeActions {
  readonly #lastInspect = new Map<Mac, { at: number; snapshot: unknown }>();
  readonly #now: () => number;

  constructor(private readonly deps: NodeActionsDeps) {
    this.#now = deps.now ?? Date.now;
  }

  get control(): NodeControl {
    return this.deps.control();
  }

  /** The node a user named (name, MAC or UUID), or DSP_ERR_NODE_NOT_FOUND naming it. */
  resolve(ref: string): NodeRecord {
    const n = this.deps.nodes.find(ref);
    if (!n)
      throw new DispatcherError('DSP_ERR_NODE_NOT_FOUND', `no node named "${ref}"`, {
        hint: 'list the nodes with `dispatcherctl nodes` (a node can also be named by its MAC or system UUID)',
      });
    return n;
  }

  live(n: NodeRecord): AgentLiveStatus | undefined {
    return this.control.liveStatus(n.mac);
  }

  lastInspect(n: NodeRecord): { at: number; snapshot: unknown } | undefined {
    return this.#lastInspect.get(n.mac);
  }

  /**
   * Reboots a node into the image and version it boots next: by kexec when its agent can (it
   * reported its image in its hello, so it knows kexec plans) and `firmware` is not asked,
   * else through the firmware. The timeline records which path was taken, and why not kexec.
   * Without `keepDraining` the drain, if any, ends with the reboot.
   */
  async reboot(ref: string, opts: RebootOptions = {}): Promise<ActionOutcome> {
    const n = this.#connected(this.resolve(ref), 'reboot');
    const running = this.live(n)?.running.length ?? 0;
    let why = opts.firmware ? 'the firmware path was asked for' : undefined;
    let planned: PlannedKexec | undefined;
    const planner = this.deps.kexec?.();
    if (!why && !planner) why = 'no kexec in this dispatcher';
    if (!why && !n.bootedImage) why = "its agent did not report its image (an older agent, or a host not booted by us): it can't kexec";
    if (!why && planner) {
      planned = await planner(n);
      if (!planned.ok) why = planned.reason;
    }
    const cmd = planned?.ok ? { kind: 'reboot' as const, kexec: planned.plan } : { kind: 'reboot' as const };
    const out = await this.#command(n, 'reboot', cmd, planned?.ok ? KEXEC_LOAD_TIMEOUT_MS : DEFAULT_ACK_TIMEOUT_MS);
    const said = out.result as Partial<RebootPath> | undefined;
    const path = planned?.ok ? (said?.path ?? 'kexec') : 'firmware';
    if (planned?.ok && path === 'firmware') why = `kexec failed on the node: ${said?.reason ?? 'no reason given'}`;
    if (!opts.keepDraining) this.control.setDraining(n.mac, false);
    const target = planned?.ok ? `${planned.version.image}@${planned.version.version}` : undefined;
    // A kexec is a boot that neither DHCP nor a boot script will count.
    if (path === 'kexec') this.deps.nodes.recordBoot(n.mac, { imageVersion: target ?? null });
    this.deps.nodes.setState(n.mac, 'rebooting', 'operator reboot', { by: 'operator' });
    if (path === 'kexec') this.deps.timeline?.record(n.mac, 'reboot.kexec', { image: target }, { newBoot: true });
    else this.deps.timeline?.record(n.mac, 'reboot.firmware', { reason: why ?? null });
    return this.#result(
      n,
      'reboot',
      out.ackMs,
      `reboot acknowledged in ${fmtMs(out.ackMs)}, by ${path}${target && path === 'kexec' ? ` into ${target}` : ''}${path === 'firmware' && why ? ` (not kexec: ${why})` : ''}${running ? `; its ${running} running tasks go back to the queue` : ''}`,
    );
  }

  async poweroff(ref: string): Promise<ActionOutcome> {
    const n = this.#connected(this.resolve(ref), 'poweroff');
    const out = await this.#command(n, 'poweroff', { kind: 'poweroff' }, DEFAULT_ACK_TIMEOUT_MS);
    this.control.setDraining(n.mac, false);
    this.deps.nodes.setState(n.mac, 'off', 'operator poweroff', { by: 'operator' });
    return this.#result(
      n,
      'poweroff',
      out.ackMs,
      `poweroff acknowledged in ${fmtMs(out.ackMs)}; wake it with \`dispatcherctl wake ${n.name}\``,
    );
  }

  drain(ref: string): ActionOutcome {
    const n = this.resolve(ref);
    if (n.state === 'draining') return this.#result(n, 'drain', null, 'already draining');
    if (n.state !== 'ready' && n.state !== 'busy') throw stateError(n, 'drain', 'only a ready or busy node can be drained');
    this.control.setDraining(n.mac, true);
    const running = this.live(n)?.running.length ?? 0;
    this.deps.nodes.setState(n.mac, 'draining', 'operator drain', { by: 'operator' });
    this.#event(n, 'drain', true, null, `drain: ${running} running tasks finish, no new ones`);
    return this.#result(
      n,
      'drain',
      null,
      `draining: ${running ? `${running} running tasks finish, ` : ''}no new tasks (\`dispatcherctl undrain ${n.name}\` to resume)`,
    );
  }

  undrain(ref: string): ActionOutcome {
    const n = this.resolve(ref);
    if (n.state !== 'draining') throw stateError(n, 'undrain', 'only a draining node can be undrained');
    this.control.setDraining(n.mac, false);
    const running = this.live(n)?.running.length ?? 0;
    const next = !this.control.isConnected(n.mac) ? 'lost' : running ? 'busy' : 'ready';
    this.deps.nodes.setState(n.mac, next, 'operator undrain', { by: 'operator' });
    this.#event(n, 'undrain', true, null, 'undrain: takes tasks again');
    return this.#result(n, 'undrain', null, 'takes tasks again');
  }

  approve(ref: string): ActionOutcome {
    const n = this.resolve(ref);
    if (n.enrollment !== 'pending')
      throw new DispatcherError('DSP_ERR_NODE_STATE', `${n.name} is already admitted`, {
        hint: 'approve is for nodes listed as (pending) by `dispatcherctl nodes`',
      });
    this.deps.nodes.approve(n.name);
    return this.#result(n, 'approve', null, 'approved: its agent joins at its next attempt');
  }

  async wake(ref: string): Promise<ActionOutcome> {
    const n = this.resolve(ref);
    if (this.control.isConnected(n.mac) || (n.state !== 'off' && n.state !== 'lost'))
      throw stateError(
        n,
        'wake',
        'Wake-on-LAN is for nodes that are off or lost',
        this.control.isConnected(n.mac) ? 'its agent is connected: it is awake' : undefined,
      );
    let sent;
    try {
      sent = await sendWake(n.mac, this.deps.wakeTarget(), this.deps.wakeOptions);
    } catch (err) {
      this.#event(n, 'wake', false, null, `wake failed: ${(err as Error).message}`);
      throw new DispatcherError('DSP_ERR_INTERNAL', `could not send the Wake-on-LAN packet for ${n.name}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    this.#event(n, 'wake', true, null, `wake: magic packet for ${n.mac} sent to ${sent.destination}:${sent.port}`);
    return this.#result(
      n,
      'wake',
      null,
      `magic packet sent to ${sent.destination}:${sent.port} (the machine must have Wake-on-LAN on in its firmware)`,
    );
  }

  async inspect(ref: string): Promise<InspectOutcome> {
    const n = this.#connected(this.resolve(ref), 'inspect');
    const out = await this.#command(n, 'inspect', { kind: 'inspect' }, DEFAULT_INSPECT_TIMEOUT_MS);
    const at = this.#now();
    this.#lastInspect.set(n.mac, { at, snapshot: out.result ?? null });
    return { node: n.name, at, ackMs: out.ackMs, snapshot: out.result ?? null };
  }

  /** Checks an exec can start (throws before any output is streamed). */
  execTarget(ref: string): NodeRecord {
    return this.#connected(this.resolve(ref), 'exec');
  }

  async exec(
    n: NodeRecord,
    command: string[] | string,
    timeoutMs: number | undefined,
    onOutput: (stream: 'stdout' | 'stderr', chunk: string) => void,
  ): Promise<ExecOutcome> {
    const t = timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    const shown = Array.isArray(command) ? command.join(' ') : command;
    const out = await this.#command(n, 'exec', { kind: 'exec', command, timeoutMs: t }, t + DEFAULT_ACK_TIMEOUT_MS, {
      onOutput,
      label: `exec \`${shown.slice(0, 200)}\``,
    });
    const r = (out.result ?? {}) as { exitCode?: number | null; signal?: string | null; durationMs?: number | null };
    return { exitCode: r.exitCode ?? null, signal: r.signal ?? null, durationMs: r.durationMs ?? null, ackMs: out.ackMs };
  }

  #connected(n: NodeRecord, action: string): NodeRecord {
    if (n.enrollment === 'pending')
      throw new DispatcherError('DSP_ERR_NODE_STATE', `${n.name} waits for approval`, { hint: `dispatcherctl approve ${n.name}` });
    if (!this.control.isConnected(n.mac)) {
      const hint =
        n.state === 'off'
          ? `it is off: \`dispatcherctl wake ${n.name}\` sends it a Wake-on-LAN packet`
          : n.state === 'rebooting' || n.state === 'booting'
            ? 'it is booting: try again when `dispatcherctl nodes` shows it ready'
            : `see how far its last boot got: \`dispatcherctl boot-log ${n.name}\``;
      throw new DispatcherError('DSP_ERR_NODE_OFFLINE', `${n.name} is ${n.state}: its agent is not connected, so it cannot ${action}`, {
        hint,
      });
    }
    return n;
  }

  async #command(
    n: NodeRecord,
    action: string,
    cmd: Parameters<NodeControl['send']>[1],
    timeoutMs: number,
    opts: { onOutput?: (stream: 'stdout' | 'stderr', chunk: string) => void; label?: string } = {},
  ): Promise<ControlOutcome> {
    const label = opts.label ?? action;
    let out: ControlOutcome;
    try {
      out = await this.control.send(n.mac, cmd, { timeoutMs, ...(opts.onOutput ? { onOutput: opts.onOutput } : {}) });
    } catch (err) {
      const msg = (err as Error).message;
      this.#event(n, action, false, null, `${label} failed: ${msg}`);
      if (err instanceof DispatcherError) throw err;
      throw new DispatcherError('DSP_ERR_INTERNAL', `${label} on ${n.name} failed: ${msg}`, { cause: err });
    }
    if (!out.ok) {
      this.#event(n, action, false, out.ackMs, `${label} refused by the agent: ${out.error ?? 'no reason given'}`);
      throw new DispatcherError('DSP_ERR_NODE_STATE', `${n.name}'s agent refused ${label}: ${out.error ?? 'no reason given'}`, {
        hint: 'see the agent log on the node (`dispatcherctl exec NODE -- logread` or its console)',
      });
    }
    const r = out.result as { exitCode?: number | null; signal?: string | null } | undefined;
    const detail =
      action === 'exec'
        ? ` exited ${r?.exitCode ?? r?.signal ?? '?'}`
        : action === 'inspect'
          ? ` answered in ${fmtMs(out.ackMs)}`
          : ` acknowledged in ${fmtMs(out.ackMs)}`;
    this.#event(n, action, true, out.ackMs, `${label}${detail}`);
    return out;
  }

  #event(n: NodeRecord, command: string, ok: boolean, ackMs: number | null, message: string): void {
    this.deps.events.append({
      kind: 'node.command',
      node: n.name,
      message: `${n.name} ${message}`,
      data: { command, ok, ...(ackMs !== null ? { ackMs } : {}) },
    });
    this.deps.log.info({ node: n.name, command, ok, ackMs }, 'node command');
  }

  #result(n: NodeRecord, action: string, ackMs: number | null, message: string): ActionOutcome {
    return { node: n.name, action, state: n.state, ackMs, message };
  }
}

function stateError(n: NodeRecord, action: string, why: string, extra?: string): DispatcherError {
  return new DispatcherError('DSP_ERR_NODE_STATE', `cannot ${action} ${n.name}: it is ${n.state}${extra ? ` (${extra})` : ''}`, {
    hint: why,
  });
}

function fmtMs(ms: number): string {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}
