/**
 * Power driven by the queue: the decisions, as a pure function of the nodes, the queue and
 * the clock (queue-power.ts gathers the inputs, carries the decisions out and records them).
 *
 * Per group of the policy (power/policy-config.ts):
 *   - a node powered on by the policy that has not said hello within bootTimeoutSeconds is
 *     powered on again (a second try); after the second, it is `unreachable` and left alone;
 *   - off nodes are powered on while queued tasks fit them (the ring's own fit, through
 *     `queue.hasWorkFor`) and more tasks are queued than the free slots of the nodes that
 *     will take them soon: on nodes with a free slot that the work fits, and nodes on their
 *     way up;
 *   - nodes idle (connected, ready, no task, not draining) for idleOffSeconds, that no queued
 *     task fits, are powered off, longest idle first, as long as minOn of the group stay on.
 * Every node gets a decision, with its reason: `hold` ones are what the dry-run view shows.
 */
import type { NodeCapacity } from '../dispatch/contract.js';
import type { NodeState } from '../api/schemas.js';
import type { Mac } from '../nodes/mac.js';
import { groupOf, type PowerGroup } from './policy-config.js';

export interface PolicyNode {
  name: string;
  mac: Mac;
  labels: readonly string[];
  state: NodeState;
  connected: boolean;
  draining: boolean;
  /** Tasks running on it now. */
  running: number;
  /** Its agent's slots (live), else its last known; null: unknown. */
  slots: number | null;
  /** Since when it has been idle (connected, ready, no task, not draining); null: not idle. */
  idleSince: number | null;
  /** What it can run, as it would boot (labels, cores, memory, image). */
  capacity: NodeCapacity;
  /** How the policy can power it on: its BMC, else Wake-on-LAN. */
  powerOn: 'bmc' | 'wol';
  /** How the policy can power it off: its BMC, else its agent (when connected). */
  powerOff: 'bmc' | 'agent' | null;
  /** Who powered it off, when it is off: the operator's off nodes are left off. */
  offBy: 'operator' | 'policy' | null;
  /** The policy powered it on and waits for its hello. */
  waking: { since: number; tries: number } | null;
  unreachable: boolean;
}

export interface QueueView {
  /** Whether some queued task fits a node of this capacity (the ring's fit, dispatch/ring.ts). */
  hasWorkFor(node: NodeCapacity): boolean;
  /** Tasks waiting for a node. */
  queued: number;
}

export type PowerDecision =
  | { kind: 'on'; node: string; mac: Mac; group: string; via: 'bmc' | 'wol'; attempt: number; reason: string }
  | { kind: 'off'; node: string; mac: Mac; group: string; via: 'bmc' | 'agent'; reason: string }
  | { kind: 'unreachable'; node: string; mac: Mac; group: string; reason: string }
  | { kind: 'hold'; node: string; mac: Mac; group: string | null; reason: string };

/** A decision before it names its node and group (decidePower adds them). */
type Verdict = PowerDecision extends infer D ? (D extends unknown ? Omit<D, 'node' | 'mac' | 'group'> : never) : never;

/** Tries at powering a node on before it is unreachable. */
export const POWER_ON_TRIES = 2;

const UP_STATES = new Set<NodeState>(['booting', 'ready', 'busy', 'draining', 'rebooting']);

