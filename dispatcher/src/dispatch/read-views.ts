/**
 * The dispatch state as the API, CLI and web page read it: live counts, jobs and tasks (the
 * store's rows, with what only memory knows — running copies, progress, counts of active
 * jobs), result and outputs pages for exports, and the inputs blob of a job. Reads only.
 */
import { DispatcherError } from '../errors.js';
import { tokensEqual } from '../trust/secrets.js';
import type { OutTask, TaskRing } from './ring.js';
import { TaskRowState, type DispatchStore, type JobRow, type ResultRow } from './store.js';
import type { ActiveJob, ActiveJobs, DispatchCounters } from './active-jobs.js';
import type { QueuedReadBack } from './recovery.js';
import { applyOverride } from './assignments.js';
import { substituteTemplate } from './template.js';
import type { JobCounts, JobState, JobView, TaskDetail, TaskOverride, TaskState, TaskSummary } from '../api/jobs/schemas.js';
import type { JobSpec } from './model.js';
import type { Resources } from '../protocol/messages.js';

/** Largest page of a task listing. */
export const MAX_PAGE = 1000;

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

interface TaskPageRow {
  id: number;
  job_id: number;
  state: number;
  vars: string | null;
  exit_code: number | null;
  duration_ms: number | null;
  /** The result's copy: the MAC it ran on and its attempt (absent while the task has no result). */
  ran_on?: string | null;
  result_attempt?: number | null;
}

export interface DispatchViewsDeps {
  store: DispatchStore;
  ring: TaskRing;
  jobs: ActiveJobs;
  counters: DispatchCounters;
  readBack: QueuedReadBack;
  /** The first task id not given out yet. */
  nextTaskId: () => number;
}

export class DispatchViews {
  readonly #store: DispatchStore;
  readonly #ring: TaskRing;
  readonly #jobs: ActiveJobs;
  readonly #counters: DispatchCounters;
  readonly #readBack: QueuedReadBack;
  readonly #nextTaskId: () => number;

  constructor(deps: DispatchViewsDeps) {
    this.#store = deps.store;
    this.#ring = deps.ring;
    this.#jobs = deps.jobs;
    this.#counters = deps.counters;
    this.#readBack = deps.readBack;
    this.#nextTaskId = deps.nextTaskId;
  }

  stats(): EngineStats {
    const rc = this.#ring.counts();
    const running = rc.running;
    const totals = this.#jobs.totals;
    const finished = totals.done + totals.failed + totals.cancelled;
    return {
      queued: Math.max(0, totals.total - finished - running),
      running,
      done: totals.done,
      failed: totals.failed,
      cancelled: totals.cancelled,
      activeJobs: this.#jobs.size,
      dispatchedTotal: this.#counters.dispatched,
      completedTotal: { done: this.#counters.done, failed: this.#counters.failed },
      duplicates: this.#counters.duplicates,
      stale: this.#counters.stale,
      recovering: this.#readBack.recovering,
    };
  }

  getJob(id: number): JobView {
    const active = this.#jobs.get(id);
    if (active) return this.viewOf(active);
    const row = this.#store.job(id);
    if (!row || row.state === 'staging')
      throw new DispatcherError('DSP_ERR_JOB_NOT_FOUND', `no job ${id}`, {
        hint: 'list jobs with `dispatcherctl tasks` or GET /api/v1/jobs',
      });
    return this.#viewOfRow(row);
  }

  listJobs(opts: { state?: JobState; beforeId?: number; limit?: number } = {}): JobView[] {
    const limit = Math.min(Math.max(1, opts.limit ?? 100), MAX_PAGE);
    const before = opts.beforeId ?? Number.MAX_SAFE_INTEGER;
    const rows = (
      opts.state ? this.#store.s.listJobsByState.all(opts.state, before, limit) : this.#store.s.listJobs.all(before, limit)
    ) as JobRow[];
    return rows.map((r) => {
      const a = this.#jobs.get(r.id);
      return a ? this.viewOf(a) : this.#viewOfRow(r);
    });
  }

  viewOf(job: ActiveJob): JobView {
    let running = 0;
    for (const t of job.ring.out) if (t.copies.length > 0) running++;
    return this.#view(
      {
        id: job.id,
        name: job.name,
        state: 'active',
        submittedAt: job.submittedAt,
        finishedAt: null,
        firstTaskId: job.firstTaskId,
        spec: job.spec,
      },
      { total: job.taskCount, done: job.done, failed: job.failed, cancelled: job.cancelled, running },
    );
  }

