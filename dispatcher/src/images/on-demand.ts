/**
 * On-demand images: when queued tasks require an image that no idle node runs, move an idle
 * node onto it (set its image, reboot it: by kexec where it can). Off unless the cluster file
 * turns it on:
 *
 *   onDemand:
 *     images: [default, ml]   # images nodes may be moved between (a node on another image is never moved)
 *     keep: {default: 1}      # at least this many nodes stay on an image
 *
 * Every pass (every few seconds) looks at the idle nodes: connected, ready, no task running,
 * not draining, on an image of the list, and with no queued task they could run as they are.
 * For such a node, an image of the list with queued tasks that fit the node, and no idle node
 * already on it nor one on its way to it, is its new image, unless moving it would leave its
 * current image below `keep`. One move per image at a time; each is an event saying why.
 */
import type { Core } from '../core.js';
import type { NodeCapacity } from '../dispatch/contract.js';
import type { NodeControl } from '../agents/control-contract.js';
import type { NodeActions } from '../nodes/actions.js';
import type { NodeRecord } from '../nodes/registry.js';
import type { OnDemandPolicy } from '../nodes/cluster-file.js';
import { inventorySummary } from '../api/nodes/view.js';

export const ON_DEMAND_INTERVAL_MS = 3000;
/** A move not seen through (the node not back on its new image) after this long frees its image for another. */
const MOVE_TIMEOUT_MS = 10 * 60_000;

export interface OnDemandDeps {
  core: Core;
  /** Whether some queued task fits a node of this capacity (dispatch/ring.ts). */
  hasWorkFor: (node: NodeCapacity) => boolean;
  control: () => NodeControl;
  actions: NodeActions;
  policy: OnDemandPolicy;
}

export class OnDemandImages {
  /** Moves under way: MAC → image and when. */
  readonly #moving = new Map<string, { image: string; since: number }>();
  #timer: NodeJS.Timeout | undefined;
  #busy = false;

  constructor(private readonly deps: OnDemandDeps) {}

  start(intervalMs = ON_DEMAND_INTERVAL_MS): void {
    this.#timer = setInterval(() => void this.tick(), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One pass; resolves once the moves it decided are under way. */
  async tick(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      await this.#pass();
    } catch (err) {
      this.deps.core.log.warn({ err: (err as Error).message }, 'on-demand images: pass failed');
    } finally {
      this.#busy = false;
    }
  }

  async #pass(): Promise<void> {
    const { core, control, policy } = this.deps;
    const now = core.now();
    const nodes = core.nodes.list().filter((n) => n.enrollment === 'admitted');
    for (const [mac, m] of this.#moving) {
      const n = core.nodes.byMac(mac as NodeRecord['mac']);
      if (!n || n.bootedImage?.name === m.image || now - m.since > MOVE_TIMEOUT_MS) this.#moving.delete(mac);
    }
    const running = (n: NodeRecord) => n.bootedImage?.name ?? null;
    const idle = (n: NodeRecord) =>
      control().isConnected(n.mac) &&
      n.state === 'ready' &&
      !control().isDraining(n.mac) &&
      (control().liveStatus(n.mac)?.running.length ?? 0) === 0 &&
      !this.#moving.has(n.mac);
    const capacity = (n: NodeRecord, image: string | null): NodeCapacity => {
      const inv = inventorySummary(n.inventory);
      return { mac: n.mac, name: n.name, labels: n.labels, cores: inv.cores ?? 0, memoryMiB: inv.memoryMiB ?? 0, image };
    };
    const onImage = (image: string) => nodes.filter((n) => running(n) === image && !this.#moving.has(n.mac)).length;
    const movingTo = new Set([...this.#moving.values()].map((m) => m.image));
    for (const n of nodes) {
      const current = running(n);
      if (!current || !policy.images.includes(current) || !idle(n)) continue;
      if (this.deps.hasWorkFor(capacity(n, current))) continue;
      for (const target of policy.images) {
        if (target === current || movingTo.has(target)) continue;
        if (!core.images.catalog.get(target)) continue;
        if (!this.deps.hasWorkFor(capacity(n, target))) continue;
        // An idle node already on the target takes those tasks itself.
        if (nodes.some((o) => o !== n && running(o) === target && idle(o))) continue;
        const keep = policy.keep[current] ?? 0;
        if (onImage(current) - 1 < keep) continue;
        await this.#move(n, current, target);
        movingTo.add(target);
        break;
      }
    }
  }

  async #move(n: NodeRecord, from: string, to: string): Promise<void> {
    const { core, actions } = this.deps;
    this.#moving.set(n.mac, { image: to, since: core.now() });
    core.nodes.updateSettings(n.mac, { image: to });
    core.events.append({
      kind: 'image.on-demand',
      node: n.name,
      message: `${n.name} moves from ${from} to ${to}: queued tasks need ${to} and no idle node runs it`,
      data: { from, to },
    });
    try {
      await actions.reboot(n.name);
    } catch (err) {
      this.#moving.delete(n.mac);
      core.events.append({
        kind: 'image.on-demand',
        node: n.name,
        message: `${n.name} could not be moved to ${to}: ${(err as Error).message}`,
        data: { from, to, error: (err as Error).message },
      });
    }
  }
}
