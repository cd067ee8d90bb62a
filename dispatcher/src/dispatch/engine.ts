/**
 * The dispatch engine: the task ring (ring.ts) made durable (store.ts) and served to the
 * agent hub through the DispatchEngine contract, and to the API, CLI and web page through
 * submit/list/get/cancel and live counts. This class wires the parts and keeps the hand-outs
 * and cancellation; the other jobs live beside it:
 *   submission-ingest.ts  submissions and staged sweeps, committed before they resolve
 *   result-recorder.ts    results checked against the ring and group-committed
 *   assignments.ts        the task an agent is sent for a hand-out
 *   active-jobs.ts        the jobs being run and their counts in memory
 *   recovery.ts           the state read back at start, queued tasks lazily after
 *   read-views.ts         jobs, tasks, results and counts for the API (reads only)
 *   dispatch-metrics.ts   the metrics
 *
 * Durability rules
 * - A submission is committed (fsync) before `submitJob` resolves; a staged sweep that does
 *   not finish leaves nothing queued.
 * - A result is committed before `submitResults` resolves (the hub acknowledges only then);
 *   results of many agents share a commit through core.commits (group commit).
 * - Hand-outs are persisted in batches without being waited for (one write per tick): after a
 *   restart, a task whose lease is still held for its node waits for that node to come back
 *   (`readopt`) and deliver; a hand-out lost in a crash just runs again elsewhere, and the
 *   node that had it is told to cancel it.
 * - Recovery reads jobs and leases and some queued tasks of each job, and serves; the other
 *   queued tasks are read back lazily, a page at a time, as each job runs low in memory.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DispatcherConfig } from '../config.js';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../log.js';
import type { Db } from '../store/database.js';
import type { GroupCommit } from '../store/group-commit.js';
import type { EventLog } from '../events/event-log.js';
import type { MetricsRegistry } from '../metrics/registry.js';
import { DispatcherError } from '../errors.js';
import type { Mac } from '../nodes/mac.js';
import type { DispatchEngine, NodeCapacity, ResultOutcome, RunningTaskRef } from './contract.js';
import type { Resources, TaskAssignment, TaskResult } from '../protocol/messages.js';
import { TaskRing } from './ring.js';
import { DispatchStore, TaskRowState, type NewLease, type ResultRow } from './store.js';
import { BlobStore, type BlobReplica } from './blobs.js';
import type { ParamsFormat } from './params-file.js';
import type { JobState, JobView, TaskDetail, TaskState, TaskSummary } from '../api/jobs/schemas.js';
import type { JobSpec } from './model.js';
import { ActiveJobs, type DispatchCounters } from './active-jobs.js';
import { AssignmentBuilder } from './assignments.js';
import { ResultRecorder } from './result-recorder.js';
import { SubmissionIngest } from './submission-ingest.js';
import { QueuedReadBack, recoverDispatchState, RECOVERY_STEP_BUDGET } from './recovery.js';
import { DispatchViews, type EngineStats, type ListTasksQuery } from './read-views.js';
import { registerDispatchMetrics } from './dispatch-metrics.js';
import type { AttemptEnd } from '../nodes/suspect.js';

export type { EngineStats, ListTasksQuery } from './read-views.js';
export { classify } from './result-recorder.js';

/** Housekeeping: lease expiry, lagger watch. */
export const TICK_MS = 250;

export interface EngineDeps {
  config: Pick<DispatcherConfig, 'dataDir' | 'leaseGraceSeconds' | 'speculativeK'>;
  log: Logger;
  db: Db;
  commits: GroupCommit;
  events: EventLog;
  metrics?: MetricsRegistry;
  now?: () => number;
}

export interface EngineOptions {
  /** Where inputs tars go (default `<dataDir>/blobs`, a temp dir for `:memory:`). */
  blobDir?: string;
  /** Where else they go, for dispatchers that take over (the PostgreSQL store's). */
  blobReplica?: BlobReplica;
  /** Start the housekeeping timer (default true; tests drive `tick()` themselves). */
  timer?: boolean;
}

