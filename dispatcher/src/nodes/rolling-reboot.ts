/**
 * Rolling reboot: bring a new image to the whole cluster without losing a task. At most
 * `batch` nodes are out of service at once; each one is
 *
 *   draining   no new tasks (the hub's drain flag); wait until its running tasks have finished
 *              and their results are in
 *   rebooting  reboot sent and acknowledged; wait until the node is back: its agent connected
 *              again after the reboot (a new connection, so a new boot of the agent)
 *   back       drain lifted: it takes tasks again, under the same name (the registry keys by MAC)
 *
 * A node that is not back within `backTimeoutMs` stops the operation (a bad image should not
 * take the whole cluster down); nodes already rebooting are still waited for. A node lost
 * while draining, or whose tasks outlast `drainTimeoutMs`, is skipped and undrained, and the
 * others go on. The operation runs in the dispatcher (the CLI only starts and watches it);
 * every phase change is an event (kind `operation.node`). It lives in memory: after a
 * dispatcher restart, a node left draining shows as draining and `undrain` releases it.
 *
 * Image rollouts and rollbacks (images/rollout.ts) are rolling reboots with two hooks: one
 * before each reboot (pin the node to the new version) and a check once it is back (did it
 * boot that version, and pass the image's health check?); a failed check fails the node and
 * stops the operation, like a node that does not come back.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { DispatcherError } from '../errors.js';
import type { EventLog } from '../events/event-log.js';
import type { Logger } from '../log.js';
import type { NodeActions } from './actions.js';
import type { NodeRecord, NodeRegistry } from './registry.js';

export const DEFAULT_BATCH = 1;
export const DEFAULT_BACK_TIMEOUT_MS = 10 * 60_000;
/** How often a waiting node's agent status is looked at. */
export const DEFAULT_POLL_MS = 100;
/**
 * After the drain starts, wait at least this long before trusting "no running task": a task
 * handed out just before the drain is on its way to the agent.
 */
export const DRAIN_SETTLE_MS = 500;
/** Finished operations kept for GET /api/v1/operations. */
const KEEP_FINISHED = 20;

export type OperationState = 'running' | 'done' | 'failed' | 'cancelled';
export type NodePhase = 'waiting' | 'draining' | 'rebooting' | 'back' | 'failed' | 'skipped';

export interface OperationNode {
  name: string;
  phase: NodePhase;
  since: number;
  bootCountBefore: number;
  runningTasks: number;
  error: string | null;
}

export type OperationKind = 'rolling-reboot' | 'rollout' | 'rollback';

export interface OperationView {
  id: number;
  kind: OperationKind;
  state: OperationState;
  startedAt: number;
  finishedAt: number | null;
  batch: number;
  message: string;
  nodes: OperationNode[];
}

export interface RollingRebootRequest {
  /** Node names/MACs/UUIDs; default: every admitted node whose agent is connected. */
  nodes?: string[];
  batch?: number;
  drainTimeoutMs?: number;
  backTimeoutMs?: number;
  kind?: OperationKind;
  /** Shown in events and the operation's message (`rollout of ml to 3f2a…`). */
  title?: string;
  /** Reboot through the firmware even where kexec could. */
  firmware?: boolean;
  /** Runs before a node is rebooted. */
  beforeReboot?: (node: NodeRecord) => Promise<void>;
  /** Once a node is back: null when it is fine, else why it is not (the node fails, the operation stops). */
  checkBack?: (node: NodeRecord) => string | null;
}

export interface OperationsDeps {
  actions: NodeActions;
  nodes: NodeRegistry;
  events: EventLog;
  log: Logger;
  now?: () => number;
  pollMs?: number;
  drainSettleMs?: number;
}

export class Operations {
  readonly #ops = new Map<number, RollingReboot>();
  #nextId = 1;

  constructor(private readonly deps: OperationsDeps) {}

