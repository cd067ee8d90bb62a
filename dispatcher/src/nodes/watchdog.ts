/**
 * Keeps the operator's node states honest over time:
 * - a node `rebooting` that has not booted again after REBOOT_GIVE_UP_MS becomes `lost`;
 * - a node `draining` whose agent (re)connects gets the hub's drain flag again (the hub's
 *   flag lives with the connection; the registry's state survives reconnects and restarts).
 */
import type { NodeControl } from '../agents/control-contract.js';
import type { NodeRegistry } from './registry.js';

export const REBOOT_GIVE_UP_MS = 15 * 60_000;
export const WATCHDOG_INTERVAL_MS = 1_000;

export class NodeWatchdog {
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly nodes: NodeRegistry,
    private readonly control: () => NodeControl,
    private readonly now: () => number = Date.now,
    private readonly giveUpMs = REBOOT_GIVE_UP_MS,
  ) {}

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
    for (const n of this.nodes.list()) {
      if (n.state === 'rebooting' && t - n.stateSince > this.giveUpMs && !control.isConnected(n.mac))
        this.nodes.setState(n.mac, 'lost', `not back ${Math.round(this.giveUpMs / 60_000)} min after its reboot`, { by: 'operator' });
      else if (n.state === 'draining' && control.isConnected(n.mac) && !control.isDraining(n.mac)) control.setDraining(n.mac, true);
    }
  }
}
