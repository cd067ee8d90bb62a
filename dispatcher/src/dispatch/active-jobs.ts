/**
 * The jobs being run: each one's place in the ring and its counts in memory, kept in step
 * with the store once a write is durable, and the totals over all jobs that the live counts
 * are made of. A job leaves when its last task is finished or it is cancelled.
 */
import type { EventLog } from '../events/event-log.js';
import type { TaskRing, RingJob } from './ring.js';
import type { CommittedJob, JobRow } from './store.js';
import { commandText } from '../api/jobs/schemas.js';
import { MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS } from '../api/jobs/schemas.js';
import type { JobSpec } from './model.js';

export interface ActiveJob {
  id: number;
  name: string | null;
  spec: JobSpec;
  ring: RingJob;
  firstTaskId: number;
  taskCount: number;
  done: number;
  failed: number;
  cancelled: number;
  inputsPath: string | null;
  submittedAt: number;
  /** The template's stdin as base64, computed once. */
  stdinB64: string | null;
}

/** Tasks of all jobs (the store's view, followed in memory). */
export interface JobTotals {
  total: number;
  done: number;
  failed: number;
  cancelled: number;
}

/** Since this process started. */
export interface DispatchCounters {
  dispatched: number;
  done: number;
  failed: number;
  duplicates: number;
  stale: number;
}

export interface ActiveJobsDeps {
  ring: TaskRing;
  events: EventLog;
  now: () => number;
  counters: DispatchCounters;
  /** A job left (finished or cancelled): forget what else refers to it. */
  retired: (job: ActiveJob) => void;
}

export class ActiveJobs {
  readonly #byId = new Map<number, ActiveJob>();
  readonly #d: ActiveJobsDeps;
  totals: JobTotals = { total: 0, done: 0, failed: 0, cancelled: 0 };

  constructor(deps: ActiveJobsDeps) {
    this.#d = deps;
  }

  get(id: number): ActiveJob | undefined {
    return this.#byId.get(id);
  }

  has(id: number): boolean {
    return this.#byId.has(id);
  }

  get size(): number {
    return this.#byId.size;
  }

  values(): IterableIterator<ActiveJob> {
    return this.#byId.values();
  }

  /** The active job a task id belongs to (a scan: for recovery, not the hot path). */
  ofTask(taskId: number): ActiveJob | undefined {
    for (const j of this.#byId.values()) if (taskId >= j.firstTaskId && taskId < j.firstTaskId + j.taskCount) return j;
    return undefined;
  }

  /** Puts a stored job in the ring (its tasks are queued separately). */
  add(row: JobRow, spec: JobSpec = JSON.parse(row.spec) as JobSpec): ActiveJob {
    const ring = this.#d.ring.addJob({
      id: row.id,
      priority: spec.priority,
      // Clamped: a job stored before the submit-time bounds existed must not reach an agent outside them.
      timeoutMs: Math.round(Math.min(MAX_TIMEOUT_SECONDS, Math.max(MIN_TIMEOUT_SECONDS, spec.timeoutSeconds || 0)) * 1000),
      maxAttempts: spec.maxAttempts,
      requirements: spec.requirements,
      speculative: spec.speculative,
      retries: spec.retries ?? 0,
    });
    const job: ActiveJob = {
      id: row.id,
      name: row.name,
      spec,
      ring,
      firstTaskId: row.first_task_id,
      taskCount: row.task_count,
      done: row.done,
      failed: row.failed,
      cancelled: row.cancelled,
      inputsPath: row.inputs_key ? `/api/v1/jobs/${row.id}/inputs.tar?key=${row.inputs_key}` : null,
      submittedAt: row.submitted_at,
      stdinB64: spec.template.stdinB64 ?? (spec.template.stdin !== null ? Buffer.from(spec.template.stdin).toString('base64') : null),
    };
    this.#byId.set(row.id, job);
    return job;
  }

  /** A job just committed: it joins the ring with all its tasks queued. */
  submitted(jobId: number, spec: JobSpec, first: number, count: number, inputsKey: string | null, submittedAt: number): ActiveJob {
    const job = this.add(
      {
        id: jobId,
        name: spec.name,
        spec: JSON.stringify(spec),
        state: 'active',
        priority: spec.priority,
        first_task_id: first,
        task_count: count,
        done: 0,
        failed: 0,
        cancelled: 0,
        inputs_key: inputsKey,
        submitted_at: submittedAt,
        finished_at: null,
      },
      spec,
    );
    this.#d.ring.enqueue(job.ring, first, first + count - 1);
    this.totals.total += count;
    this.#d.events.append({
      kind: 'job.submitted',
      message: `job ${jobId}${spec.name ? ` (${spec.name})` : ''} submitted: ${count} task${count === 1 ? '' : 's'}, ${commandText(spec.template.command).slice(0, 120)}`,
      data: { job: jobId, tasks: count, priority: spec.priority },
    });
    return job;
  }

  /** In-memory counts follow the store once a write is durable. */
  afterCommit(jobs: CommittedJob[]): void {
    for (const c of jobs) {
      const job = this.#byId.get(c.id);
      if (!job) continue;
      const dDone = c.done - job.done;
      const dFailed = c.failed - job.failed;
      const dCancelled = c.cancelled - job.cancelled;
      job.done = c.done;
      job.failed = c.failed;
      job.cancelled = c.cancelled;
      this.totals.done += dDone;
      this.totals.failed += dFailed;
      this.totals.cancelled += dCancelled;
      this.#d.counters.done += dDone;
      this.#d.counters.failed += dFailed;
      if (c.finished) {
        this.retire(job);
        this.#d.events.append({
          kind: 'job.done',
          message: `job ${job.id}${job.name ? ` (${job.name})` : ''} done: ${job.done} done, ${job.failed} failed${job.cancelled ? `, ${job.cancelled} cancelled` : ''}`,
          data: { job: job.id, done: job.done, failed: job.failed, cancelled: job.cancelled, durationMs: this.#d.now() - job.submittedAt },
        });
      }
    }
  }

  retire(job: ActiveJob): void {
    this.#byId.delete(job.id);
    this.#d.ring.dropJob(job.id);
    this.#d.retired(job);
  }
}