  /** Validates the request (every node known and connected) and starts the operation. */
  startRollingReboot(req: RollingRebootRequest): OperationView {
    for (const op of this.#ops.values())
      if (op.view.state === 'running')
        throw new DispatcherError('DSP_ERR_NODE_STATE', `${op.view.kind} #${op.view.id} is still running`, {
          hint: `wait for it (dispatcherctl events --follow) or cancel it: POST /api/v1/operations/${op.view.id}/cancel`,
        });
    const { actions } = this.deps;
    let targets: NodeRecord[];
    if (req.nodes?.length) {
      const seen = new Set<string>();
      targets = [];
      for (const ref of req.nodes) {
        const n = actions.resolve(ref);
        if (seen.has(n.mac)) continue;
        seen.add(n.mac);
        if (!actions.control.isConnected(n.mac))
          throw new DispatcherError(
            'DSP_ERR_NODE_OFFLINE',
            `${n.name} is ${n.state}: its agent is not connected, so it cannot take part in a rolling reboot`,
            {
              hint: 'leave it out, or wait until `dispatcherctl nodes` shows it ready',
            },
          );
        targets.push(n);
      }
    } else {
      targets = this.deps.nodes.list().filter((n) => n.enrollment === 'admitted' && actions.control.isConnected(n.mac));
      if (!targets.length)
        throw new DispatcherError('DSP_ERR_NODE_STATE', 'no node has its agent connected: nothing to reboot', {
          hint: 'see `dispatcherctl nodes`',
        });
    }
    const op = new RollingReboot(this.#nextId++, targets, req, this.deps);
    this.#ops.set(op.view.id, op);
    this.#trim();
    void op.run();
    return op.snapshot();
  }

  get(id: number): OperationView | undefined {
    return this.#ops.get(id)?.snapshot();
  }

  /** Resolves with the operation's final view once it has finished. */
  async wait(id: number): Promise<OperationView> {
    const op = this.#ops.get(id);
    if (!op) throw new DispatcherError('DSP_ERR_NOT_FOUND', `no operation #${id}`);
    await op.done;
    return op.snapshot();
  }

  list(): OperationView[] {
    return [...this.#ops.values()].map((o) => o.snapshot());
  }

  running(): OperationView[] {
    return this.list().filter((o) => o.state === 'running');
  }

  cancel(id: number): OperationView {
    const op = this.#ops.get(id);
    if (!op) throw new DispatcherError('DSP_ERR_NOT_FOUND', `no operation #${id}`, { hint: 'list them: GET /api/v1/operations' });
    if (op.view.state !== 'running') throw new DispatcherError('DSP_ERR_NODE_STATE', `operation #${id} is already ${op.view.state}`);
    op.cancel();
    return op.snapshot();
  }

  /** Stops every running operation (dispatcher stopping) and waits for them to settle. */
  async stop(): Promise<void> {
    const running = [...this.#ops.values()].filter((o) => o.view.state === 'running');
    for (const o of running) o.cancel();
    await Promise.all(running.map((o) => o.done));
  }

  #trim(): void {
    const finished = [...this.#ops.values()].filter((o) => o.view.state !== 'running');
    for (const o of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) this.#ops.delete(o.view.id);
  }
}

class RollingReboot {
  readonly view: OperationView;
  readonly #abort = new AbortController();
  readonly #now: () => number;
  readonly #pollMs: number;
  readonly #settleMs: number;
  readonly #backTimeoutMs: number;
  readonly #drainTimeoutMs: number | undefined;
  readonly #targets: NodeRecord[];
  readonly #req: RollingRebootRequest;
  readonly #title: string;
  #stopping: string | undefined;
  done: Promise<void> = Promise.resolve();

  constructor(
    id: number,
    targets: NodeRecord[],
    req: RollingRebootRequest,
    private readonly deps: OperationsDeps,
  ) {
    this.#now = deps.now ?? Date.now;
    this.#pollMs = deps.pollMs ?? DEFAULT_POLL_MS;
    this.#settleMs = deps.drainSettleMs ?? DRAIN_SETTLE_MS;
    this.#backTimeoutMs = req.backTimeoutMs ?? DEFAULT_BACK_TIMEOUT_MS;
    this.#drainTimeoutMs = req.drainTimeoutMs;
    this.#targets = targets;
    this.#req = req;
    this.#title = `${req.title ?? req.kind ?? 'rolling reboot'} #${id}`;
    const t = this.#now();
    this.view = {
      id,
      kind: req.kind ?? 'rolling-reboot',
      state: 'running',
      startedAt: t,
      finishedAt: null,
      batch: Math.max(1, Math.min(req.batch ?? DEFAULT_BATCH, targets.length)),
      message: `0/${targets.length} nodes back`,
      nodes: targets.map((n) => ({ name: n.name, phase: 'waiting', since: t, bootCountBefore: n.bootCount, runningTasks: 0, error: null })),
    };
  }

  snapshot(): OperationView {
    return { ...this.view, nodes: this.view.nodes.map((n) => ({ ...n })) };
  }

  cancel(): void {
    this.#stopping ??= 'cancelled by the operator';
    this.#abort.abort();
  }

  run(): Promise<void> {
    this.done = this.#run().catch((err: unknown) => {
      this.deps.log.error({ err, op: this.view.id }, `${this.#title} failed`);
      this.#stopping ??= `internal error: ${(err as Error).message}`;
      this.#finish();
    });
    return this.done;
  }

  async #run(): Promise<void> {
    const { events } = this.deps;
    events.append({
      kind: 'operation.started',
      message: `${this.#title} of ${this.#targets.length} nodes, ${this.view.batch} at a time`,
      data: { op: this.view.id, nodes: this.view.nodes.map((n) => n.name), batch: this.view.batch },
    });
    // A sliding window: a new node starts as soon as one in flight is back.
    let next = 0;
    const inFlight = new Set<Promise<void>>();
    while (next < this.#targets.length || inFlight.size) {
      while (!this.#stopping && inFlight.size < this.view.batch && next < this.#targets.length) {
        const i = next++;
        const p = this.#one(i).finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      if (!inFlight.size) break;
      await Promise.race(inFlight);
    }
    for (const n of this.view.nodes) if (n.phase === 'waiting') this.#phase(n, 'skipped', this.#stopping ?? null);
    this.#finish();
  }

  #finish(): void {
    const back = this.view.nodes.filter((n) => n.phase === 'back').length;
    const failed = this.view.nodes.filter((n) => n.phase === 'failed');
    const skipped = this.view.nodes.filter((n) => n.phase === 'skipped').length;
    this.view.state =
      this.#stopping === 'cancelled by the operator'
        ? 'cancelled'
        : failed.length || this.#stopping
          ? 'failed'
          : skipped
            ? 'failed'
            : 'done';
    this.view.finishedAt = this.#now();
    this.view.message =
      `${back}/${this.view.nodes.length} nodes back` +
      (failed.length ? `; failed: ${failed.map((n) => `${n.name} (${n.error})`).join(', ')}` : '') +
      (skipped ? `; ${skipped} skipped` : '') +
      (this.#stopping && this.#stopping !== 'cancelled by the operator'
        ? `; stopped: ${this.#stopping}`
        : this.#stopping
          ? '; cancelled'
          : '');
    this.deps.events.append({
      kind: 'operation.done',
      message: `${this.#title} ${this.view.state}: ${this.view.message}`,
      data: { op: this.view.id, state: this.view.state },
    });
  }

  async #one(i: number): Promise<void> {
    const node = this.#targets[i]!;
    const entry = this.view.nodes[i]!;
    const { actions, nodes } = this.deps;
    const control = () => actions.control;
    try {
      // 1. Drain and wait for its running tasks.
      this.#phase(entry, 'draining');
      control().setDraining(node.mac, true);
      nodes.setState(node.mac, 'draining', this.#title, { by: 'operator' });
      const drainStart = this.#now();
      for (;;) {
        if (!control().isConnected(node.mac)) return this.#skip(node, entry, 'lost while draining');
        const running = actions.live(node)?.running.length ?? 0;
        entry.runningTasks = running;
        if (running === 0 && this.#now() - drainStart >= this.#settleMs) break;
        if (this.#drainTimeoutMs !== undefined && this.#now() - drainStart > this.#drainTimeoutMs)
          return this.#skip(node, entry, `${running} tasks still running after ${Math.round(this.#drainTimeoutMs / 1000)} s`);
        if (this.#abort.signal.aborted) return this.#skip(node, entry, this.#stopping ?? 'cancelled');
        await this.#sleep();
      }
      // 2. Reboot (the drain flag stays until the node is back).
      await this.#req.beforeReboot?.(node);
      const sentAt = this.#now();
      await actions.reboot(node.name, { keepDraining: true, ...(this.#req.firmware ? { firmware: true } : {}) });
      this.#phase(entry, 'rebooting');
      // 3. Wait for a new connection of its agent, made after the reboot was acknowledged.
      for (;;) {
        const live = actions.live(node);
        if (control().isConnected(node.mac) && live && live.connectedAt >= sentAt) break;
        if (this.#now() - sentAt > this.#backTimeoutMs) {
          control().setDraining(node.mac, false);
          this.#stopping ??= `${node.name} not back after ${Math.round(this.#backTimeoutMs / 1000)} s`;
          return this.#fail(entry, `not back after ${Math.round(this.#backTimeoutMs / 1000)} s`);
        }
        await this.#sleep(true);
      }
      const wrong = this.#req.checkBack?.(node) ?? null;
      if (wrong) {
        // Back, but not as it should be: it keeps the drain (no task runs on a bad image) and the operation stops.
        this.#stopping ??= `${node.name}: ${wrong}`;
        return this.#fail(entry, wrong);
      }
      control().setDraining(node.mac, false);
      // The hello normally made it ready already (registry.recordHello); make sure the hold is gone.
      if (node.state === 'draining' || node.state === 'rebooting') {
        const running = actions.live(node)?.running.length ?? 0;
        nodes.setState(node.mac, running ? 'busy' : 'ready', `${this.#title}: back`, { by: 'operator' });
      }
      this.#phase(entry, 'back', null, `boot #${node.bootCount}`);
      this.view.message = `${this.view.nodes.filter((n) => n.phase === 'back').length}/${this.view.nodes.length} nodes back`;
    } catch (err) {
      control().setDraining(node.mac, false);
      if (node.state === 'draining')
        nodes.setState(node.mac, control().isConnected(node.mac) ? 'ready' : 'lost', `${this.#title} gave up`, {
          by: 'operator',
        });
      this.#stopping ??= `${node.name}: ${(err as Error).message}`;
      this.#fail(entry, (err as Error).message);
    }
  }

  #skip(node: NodeRecord, entry: OperationNode, why: string): void {
    const { actions, nodes } = this.deps;
    actions.control.setDraining(node.mac, false);
    if (node.state === 'draining') {
      const running = actions.live(node)?.running.length ?? 0;
      nodes.setState(node.mac, !actions.control.isConnected(node.mac) ? 'lost' : running ? 'busy' : 'ready', `${this.#title}: skipped`, {
        by: 'operator',
      });
    }
    this.#phase(entry, 'skipped', why);
  }

  #fail(entry: OperationNode, why: string): void {
    this.#phase(entry, 'failed', why);
  }

  #phase(entry: OperationNode, phase: NodePhase, error: string | null = null, detail?: string): void {
    entry.phase = phase;
    entry.since = this.#now();
    entry.error = error;
    if (phase === 'waiting') return;
    this.deps.events.append({
      kind: 'operation.node',
      node: entry.name,
      message: `${this.#title}: ${entry.name} ${phase}${error ? `: ${error}` : detail ? ` (${detail})` : ''}`,
      data: { op: this.view.id, phase, ...(error ? { error } : {}) },
    });
  }

  /** Waits one poll interval; while a node reboots, the operator's cancel does not cut the wait short. */
  async #sleep(uninterruptible = false): Promise<void> {
    try {
      await delay(this.#pollMs, undefined, uninterruptible ? {} : { signal: this.#abort.signal });
    } catch {
      /* aborted: the caller looks at #stopping */
    }
  }
}
