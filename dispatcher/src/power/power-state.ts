/**
 * The last known power state of each node, for the node view (`power`, `unreachable`) and the
 * power policy: read from what happens, not asked of BMCs (a status call per node per page
 * view would be a storm). It follows the event log:
 *   - `node.power` that succeeded: the state read or set (a cycle or reset leaves it on);
 *   - `node.state`: booting, ready, busy or draining mean on; off means off (poweroff through
 *     the agent, or the policy);
 * and starts, after a dispatcher (re)start, from the registry's states.
 *
 * `unreachable`: the power policy powered a node on twice and it did not come back; cleared
 * when its agent says hello again.
 */
import type { EventLog } from '../events/event-log.js';
import type { ClusterEvent } from '../api/schemas.js';
import type { NodeRegistry } from '../nodes/registry.js';
import type { Mac } from '../nodes/mac.js';
import type { PowerState } from './bmc.js';
import type { PowerActor } from './service.js';

export interface PowerRecord {
  state: PowerState;
  /** Unix ms of the action or observation. */
  at: number;
  by?: PowerActor;
}

export interface Unreachable {
  since: number;
  reason: string;
}

const ON_STATES = new Set(['booting', 'ready', 'busy', 'draining']);

export class PowerStates {
  readonly #power = new Map<Mac, PowerRecord>();
  readonly #unreachable = new Map<Mac, Unreachable>();
  readonly #unsubscribe: () => void;

  constructor(
    private readonly nodes: NodeRegistry,
    events: EventLog,
  ) {
    this.#unsubscribe = events.subscribe((e) => this.#onEvent(e));
  }

  /** The last known power of a node (from its registry state when nothing was seen since start). */
  of(mac: Mac): PowerRecord {
    const known = this.#power.get(mac);
    if (known) return known;
    const n = this.nodes.byMac(mac);
    if (!n) return { state: 'unknown', at: 0 };
    const state: PowerState = ON_STATES.has(n.state) ? 'on' : n.state === 'off' ? 'off' : 'unknown';
    return { state, at: n.stateSince };
  }

  /** Records a state; one observed again without an actor keeps who set it and when. */
  set(mac: Mac, state: PowerState, at: number, by?: PowerActor): void {
    const prev = this.#power.get(mac);
    if (prev && prev.state === state && by === undefined) return;
    this.#power.set(mac, { state, at, ...(by ? { by } : {}) });
  }

  unreachable(mac: Mac): Unreachable | undefined {
    return this.#unreachable.get(mac);
  }

  markUnreachable(mac: Mac, u: Unreachable): void {
    this.#unreachable.set(mac, u);
  }

  clearUnreachable(mac: Mac): boolean {
    return this.#unreachable.delete(mac);
  }

  close(): void {
    this.#unsubscribe();
  }

  #onEvent(e: ClusterEvent): void {
    if (!e.node || !e.data) return;
    const d = e.data as Record<string, unknown>;
    if (e.kind === 'node.power' && d.ok === true) {
      const n = this.nodes.byName(e.node);
      if (!n) return;
      const by = (typeof d.by === 'string' ? d.by : undefined) as PowerActor | undefined;
      const power = d.power === 'on' || d.power === 'off' ? d.power : d.action === 'cycle' || d.action === 'reset' ? 'on' : undefined;
      if (power) this.set(n.mac, power, e.ts, by);
    } else if (e.kind === 'node.state') {
      const n = this.nodes.byName(e.node);
      if (!n) return;
      if (ON_STATES.has(String(d.to))) {
        this.set(n.mac, 'on', e.ts);
        if (d.to !== 'booting') this.clearUnreachable(n.mac);
      } else if (d.to === 'off') this.set(n.mac, 'off', e.ts, String(d.reason ?? '').startsWith('operator') ? 'operator' : undefined);
    }
  }
}

const trackers = new WeakMap<object, PowerStates>();

/** The power states of a dispatcher (one per core: the view, healing and the policy share it). */
export function powerStatesOf(core: { nodes: NodeRegistry; events: EventLog }): PowerStates {
  let t = trackers.get(core);
  if (!t) {
    t = new PowerStates(core.nodes, core.events);
    trackers.set(core, t);
  }
  return t;
}
