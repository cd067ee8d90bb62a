/**
 * Power driven by the queue (cluster file `powerPolicy`): every pass gathers the nodes and
 * the queue, asks the pure policy (queue-policy.ts) what to do, and does it:
 *   - off: the node is drained first (no task handed out meanwhile), then powered off by its
 *     BMC, else by its agent; a RAM-only node has nothing to flush. It is then `off`, which
 *     no closed connection turns into `lost`: self-healing never sees it;
 *   - on: its BMC (a second try cycles it), else Wake-on-LAN; the node then boots as any;
 *   - unreachable: noted on the node (view field) with the stages its boots reached.
 * Every action is a `power.policy` event with its reason; `plan()` is the dry run that
 * `dispatcherctl power policy` shows.
 */
import type { Core } from '../core.js';
import type { NodeCapacity } from '../dispatch/contract.js';
import type { NodeControl } from '../agents/control-contract.js';
import type { NodeActions } from '../nodes/actions.js';
import type { NodeRecord } from '../nodes/registry.js';
import type { Mac } from '../nodes/mac.js';
import type { BootTimeline } from '../boot/timeline.js';
import type { NodeImageStatus } from '../images/assignment.js';
import { inventorySummary } from '../api/nodes/view.js';
import type { PowerService } from './service.js';
import type { PowerStates } from './power-state.js';
import type { PowerPolicy } from './policy-config.js';
import { decidePower, type PolicyNode, type PowerDecision } from './queue-policy.js';

export const POWER_POLICY_INTERVAL_MS = 2000;

export interface QueuePowerDeps {
  core: Pick<Core, 'nodes' | 'events' | 'log' | 'now'> & {
    timeline: Pick<BootTimeline, 'list'>;
    /** The image an off node boots when powered on (images/assignment.ts). */
    images: { assignments: { status(n: NodeRecord): Pick<NodeImageStatus, 'image'> } };
  };
  policy: PowerPolicy;
  /** The dispatch engine: the ring's fit and the number of queued tasks. */
  queue: { hasWorkFor(node: NodeCapacity): boolean; stats(): { queued: number } };
  control: () => NodeControl;
  actions: Pick<NodeActions, 'poweroff' | 'wake'>;
  power: Pick<PowerService, 'bmcOf' | 'run'>;
  states: PowerStates;
}

export interface PowerPlan {
  at: number;
  queued: number;
  decisions: PowerDecision[];
}

export class QueuePower {
  readonly #idleSince = new Map<Mac, number>();
  readonly #waking = new Map<Mac, { since: number; tries: number; firstSince: number }>();
  /** Nodes powered off by the policy whose drain flag waits for their connection to time out. */
  readonly #drainedOff = new Set<Mac>();
  /** Last slots each agent reported: an off node's are not live. */
  readonly #slots = new Map<Mac, number>();
  #timer: NodeJS.Timeout | undefined;
  #busy = false;

  constructor(private readonly deps: QueuePowerDeps) {}

  start(intervalMs = POWER_POLICY_INTERVAL_MS): void {
    this.#timer = setInterval(() => void this.tick(), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** What the policy would do now (no action taken). */
  plan(): PowerPlan {
    const now = this.deps.core.now();
    const queued = this.deps.queue.stats().queued;
    return { at: now, queued, decisions: this.#decide(now, queued) };
  }

  /** One pass; resolves once its actions are done. */
  async tick(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      this.#observe(this.deps.core.now());
      const { decisions } = this.plan();
      await Promise.all(decisions.filter((d) => d.kind !== 'hold').map((d) => this.#carryOut(d)));
    } catch (err) {
      this.deps.core.log.warn({ err: (err as Error).message }, 'power policy: pass failed');
    } finally {
      this.#busy = false;
    }
  }

  /** Follows the nodes between passes: since when each is idle, which of those powered on are back. */
  #observe(now: number): void {
    const c = this.deps.control();
    for (const n of this.deps.core.nodes.list()) {
      const connected = c.isConnected(n.mac);
      // The hub keeps drain flags per node, not per connection: lifted once the old one is gone.
      if (!connected && this.#drainedOff.delete(n.mac)) c.setDraining(n.mac, false);
      const live = connected ? c.liveStatus(n.mac) : undefined;
      if (live) this.#slots.set(n.mac, live.slots);
      const waking = this.#waking.get(n.mac);
      if (waking && connected) {
        this.#waking.delete(n.mac);
        this.#event(n, 'back', `${n.name} is back ${Math.round((now - waking.firstSince) / 1000)} s after the policy powered it on`, {
          ms: now - waking.firstSince,
        });
      }
      if (connected && n.state === 'ready' && !c.isDraining(n.mac) && (live?.running.length ?? 0) === 0) {
        if (!this.#idleSince.has(n.mac)) this.#idleSince.set(n.mac, now);
      } else this.#idleSince.delete(n.mac);
    }
  }

  #decide(now: number, queued: number): PowerDecision[] {
    const { core, control, power, states, policy, queue } = this.deps;
    const c = control();
    const nodes: PolicyNode[] = [];
    for (const n of core.nodes.list()) {
      if (n.enrollment !== 'admitted') continue;
      const connected = c.isConnected(n.mac);
      const live = connected ? c.liveStatus(n.mac) : undefined;
      const running = live?.running.length ?? 0;
      const draining = connected && c.isDraining(n.mac);
      const bmc = power.bmcOf(n) !== null;
      const by = states.of(n.mac).by;
      const w = this.#waking.get(n.mac);
      nodes.push({
        name: n.name,
        mac: n.mac,
        labels: n.labels,
        state: n.state,
        connected,
        draining,
        running,
        slots: this.#slots.get(n.mac) ?? null,
        idleSince: this.#idleSince.get(n.mac) ?? null,
        capacity: this.#capacity(n, connected),
        powerOn: bmc ? 'bmc' : 'wol',
        powerOff: bmc ? 'bmc' : connected ? 'agent' : null,
        offBy: n.state !== 'off' ? null : by === 'operator' ? 'operator' : by === 'policy' ? 'policy' : null,
        waking: w ? { since: w.since, tries: w.tries } : null,
        unreachable: states.unreachable(n.mac) !== undefined,
      });
    }
    return decidePower(policy.groups, nodes, { hasWorkFor: (cap) => queue.hasWorkFor(cap), queued }, now);
  }

  /** What a node can run: its booted image when up, else the image it boots next. */
  #capacity(n: NodeRecord, connected: boolean): NodeCapacity {
    const inv = inventorySummary(n.inventory);
    const image = connected ? (n.bootedImage?.name ?? null) : this.deps.core.images.assignments.status(n).image;
    return { mac: n.mac, name: n.name, labels: n.labels, cores: inv.cores ?? 0, memoryMiB: inv.memoryMiB ?? 0, image };
  }