export function decidePower(groups: readonly PowerGroup[], nodes: readonly PolicyNode[], queue: QueueView, now: number): PowerDecision[] {
  const out: PowerDecision[] = [];
  const byGroup = new Map<PowerGroup, PolicyNode[]>();
  for (const n of nodes) {
    const g = groupOf(groups, n.labels);
    if (!g) {
      out.push({ kind: 'hold', node: n.name, mac: n.mac, group: null, reason: 'in no group of the power policy' });
      continue;
    }
    const list = byGroup.get(g) ?? [];
    byGroup.set(g, list);
    list.push(n);
  }
  // Queued tasks not yet covered by a node that will take them soon (shared by all groups: one queue).
  let demand = queue.queued;
  const slotsOf = (n: PolicyNode) => Math.max(1, n.slots ?? n.capacity.cores ?? 1);
  for (const list of byGroup.values())
    for (const n of list) {
      if (!queue.hasWorkFor(n.capacity)) continue;
      if (isWaking(n)) demand -= slotsOf(n);
      else if (n.connected && !n.draining && (n.state === 'ready' || n.state === 'busy')) demand -= Math.max(0, slotsOf(n) - n.running);
    }
  for (const [g, list] of byGroup) {
    const decided = new Set<PolicyNode>();
    const decide = (n: PolicyNode, v: Verdict) => {
      decided.add(n);
      out.push({ ...v, node: n.name, mac: n.mac, group: g.name });
    };
    const bootS = g.bootTimeoutSeconds;
    let on = list.filter((n) => n.connected || UP_STATES.has(n.state) || isWaking(n)).length;

    // 1. Nodes on their way up, or not coming back.
    for (const n of list) {
      if (!n.waking || n.connected) continue;
      const waited = (now - n.waking.since) / 1000;
      if (waited < bootS)
        decide(n, {
          kind: 'hold',
          reason: `powered on ${Math.round(waited)} s ago, waiting for its agent (up to ${bootS} s)`,
        });
      else if (n.waking.tries < POWER_ON_TRIES) {
        decide(n, {
          kind: 'on',
          via: n.powerOn,
          attempt: n.waking.tries + 1,
          reason: `not back ${Math.round(waited)} s after power-on try ${n.waking.tries} of ${POWER_ON_TRIES}: powered on again`,
        });
      } else {
        on--;
        decide(n, {
          kind: 'unreachable',
          reason: `not back after ${POWER_ON_TRIES} power-on tries (${bootS} s each): left alone until its agent says hello`,
        });
      }
    }

    // 2. Power on for queued work.
    for (const n of list) {
      if (decided.has(n) || n.connected || n.state !== 'off') continue;
      const hold = (reason: string) => decide(n, { kind: 'hold', reason });
      if (n.unreachable) hold('unreachable: not back after two power-on tries');
      else if (n.offBy === 'operator') hold('powered off by the operator: the policy leaves it off');
      else if (!queue.hasWorkFor(n.capacity)) hold('off: no queued task fits it');
      else if (demand <= 0) hold('off: nodes on or on their way up will take the queued tasks it fits');
      else {
        demand -= slotsOf(n);
        on++;
        decide(n, {
          kind: 'on',
          via: n.powerOn,
          attempt: 1,
          reason: `queued tasks fit it and no running node will take them soon (${queue.queued} queued)`,
        });
      }
    }

    // 3. Power off idle nodes, longest idle first, keeping minOn.
    const idle = list
      .filter((n) => !decided.has(n) && n.idleSince !== null && n.connected && n.state === 'ready' && !n.draining && n.running === 0)
      .sort((a, b) => a.idleSince! - b.idleSince! || a.name.localeCompare(b.name));
    for (const n of idle) {
      const hold = (reason: string) => decide(n, { kind: 'hold', reason });
      const idleS = (now - n.idleSince!) / 1000;
      if (idleS < g.idleOffSeconds) hold(`idle for ${Math.round(idleS)} s of ${g.idleOffSeconds}`);
      else if (queue.hasWorkFor(n.capacity)) hold('idle, but queued tasks fit it');
      else if (on - 1 < g.minOn) hold(`idle, kept on: the group keeps ${g.minOn} on`);
      else if (!n.powerOff) hold('idle, but it has no BMC and no agent to power it off');
      else {
        on--;
        decide(n, {
          kind: 'off',
          via: n.powerOff,
          reason: `idle for ${Math.round(idleS)} s (policy: ${g.idleOffSeconds} s), no queued task fits it, ${on} of the group stay on (min ${g.minOn})`,
        });
      }
    }

    for (const n of list) {
      if (decided.has(n)) continue;
      decide(n, { kind: 'hold', reason: holdReason(n) });
    }
  }
  return out;
}

function isWaking(n: PolicyNode): boolean {
  return n.waking !== null && !n.connected;
}

function holdReason(n: PolicyNode): string {
  if (n.running > 0) return `busy: ${n.running} task(s) running`;
  if (n.draining) return 'draining';
  if (n.state === 'off') return n.connected ? "off: its agent's connection has not timed out yet" : 'off';
  if (n.state === 'lost') return 'lost: for self-healing, not the power policy';
  return n.state;
}
