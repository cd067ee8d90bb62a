/**
 * The seam between the dispatch engine (task list, store, scheduling: dispatch/) and the
 * agent hub (WebSocket connections, protocol, trust: agents/). The hub knows connections
 * and nodes; the engine knows tasks. Neither imports the other's internals.
 *
 *   hub  --takeTasks/submitResults/progress/nodeLost/readopt-->  engine
 *   hub  <--onTasksAvailable/onCancel--  engine
 */
import type { Mac } from '../nodes/mac.js';

/** What the engine needs to know of a node to match tasks against it. */
export interface NodeCapacity {
  mac: Mac;
  name: string;
  labels: readonly string[];
  cores: number;
  memoryMiB: number;
}

/** A task as handed to an agent: everything it needs to run it. */
export interface TaskAssignment {
  taskId: number;
  jobId: number;
  /** 1 for the first hand-out, 2 for the next... A speculative copy has its own attempt number. */
  attempt: number;
  /** argv (run directly) or a shell string (run by /bin/sh -c). */
  command: string[] | string;
  env: Record<string, string>;
  /** Relative to the task's work dir. */
  cwd: string | null;
  /** Bytes fed to the task's stdin, base64. */
  stdinB64: string | null;
  /** URL path (on the dispatcher) of a tar to unpack into the work dir before running, or null. */
  inputsPath: string | null;
  /** sha256 (hex) of that tar, checked by the agent before it unpacks anything; null without inputs. */
  inputsSha256: string | null;
  timeoutMs: number;
}

/** What an agent reports when a task ends. */
export interface TaskResult {
  taskId: number;
  attempt: number;
  /** Exit code, or null when killed by a signal. */
  exitCode: number | null;
  signal: string | null;
  /** The agent killed it at its timeout. */
  timedOut: boolean;
  /** The runner could not start it (bad command, missing cwd...), with why. */
  error: string | null;
  startedAt: number;
  durationMs: number;
  maxRssKiB: number | null;
  stdout: string;
  stderr: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** Files the task wrote under out/, as a gzip-compressed tar, base64; null if none. */
  outputsTarGzB64: string | null;
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
  /** Hands out up to `max` tasks to this node now; may return fewer or none. Never blocks. */
  takeTasks(node: NodeCapacity, max: number): TaskAssignment[];
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
