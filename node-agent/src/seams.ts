/**
 * The agent's seams: small interfaces declared here, by the code that uses them (agent.ts),
 * each with a real implementation beside it and a fake in test/unit/agent/fakes.ts
 * (the shape of tinkerbell/tink's internal/agent).
 *
 *   TaskSource  — the connection to the dispatcher: hello/welcome, then messages both ways
 *   TaskRunner  — runs one task (or an operator's exec) in its own process group
 *   Reporter    — keeps finished results until the dispatcher acknowledges them
 *   Inventory   — what the machine is (hello), how it is doing (heartbeats), full inspect
 *   Power       — reboot (by the firmware or kexec) and poweroff
 */
import type { TaskAssignment, TaskResult } from '../../dispatcher/src/protocol/messages.js';
import type {
  AgentMessage,
  HealthCheck,
  Inventory as InventoryInfo,
  KexecPlan,
  RunningTask,
  TaskRef,
} from '../../dispatcher/src/protocol/messages.js';
import type { AgentInbound } from './task-batch.js';

export interface SessionInfo {
  nodeName: string;
  heartbeatMs: number;
  missedHeartbeats: number;
  maxMessageBytes: number;
  /** false only in --insecure mode (the dispatcher's identity was not checked). */
  verified: boolean;
  /** The health check the dispatcher gives this node (health-check.ts); absent: none. */
  healthCheck?: HealthCheck;
}

export interface SourceHandlers {
  /** What the next hello reports: tasks still running, results not yet acknowledged. */
  helloState(): { running: RunningTask[]; undelivered: TaskRef[] };
  /** The handshake succeeded: messages flow. */
  connected(session: SessionInfo): void;
  /** A message after the handshake (never welcome or refused), or a task batch salvaged in part (task-batch.ts). */
  message(msg: AgentInbound): void;
  /** The session ended; the source reconnects by itself. */
  disconnected(why: string): void;
}

export interface TaskSource {
  start(handlers: SourceHandlers): void;
  /** Sends on the current session; false when there is none (the caller keeps what matters). */
  send(msg: AgentMessage): boolean;
  readonly isConnected: boolean;
  stop(): Promise<void>;
}

export interface RunningHandle {
  /** Settles once the task ended and its process group is gone; never rejects. */
  readonly result: Promise<TaskResult>;
  /** Stops the task (SIGTERM to its group, SIGKILL after the grace). */
  cancel(reason: string): void;
}

export interface ExecOutcome {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  durationMs: number;
  error?: string;
}

export interface TaskRunner {
  /** Why no task can start here (a broken task root), or null: the agent asks for none while it says so. */
  refusal(): string | null;
  start(task: TaskAssignment, onProgress: (fraction: number) => void): RunningHandle;
  /** An operator's command, outside the queue; output streams through onOutput. */
  exec(command: string[] | string, timeoutMs: number, onOutput: (stream: 'stdout' | 'stderr', chunk: string) => void): Promise<ExecOutcome>;
}

export interface Reporter {
  /** Keeps a finished task's result until acknowledged. */
  add(result: TaskResult): void;
  acknowledge(refs: readonly TaskRef[]): void;
  /** Results not yet acknowledged, oldest first. */
  unacknowledged(): TaskResult[];
  readonly size: number;
}

export interface LiveFigures {
  load1: number | null;
  memUsedMiB: number | null;
  memTotalMiB: number | null;
  uptimeS: number | null;
}

export interface Inventory {
  collect(): Promise<InventoryInfo>;
  live(): LiveFigures;
  inspect(): Promise<unknown>;
}

export interface Power {
  /** Why power commands are refused on this machine, or null if they are allowed. */
  refusal(): string | null;
  reboot(): Promise<void>;
  poweroff(): Promise<void>;
  /** Fetches, checks and loads the plan's kernel (kexec.ts); rejects naming the file and what was wrong. */
  loadKexec(plan: KexecPlan): Promise<void>;
  /** Jumps into the loaded kernel. It never settles when it works: settling (either way) means it failed. */
  execKexec(): Promise<void>;
}
