/**
 * The seam between the agent hub (agents/: connections, protocol) and the operator surface
 * (API routes, dispatcherctl, web page): how to act on one node over its agent's connection.
 * No SSH and no inbound port on the node: every command rides the agent's own WebSocket.
 */
import type { Mac } from '../nodes/mac.js';
import type { KexecPlan, NodeResources, Resources } from '../protocol/messages.js';

export type ControlCommand =
  /** `kexec`: boot that plan without the firmware (done when the agent says which path it takes); `firmware`: never kexec. */
  | { kind: 'reboot'; kexec?: KexecPlan; firmware?: boolean }
  | { kind: 'poweroff' }
  /** Full systeminformation snapshot plus live load, memory, temperatures. */
  | { kind: 'inspect' }
  /** Run a command now, outside the queue; output streams back through `onOutput`. */
  | { kind: 'exec'; command: string[] | string; timeoutMs?: number }
  /** Stop one running task (the engine also cancels through the hub for speculative copies). */
  | { kind: 'cancel'; taskId: number; attempt?: number };

export interface ControlOutcome {
  /** The agent acknowledged (and, for inspect/exec, completed) the command. */
  ok: boolean;
  /** Time from sending the command to the agent's acknowledgement, ms. */
  ackMs: number;
  /** inspect: the snapshot; exec: { exitCode, signal, durationMs }. */
  result?: unknown;
  /** Why it failed, when ok is false. */
  error?: string;
}

export interface NodeControl {
  /** Whether the node's agent is connected and authenticated now. */
  isConnected(mac: Mac): boolean;
  /** MACs of every connected agent. */
  connected(): Mac[];
  /**
   * Sends a command and resolves with its outcome: reboot/poweroff/cancel on
   * acknowledgement; inspect/exec when complete. Rejects with DispatcherError
   * DSP_ERR_NODE_OFFLINE if the agent is not connected, DSP_ERR_TIMEOUT if it does not answer.
   */
  send(
    mac: Mac,
    cmd: ControlCommand,
    opts?: { timeoutMs?: number; onOutput?: (stream: 'stdout' | 'stderr', chunk: string) => void },
  ): Promise<ControlOutcome>;
  /** Draining: running tasks finish, no new tasks are handed to the node. */
  setDraining(mac: Mac, draining: boolean): void;
  isDraining(mac: Mac): boolean;
  /** Live figures the agent sends with its heartbeats (load, memory, running tasks). */
  liveStatus(mac: Mac): AgentLiveStatus | undefined;
}

export interface AgentLiveStatus {
  connectedAt: number;
  lastHeartbeat: number;
  load1: number | null;
  memUsedMiB: number | null;
  memTotalMiB: number | null;
  uptimeS: number | null;
  slots: number;
  running: { taskId: number; attempt: number; progress: number | null; startedAt: number }[];
  /** What the agent allocates to tasks (its hello), and whether cgroups enforce it. */
  resources?: NodeResources;
  /** Resources of its running and queued tasks (its last heartbeat). */
  allocated?: Resources;
}
