/**
 * A small in-memory DispatchEngine for the hub's tests (not the real engine: no store, no
 * ring). FIFO queue, leases per node, first result wins, lost nodes' tasks go back with the
 * next attempt, timed-out or failed tasks retried up to `maxAttempts`.
 */
import type { DispatchEngine, NodeCapacity, ResultOutcome, RunningTaskRef } from '../../../dispatcher/src/dispatch/contract.js';
import type { TaskAssignment, TaskResult } from '../../../dispatcher/src/protocol/messages.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

export interface FakeTask extends TaskAssignment {
  maxAttempts: number;
}

export class FakeEngine implements DispatchEngine {
  readonly queue: FakeTask[] = [];
  readonly leases = new Map<string, { mac: Mac; task: FakeTask }>();
  readonly results = new Map<number, TaskResult>();
  readonly allResults: { mac: Mac; result: TaskResult; outcome: ResultOutcome }[] = [];
  readonly progressLog: { mac: Mac; ref: RunningTaskRef; fraction: number }[] = [];
  readonly lost: { mac: Mac; at: number }[] = [];
  readonly handedOut: { mac: Mac; taskId: number; attempt: number; at: number }[] = [];
  /** Delay before submitResults resolves (simulates a group commit). */
  commitDelayMs = 0;
  failCommits = false;
  #nextId = 1;
  readonly #available = new Set<() => void>();
  readonly #cancel = new Set<(mac: Mac, ref: RunningTaskRef, reason: string) => void>();

  add(specs: Partial<FakeTask>[]): FakeTask[] {
    const tasks = specs.map((s) => ({
      taskId: this.#nextId++,
      jobId: 1,
      attempt: 1,
      command: ['true'],
      env: {},
      cwd: null,
      stdinB64: null,
      inputsPath: null,
      inputsSha256: null,
      timeoutMs: 60_000,
      maxAttempts: 3,
      ...s,
    }));
    this.queue.push(...tasks);
    for (const l of this.#available) l();
    return tasks;
  }

  takeTasks(node: NodeCapacity, max: number): TaskAssignment[] {
    const out: TaskAssignment[] = [];
    while (out.length < max && this.queue.length) {
      const t = this.queue.shift()!;
      this.leases.set(`${t.taskId}:${t.attempt}`, { mac: node.mac, task: t });
      this.handedOut.push({ mac: node.mac, taskId: t.taskId, attempt: t.attempt, at: Date.now() });
      const { maxAttempts: _m, ...assignment } = t;
      out.push(assignment);
    }
    return out;
  }

  async submitResults(node: NodeCapacity, results: TaskResult[]): Promise<ResultOutcome[]> {
    if (this.commitDelayMs) await new Promise((r) => setTimeout(r, this.commitDelayMs));
    else await new Promise((r) => setImmediate(r));
    if (this.failCommits) throw new Error('disk full (fake)');
    return results.map((r) => {
      const key = `${r.taskId}:${r.attempt}`;
      const lease = this.leases.get(key);
      let outcome: ResultOutcome;
      if (this.results.has(r.taskId)) outcome = 'duplicate';
      else if (!lease || lease.mac !== node.mac) outcome = this.results.has(r.taskId) ? 'duplicate' : 'stale';
      else {
        this.leases.delete(key);
        const failed = r.timedOut || r.exitCode !== 0;
        if (failed && lease.task.attempt < lease.task.maxAttempts) {
          this.queue.push({ ...lease.task, attempt: lease.task.attempt + 1 });
          for (const l of this.#available) l();
        } else this.results.set(r.taskId, r);
        outcome = 'recorded';
      }
      this.allResults.push({ mac: node.mac, result: r, outcome });
      return outcome;
    });
  }

  progress(mac: Mac, ref: RunningTaskRef, fraction: number): void {
    this.progressLog.push({ mac, ref, fraction });
  }

  nodeLost(mac: Mac): void {
    this.lost.push({ mac, at: Date.now() });
    let requeued = 0;
    for (const [key, lease] of this.leases) {
      if (lease.mac !== mac) continue;
      this.leases.delete(key);
      this.queue.unshift({ ...lease.task, attempt: lease.task.attempt + 1 });
      requeued++;
    }
    if (requeued) for (const l of this.#available) l();
  }

  readopt(node: NodeCapacity, running: RunningTaskRef[]): { keep: RunningTaskRef[]; cancel: RunningTaskRef[] } {
    const keep: RunningTaskRef[] = [];
    const cancel: RunningTaskRef[] = [];
    for (const r of running) (this.leases.get(`${r.taskId}:${r.attempt}`)?.mac === node.mac ? keep : cancel).push(r);
    return { keep, cancel };
  }

  /** The engine's side of a cancel (speculative copy lost, job cancelled). */
  cancel(mac: Mac, ref: RunningTaskRef, reason: string): void {
    this.leases.delete(`${ref.taskId}:${ref.attempt}`);
    for (const l of this.#cancel) l(mac, ref, reason);
  }

  onTasksAvailable(listener: () => void): () => void {
    this.#available.add(listener);
    return () => this.#available.delete(listener);
  }

  onCancel(listener: (mac: Mac, ref: RunningTaskRef, reason: string) => void): () => void {
    this.#cancel.add(listener);
    return () => this.#cancel.delete(listener);
  }

  get done(): number {
    return this.results.size;
  }
}