export class TaskDispatcher implements DispatchEngine {
  readonly store: DispatchStore;
  readonly blobs: BlobStore;
  readonly #ring: TaskRing;
  readonly #log: Logger;
  readonly #rlog: RateLimitedLog;
  readonly #commits: GroupCommit;
  readonly #events: EventLog;
  readonly #now: () => number;
  readonly #jobs: ActiveJobs;
  readonly #assignments: AssignmentBuilder;
  readonly #results: ResultRecorder;
  readonly #ingest: SubmissionIngest;
  readonly #readBack: QueuedReadBack;
  readonly #views: DispatchViews;
  readonly #available = new Set<() => void>();
  readonly #cancelListeners = new Set<(mac: Mac, ref: RunningTaskRef, reason: string) => void>();
  readonly #attemptListeners = new Set<(a: AttemptEnd) => void>();
  #pendingLeases: NewLease[] = [];
  #leaseWriteQueued = false;
  #availableScheduled = false;
  #timer: NodeJS.Timeout | undefined;
  readonly #counters: DispatchCounters = { dispatched: 0, done: 0, failed: 0, duplicates: 0, stale: 0 };
  #stopped = false;
  /** Resolves once the state is recovered (queued tasks are then read back as needed). */
  readonly ready: Promise<void>;
  #metricNames: string[] = [];
  readonly #metrics: MetricsRegistry | undefined;

