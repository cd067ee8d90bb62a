/**
 * Results made durable: each delivery is checked against the ring (accepted, to retry,
 * stale, unknown), then waits for the next group commit; all those that arrive before it go
 * in as one write (one savepoint, one counter update per job), and each caller is answered
 * once the commit is durable. The results table's primary key, checked in the same
 * transaction, records a task's result once.
 */
import type { RateLimitedLog } from '../log.js';
import type { GroupCommit } from '../store/group-commit.js';
import type { EventLog } from '../events/event-log.js';
import type { Histogram } from '../metrics/registry.js';
import type { DispatcherError } from '../errors.js';
import type { Mac } from '../nodes/mac.js';
import type { NodeCapacity, ResultOutcome } from './contract.js';
import type { TaskResult } from '../protocol/messages.js';
import type { OutTask, TaskRing } from './ring.js';
import { TaskRowState, type CommittedJob, type DispatchStore, type JobDelta, type ResultRow } from './store.js';
import type { ActiveJobs, DispatchCounters } from './active-jobs.js';
import type { AttemptEnd } from '../nodes/suspect.js';

/** Largest outputs tar kept per result (decoded, still gzip-compressed). */
export const MAX_OUTPUTS_BYTES = 256 * 1024 * 1024;

type ResultOp =
  | {
      t: 'result';
      r: TaskResult;
      mac: Mac | null;
      status: typeof TaskRowState.done | typeof TaskRowState.failed;
      task: OutTask;
      exhausted: boolean;
    }
  | { t: 'failure'; r: TaskResult; mac: Mac; reason: string; jobId: number }
  | { t: 'stale'; r: TaskResult }
  | { t: 'check'; r: TaskResult };

type ResultOpOf<K extends ResultOp['t']> = Extract<ResultOp, { t: K }>;

interface PendingResults {
  ops: ResultOp[];
  node: NodeCapacity | null;
  resolve: (o: ResultOutcome[]) => void;
  reject: (err: unknown) => void;
  t0: number;
}

interface WrittenResults {
  /** Per pending delivery, per result. */
  outcomes: ResultOutcome[][];
  jobs: CommittedJob[];
  failed: ResultOpOf<'result'>[];
}

export interface ResultRecorderDeps {
  store: DispatchStore;
  commits: GroupCommit;
  now: () => number;
  ring: TaskRing;
  jobs: ActiveJobs;
  events: EventLog;
  rlog: RateLimitedLog;
  counters: DispatchCounters;
  /** Tasks went back to the queue. */
  available: () => void;
  storeError: (err: unknown, what: string) => DispatcherError;
  storeWarn: (err: unknown, what: string) => void;
  /** An attempt's end was recorded (node-health's suspect detection listens). */
  attemptEnded?: (a: AttemptEnd) => void;
}

export class ResultRecorder {
  readonly #d: ResultRecorderDeps;
  #resultQueue: PendingResults[] = [];
  #resultWriteQueued = false;
  /** From results received to results durable (set once metrics are registered). */
  commitLatency: Histogram | undefined;

  constructor(deps: ResultRecorderDeps) {
    this.#d = deps;
  }

  /** A node's results: settled in the ring now, answered once durable. */
  submit(node: NodeCapacity, results: TaskResult[]): Promise<ResultOutcome[]> {
    const ops: ResultOp[] = [];
    for (const r of results) {
      const kind = classify(r);
      const outcome = kind === 'retry' ? 'retryable' : kind === 'failed' && isExitFailure(r) ? 'exit' : 'final';
      const c = this.#d.ring.complete(r.taskId, r.attempt, node.mac, outcome, r.durationMs);
      switch (c.kind) {
        case 'accepted':
          ops.push({
            t: 'result',
            r,
            mac: node.mac,
            status: kind === 'done' ? TaskRowState.done : TaskRowState.failed,
            task: c.task,
            exhausted: false,
          });
          break;
        case 'exhausted':
          ops.push({ t: 'result', r, mac: node.mac, status: TaskRowState.failed, task: c.task, exhausted: true });
          break;
        case 'retrying':
          ops.push({ t: 'failure', r, mac: node.mac, reason: failureReason(r), jobId: c.task.job.spec.id });
          break;
        case 'stale':
          ops.push({ t: 'stale', r });
          break;
        case 'unknown':
          ops.push({ t: 'check', r });
          break;
      }
    }
    return this.#commitResults(ops, node);
  }