  #viewOfRow(row: JobRow): JobView {
    const spec = JSON.parse(row.spec) as JobSpec;
    const cancelled = row.state === 'cancelled' ? row.task_count - row.done - row.failed : row.cancelled;
    return this.#view(
      {
        id: row.id,
        name: row.name,
        state: row.state as JobState,
        submittedAt: row.submitted_at,
        finishedAt: row.finished_at,
        firstTaskId: row.first_task_id,
        spec,
      },
      { total: row.task_count, done: row.done, failed: row.failed, cancelled, running: 0 },
    );
  }

  #view(
    j: {
      id: number;
      name: string | null;
      state: JobState;
      submittedAt: number;
      finishedAt: number | null;
      firstTaskId: number;
      spec: JobSpec;
    },
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
      retries: j.spec.retries ?? 0,
      speculative: j.spec.speculative,
      requirements: j.spec.requirements,
      resources: resourcesView(j.spec.requirements.request),
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
    let hi = this.#nextTaskId() - 1;
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
      const rows = (
        rowState === undefined
          ? this.#store.s.tasksPage.all(after, hi, limit)
          : this.#store.s.tasksPageByState.all(after, hi, rowState, limit)
      ) as TaskPageRow[];
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
    const row = this.#store.s.task.get(t.id) as { id: number; job_id: number; state: number; vars: string | null } | undefined;
    return this.#summaryOfRow({
      id: t.id,
      job_id: t.job.spec.id,
      state: row?.state ?? 0,
      vars: row?.vars ?? null,
      exit_code: null,
      duration_ms: null,
    });
  }

  #summaryOfRow(r: TaskPageRow): TaskSummary {
    const job = this.#jobs.get(r.job_id);
    const out = job ? this.#ring.outTask(r.id) : undefined;
    const first = job?.firstTaskId ?? this.#store.job(r.job_id)?.first_task_id ?? r.id;
    return {
      id: r.id,
      jobId: r.job_id,
      index: r.id - first,
      state: this.taskState(r.state, r.job_id, r.id),
      attempts: Math.max(out?.attempts ?? 0, r.result_attempt ?? 0),
      params: r.vars ? (JSON.parse(r.vars) as Record<string, string>) : null,
      exitCode: r.exit_code,
      durationMs: r.duration_ms,
      ranOn: r.ran_on ?? null,
      progress: out?.copies.reduce<number | null>((m, c) => (c.progress === null ? m : Math.max(m ?? 0, c.progress)), null) ?? null,
      nodes: out?.copies.map((c) => c.mac) ?? [],
      ...(out?.avoid?.length ? { failedOn: [...out.avoid] } : {}),
    };
  }

  /** A task's state from its row's state column (running and cancelled-by-job come from memory). */
  taskState(rowState: number, jobId: number, taskId: number): TaskState {
    if (rowState === TaskRowState.done) return 'done';
    if (rowState === TaskRowState.failed) return 'failed';
    if (rowState === TaskRowState.cancelled) return 'cancelled';
    if (!this.#jobs.has(jobId)) return 'cancelled'; // queued in a job that is over: it was cancelled
    const out = this.#ring.outTask(taskId);
    return out && out.copies.length > 0 ? 'running' : 'queued';
  }

  getTask(id: number): TaskDetail {
    const row = this.#store.s.task.get(id) as
      | { id: number; job_id: number; state: number; vars: string | null; spec: string | null }
      | undefined;
    const jobRow = row ? this.#store.job(row.job_id) : undefined;
    if (!row || !jobRow || jobRow.state === 'staging') throw new DispatcherError('DSP_ERR_TASK_NOT_FOUND', `no task ${id}`);
    const spec = this.#jobs.get(row.job_id)?.spec ?? (JSON.parse(jobRow.spec) as JobSpec);
    let t = spec.template;
    if (row.spec) t = applyOverride(t, JSON.parse(row.spec) as TaskOverride);
    const vars = row.vars ? (JSON.parse(row.vars) as Record<string, string>) : null;
    if (vars && spec.placeholders.length) t = substituteTemplate(t, vars);
    const result = this.#store.s.result.get(id) as ResultRow | undefined;
    const out = this.#ring.outTask(id);
    const failures = this.#store.s.failures.all(id) as {
      attempt: number;
      mac: string | null;
      reason: string;
      at: number;
      exitCode: number | null;
    }[];
    const failedOn = [...new Set(failures.flatMap((f) => (f.exitCode !== null && f.mac ? [f.mac] : [])))];
    const leases = this.#store.s.leasesOfTask.all(id) as { attempt: number }[];
    const attempts = Math.max(out?.attempts ?? 0, result?.attempt ?? 0, ...leases.map((l) => l.attempt), ...failures.map((f) => f.attempt));
    return {
      id,
      jobId: row.job_id,
      index: id - jobRow.first_task_id,
      state: this.taskState(row.state, row.job_id, id),
      attempts,
      params: vars,
      exitCode: result?.exit_code ?? null,
      durationMs: result?.duration_ms ?? null,
      progress: out?.copies.reduce<number | null>((m, c) => (c.progress === null ? m : Math.max(m ?? 0, c.progress)), null) ?? null,
      nodes: out?.copies.map((c) => c.mac) ?? [],
      ranOn: result?.mac ?? null,
      command: t.command,
      env: t.env,
      cwd: t.cwd,
      timeoutSeconds: spec.timeoutSeconds,
      maxAttempts: spec.maxAttempts,
      retries: spec.retries ?? 0,
      ...(failedOn.length ? { failedOn } : {}),
      copies: (out?.copies ?? []).map((c) => ({
        attempt: c.attempt,
        mac: c.mac,
        startedAt: c.startedAt,
        leaseUntil: c.leaseUntil,
        progress: c.progress,
        speculative: c.speculative,
      })),
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
            oom: result.oom === 1,
            memPeakKiB: result.mem_peak_kib,
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
    return this.#store.s.resultsPage.all(Math.max(afterId, j.firstTaskId - 1), hi, limit) as (ResultRow & {
      id: number;
      state: number;
      vars: string | null;
    })[];
  }

  /** Outputs tars (gzip) of a job's tasks, a page at a time. */
  outputRows(jobId: number, afterId: number, limit: number): { task_id: number; outputs: Buffer }[] {
    const j = this.getJob(jobId);
    const hi = j.firstTaskId + j.counts.total - 1;
    return this.#store.s.outputsPage.all(Math.max(afterId, j.firstTaskId - 1), hi, limit) as { task_id: number; outputs: Buffer }[];
  }

  /** The inputs blob of a job, if `key` is the job's capability key. */
  inputsOf(jobId: number, key: string): string | undefined {
    const row = this.#store.job(jobId);
    if (!row?.inputs_key || !tokensEqual(row.inputs_key, key)) return undefined;
    const spec = JSON.parse(row.spec) as JobSpec;
    return spec.inputs ?? undefined;
  }

  /** The inputs blob of a job, for the operator (no key). */
  inputsOfJob(jobId: number): string | undefined {
    const row = this.#store.job(jobId);
    return row ? ((JSON.parse(row.spec) as JobSpec).inputs ?? undefined) : undefined;
  }
}

/** A job's request as the API shows it (null: the default, 1 core and no memory reservation). */
function resourcesView(r: Resources | null | undefined): { cores: number; memoryMiB: number; gpus: number } | null {
  return r ? { cores: r.cores, memoryMiB: r.memMiB, gpus: r.gpus } : null;
}