  async #carryOut(d: PowerDecision): Promise<void> {
    const { core } = this.deps;
    const n = core.nodes.byMac(d.mac);
    if (!n) return;
    try {
      if (d.kind === 'off') await this.#off(n, d);
      else if (d.kind === 'on') await this.#on(n, d);
      else if (d.kind === 'unreachable') this.#unreachable(n, d.reason);
    } catch (err) {
      const message = (err as Error).message;
      this.#event(n, d.kind, `${n.name}: power ${d.kind} by the policy failed: ${message}`, {
        ok: false,
        error: message,
        reason: d.reason,
      });
    }
  }

  async #off(n: NodeRecord, d: Extract<PowerDecision, { kind: 'off' }>): Promise<void> {
    const { core, control, power, states } = this.deps;
    const c = control();
    // Drained first: the hub hands it nothing while it goes down.
    c.setDraining(n.mac, true);
    if ((c.liveStatus(n.mac)?.running.length ?? 0) > 0) {
      c.setDraining(n.mac, false);
      return;
    }
    try {
      if (d.via === 'bmc') await power.run(n, 'off', { by: 'policy', reason: `power policy: ${d.reason}` });
      else await this.deps.actions.poweroff(n.name);
    } catch (err) {
      c.setDraining(n.mac, false);
      throw err;
    }
    // Still drained: the hub hands nothing to the connection until it times out (#observe lifts it then).
    this.#drainedOff.add(n.mac);
    core.nodes.setState(n.mac, 'off', `power policy: ${d.reason}`, { by: 'operator' });
    states.set(n.mac, 'off', core.now(), 'policy');
    this.#idleSince.delete(n.mac);
    this.#event(n, 'off', `${n.name} powered off by the power policy (${d.via === 'bmc' ? 'BMC' : 'agent'}): ${d.reason}`, {
      ok: true,
      via: d.via,
      group: d.group,
      reason: d.reason,
    });
  }

  async #on(n: NodeRecord, d: Extract<PowerDecision, { kind: 'on' }>): Promise<void> {
    const { core, power, states, control } = this.deps;
    if (this.#drainedOff.delete(n.mac)) control().setDraining(n.mac, false);
    const now = core.now();
    const first = this.#waking.get(n.mac)?.firstSince ?? now;
    // Counted as a try even if the call fails: a BMC that keeps failing ends in `unreachable`, not a loop.
    this.#waking.set(n.mac, { since: now, tries: d.attempt, firstSince: first });
    if (d.via === 'bmc') await power.run(n, d.attempt === 1 ? 'on' : 'cycle', { by: 'policy', reason: `power policy: ${d.reason}` });
    else await this.deps.actions.wake(n.name);
    states.set(n.mac, 'on', core.now(), 'policy');
    this.#event(
      n,
      'on',
      `${n.name} powered on by the power policy (${d.via === 'bmc' ? 'BMC' : 'Wake-on-LAN'}, try ${d.attempt}): ${d.reason}`,
      { ok: true, via: d.via, attempt: d.attempt, group: d.group, reason: d.reason },
    );
  }

  #unreachable(n: NodeRecord, reason: string): void {
    const { core, states } = this.deps;
    const w = this.#waking.get(n.mac);
    this.#waking.delete(n.mac);
    const since = w?.firstSince ?? 0;
    const stages = core.timeline
      .list(n.mac, 3)
      .filter((s) => s.ts >= since)
      .map((s) => ({ stage: s.stage, boot: s.boot, afterS: Math.round((s.ts - since) / 100) / 10 }));
    const summary = stages.length
      ? stages.map((s) => `${s.stage} +${s.afterS}s`).join(', ')
      : 'no boot stage seen (no DHCP request: check its power, BMC and firmware)';
    states.markUnreachable(n.mac, { since: core.now(), reason });
    this.#event(n, 'unreachable', `${n.name} is unreachable: ${reason}; its boots since: ${summary}`, {
      ok: false,
      reason,
      timeline: stages,
    });
  }

  #event(n: NodeRecord, action: string, message: string, data: Record<string, unknown>): void {
    this.deps.core.events.append({ kind: 'power.policy', node: n.name, message, data: { action, ...data } });
    this.deps.core.log.info({ node: n.name, action, ...data }, 'power policy');
  }
}

const planners = new WeakMap<object, QueuePower>();

/** Makes the running policy of a dispatcher known to its API (the dry-run route). */
export function registerQueuePower(core: object, q: QueuePower): void {
  planners.set(core, q);
}

/** The running policy, or undefined when the cluster file has no powerPolicy. */
export function queuePowerOf(core: object): QueuePower | undefined {
  return planners.get(core);
}