  /** A task ran out of attempts without a result (lease expired, node lost): its failure is its result. */
  recordExhausted(task: OutTask, reason: string): void {
    const r: TaskResult = {
      taskId: task.id,
      attempt: task.attempts,
      exitCode: null,
      signal: null,
      timedOut: false,
      error: reason,
      startedAt: 0,
      durationMs: 0,
      maxRssKiB: null,
      stdout: '',
      stderr: '',
      stdoutTruncated: false,
      stderrTruncated: false,
      outputsTarGzB64: null,
    };
    const mac = (task.handedTo[task.attempts - 1] ?? null) as Mac | null;
    this.#commitResults([{ t: 'result', r, mac, status: TaskRowState.failed, task, exhausted: true }], null).catch((err) =>
      this.#d.storeWarn(err, 'exhausted task'),
    );
  }

  #commitResults(ops: ResultOp[], node: NodeCapacity | null): Promise<ResultOutcome[]> {
    return new Promise((resolve, reject) => {
      this.#resultQueue.push({ ops, node, resolve, reject, t0: performance.now() });
      if (this.#resultWriteQueued) return;
      this.#resultWriteQueued = true;
      let batch: PendingResults[] | undefined;
      const take = () => {
        this.#resultWriteQueued = false;
        batch = this.#resultQueue;
        this.#resultQueue = [];
        return batch;
      };
      const now = this.#d.now();
      this.#d.commits
        .run(() => this.#writeResults(take(), now))
        .then(
          (written) => this.#afterResults(batch!, written),
          (err: unknown) => this.#resultsFailed(batch ?? take(), err, now),
        );
    });
  }

  #afterResults(batch: PendingResults[], written: WrittenResults): void {
    const t = performance.now();
    this.#d.jobs.afterCommit(written.jobs);
    let requeue = false;
    for (const op of written.failed) {
      const reason = op.r.oom
        ? oomText(op.r)
        : (op.r.error ?? (op.r.timedOut ? 'timed out' : op.r.signal ? `killed by ${op.r.signal}` : `exit code ${op.r.exitCode}`));
      this.#d.events.append({
        kind: 'task.failed',
        message:
          `task ${op.task.id} of job ${op.task.job.spec.id} failed after ${op.task.attempts} attempt${op.task.attempts === 1 ? '' : 's'}: ${reason}`.slice(
            0,
            300,
          ),
        data: { task: op.task.id, job: op.task.job.spec.id, attempts: op.task.attempts },
      });
    }
    batch.forEach((p, g) => {
      const outcomes = written.outcomes[g]!;
      outcomes.forEach((o, i) => {
        const op = p.ops[i]!;
        if (op.t === 'failure') requeue = true;
        if (o === 'recorded' && p.node && (op.t === 'failure' || op.t === 'result')) this.#attemptEnded(p.node.mac, op);
        if (o === 'duplicate') {
          this.#d.counters.duplicates++;
          this.#d.rlog.warn(
            'result|duplicate',
            { task: op.r.taskId, attempt: op.r.attempt, mac: p.node?.mac },
            'duplicate result dropped (the task has its result)',
          );
        } else if (o === 'stale') {
          this.#d.counters.stale++;
          this.#d.rlog.warn(
            'result|stale',
            { task: op.r.taskId, attempt: op.r.attempt, mac: p.node?.mac },
            'stale result dropped (not a task this node holds)',
          );
        }
      });
      this.commitLatency?.observe((t - p.t0) / 1000);
      p.resolve(outcomes);
    });
    if (requeue) this.#d.available();
  }

  /** Tells the listeners (suspect detection) how an attempt ended on a node; a listener's fault costs nothing here. */
  #attemptEnded(mac: Mac, op: ResultOpOf<'failure'> | ResultOpOf<'result'>): void {
    const listener = this.#d.attemptEnded;
    if (!listener) return;
    const { r } = op;
    try {
      listener({
        mac,
        taskId: r.taskId,
        attempt: r.attempt,
        jobId: op.t === 'failure' ? op.jobId : op.task.job.spec.id,
        exitCode: r.exitCode,
        signal: r.signal,
        timedOut: r.timedOut,
        error: r.error,
      });
    } catch (err) {
      this.#d.rlog.warn('attempt-ended', { err: (err as Error).message }, 'attempt listener failed');
    }
  }

  /** Not durable: no acknowledgement, the agents send again. Their tasks go back to running on them, so that the next delivery is accepted. */
  #resultsFailed(batch: PendingResults[], err: unknown, now: number): void {
    const e = this.#d.storeError(err, 'results');
    for (const p of batch) {
      for (const op of p.ops) {
        if (op.t !== 'result') continue;
        const job = this.#d.jobs.get(op.task.job.spec.id);
        if (!job || !op.mac) continue;
        const lease = now + job.ring.spec.timeoutMs;
        this.#d.ring.restore(job.ring, op.task.id, op.task.attempts, [
          { attempt: op.r.attempt, mac: op.mac, startedAt: now, leaseUntil: lease, speculative: false },
        ]);
      }
      p.reject(e);
    }
  }

  /** One write: results, task states, leases and job counters of every pending delivery. */
  #writeResults(batch: PendingResults[], now: number): WrittenResults {
    const store = this.#d.store;
    const s = store.s;
    const outcomes: ResultOutcome[][] = [];
    const deltas = new Map<number, JobDelta>();
    const failed: ResultOpOf<'result'>[] = [];
    for (const { ops } of batch) {
      const out: ResultOutcome[] = new Array(ops.length);
      outcomes.push(out);
      for (let i = 0; i < ops.length; i++) {
        const op = ops[i]!;
        switch (op.t) {
          case 'result': {
            if (!store.insertResult(resultRow(op.r, op.mac, op.status, now))) {
              out[i] = 'duplicate';
              break;
            }
            s.setTaskState.run(op.status, op.r.taskId);
            s.deleteLeases.run(op.r.taskId);
            const jobId = op.task.job.spec.id;
            let d = deltas.get(jobId);
            if (!d) {
              d = { done: 0, failed: 0, cancelled: 0 };
              deltas.set(jobId, d);
            }
            if (op.status === TaskRowState.done) d.done++;
            else {
              d.failed++;
              if (op.exhausted) failed.push(op);
            }
            out[i] = 'recorded';
            break;
          }
          case 'failure':
            s.insertFailure.run(op.r.taskId, op.r.attempt, op.mac, op.reason, now, isExitFailure(op.r) ? op.r.exitCode : null);
            s.endLease.run(op.r.taskId, op.r.attempt);
            out[i] = 'recorded';
            break;
          case 'stale':
            out[i] = 'stale';
            break;
          case 'check':
            out[i] = s.hasResult.get(op.r.taskId) ? 'duplicate' : 'stale';
            break;
        }
      }
    }
    return { outcomes, jobs: store.addJobCounts(deltas, this.#d.now()), failed };
  }
}

