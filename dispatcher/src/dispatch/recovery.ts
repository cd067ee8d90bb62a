/**
 * The dispatch state read back at start: interrupted submissions removed, active jobs and
 * their hand-outs put back in the ring, and some queued tasks of each job; the other queued
 * tasks are read back lazily (QueuedReadBack), a page at a time, as each job runs low in
 * memory, so a million queued tasks cost the start-up nothing and never stall the event loop.
 */
import type { Logger } from '../log.js';
import type { GroupCommit } from '../store/group-commit.js';
import type { Mac } from '../nodes/mac.js';
import type { TaskRing } from './ring.js';
import type { DispatchStore, JobRow } from './store.js';
import type { ActiveJob, ActiveJobs } from './active-jobs.js';

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

/** Queued ids of the jobs recovered at start, read back into the ring as they are needed. */
export class QueuedReadBack {
  readonly #store: DispatchStore;
  readonly #ring: TaskRing;
  readonly #log: Logger;
  #recovery: { job: ActiveJob; next: number }[] = [];
  #recovering = false;

  constructor(deps: { store: DispatchStore; ring: TaskRing; log: Logger }) {
    this.#store = deps.store;
    this.#ring = deps.ring;
    this.#log = deps.log;
  }

  /** Some job still has queued ids in the store only. */
  get pending(): boolean {
    return this.#recovery.length > 0;
  }

  /** The background read is still going on (as of the last top-up). */
  get recovering(): boolean {
    return this.#recovering;
  }

  /** How many jobs are still to be read back. */
  get jobsLeft(): number {
    return this.#recovery.length;
  }

  /** Jobs with tasks left, in the order their ids are read back (priority, then age). */
  start(jobs: ActiveJob[]): void {
    this.#recovery = jobs
      .filter((j) => j.done + j.failed + j.cancelled < j.taskCount)
      .sort((a, b) => b.spec.priority - a.spec.priority || a.id - b.id)
      .map((job) => ({ job, next: job.firstTaskId }));
  }

  forget(job: ActiveJob): void {
    this.#recovery = this.#recovery.filter((r) => r.job !== job);
  }

  clear(): void {
    this.#recovery = [];
  }

  /**
   * Reads queued ids back for the jobs running low in memory (after a restart), in priority
   * order, at most `budget` ids; the rest on the next hand-out or tick.
   */
  topUp(budget: number): number {
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
    const ids = this.#store.s.queuedIds.all(r.next, last, limit) as number[];
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
}

export interface RecoveryDeps {
  store: DispatchStore;
  log: Logger;
  ring: TaskRing;
  jobs: ActiveJobs;
  readBack: QueuedReadBack;
  commits: GroupCommit;
  now: () => number;
  /** The first task id not in the store. */
  nextTaskId: number;
  storeWarn: (err: unknown, what: string) => void;
}

/** Reads the dispatch state back from the store into the ring and the active jobs. */
export function recoverDispatchState(d: RecoveryDeps): void {
  const s = d.store.s;
  const t0 = performance.now();
  // A submission interrupted by a crash: its staged rows go (they were never queued).
  for (const j of s.stagingJobs.all() as JobRow[]) {
    const last = d.nextTaskId - 1;
    d.log.info({ job: j.id }, 'removing a submission interrupted by a restart');
    d.store.db.transaction(() => {
      for (let from = j.first_task_id; from <= last; from += RECOVERY_PAGE)
        s.deleteTasksFrom.run(from, Math.min(last, from + RECOVERY_PAGE - 1));
      s.deleteJob.run(j.id);
    })();
  }
  const active = (s.jobsByState.all('active') as JobRow[]).map((row) => d.jobs.add(row));
  // Hand-outs, oldest first: live leases wait for their node, the others are handed out again.
  const byTask = new Map<
    number,
    { job: ActiveJob; rows: { attempt: number; mac: Mac; startedAt: number; leaseUntil: number; speculative: boolean }[] }
  >();
  let orphanLeases = 0;
  for (const l of s.leasesAll.iterate() as IterableIterator<{
    task_id: number;
    attempt: number;
    mac: string;
    started_at: number;
    lease_until: number;
    speculative: number;
  }>) {
    const job = d.jobs.ofTask(l.task_id);
    if (!job) {
      orphanLeases++;
      continue;
    }
    let e = byTask.get(l.task_id);
    if (!e) {
      e = { job, rows: [] };
      byTask.set(l.task_id, e);
    }
    e.rows.push({
      attempt: l.attempt,
      mac: l.mac as Mac,
      startedAt: l.started_at,
      leaseUntil: l.lease_until,
      speculative: l.speculative === 1,
    });
  }
  const now = d.now();
  for (const [taskId, { job, rows }] of byTask) {
    const attempts = Math.max(...rows.map((r) => r.attempt));
    // Nodes it exited non-zero on stay avoided by its retries.
    const avoid = job.spec.retries ? (s.failedOn.all(taskId) as Mac[]) : undefined;
    d.ring.restore(job.ring, taskId, attempts, rows, now, avoid);
  }
  const totals = s.totals.get() as { total: number; done: number; failed: number; cancelled: number };
  d.jobs.totals = { ...totals };
  // Queued tasks: some of each job now, in priority order; the rest as they are needed.
  d.readBack.start(active);
  d.readBack.topUp(RECOVERY_START_BUDGET);
  // Jobs whose last result was committed but not marked done (a crash in between).
  for (const job of active) if (job.done + job.failed + job.cancelled >= job.taskCount) finishRecovered(d, job);
  d.log.info(
    { jobs: active.length, running: byTask.size, orphanLeases, ms: Math.round(performance.now() - t0), lazyJobs: d.readBack.jobsLeft },
    'dispatch state recovered',
  );
}

function finishRecovered(d: RecoveryDeps, job: ActiveJob): void {
  d.commits.run(() => d.store.s.finishJob.run('done', d.now(), job.id)).catch((err) => d.storeWarn(err, 'job finish'));
  d.jobs.retire(job);
}
