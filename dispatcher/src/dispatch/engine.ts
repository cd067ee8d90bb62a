/**
 * The dispatch engine: the task ring (ring.ts) made durable (store.ts) and served to the
 * agent hub through the DispatchEngine contract, and to the API, CLI and web page through
 * submit/list/get/cancel and live counts.
 *
 * Durability rules
 * - A submission is committed (fsync) before `submitJob` resolves. Big sweeps are staged in
 *   chunks under a `staging` job that becomes `active` in one last commit; a crash or a bad
 *   row leaves nothing queued (staged rows are deleted, at once or at the next start).
 * - A result is committed before `submitResults` resolves (the hub acknowledges only then);
 *   results of many agents share a commit through core.commits (group commit). The results
 *   table's primary key, checked in the same transaction, records a task's result once.
 * - Hand-outs are persisted in batches without being waited for (one write per tick): after a
 *   restart, a task whose lease is still held for its node waits for that node to come back
 *   (`readopt`) and deliver; a hand-out lost in a crash just runs again elsewhere, and the
 *   node that had it is told to cancel it.
 * - Recovery reads jobs and leases and some queued tasks of each job, and serves; the other
 *   queued tasks are read back lazily, a page at a time, as each job's run low in memory —
 *   so a million queued tasks cost the start-up nothing and never stall the event loop.
 */
import { StringDecoder } from 'node:string_decoder';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DispatcherConfig } from '../config.js';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../log.js';
import type { Db } from '../store/database.js';
import type { GroupCommit } from '../store/group-commit.js';
import type { EventLog } from '../events/event-log.js';
import type { MetricsRegistry, Histogram } from '../metrics/registry.js';
import { JOBS_ACTIVE, TASKS_BY_STATE, TASKS_COMPLETED_TOTAL, TASKS_DISPATCHED_TOTAL } from '../metrics/names.js';
import { DispatcherError } from '../errors.js';
import type { Mac } from '../nodes/mac.js';
import type { DispatchEngine, NodeCapacity, ResultOutcome, RunningTaskRef, TaskAssignment, TaskResult } from './contract.js';
import { TaskRing, type Handout, type OutTask, type RingJob } from './ring.js';
import { DispatchStore, TaskRowState, type JobRow, type NewLease, type NewTaskRow, type ResultRow } from './store.js';
import { BlobStore } from './blobs.js';
import { badSubmission, commandText, paramsFileProblem, validateSubmission } from './submission.js';
import { createParamsParser, ParamsFileError, type ParamsFormat } from './params-file.js';
import { substituteTemplate } from './template.js';
import { Throughput, type ThroughputView } from './throughput.js';
import {
  MAX_TASKS_PER_JOB,
  MAX_TIMEOUT_SECONDS,
  MIN_TIMEOUT_SECONDS,
  type JobCounts,
  type JobSpec,
  type JobState,
  type JobView,
  type TaskDetail,
  type TaskOverride,
  type TaskState,
  type TaskSummary,
  type TaskTemplate,
} from './model.js';
import { randomBytes } from 'node:crypto';
import { tokensEqual } from '../trust/secrets.js';

/** Rows per staged chunk of a streamed sweep (one commit each). */
export const STAGE_ROWS = 50_000;
/** Queued task ids read per background recovery step. */
export const RECOVERY_PAGE = 10_000;
/**
 * After a restart, queued tasks are read back lazily: each job keeps at least this many in
 * memory (one hand-out batch of the hub, protocol MAX_BATCH), topped up as they go out.
 */
export const RECOVERY_LOW_WATER = 10_000;
/** Queued ids read at most per top-up (bounds the pause of one hand-out). */
export const RECOVERY_STEP_BUDGET = 50_000;
/** Queued ids read before serving at start-up, across jobs. */
export const RECOVERY_START_BUDGET = 200_000;
/** Housekeeping: lease expiry, lagger watch, throughput buckets. */
export const TICK_MS = 250;
/** Largest outputs tar kept per result (decoded, still gzip-compressed). */
export const MAX_OUTPUTS_BYTES = 256 * 1024 * 1024;
/** Task rows read ahead at a hand-out (fresh tasks go out in id order). */
export const ROW_READ_AHEAD = 256;
/** Bound on rows read ahead and not handed out yet (cleared past it). */
export const ROW_CACHE_MAX = 50_000;
/** Largest page of a task listing. */
export const MAX_PAGE = 1000;

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
  /** Start the housekeeping timer (default true; tests drive `tick()` themselves). */
  timer?: boolean;
}

