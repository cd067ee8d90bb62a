/**
 * Node states and who may move a node between them.
 *
 *   booting    a boot began (DHCP from the firmware, boot script served)
 *   ready      the agent said hello and runs no task
 *   busy       the agent runs tasks
 *   draining   operator: running tasks finish, no new ones (until undrain or a reboot)
 *   rebooting  operator: reboot acknowledged by the agent; ends when the node boots again
 *   lost       the agent stopped answering (missed heartbeats or closed connection)
 *   off        operator: powered off (or listed in the cluster file and never seen)
 *
 * Two kinds of source move nodes: *activity* (the DHCP server, boot routes, the agent hub
 * reporting what it sees) and the *operator* (commands). The operator's states hold against
 * activity that does not end them: a draining node that starts or finishes a task stays
 * draining; a rebooting node whose connection closes is not lost, it is rebooting; a node
 * that was powered off is off, not lost; a booting node whose previous boot's connection
 * times out is booting, not lost. A rebooting or off node leaves that state when it
 * boots again (booting) or its agent says hello (ready).
 */

import type { NodeState } from '../api/schemas.js';

export type TransitionSource = 'activity' | 'operator';

/** Whether a requested transition applies (pure; the registry records it as an event when it does). */
export function transitionApplies(from: NodeState, to: NodeState, by: TransitionSource): boolean {
  if (from === to) return false;
  if (by === 'operator') return true;
  switch (from) {
    case 'booting':
      // A booting node has no agent yet: a connection that ends now is the previous boot's
      // (a hard power cycle, a panic), and the new boot's hello settles the state.
      return to !== 'lost';
    case 'draining':
      return to !== 'ready' && to !== 'busy';
    case 'rebooting':
    case 'off':
      // Only a new boot (booting) or a hello (see helloState) ends these; a closed connection or
      // a heartbeat from before the reboot does not.
      return to === 'booting' || (from === 'rebooting' && to === 'off');
    default:
      return true;
  }
}

/** The state an agent's hello moves a node to, or undefined to leave it (draining stays draining). */
export function helloState(current: NodeState): NodeState | undefined {
  switch (current) {
    case 'booting':
    case 'rebooting':
    case 'lost':
    case 'off':
      return 'ready';
    default:
      return undefined;
  }
}
