/**
 * Keeps the operator's node states honest over time:
 * - a node `rebooting` that has not booted again after REBOOT_GIVE_UP_MS becomes `lost`;
 * - a node `draining` whose agent (re)connects gets the hub's drain flag again (the hub's
 *   flag lives with the connection; the registry's state survives reconnects and restarts);
 * - after a dispatcher restart, a node the store says is ready, busy or draining but whose
 *   agent has not reconnected within `reconnectGraceMs` becomes `lost` (agents reconnect
 *   within a few heartbeats; the hub only declares lost the connections it has seen).
 */
import type { NodeControl } from '../agents/control-contract.js';
import type { NodeRegistry } from './registry.js';

export const REBOOT_GIVE_UP_MS = 15 * 60_000;
export const WATCHDOG_INTERVAL_MS = 1_000;
/** Least time given to agents to reconnect after a dispatcher (re)start. */
export const MIN_RECONNECT_GRACE_MS = 30_000;

export class NodeWatchdog {
  #timer: NodeJS.Timeout | undefined;

  readonly #startedAt: number;

  constructor(
    private readonly nodes: NodeRegistry,
    private readonly control: () => NodeControl,
    private readonly now: () => number = Date.now,
    private readonly opts: { giveUpMs?: number; reconnectGraceMs?: number } = {},
  ) {
    this.#startedAt = now();
  }

  start(): void {
    this.#timer = setInterval(() => this.check(), WATCHDOG_INTERVAL_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  check(): void {
    const control = this.control();
    const t = this.now();
    const giveUpMs = this.opts.giveUpMs ?? REBOOT_GIVE_UP_MS;
    const graceMs = this.opts.reconnectGraceMs ?? MIN_RECONNECT_GRACE_MS;
    for (const n of this.nodes.list()) {
      const connected = control.isConnected(n.mac);
      if (n.state === 'rebooting' && t - n.stateSince > giveUpMs && !connected)
        this.nodes.setState(n.mac, 'lost', `not back ${Math.round(giveUpMs / 60_000)} min after its reboot`, { by: 'operator' });
      else if (n.state === 'draining' && connected && !control.isDraining(n.mac)) control.setDraining(n.mac, true);
      else if (
        (n.state === 'ready' || n.state === 'busy' || n.state === 'draining') &&
        !connected &&
        t - Math.max(this.#startedAt, n.stateSince) > graceMs
      )
        this.nodes.setState(n.mac, 'lost', `its agent did not reconnect within ${Math.round(graceMs / 1000)} s`, { by: 'operator' });
    }
  }
}