  constructor(deps: EngineDeps, opts: EngineOptions = {}) {
    this.#log = deps.log.child({ svc: 'dispatch' });
    this.#rlog = new RateLimitedLog(this.#log);
    this.#commits = deps.commits;
    this.#events = deps.events;
    this.#now = deps.now ?? Date.now;
    this.#metrics = deps.metrics;
    this.store = new DispatchStore(deps.db);
    this.blobs = new BlobStore(
      opts.blobDir ??
        (deps.config.dataDir === ':memory:' ? mkdtempSync(join(tmpdir(), 'lilcluster-blobs-')) : join(deps.config.dataDir, 'blobs')),
      opts.blobReplica,
    );
    this.#ring = new TaskRing({
      now: this.#now,
      leaseGraceMs: deps.config.leaseGraceSeconds * 1000,
      speculativeK: deps.config.speculativeK,
      events: {
        cancel: (mac, ref, reason) => this.#emitCancel(mac, ref, reason),
        exhausted: (task, reason) => this.#results.recordExhausted(task, reason),
      },
    });
    const store = this.store;
    const ring = this.#ring;
    const now = this.#now;
    const counters = this.#counters;
    const storeWarn = (err: unknown, what: string) => this.#storeWarn(err, what);
    this.#readBack = new QueuedReadBack({ store, ring, log: this.#log });
    this.#jobs = new ActiveJobs({
      ring,
      events: this.#events,
      now,
      counters,
      retired: (job) => this.#readBack.forget(job),
    });
    const jobs = this.#jobs;
    this.#assignments = new AssignmentBuilder({ store, jobs });
    this.#results = new ResultRecorder({
      store,
      commits: this.#commits,
      now,
      ring,
      jobs,
      events: this.#events,
      rlog: this.#rlog,
      counters,
      available: () => this.#fireAvailable(),
      storeError: (err, what) => this.#storeError(err, what),
      storeWarn,
      attemptEnded: (a) => {
        for (const l of this.#attemptListeners) l(a);
      },
    });
    const nextIds = store.nextIds();
    this.#ingest = new SubmissionIngest({
      store,
      blobs: this.blobs,
      commits: this.#commits,
      now,
      nextIds,
      write: (write, what) => this.#write(write, what),
      storeWarn,
      activate: (jobId, spec, first, count, inputsKey, submittedAt) => this.#activate(jobId, spec, first, count, inputsKey, submittedAt),
    });
    this.#views = new DispatchViews({ store, ring, jobs, counters, readBack: this.#readBack, nextTaskId: () => this.#ingest.nextTaskId });
    recoverDispatchState({
      store,
      log: this.#log,
      ring,
      jobs,
      readBack: this.#readBack,
      commits: this.#commits,
      now,
      nextTaskId: nextIds.taskId,
      storeWarn,
    });
    this.ready = Promise.resolve();
    if (opts.timer !== false) {
      this.#timer = setInterval(() => this.tick(), TICK_MS);
      this.#timer.unref();
    }
    if (deps.metrics) {
      const m = registerDispatchMetrics(deps.metrics, { stats: () => this.stats(), counters, activeJobs: () => this.#jobs.size });
      this.#metricNames = m.names;
      this.#results.commitLatency = m.commitLatency;
    }
  }

  // ======================================================================= DispatchEngine

  /** Whether some queued task fits a node of this capacity, without taking it (on-demand images). */
  hasWorkFor(node: NodeCapacity): boolean {
    return this.#ring.hasWorkFor(node);
  }

  takeTasks(node: NodeCapacity, max: number, free?: Resources): TaskAssignment[] {
    if (max <= 0 || this.#stopped) return [];
    if (this.#readBack.pending) this.#readBack.topUp(RECOVERY_STEP_BUDGET);
    const hs = this.#ring.take(node, Math.floor(max), free);
    if (hs.length === 0) return [];
    const out: TaskAssignment[] = [];
    for (const h of hs) {
      let a: TaskAssignment;
      try {
        a = this.#assignments.build(h);
      } catch (err) {
        // A task we cannot build (unreadable row) must not take the hub down: retry it later.
        this.#rlog.warn(`assign|${h.task.id}`, { task: h.task.id, err: (err as Error).message }, 'cannot build a task assignment');
        this.#ring.complete(h.task.id, h.attempt, node.mac, 'retryable');
        if (free) {
          const c = h.task.job.cls.cost; // not sent: the node keeps that room
          free.cores += c.cores;
          free.memMiB += c.memMiB;
          free.gpus += c.gpus;
        }
        continue;
      }
      out.push(a);
      this.#pendingLeases.push({
        taskId: h.task.id,
        attempt: h.attempt,
        mac: node.mac,
        startedAt: this.#now(),
        leaseUntil: h.leaseUntil,
        speculative: h.speculative,
      });
    }
    this.#queueLeaseWrite();
    this.#counters.dispatched += out.length;
    return out;
  }

  async submitResults(node: NodeCapacity, results: TaskResult[]): Promise<ResultOutcome[]> {
    return await this.#results.submit(node, results);
  }

  progress(mac: Mac, ref: RunningTaskRef, fraction: number): void {
    this.#ring.progress(mac, ref.taskId, ref.attempt, fraction);
  }

  nodeLost(mac: Mac): void {
    const requeued = this.#ring.nodeLost(mac);
    this.#commits.run(() => this.store.s.endLeasesOfMac.run(mac)).catch((err) => this.#storeWarn(err, 'lease end'));
    if (requeued > 0) this.#fireAvailable();
  }

  readopt(node: NodeCapacity, running: RunningTaskRef[]): { keep: RunningTaskRef[]; cancel: RunningTaskRef[] } {
    const before = this.#ring.counts().waiting;
    const r = this.#ring.readopt(node.mac, running);
    const kept = r.keep.map((ref) => ({
      ref,
      copy: this.#ring.outTask(ref.taskId)?.copies.find((c) => c.attempt === ref.attempt && c.mac === node.mac),
    }));
    this.#commits
      .run(() => {
        this.store.s.endLeasesOfMac.run(node.mac);
        for (const { ref, copy } of kept) if (copy) this.store.s.setLease.run(copy.leaseUntil, copy.startedAt, ref.taskId, ref.attempt);
      })
      .catch((err) => this.#storeWarn(err, 'readopt'));
    if (this.#ring.counts().waiting > before) this.#fireAvailable();
    return r;
  }

  onTasksAvailable(listener: () => void): () => void {
    this.#available.add(listener);
    return () => this.#available.delete(listener);
  }

  onCancel(listener: (mac: Mac, ref: RunningTaskRef, reason: string) => void): () => void {
    this.#cancelListeners.add(listener);
    return () => this.#cancelListeners.delete(listener);
  }

  /** Every attempt whose end was recorded (done, failed, retried), with its node: suspect detection listens. */
  onAttemptEnded(listener: (a: AttemptEnd) => void): () => void {
    this.#attemptListeners.add(listener);
    return () => this.#attemptListeners.delete(listener);
  }

  // ======================================================================= submission

  /** Submits a job given as JSON (inline params or tasks). Resolves once it is durable. */
  submitJob(body: unknown): Promise<JobView> {
    return this.#ingest.submitJob(body);
  }

  /**
   * Submits a sweep whose rows come from a params file (CSV with a header, or JSON lines),
   * streamed: the job is queued only once the whole file is in, or not at all.
   */
  submitJobStream(body: unknown, format: ParamsFormat, source: AsyncIterable<Uint8Array | string>): Promise<JobView> {
    return this.#ingest.submitJobStream(body, format, source);
  }

  #activate(jobId: number, spec: JobSpec, first: number, count: number, inputsKey: string | null, submittedAt: number): JobView {
    const job = this.#jobs.submitted(jobId, spec, first, count, inputsKey, submittedAt);
    this.#fireAvailable();
    return this.#views.viewOf(job);
  }

  // ======================================================================= cancellation

  async cancelJob(jobId: number): Promise<JobView> {
    const job = this.#jobs.get(jobId);
    if (!job) return this.getJob(jobId); // finished or cancelled already: nothing to do
    this.#ring.cancelJob(job.ring, 'job cancelled');
    const now = this.#now();
    await this.#write(() => {
      this.store.s.cancelJob.run(now, jobId);
      this.store.s.deleteLeasesRange.run(job.firstTaskId, job.firstTaskId + job.taskCount - 1);
    }, 'cancellation');
    const left = job.taskCount - job.done - job.failed - job.cancelled;
    job.cancelled += left;
    this.#jobs.totals.cancelled += left;
    this.#jobs.retire(job);
    this.#events.append({
      kind: 'job.cancelled',
      message: `job ${jobId} cancelled (${left} task${left === 1 ? '' : 's'} not run)`,
      data: { job: jobId, cancelled: left },
    });
    return this.getJob(jobId);
  }

  async cancelTask(taskId: number): Promise<TaskDetail> {
    const row = this.store.s.task.get(taskId) as { id: number; job_id: number; state: number } | undefined;
    if (!row) throw new DispatcherError('DSP_ERR_TASK_NOT_FOUND', `no task ${taskId}`);
    const job = this.#jobs.get(row.job_id);
    if (row.state !== TaskRowState.queued || !job) return this.getTask(taskId);
    // Out or queued, it leaves the ring; not read back yet after a restart, the state column
    // written below keeps it from ever being queued.
    this.#ring.cancelTask(job.ring, taskId, 'task cancelled');
    const committed = await this.#write(() => {
      if (this.store.s.setTaskState.run(TaskRowState.cancelled, taskId).changes === 0) return undefined;
      this.store.s.deleteLeases.run(taskId);
      return this.store.addJobCounts(new Map([[job.id, { done: 0, failed: 0, cancelled: 1 }]]), this.#now());
    }, 'cancellation');
    if (committed) this.#jobs.afterCommit(committed);
    return this.getTask(taskId);
  }

  // ======================================================================= hand-outs

  #queueLeaseWrite(): void {
    if (this.#leaseWriteQueued || this.#pendingLeases.length === 0) return;
    this.#leaseWriteQueued = true;
    this.#commits
      .run(() => {
        this.#leaseWriteQueued = false;
        const rows = this.#pendingLeases;
        this.#pendingLeases = [];
        this.store.insertLeases(rows);
      })
      .catch((err) => {
        this.#leaseWriteQueued = false;
        this.#storeWarn(err, 'hand-outs');
      });
  }

  // ======================================================================= housekeeping

  /** Lease expiry and the lagger watch (the timer calls this; tests may too). */
  tick(): void {
    if (this.#stopped) return;
    const now = this.#now();
    const read = this.#readBack.pending ? this.#readBack.topUp(RECOVERY_STEP_BUDGET) : 0;
    const requeued = this.#ring.expire(now);
    if (read > 0 || requeued > 0 || this.#ring.hasLagger(now)) this.#fireAvailable();
  }

  #fireAvailable(): void {
    if (this.#availableScheduled || this.#available.size === 0) return;
    this.#availableScheduled = true;
    setImmediate(() => {
      this.#availableScheduled = false;
      for (const l of [...this.#available]) {
        try {
          l();
        } catch (err) {
          this.#log.error({ err }, 'tasks-available listener failed');
        }
      }
    });
  }

  #emitCancel(mac: Mac, ref: RunningTaskRef, reason: string): void {
    for (const l of [...this.#cancelListeners]) {
      try {
        l(mac, ref, reason);
      } catch (err) {
        this.#log.error({ err }, 'cancel listener failed');
      }
    }
  }

  async #write<T>(write: () => T, what: string): Promise<T> {
    try {
      return await this.#commits.run(write);
    } catch (err) {
      throw this.#storeError(err, what);
    }
  }

  #storeError(err: unknown, what: string): DispatcherError {
    if (err instanceof DispatcherError) return err;
    this.#rlog.warn(`store|${what}`, { err: (err as Error)?.message }, 'store write failed');
    return new DispatcherError('DSP_ERR_STORE', `the data store cannot be written (${what}): ${(err as Error)?.message ?? err}`, {
      hint: 'check free space and permissions of the data dir; what was acknowledged before is kept',
      cause: err,
    });
  }

  #storeWarn(err: unknown, what: string): void {
    this.#rlog.warn(`store|${what}`, { err: (err as Error)?.message }, 'store write failed');
  }

  /** Stops the timer and writes pending hand-outs. The store stays open (core owns it). */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#readBack.clear();
    try {
      this.#commits.flush();
    } catch {
      /* reported by the commit's own callers */
    }
    for (const name of this.#metricNames) this.#metrics?.remove(name);
  }

  // ======================================================================= views (read-views.ts)

  stats(): EngineStats {
    return this.#views.stats();
  }

  getJob(id: number): JobView {
    return this.#views.getJob(id);
  }

  listJobs(opts: { state?: JobState; beforeId?: number; limit?: number } = {}): JobView[] {
    return this.#views.listJobs(opts);
  }

  /** A page of tasks, oldest first; `nextAfterId` continues the listing (null at the end). */
  listTasks(q: ListTasksQuery = {}): { tasks: TaskSummary[]; nextAfterId: number | null } {
    return this.#views.listTasks(q);
  }

  /** A task's state from its row's state column (running and cancelled-by-job come from memory). */
  taskState(rowState: number, jobId: number, taskId: number): TaskState {
    return this.#views.taskState(rowState, jobId, taskId);
  }

  getTask(id: number): TaskDetail {
    return this.#views.getTask(id);
  }

  /** The job's tasks with their results, a page at a time, for exports. */
  resultRows(jobId: number, afterId: number, limit: number): (ResultRow & { id: number; state: number; vars: string | null })[] {
    return this.#views.resultRows(jobId, afterId, limit);
  }

  /** Outputs tars (gzip) of a job's tasks, a page at a time. */
  outputRows(jobId: number, afterId: number, limit: number): { task_id: number; outputs: Buffer }[] {
    return this.#views.outputRows(jobId, afterId, limit);
  }

  /** The inputs blob of a job, if `key` is the job's capability key. */
  inputsOf(jobId: number, key: string): string | undefined {
    return this.#views.inputsOf(jobId, key);
  }

  /** The inputs blob of a job, for the operator (no key). */
  inputsOfJob(jobId: number): string | undefined {
    return this.#views.inputsOfJob(jobId);
  }
}
