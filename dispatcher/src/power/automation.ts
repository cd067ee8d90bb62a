/**
 * Starts what the cluster file turns on of the dispatcher's own power actions: self-healing
 * (`healing`, healing.ts) and power driven by the queue (`powerPolicy`, queue-power.ts).
 */
import type { Core } from '../core.js';
import type { NodeCapacity } from '../dispatch/contract.js';
import type { NodeControl } from '../agents/control-contract.js';
import type { NodeActions } from '../nodes/actions.js';
import { consoleLogOf } from '../console/store.js';
import { powerServiceOf } from './service.js';
import { powerStatesOf } from './power-state.js';
import { SelfHealing } from './healing.js';
import { QueuePower, registerQueuePower } from './queue-power.js';

export interface PowerAutomationDeps {
  core: Core;
  queue: { hasWorkFor(node: NodeCapacity): boolean; stats(): { queued: number } };
  control: () => NodeControl;
  actions: NodeActions;
}

export function startPowerAutomation(deps: PowerAutomationDeps): { stop(): void } {
  const { core } = deps;
  const power = powerServiceOf(core);
  const states = powerStatesOf(core);
  const stops: (() => void)[] = [];
  if (core.cluster.healing) {
    const healing = new SelfHealing({ core, policy: core.cluster.healing, power, console: consoleLogOf(core.db) });
    healing.start();
    stops.push(() => healing.stop());
  }
  if (core.cluster.powerPolicy) {
    const q = new QueuePower({ ...deps, policy: core.cluster.powerPolicy, power, states });
    registerQueuePower(core, q);
    q.start();
    stops.push(() => q.stop());
  }
  return { stop: () => stops.forEach((s) => s()) };
}
