/**
 * The seam between the dispatch engine (task list, store, scheduling: dispatch/) and the
 * agent hub (WebSocket connections, protocol, trust: agents/). The hub knows connections
 * and nodes; the engine knows tasks. Neither imports the other's internals.
 *
 *   hub  --takeTasks/submitResults/progress/nodeLost/readopt-->  engine
 *   hub  <--onTasksAvailable/onCancel--  engine
 */
import type { Mac } from '../nodes/mac.js';
import type { Resources, TaskAssignment, TaskResult } from '../protocol/messages.js';

/** What the engine needs to know of a node to match tasks against it. */
export interface NodeCapacity {
  mac: Mac;
  name: string;
  labels: readonly string[];
  cores: number;
  memoryMiB: number;
  /** The image the node booted (its agent's hello); absent or null when it did not say. */
  image?: string | null;
  /** What its agent allocates to tasks (hello); absent: an agent that did not say (cores and memory above, no GPU). */
  alloc?: Resources;
}

/**
 * `recorded`: durable now (ack it). `duplicate`: this task already has its result (ack it,
 * drop it). `stale`: not a task this node holds (ack it, drop it; logged).
 */
export type ResultOutcome = 'recorded' | 'duplicate' | 'stale';

export interface RunningTaskRef {
  taskId: number;
  attempt: number;
}

export interface DispatchEngine {
  /**
   * Hands out up to `max` tasks to this node now; may return fewer or none. Never blocks.
   * With `free`, only tasks whose requests fit in it, each spending its request from it.
   */
  takeTasks(node: NodeCapacity, max: number, free?: Resources): TaskAssignment[];
  /** Records results; resolves once each outcome is durable (group commit). */
  submitResults(node: NodeCapacity, results: TaskResult[]): Promise<ResultOutcome[]>;
  /** Progress of a running task, as a fraction 0..1 (from a `PROGRESS 0.42` line). */
  progress(mac: Mac, ref: RunningTaskRef, fraction: number): void;
  /** The node is gone (connection closed or heartbeats missed): its tasks go back to the list now. */
  nodeLost(mac: Mac): void;
  /**
   * A node (re)connected saying it runs these tasks (after a dispatcher restart, or a
   * reconnect). The engine re-adopts those whose lease it still holds for this node;
   * the others must be cancelled on the node.
   */
  readopt(node: NodeCapacity, running: RunningTaskRef[]): { keep: RunningTaskRef[]; cancel: RunningTaskRef[] };
  /** Called when tasks become available, so the hub can feed its idle agents. */
  onTasksAvailable(listener: () => void): () => void;
  /** The engine wants a running copy stopped (the other speculative copy won, job cancelled, task cancelled). */
  onCancel(listener: (mac: Mac, ref: RunningTaskRef, reason: string) => void): () => void;
}
