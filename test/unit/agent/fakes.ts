/**
 * Fakes of the agent's seams (node-agent/src/seams.ts), for driving the agent core without
 * sockets, processes or a real machine.
 */
import type { TaskAssignment, TaskResult } from '../../../dispatcher/src/protocol/messages.js';
import type { AgentMessage, DispatcherMessage, KexecPlan, TaskRef } from '../../../dispatcher/src/protocol/messages.js';
import type {
  ExecOutcome,
  Inventory,
  LiveFigures,
  Power,
  Reporter,
  RunningHandle,
  SessionInfo,
  SourceHandlers,
  TaskRunner,
  TaskSource,
} from '../../../node-agent/src/seams.js';
import { FAKE_INVENTORY } from '../protocol/fixtures.js';

export const SESSION: SessionInfo = {
  nodeName: 'node1',
  heartbeatMs: 60_000,
  missedHeartbeats: 3,
  maxMessageBytes: 1 << 20,
  verified: true,
};

export class FakeSource implements TaskSource {
  handlers: SourceHandlers | undefined;
  readonly sent: AgentMessage[] = [];
  isConnected = false;

  start(h: SourceHandlers): void {
    this.handlers = h;
  }
  send(msg: AgentMessage): boolean {
    if (!this.isConnected) return false;
    this.sent.push(msg);
    return true;
  }
  async stop(): Promise<void> {
    this.isConnected = false;
  }
  connect(session: SessionInfo = SESSION): void {
    this.isConnected = true;
    this.handlers!.connected(session);
  }
  deliver(msg: DispatcherMessage): void {
    this.handlers!.message(msg);
  }
  disconnect(why = 'test'): void {
    this.isConnected = false;
    this.handlers!.disconnected(why);
  }
  of<T extends AgentMessage['type']>(type: T): Extract<AgentMessage, { type: T }>[] {
    return this.sent.filter((m): m is Extract<AgentMessage, { type: T }> => m.type === type);
  }
}

/** A task running `true`, as the dispatcher would send it. */
export function trueTask(taskId: number, extra: Partial<TaskAssignment> = {}): TaskAssignment {
  return {
    taskId,
    jobId: 1,
    attempt: 1,
    command: ['true'],
    env: {},
    cwd: null,
    stdinB64: null,
    inputsPath: null,
    inputsSha256: null,
    timeoutMs: 1000,
    ...extra,
  };
}

export function okResult(t: TaskRef, extra: Partial<TaskResult> = {}): TaskResult {
  return {
    taskId: t.taskId,
    attempt: t.attempt,
    exitCode: 0,
    signal: null,
    timedOut: false,
    error: null,
    startedAt: 1,
    durationMs: 1,
    maxRssKiB: null,
    stdout: '',
    stderr: '',
    stdoutTruncated: false,
    stderrTruncated: false,
    outputsTarGzB64: null,
    ...extra,
  };
}

export class FakeRunner implements TaskRunner {
  readonly started: TaskAssignment[] = [];
  readonly cancelled: { taskId: number; reason: string }[] = [];
  readonly #pending = new Map<number, { task: TaskAssignment; resolve: (r: TaskResult) => void; progress: (f: number) => void }>();
  execOutcome: ExecOutcome = { exitCode: 0, signal: null, timedOut: false, durationMs: 3 };
  refused: string | null = null;

  refusal(): string | null {
    return this.refused;
  }

  start(task: TaskAssignment, onProgress: (f: number) => void): RunningHandle {
    this.started.push(task);
    let resolve!: (r: TaskResult) => void;
    const result = new Promise<TaskResult>((r) => (resolve = r));
    this.#pending.set(task.taskId, { task, resolve, progress: onProgress });
    return {
      result,
      cancel: (reason) => {
        this.cancelled.push({ taskId: task.taskId, reason });
        this.finish(task.taskId, { exitCode: null, signal: 'SIGTERM' });
      },
    };
  }
  finish(taskId: number, extra: Partial<TaskResult> = {}): void {
    const p = this.#pending.get(taskId);
    if (!p) throw new Error(`task ${taskId} is not running`);
    this.#pending.delete(taskId);
    p.resolve(okResult(p.task, extra));
  }
  progress(taskId: number, f: number): void {
    this.#pending.get(taskId)!.progress(f);
  }
  get running(): number[] {
    return [...this.#pending.keys()];
  }
  async exec(_c: string[] | string, _t: number, onOutput: (s: 'stdout' | 'stderr', c: string) => void): Promise<ExecOutcome> {
    onOutput('stdout', 'hello\n');
    onOutput('stderr', 'warn\n');
    return this.execOutcome;
  }
}

export class FakeReporter implements Reporter {
  readonly results = new Map<string, TaskResult>();
  add(r: TaskResult): void {
    this.results.set(`${r.taskId}:${r.attempt}`, r);
  }
  acknowledge(refs: readonly TaskRef[]): void {
    for (const r of refs) this.results.delete(`${r.taskId}:${r.attempt}`);
  }
  unacknowledged(): TaskResult[] {
    return [...this.results.values()];
  }
  get size(): number {
    return this.results.size;
  }
}

export class FakeInventory implements Inventory {
  async collect() {
    return FAKE_INVENTORY;
  }
  live(): LiveFigures {
    return { load1: 0.25, memUsedMiB: 100, memTotalMiB: 8192, uptimeS: 42 };
  }
  async inspect(): Promise<unknown> {
    return { fake: true };
  }
}

export class FakePower implements Power {
  readonly calls: string[] = [];
  constructor(public refusalText: string | null = null) {}
  refusal(): string | null {
    return this.refusalText;
  }
  async reboot(): Promise<void> {
    this.calls.push('reboot');
  }
  async poweroff(): Promise<void> {
    this.calls.push('poweroff');
  }
  /** What loadKexec does: resolve (loaded) by default, or the test's own (a real SystemPower's kexec with a stand-in program). */
  load: (plan: KexecPlan) => Promise<void> = async () => {};
  async loadKexec(plan: KexecPlan): Promise<void> {
    this.calls.push('loadKexec');
    await this.load(plan);
  }
  /** Like a real `kexec -e` that failed: it returns. */
  async execKexec(): Promise<void> {
    this.calls.push('execKexec');
    throw new Error('kexec -e returned: exit status 1');
  }
}