interface ActiveJob {
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

type ResultOp =
  | { t: 'result'; r: TaskResult; mac: Mac | null; status: typeof TaskRowState.done | typeof TaskRowState.failed; task: OutTask; exhausted: boolean }
  | { t: 'failure'; r: TaskResult; mac: Mac; reason: string }
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

interface JobDelta {
  done: number;
  failed: number;
  cancelled: number;
}

interface CommittedJob {
  id: number;
  done: number;
  failed: number;
  cancelled: number;
  finished: boolean;
}

export interface EngineStats {
  queued: number;
  running: number;
  done: number;
  failed: number;
  cancelled: number;
  activeJobs: number;
  dispatchedTotal: number;
  completedTotal: { done: number; failed: number };
  duplicates: number;
  stale: number;
  /** The background read of queued tasks after a restart is still going on. */
  recovering: boolean;
}

export interface ListTasksQuery {
  jobId?: number;
  state?: TaskState;
  afterId?: number;
  limit?: number;
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
  readonly #jobs = new Map<number, ActiveJob>();
  readonly #available = new Set<() => void>();
  readonly #cancelListeners = new Set<(mac: Mac, ref: RunningTaskRef, reason: string) => void>();
  readonly #throughput: Throughput;
  #nextJobId: number;
  #nextTaskId: number;
  #submitChain: Promise<unknown> = Promise.resolve();
  #pendingLeases: NewLease[] = [];
  #resultQueue: PendingResults[] = [];
  readonly #rowCache = new Map<number, [string | null, string | null]>();
  #resultWriteQueued = false;
  #leaseWriteQueued = false;
  #availableScheduled = false;
  #timer: NodeJS.Timeout | undefined;
  #totals = { total: 0, done: 0, failed: 0, cancelled: 0 };
  #counters = { dispatched: 0, done: 0, failed: 0, duplicates: 0, stale: 0 };
  #recovery: { job: ActiveJob; next: number }[] = [];
  #recovering = false;
  #stopped = false;
  /** Resolves once the state is recovered (queued tasks are then read back as needed). */
  readonly ready: Promise<void>;
  #resolveReady!: () => void;
  #commitLatency: Histogram | undefined;
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
      opts.blobDir ?? (deps.config.dataDir === ':memory:' ? mkdtempSync(join(tmpdir(), 'lilcluster-blobs-')) : join(deps.config.dataDir, 'blobs')),
    );
    this.#throughput = new Throughput(this.#now);
    this.#ring = new TaskRing({
      now: this.#now,
      leaseGraceMs: deps.config.leaseGraceSeconds * 1000,
      speculativeK: deps.config.speculativeK,
      events: {
        cancel: (mac, ref, reason) => this.#emitCancel(mac, ref, reason),
        exhausted: (task, reason) => this.#recordExhausted(task, reason),
      },
    });
    const ids = this.store.nextIds();
    this.#nextJobId = ids.jobId;
    this.#nextTaskId = ids.taskId;
    this.ready = new Promise((resolve) => (this.#resolveReady = resolve));
    this.#recover();
    if (opts.timer !== false) {
      this.#timer = setInterval(() => this.tick(), TICK_MS);
      this.#timer.unref();
    }
    if (deps.metrics) this.#registerMetrics(deps.metrics);
  }

  // ======================================================================= DispatchEngine

  takeTasks(node: NodeCapacity, max: number): TaskAssignment[] {
    if (max <= 0 || this.#stopped) return [];
    if (this.#recovery.length) this.#topUpRecovered(RECOVERY_STEP_BUDGET);
    const hs = this.#ring.take(node, Math.floor(max));
    if (hs.length === 0) return [];
    const out: TaskAssignment[] = [];
    for (const h of hs) {
      let a: TaskAssignment;
      try {
        a = this.#assignment(h);
      } catch (err) {
        // A task we cannot build (unreadable row) must not take the hub down: retry it later.
        this.#rlog.warn(`assign|${h.task.id}`, { task: h.task.id, err: (err as Error).message }, 'cannot build a task assignment');
        this.#ring.complete(h.task.id, h.attempt, node.mac, 'retryable');
        continue;
      }
      out.push(a);
      this.#pendingLeases.push({ taskId: h.task.id, attempt: h.attempt, mac: node.mac, startedAt: this.#now(), leaseUntil: h.leaseUntil, speculative: h.speculative });
    }
    this.#queueLeaseWrite();
    this.#counters.dispatched += out.length;
    this.#throughput.dispatched(out.length);
    return out;
  }

  async submitResults(node: NodeCapacity, results: TaskResult[]): Promise<ResultOutcome[]> {
    const ops: ResultOp[] = [];
    for (const r of results) {
      const kind = classify(r);
      const c = this.#ring.complete(r.taskId, r.attempt, node.mac, kind === 'retry' ? 'retryable' : 'final', r.durationMs);
      switch (c.kind) {
        case 'accepted':
          ops.push({ t: 'result', r, mac: node.mac, status: kind === 'done' ? TaskRowState.done : TaskRowState.failed, task: c.task, exhausted: false });
          break;
        case 'exhausted':
          ops.push({ t: 'result', r, mac: node.mac, status: TaskRowState.failed, task: c.task, exhausted: true });
          break;
        case 'retrying':
          ops.push({ t: 'failure', r, mac: node.mac, reason: failureReason(r) });
          break;
        case 'stale':
          ops.push({ t: 'stale', r });
          break;
        case 'unknown':
          ops.push({ t: 'check', r });
          break;
      }
    }
    const outcomes = await this.#commitResults(ops, node);
    return outcomes;
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
    const kept = r.keep.map((ref) => ({ ref, copy: this.#ring.outTask(ref.taskId)?.copies.find((c) => c.attempt === ref.attempt && c.mac === node.mac) }));
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

  // ======================================================================= submission

  /** Submits a job given as JSON (inline params or tasks). Resolves once it is durable. */
  async submitJob(body: unknown): Promise<JobView> {
    const v = validateSubmission(body);
    this.#checkInputs(v.spec);
    return this.#serial(async () => {
      let rows: NewTaskRow[];
      switch (v.tasks.kind) {
        case 'single':
          rows = [{ vars: null, spec: null }];
          break;
        case 'params':
          rows = v.tasks.rows.map((values) => ({ vars: JSON.stringify(values), spec: null }));
          break;
        case 'overrides':
          rows = v.tasks.overrides.map((o) => ({ vars: null, spec: JSON.stringify(o) }));
          break;
        default:
          throw badSubmission('this submission needs its params file');
      }
      const jobId = this.#nextJobId++;
      const first = this.#nextTaskId;
      this.#nextTaskId += rows.length;
      const submittedAt = this.#now();
      const inputsKey = v.spec.inputs ? randomBytes(18).toString('base64url') : null;
      try {
        await this.#write(() => {
          this.store.insertJob({ id: jobId, name: v.spec.name, spec: v.spec, state: 'active', first_task_id: first, task_count: rows.length, inputs_key: inputsKey, submitted_at: submittedAt });
          this.store.insertTasks(jobId, first, rows);
        }, 'submission');
      } catch (err) {
        // Rolled back: nothing of it is in the store, its ids are free again.
        this.#nextJobId = jobId;
        this.#nextTaskId = first;
        throw err;
      }
      return this.#activate(jobId, v.spec, first, rows.length, inputsKey, submittedAt);
    });
  }

  /**
   * Submits a sweep whose rows come from a params file (CSV with a header, or JSON lines),
   * streamed: the rows are validated and staged as they arrive; the job is queued only once
   * the whole file is in, or not at all.
   */
  async submitJobStream(body: unknown, format: ParamsFormat, source: AsyncIterable<Uint8Array | string>): Promise<JobView> {
    const v = validateSubmission(body, { streamed: true });
    this.#checkInputs(v.spec);
    return this.#serial(async () => {
      const jobId = this.#nextJobId++;
      const first = this.#nextTaskId;
      const submittedAt = this.#now();
      const inputsKey = v.spec.inputs ? randomBytes(18).toString('base64url') : null;
      const parser = createParamsParser(format, { required: v.spec.placeholders });
      let count = 0;
      let staged = 0;
      let batch: NewTaskRow[] = [];
      const emit = (row: { line: number; values: Record<string, string> }) => {
        if (++count > MAX_TASKS_PER_JOB) throw new ParamsFileError(row.line, `more than ${MAX_TASKS_PER_JOB} rows in one job`);
        batch.push({ vars: JSON.stringify(row.values), spec: null });
      };
      const stage = async () => {
        if (staged === 0)
          await this.#write(
            () => this.store.insertJob({ id: jobId, name: v.spec.name, spec: v.spec, state: 'staging', first_task_id: first, task_count: 0, inputs_key: inputsKey, submitted_at: submittedAt }),
            'submission',
          );
        const rows = batch;
        const at = first + staged;
        batch = [];
        staged += rows.length;
        await this.#write(() => this.store.insertTasks(jobId, at, rows), 'submission');
      };
      try {
        const decoder = new StringDecoder('utf8');
        for await (const chunk of source) {
          parser.push(typeof chunk === 'string' ? chunk : decoder.write(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)), emit);
          if (batch.length >= STAGE_ROWS) await stage();
        }
        parser.push(decoder.end(), emit);
        parser.end(emit);
        if (count === 0) throw badSubmission('params: the file has no rows (only a header, or nothing)');
        const spec: JobSpec = { ...v.spec, columns: [...parser.columns] };
        if (staged === 0) {
          const rows = batch;
          await this.#write(() => {
            this.store.insertJob({ id: jobId, name: spec.name, spec, state: 'active', first_task_id: first, task_count: rows.length, inputs_key: inputsKey, submitted_at: submittedAt });
            this.store.insertTasks(jobId, first, rows);
          }, 'submission');
        } else {
          if (batch.length) await stage();
          await this.#write(() => this.store.s.activateJob.run(count, JSON.stringify(spec), jobId), 'submission');
        }
        this.#nextTaskId = first + count;
        return this.#activate(jobId, spec, first, count, inputsKey, submittedAt);
      } catch (err) {
        if (staged === 0) this.#nextJobId = jobId; // nothing written: the id is free again
        else this.#nextTaskId = Math.max(this.#nextTaskId, first + staged);
        if (staged > 0) {
          const last = first + staged - 1;
          await this.#commits
            .run(() => {
              this.store.s.deleteTasksFrom.run(first, last);
              this.store.s.deleteJob.run(jobId);
            })
            .catch((e) => this.#storeWarn(e, 'staging cleanup'));
        }
        if (err instanceof ParamsFileError) throw paramsFileProblem(err);
        throw err;
      }
    });
  }

  #checkInputs(spec: JobSpec): void {
    if (spec.inputs && !this.blobs.has(spec.inputs))
      throw badSubmission(`inputs: no uploaded tar with id ${spec.inputs}`, undefined);
  }

  #activate(jobId: number, spec: JobSpec, first: number, count: number, inputsKey: string | null, submittedAt: number): JobView {
    const job = this.#addActive({
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
    }, spec);
    this.#ring.enqueue(job.ring, first, first + count - 1);
    this.#totals.total += count;
    this.#events.append({
      kind: 'job.submitted',
      message: `job ${jobId}${spec.name ? ` (${spec.name})` : ''} submitted: ${count} task${count === 1 ? '' : 's'}, ${commandText(spec.template.command).slice(0, 120)}`,
      data: { job: jobId, tasks: count, priority: spec.priority },
    });
    this.#fireAvailable();
    return this.#viewOf(job);
  }

  #addActive(row: JobRow, spec: JobSpec = JSON.parse(row.spec) as JobSpec): ActiveJob {
    const ring = this.#ring.addJob({
      id: row.id,
      priority: spec.priority,
      // Clamped: a job stored before the submit-time bounds existed must not reach an agent outside them.
      timeoutMs: Math.round(Math.min(MAX_TIMEOUT_SECONDS, Math.max(MIN_TIMEOUT_SECONDS, spec.timeoutSeconds || 0)) * 1000),
      maxAttempts: spec.maxAttempts,
      requirements: spec.requirements,
      speculative: spec.speculative,
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
    this.#jobs.set(row.id, job);
    return job;
  }

  /** Runs submissions one at a time: a job's task ids are consecutive. */
  #serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#submitChain.then(work);
    this.#submitChain = run.catch(() => {});
    return run;
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
    this.#totals.cancelled += left;
    this.#retire(job);
    this.#events.append({ kind: 'job.cancelled', message: `job ${jobId} cancelled (${left} task${left === 1 ? '' : 's'} not run)`, data: { job: jobId, cancelled: left } });
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
      return this.#applyDeltas(new Map([[job.id, { done: 0, failed: 0, cancelled: 1 }]]));
    }, 'cancellation');
    if (committed) this.#afterCommit(committed);
    return this.getTask(taskId);
  }

  // ======================================================================= results

  /**
   * Results wait for the next group commit; all those that arrive before it go in as one
   * write (one savepoint, one counter update per job), and each caller is answered once the
   * commit is durable.
   */
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
      const now = this.#now();
      this.#commits
        .run(() => this.#writeResults(take(), now))
        .then(
          (written) => this.#afterResults(batch!, written),
          (err: unknown) => this.#resultsFailed(batch ?? take(), err, now),
        );
    });
  }

  #afterResults(batch: PendingResults[], written: WrittenResults): void {
    const t = performance.now();
    this.#afterCommit(written.jobs);
    let requeue = false;
    for (const op of written.failed) {
      const reason = op.r.error ?? (op.r.timedOut ? 'timed out' : op.r.signal ? `killed by ${op.r.signal}` : `exit code ${op.r.exitCode}`);
      this.#events.append({
        kind: 'task.failed',
        message: `task ${op.task.id} of job ${op.task.job.spec.id} failed after ${op.task.attempts} attempt${op.task.attempts === 1 ? '' : 's'}: ${reason}`.slice(0, 300),
        data: { task: op.task.id, job: op.task.job.spec.id, attempts: op.task.attempts },
      });
    }
    batch.forEach((p, g) => {
      const outcomes = written.outcomes[g]!;
      outcomes.forEach((o, i) => {
        const op = p.ops[i]!;
        if (op.t === 'failure') requeue = true;
        if (o === 'duplicate') {
          this.#counters.duplicates++;
          this.#rlog.warn('result|duplicate', { task: op.r.taskId, attempt: op.r.attempt, mac: p.node?.mac }, 'duplicate result dropped (the task has its result)');
        } else if (o === 'stale') {
          this.#counters.stale++;
          this.#rlog.warn('result|stale', { task: op.r.taskId, attempt: op.r.attempt, mac: p.node?.mac }, 'stale result dropped (not a task this node holds)');
        }
      });
      this.#commitLatency?.observe((t - p.t0) / 1000);
      p.resolve(outcomes);
    });
    if (requeue) this.#fireAvailable();
  }

  /** Not durable: no acknowledgement, the agents send again. Their tasks go back to running on them, so that the next delivery is accepted. */
  #resultsFailed(batch: PendingResults[], err: unknown, now: number): void {
    const e = this.#storeError(err, 'results');
    for (const p of batch) {
      for (const op of p.ops) {
        if (op.t !== 'result') continue;
        const job = this.#jobs.get(op.task.job.spec.id);
        if (!job || !op.mac) continue;
        const lease = now + job.ring.spec.timeoutMs;
        this.#ring.restore(job.ring, op.task.id, op.task.attempts, [{ attempt: op.r.attempt, mac: op.mac, startedAt: now, leaseUntil: lease, speculative: false }]);
      }
      p.reject(e);
    }
  }

  /** One write: results, task states, leases and job counters of every pending delivery. */
  #writeResults(batch: PendingResults[], now: number): WrittenResults {
    const s = this.store.s;
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
            if (s.insertResult.run(...resultRow(op.r, op.mac, op.status, now)).changes === 0) {
              out[i] = 'duplicate';
              break;
            }
            s.setTaskState.run(op.status, op.r.taskId);
            s.deleteLeases.run(op.r.taskId);
            const jobId = op.task.job.spec.id;
            let d = deltas.get(jobId);
            if (!d) deltas.set(jobId, (d = { done: 0, failed: 0, cancelled: 0 }));
            if (op.status === TaskRowState.done) d.done++;
            else {
              d.failed++;
              if (op.exhausted) failed.push(op);
            }
            out[i] = 'recorded';
            break;
          }
          case 'failure':
            s.insertFailure.run(op.r.taskId, op.r.attempt, op.mac, op.reason, now);
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
    return { outcomes, jobs: this.#applyDeltas(deltas), failed };
  }

  /** Adds result counts to jobs (inside a write) and finishes the jobs that are complete. */
  #applyDeltas(deltas: Map<number, JobDelta>): CommittedJob[] {
    const s = this.store.s;
    const out: CommittedJob[] = [];
    const now = this.#now();
    for (const [id, d] of deltas) {
      const r = s.addCounts.get(d.done, d.failed, d.cancelled, id) as { done: number; failed: number; cancelled: number; task_count: number; state: string } | undefined;
      if (!r) continue;
      const finished = r.state === 'active' && r.done + r.failed + r.cancelled >= r.task_count;
      if (finished) s.finishJob.run('done', now, id);
      out.push({ id, done: r.done, failed: r.failed, cancelled: r.cancelled, finished });
    }
    return out;
  }

  /** In-memory counts follow the store once a write is durable. */
  #afterCommit(jobs: CommittedJob[]): void {
    for (const c of jobs) {
      const job = this.#jobs.get(c.id);
      if (!job) continue;
      const dDone = c.done - job.done;
      const dFailed = c.failed - job.failed;
      const dCancelled = c.cancelled - job.cancelled;
      job.done = c.done;
      job.failed = c.failed;
      job.cancelled = c.cancelled;
      this.#totals.done += dDone;
      this.#totals.failed += dFailed;
      this.#totals.cancelled += dCancelled;
      this.#counters.done += dDone;
      this.#counters.failed += dFailed;
      this.#throughput.completed(dDone + dFailed);
      if (c.finished) {
        this.#retire(job);
        this.#events.append({
          kind: 'job.done',
          message: `job ${job.id}${job.name ? ` (${job.name})` : ''} done: ${job.done} done, ${job.failed} failed${job.cancelled ? `, ${job.cancelled} cancelled` : ''}`,
          data: { job: job.id, done: job.done, failed: job.failed, cancelled: job.cancelled, durationMs: this.#now() - job.submittedAt },
        });
      }
    }
  }

  #retire(job: ActiveJob): void {
    this.#jobs.delete(job.id);
    this.#ring.dropJob(job.id);
    this.#recovery = this.#recovery.filter((r) => r.job !== job);
  }

  /** A task ran out of attempts without a result (lease expired, node lost): its failure is its result. */
  #recordExhausted(task: OutTask, reason: string): void {
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
      this.#storeWarn(err, 'exhausted task'),
    );
  }

  // ======================================================================= hand-outs

  #assignment(h: Handout): TaskAssignment {
    const job = this.#jobs.get(h.task.job.spec.id);
    if (!job) throw new Error(`job ${h.task.job.spec.id} is not active`);
    let t: TaskTemplate = job.spec.template;
    let stdinB64 = job.stdinB64;
    if (job.spec.taskData !== 'none') {
      const row = this.#taskRow(h.task.id, job);
      if (!row) throw new Error(`task ${h.task.id} has no row`);
      if (row[1] !== null) {
        t = applyOverride(t, JSON.parse(row[1]) as TaskOverride);
        stdinB64 = t.stdinB64 ?? (t.stdin !== null ? Buffer.from(t.stdin).toString('base64') : null);
      }
      if (row[0] !== null && job.spec.placeholders.length > 0) {
        t = substituteTemplate(t, JSON.parse(row[0]) as Record<string, string>);
        if (t.stdin !== null && t.stdinB64 === null) stdinB64 = Buffer.from(t.stdin).toString('base64');
      }
    }
    return {
      taskId: h.task.id,
      jobId: job.id,
      attempt: h.attempt,
      command: t.command,
      env: t.env,
      cwd: t.cwd,
      stdinB64,
      inputsPath: job.inputsPath,
      inputsSha256: job.inputsPath ? job.spec.inputs : null,
      timeoutMs: job.ring.spec.timeoutMs,
    };
  }

  /**
   * A task's (vars, spec). Fresh tasks are handed out in id order, so a miss reads ahead a
   * page of the job's next rows in one range scan instead of one lookup per hand-out.
   */
  #taskRow(id: number, job: ActiveJob): [string | null, string | null] | undefined {
    const hit = this.#rowCache.get(id);
    if (hit) {
      this.#rowCache.delete(id);
      return hit;
    }
    if (this.#rowCache.size > ROW_CACHE_MAX) this.#rowCache.clear();
    const last = Math.min(id + ROW_READ_AHEAD - 1, job.firstTaskId + job.taskCount - 1);
    let found: [string | null, string | null] | undefined;
    for (const [rid, vars, spec] of this.store.s.taskVarsFrom.iterate(id, last) as IterableIterator<[number, string | null, string | null]>) {
      if (rid === id) found = [vars, spec];
      else this.#rowCache.set(rid, [vars, spec]);
    }
    return found;
  }

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
    const read = this.#recovery.length ? this.#topUpRecovered(RECOVERY_STEP_BUDGET) : 0;
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
    this.#recovery = [];
    try {
      this.#commits.flush();
    } catch {
      /* reported by the commit's own callers */
    }
    for (const name of this.#metricNames) this.#metrics?.remove(name);
  }

  // ======================================================================= recovery

  #recover(): void {
    const s = this.store.s;
    const t0 = performance.now();
    // A submission interrupted by a crash: its staged rows go (they were never queued).
    for (const j of s.stagingJobs.all() as JobRow[]) {
      const last = this.#nextTaskId - 1;
      this.#log.info({ job: j.id }, 'removing a submission interrupted by a restart');
      this.store.db.transaction(() => {
        for (let from = j.first_task_id; from <= last; from += RECOVERY_PAGE) s.deleteTasksFrom.run(from, Math.min(last, from + RECOVERY_PAGE - 1));
        s.deleteJob.run(j.id);
      })();
    }
    const active = (s.jobsByState.all('active') as JobRow[]).map((row) => this.#addActive(row));
    // Hand-outs, oldest first: live leases wait for their node, the others are handed out again.
    const byTask = new Map<number, { job: ActiveJob; rows: { attempt: number; mac: Mac; startedAt: number; leaseUntil: number; speculative: boolean }[] }>();
    let orphanLeases = 0;
    for (const l of s.leasesAll.iterate() as IterableIterator<{ task_id: number; attempt: number; mac: string; started_at: number; lease_until: number; speculative: number }>) {
      const job = this.#jobOfActiveTask(l.task_id);
      if (!job) {
        orphanLeases++;
        continue;
      }
      let e = byTask.get(l.task_id);
      if (!e) byTask.set(l.task_id, (e = { job, rows: [] }));
      e.rows.push({ attempt: l.attempt, mac: l.mac as Mac, startedAt: l.started_at, leaseUntil: l.lease_until, speculative: l.speculative === 1 });
    }
    const now = this.#now();
    for (const [taskId, { job, rows }] of byTask) {
      const attempts = Math.max(...rows.map((r) => r.attempt));
      this.#ring.restore(job.ring, taskId, attempts, rows, now);
    }
    const totals = s.totals.get() as { total: number; done: number; failed: number; cancelled: number };
    this.#totals = { ...totals };
    // Queued tasks: some of each job now, in priority order; the rest as they are needed.
    this.#recovery = active
      .filter((j) => j.done + j.failed + j.cancelled < j.taskCount)
      .sort((a, b) => b.spec.priority - a.spec.priority || a.id - b.id)
      .map((job) => ({ job, next: job.firstTaskId }));
    this.#topUpRecovered(RECOVERY_START_BUDGET);
    // Jobs whose last result was committed but not marked done (a crash in between).
    for (const job of active) if (job.done + job.failed + job.cancelled >= job.taskCount) this.#finishRecovered(job);
    this.#log.info(
      { jobs: active.length, running: byTask.size, orphanLeases, ms: Math.round(performance.now() - t0), lazyJobs: this.#recovery.length },
      'dispatch state recovered',
    );
    this.#resolveReady();
  }

  /**
   * Reads queued ids back for the jobs running low in memory (after a restart), in priority
   * order, at most `budget` ids; the rest on the next hand-out or tick.
   */
  #topUpRecovered(budget: number): number {
    let read = 0;
    for (const r of this.#recovery) {
      const last = r.job.firstTaskId + r.job.taskCount - 1;
      while (r.next <= last && r.job.ring.queued < RECOVERY_LOW_WATER && read < budget) read += this.#loadPage(r, RECOVERY_PAGE);
      if (read >= budget) break;
    }
    this.#recovery = this.#recovery.filter((r) => r.next <= r.job.firstTaskId + r.job.taskCount - 1);
    if (this.#recovering && this.#recovery.length === 0) this.#log.info({}, 'queued tasks all read back');
    this.#recovering = this.#recovery.length > 0;
    return read;
  }

  /** Reads up to `limit` queued ids of a job from `r.next` and queues them (skipping those out). */
  #loadPage(r: { job: ActiveJob; next: number }, limit: number): number {
    const last = r.job.firstTaskId + r.job.taskCount - 1;
    if (r.next > last) return 0;
    const ids = this.store.s.queuedIds.all(r.next, last, limit) as number[];
    let from = -1;
    let to = -1;
    for (const id of ids) {
      if (this.#ring.outTask(id)) continue;
      if (from >= 0 && id === to + 1) to = id;
      else {
        if (from >= 0) this.#ring.enqueue(r.job.ring, from, to);
        from = to = id;
      }
    }
    if (from >= 0) this.#ring.enqueue(r.job.ring, from, to);
    r.next = ids.length < limit ? last + 1 : ids[ids.length - 1]! + 1;
    return ids.length;
  }

  #finishRecovered(job: ActiveJob): void {
    this.#commits.run(() => this.store.s.finishJob.run('done', this.#now(), job.id)).catch((err) => this.#storeWarn(err, 'job finish'));
    this.#retire(job);
  }

  #jobOfActiveTask(taskId: number): ActiveJob | undefined {
    for (const j of this.#jobs.values()) if (taskId >= j.firstTaskId && taskId < j.firstTaskId + j.taskCount) return j;
    return undefined;
  }

  // ======================================================================= views

  stats(): EngineStats {
    const rc = this.#ring.counts();
    const running = rc.running;
    const finished = this.#totals.done + this.#totals.failed + this.#totals.cancelled;
    return {
      queued: Math.max(0, this.#totals.total - finished - running),
      running,
      done: this.#totals.done,
      failed: this.#totals.failed,
      cancelled: this.#totals.cancelled,
      activeJobs: this.#jobs.size,
      dispatchedTotal: this.#counters.dispatched,
      completedTotal: { done: this.#counters.done, failed: this.#counters.failed },
      duplicates: this.#counters.duplicates,
      stale: this.#counters.stale,
      recovering: this.#recovering,
    };
  }

  /** Tasks finished and handed out per second over the last minutes (for the web chart). */
  throughput(seconds = 600, stepSeconds = 10): ThroughputView {
    return this.#throughput.view(seconds, stepSeconds);
  }

  getJob(id: number): JobView {
    const active = this.#jobs.get(id);
    if (active) return this.#viewOf(active);
    const row = this.store.job(id);
    if (!row || row.state === 'staging') throw new DispatcherError('DSP_ERR_JOB_NOT_FOUND', `no job ${id}`, { hint: 'list jobs with `dispatcherctl tasks` or GET /api/v1/jobs' });
    return this.#viewOfRow(row);
  }

  listJobs(opts: { state?: JobState; beforeId?: number; limit?: number } = {}): JobView[] {
    const limit = Math.min(Math.max(1, opts.limit ?? 100), MAX_PAGE);
    const before = opts.beforeId ?? Number.MAX_SAFE_INTEGER;
    const rows = (opts.state ? this.store.s.listJobsByState.all(opts.state, before, limit) : this.store.s.listJobs.all(before, limit)) as JobRow[];
    return rows.map((r) => {
      const a = this.#jobs.get(r.id);
      return a ? this.#viewOf(a) : this.#viewOfRow(r);
    });
  }

  #viewOf(job: ActiveJob): JobView {
    let running = 0;
    for (const t of job.ring.out) if (t.copies.length > 0) running++;
    return this.#view(
      { id: job.id, name: job.name, state: 'active', submittedAt: job.submittedAt, finishedAt: null, firstTaskId: job.firstTaskId, spec: job.spec },
      { total: job.taskCount, done: job.done, failed: job.failed, cancelled: job.cancelled, running },
    );
  }

  #viewOfRow(row: JobRow): JobView {
    const spec = JSON.parse(row.spec) as JobSpec;
    const cancelled = row.state === 'cancelled' ? row.task_count - row.done - row.failed : row.cancelled;
    return this.#view(
      { id: row.id, name: row.name, state: row.state as JobState, submittedAt: row.submitted_at, finishedAt: row.finished_at, firstTaskId: row.first_task_id, spec },
      { total: row.task_count, done: row.done, failed: row.failed, cancelled, running: 0 },
    );
  }

  #view(
    j: { id: number; name: string | null; state: JobState; submittedAt: number; finishedAt: number | null; firstTaskId: number; spec: JobSpec },
    c: Omit<JobCounts, 'queued'>,
  ): JobView {
    return {
      id: j.id,
      name: j.name,
      state: j.state,
      submittedAt: j.submittedAt,
      finishedAt: j.finishedAt,
      priority: j.spec.priority,
      timeoutSeconds: j.spec.timeoutSeconds,
      maxAttempts: j.spec.maxAttempts,
      speculative: j.spec.speculative,
      requirements: j.spec.requirements,
      command: j.spec.template.command,
      columns: j.spec.columns,
      firstTaskId: j.firstTaskId,
      counts: { ...c, queued: Math.max(0, c.total - c.done - c.failed - c.cancelled - c.running) },
    };
  }

  /** A page of tasks, oldest first; `nextAfterId` continues the listing (null at the end). */
  listTasks(q: ListTasksQuery = {}): { tasks: TaskSummary[]; nextAfterId: number | null } {
    const limit = Math.min(Math.max(1, q.limit ?? 100), MAX_PAGE);
    let lo = 0;
    let hi = this.#nextTaskId - 1;
    if (q.jobId !== undefined) {
      const j = this.getJob(q.jobId);
      lo = j.firstTaskId - 1;
      hi = j.firstTaskId + j.counts.total - 1;
    }
    let after = Math.max(lo, q.afterId ?? lo);
    if (q.state === 'running') {
      const ids: OutTask[] = [];
      const source = q.jobId !== undefined ? (this.#jobs.get(q.jobId)?.ring.out ?? []) : this.#allOut();
      for (const t of source) if (t.copies.length > 0 && t.id > after && t.id <= hi) ids.push(t);
      ids.sort((a, b) => a.id - b.id);
      const page = ids.slice(0, limit);
      return { tasks: page.map((t) => this.#summaryOfOut(t)), nextAfterId: ids.length > limit ? page.at(-1)!.id : null };
    }
    const rowState = q.state === 'done' ? 1 : q.state === 'failed' ? 2 : q.state === 'queued' ? 0 : undefined;
    const tasks: TaskSummary[] = [];
    let scanned = 0;
    while (tasks.length < limit && after < hi && scanned < 50 * MAX_PAGE) {
      const rows = (rowState === undefined ? this.store.s.tasksPage.all(after, hi, limit) : this.store.s.tasksPageByState.all(after, hi, rowState, limit)) as TaskPageRow[];
      if (rows.length === 0) break;
      scanned += rows.length;
      for (const r of rows) {
        after = r.id;
        const s = this.#summaryOfRow(r);
        if (q.state === undefined || s.state === q.state) tasks.push(s);
        if (tasks.length >= limit) break;
      }
      if (rows.length < limit) {
        after = hi;
        break;
      }
    }
    return { tasks, nextAfterId: after < hi ? after : null };
  }

  *#allOut(): Iterable<OutTask> {
    for (const j of this.#jobs.values()) yield* j.ring.out;
  }

  #summaryOfOut(t: OutTask): TaskSummary {
    const row = this.store.s.task.get(t.id) as { id: number; job_id: number; state: number; vars: string | null } | undefined;
    return this.#summaryOfRow({ id: t.id, job_id: t.job.spec.id, state: row?.state ?? 0, vars: row?.vars ?? null, exit_code: null, duration_ms: null });
  }

  #summaryOfRow(r: TaskPageRow): TaskSummary {
    const job = this.#jobs.get(r.job_id);
    const out = job ? this.#ring.outTask(r.id) : undefined;
    const first = job?.firstTaskId ?? this.store.job(r.job_id)?.first_task_id ?? r.id;
    return {
      id: r.id,
      jobId: r.job_id,
      index: r.id - first,
      state: this.#stateOf(r.state, r.job_id, r.id),
      attempts: out?.attempts ?? 0,
      params: r.vars ? (JSON.parse(r.vars) as Record<string, string>) : null,
      exitCode: r.exit_code,
      durationMs: r.duration_ms,
      progress: out?.copies.reduce<number | null>((m, c) => (c.progress === null ? m : Math.max(m ?? 0, c.progress)), null) ?? null,
      nodes: out?.copies.map((c) => c.mac) ?? [],
    };
  }

  /** A task's state from its row's state column (running and cancelled-by-job come from memory). */
  taskState(rowState: number, jobId: number, taskId: number): TaskState {
    return this.#stateOf(rowState, jobId, taskId);
  }

  #stateOf(rowState: number, jobId: number, taskId: number): TaskState {
    if (rowState === TaskRowState.done) return 'done';
    if (rowState === TaskRowState.failed) return 'failed';
    if (rowState === TaskRowState.cancelled) return 'cancelled';
    if (!this.#jobs.has(jobId)) return 'cancelled'; // queued in a job that is over: it was cancelled
    const out = this.#ring.outTask(taskId);
    return out && out.copies.length > 0 ? 'running' : 'queued';
  }

  getTask(id: number): TaskDetail {
    const row = this.store.s.task.get(id) as { id: number; job_id: number; state: number; vars: string | null; spec: string | null } | undefined;
    const jobRow = row ? this.store.job(row.job_id) : undefined;
    if (!row || !jobRow || jobRow.state === 'staging') throw new DispatcherError('DSP_ERR_TASK_NOT_FOUND', `no task ${id}`);
    const spec = this.#jobs.get(row.job_id)?.spec ?? (JSON.parse(jobRow.spec) as JobSpec);
    let t = spec.template;
    if (row.spec) t = applyOverride(t, JSON.parse(row.spec) as TaskOverride);
    const vars = row.vars ? (JSON.parse(row.vars) as Record<string, string>) : null;
    if (vars && spec.placeholders.length) t = substituteTemplate(t, vars);
    const result = this.store.s.result.get(id) as ResultRow | undefined;
    const out = this.#ring.outTask(id);
    const failures = this.store.s.failures.all(id) as { attempt: number; mac: string | null; reason: string; at: number }[];
    const leases = this.store.s.leasesOfTask.all(id) as { attempt: number }[];
    const attempts = Math.max(out?.attempts ?? 0, result?.attempt ?? 0, ...leases.map((l) => l.attempt), ...failures.map((f) => f.attempt));
    return {
      id,
      jobId: row.job_id,
      index: id - jobRow.first_task_id,
      state: this.#stateOf(row.state, row.job_id, id),
      attempts,
      params: vars,
      exitCode: result?.exit_code ?? null,
      durationMs: result?.duration_ms ?? null,
      progress: out?.copies.reduce<number | null>((m, c) => (c.progress === null ? m : Math.max(m ?? 0, c.progress)), null) ?? null,
      nodes: out?.copies.map((c) => c.mac) ?? [],
      command: t.command,
      env: t.env,
      cwd: t.cwd,
      timeoutSeconds: spec.timeoutSeconds,
      maxAttempts: spec.maxAttempts,
      copies: (out?.copies ?? []).map((c) => ({ attempt: c.attempt, mac: c.mac, startedAt: c.startedAt, leaseUntil: c.leaseUntil, progress: c.progress, speculative: c.speculative })),
      result: result
        ? {
            attempt: result.attempt,
            mac: result.mac,
            exitCode: result.exit_code,
            signal: result.signal,
            timedOut: result.timed_out === 1,
            error: result.error,
            startedAt: result.started_at,
            durationMs: result.duration_ms,
            maxRssKiB: result.max_rss_kib,
            stdout: result.stdout,
            stderr: result.stderr,
            stdoutTruncated: result.stdout_truncated === 1,
            stderrTruncated: result.stderr_truncated === 1,
            outputsBytes: result.outputs?.length ?? 0,
            recordedAt: result.recorded_at,
          }
        : null,
      failures,
    };
  }

  /** The job's tasks with their results, a page at a time, for exports. */
  resultRows(jobId: number, afterId: number, limit: number): (ResultRow & { id: number; state: number; vars: string | null })[] {
    const j = this.getJob(jobId);
    const hi = j.firstTaskId + j.counts.total - 1;
    return this.store.s.resultsPage.all(Math.max(afterId, j.firstTaskId - 1), hi, limit) as (ResultRow & { id: number; state: number; vars: string | null })[];
  }

  /** Outputs tars (gzip) of a job's tasks, a page at a time. */
  outputRows(jobId: number, afterId: number, limit: number): { task_id: number; outputs: Buffer }[] {
    const j = this.getJob(jobId);
    const hi = j.firstTaskId + j.counts.total - 1;
    return this.store.s.outputsPage.all(Math.max(afterId, j.firstTaskId - 1), hi, limit) as { task_id: number; outputs: Buffer }[];
  }

  /** The inputs blob of a job, if `key` is the job's capability key. */
  inputsOf(jobId: number, key: string): string | undefined {
    const row = this.store.job(jobId);
    if (!row || !row.inputs_key || !tokensEqual(row.inputs_key, key)) return undefined;
    const spec = JSON.parse(row.spec) as JobSpec;
    return spec.inputs ?? undefined;
  }

  /** The inputs blob of a job, for the operator (no key). */
  inputsOfJob(jobId: number): string | undefined {
    const row = this.store.job(jobId);
    return row ? ((JSON.parse(row.spec) as JobSpec).inputs ?? undefined) : undefined;
  }


  // ======================================================================= metrics

  #registerMetrics(m: MetricsRegistry): void {
    const reg = (name: string, fn: () => void) => {
      if (m.has(name)) return;
      fn();
      this.#metricNames.push(name);
    };
    reg(TASKS_BY_STATE, () =>
      m.collect({
        name: TASKS_BY_STATE,
        help: 'Tasks by state',
        type: 'gauge',
        labelNames: ['state'],
        collect: () => {
          const s = this.stats();
          return (['queued', 'running', 'done', 'failed', 'cancelled'] as const).map((state) => ({ labels: { state }, value: s[state] }));
        },
      }),
    );
    reg(TASKS_DISPATCHED_TOTAL, () => m.collect({ name: TASKS_DISPATCHED_TOTAL, help: 'Tasks handed to agents', type: 'counter', collect: () => this.#counters.dispatched }));
    reg(TASKS_COMPLETED_TOTAL, () =>
      m.collect({
        name: TASKS_COMPLETED_TOTAL,
        help: 'Tasks finished with a recorded result',
        type: 'counter',
        labelNames: ['outcome'],
        collect: () => [
          { labels: { outcome: 'done' }, value: this.#counters.done },
          { labels: { outcome: 'failed' }, value: this.#counters.failed },
        ],
      }),
    );
    reg(JOBS_ACTIVE, () => m.collect({ name: JOBS_ACTIVE, help: 'Jobs not finished yet', type: 'gauge', collect: () => this.#jobs.size }));
    reg('lilcluster_dispatch_results_dropped_total', () =>
      m.collect({
        name: 'lilcluster_dispatch_results_dropped_total',
        help: 'Results acknowledged but not recorded: duplicate (the task had its result) or stale (not a task the node held)',
        type: 'counter',
        labelNames: ['reason'],
        collect: () => [
          { labels: { reason: 'duplicate' }, value: this.#counters.duplicates },
          { labels: { reason: 'stale' }, value: this.#counters.stale },
        ],
      }),
    );
    reg('lilcluster_dispatch_result_commit_seconds', () => {
      this.#commitLatency = m.histogram({ name: 'lilcluster_dispatch_result_commit_seconds', help: 'From results received to results durable (group commit)' });
    });
  }
}

interface TaskPageRow {
  id: number;
  job_id: number;
  state: number;
  vars: string | null;
  exit_code: number | null;
  duration_ms: number | null;
}

/** done: exit 0; failed: another exit code (rerunning a program that said no is waste); retry: the attempt itself went wrong. */
export function classify(r: TaskResult): 'done' | 'failed' | 'retry' {
  if (r.error !== null || r.timedOut || r.signal !== null || r.exitCode === null) return 'retry';
  return r.exitCode === 0 ? 'done' : 'failed';
}

function failureReason(r: TaskResult): string {
  if (r.timedOut) return 'timed out';
  if (r.error !== null) return `could not run: ${r.error}`.slice(0, 1000);
  if (r.signal !== null) return `killed by ${r.signal}`;
  return 'no exit code';
}

/** The results row's columns, in INSERT order (positional: cheaper than named parameters). */
function resultRow(r: TaskResult, mac: Mac | null, status: number, now: number): unknown[] {
  let outputs: Buffer | null = null;
  let error = r.error;
  if (r.outputsTarGzB64) {
    outputs = Buffer.from(r.outputsTarGzB64, 'base64');
    if (outputs.length > MAX_OUTPUTS_BYTES) {
      outputs = null;
      error = `${error ? `${error}; ` : ''}outputs larger than ${MAX_OUTPUTS_BYTES} bytes were dropped`;
    }
  }
  return [
    r.taskId,
    r.attempt,
    mac,
    status,
    r.exitCode,
    r.signal,
    r.timedOut ? 1 : 0,
    error,
    r.startedAt || null,
    Number.isFinite(r.durationMs) ? r.durationMs : null,
    r.maxRssKiB,
    r.stdout,
    r.stderr,
    r.stdoutTruncated ? 1 : 0,
    r.stderrTruncated ? 1 : 0,
    outputs,
    now,
  ];
}

function applyOverride(t: TaskTemplate, o: TaskOverride): TaskTemplate {
  return {
    command: o.command ?? t.command,
    env: o.env ? { ...t.env, ...o.env } : t.env,
    cwd: o.cwd !== undefined ? o.cwd : t.cwd,
    stdin: o.stdin !== undefined ? o.stdin : o.stdinB64 !== undefined ? null : t.stdin,
    stdinB64: o.stdinB64 !== undefined ? o.stdinB64 : o.stdin !== undefined ? null : t.stdinB64,
  };
}