/**
 * done: exit 0; failed: another exit code (rerunning a program that said no is waste), or
 * killed for exceeding its memory request (outcome oom: it would exceed it again anywhere);
 * retry: the attempt itself went wrong.
 */
export function classify(r: TaskResult): 'done' | 'failed' | 'retry' {
  if (r.oom) return 'failed';
  if (r.error !== null || r.timedOut || r.signal !== null || r.exitCode === null) return 'retry';
  return r.exitCode === 0 ? 'done' : 'failed';
}

/** "out of memory (peak 512 MiB)": the outcome oom in words. */
export function oomText(r: Pick<TaskResult, 'memPeakKiB'>): string {
  return `out of memory${typeof r.memPeakKiB === 'number' ? ` (peak ${Math.round(r.memPeakKiB / 1024)} MiB)` : ''}`;
}

/** A program that ran and said no (a non-zero exit, not a kill for memory): what `retries` retries on another node. */
export function isExitFailure(r: TaskResult): boolean {
  return r.exitCode !== null && r.exitCode !== 0 && r.signal === null && r.error === null && !r.timedOut && !r.oom;
}

function failureReason(r: TaskResult): string {
  if (r.timedOut) return 'timed out';
  if (isExitFailure(r)) return `exit code ${r.exitCode}`;
  if (r.error !== null) return `could not run: ${r.error}`.slice(0, 1000);
  if (r.signal !== null) return `killed by ${r.signal}`;
  return 'no exit code';
}

/** The results row of a delivered result (outputs over the bound are dropped, and the error says so). */
function resultRow(r: TaskResult, mac: Mac | null, status: number, now: number): ResultRow {
  let outputs: Buffer | null = null;
  let error = r.error;
  if (r.outputsTarGzB64) {
    outputs = Buffer.from(r.outputsTarGzB64, 'base64');
    if (outputs.length > MAX_OUTPUTS_BYTES) {
      outputs = null;
      error = `${error ? `${error}; ` : ''}outputs larger than ${MAX_OUTPUTS_BYTES} bytes were dropped`;
    }
  }
  return {
    task_id: r.taskId,
    attempt: r.attempt,
    mac,
    status,
    exit_code: r.exitCode,
    signal: r.signal,
    timed_out: r.timedOut ? 1 : 0,
    error,
    started_at: r.startedAt || null,
    duration_ms: Number.isFinite(r.durationMs) ? r.durationMs : null,
    max_rss_kib: r.maxRssKiB,
    stdout: r.stdout,
    stderr: r.stderr,
    stdout_truncated: r.stdoutTruncated ? 1 : 0,
    stderr_truncated: r.stderrTruncated ? 1 : 0,
    outputs,
    recorded_at: now,
    oom: r.oom ? 1 : 0,
    mem_peak_kib: typeof r.memPeakKiB === 'number' ? r.memPeakKiB : null,
  };
}
