/**
 * The circular task list of the design notes (their task-scheduling section), as a pure module:
 * no I/O, no timers; it takes a clock and reports through two callbacks.
 *
 * Semantics
 * ---------
 * - **Backlog.** Tasks not yet handed out wait in a backlog ordered by priority (higher
 *   first), first-in first-out within a priority (submission order = task id order). A job's
 *   fresh tasks are kept as ranges of ids, so a million queued tasks cost a few numbers.
 * - **Ring.** Every handed-out ("out") task sits in a circular list, in hand-out order. The
 *   pointer designates the oldest hand-out: the task the round robin comes back to first.
 *   A hand-out places its task just before the pointer, at the "end" of the round — the
 *   notes' refill "juste avant l'élément pointé". A task handed out again leaves its place
 *   and goes there too (if the pointer was on it, the pointer moves on to the next task).
 *   A result removes its task from the ring, wherever it is; the next request refills.
 * - **Leases.** A hand-out is a copy of the task on one node, with a lease of the task's
 *   timeout plus `leaseGraceMs`. When the last live copy of a task is gone (lease expired,
 *   node lost, attempt failed with something worth retrying), the task stays in the ring
 *   and waits to be handed out again — before any fresh task of the same priority, to the
 *   first node able to run it. Every hand-out is an attempt; a task whose attempts reach its
 *   job's `maxAttempts` without a result is failed (`exhausted`), so every task ends.
 * - **Requirements.** A job's requirements (labels, cores, memory) and its resource request
 *   form a class; each class has its own backlog. A request only looks at the classes the
 *   node satisfies, so a task no connected node can run stays queued without blocking the others.
 * - **Resources.** A node asking for work says what it has free (cores, memory, GPUs); each
 *   hand-out spends its task's request from that budget (a task without one costs a core),
 *   and only classes whose request fits what is left are looked at: a node never gets more
 *   than it said it can run. A big request waiting while smaller ones fit does not stop them
 *   (backfill).
 * - **Speculative copies** (Work Queue's fast abort, against laggers): when nothing in the
 *   backlog fits an idle node, it may get a second copy of the task that has run longest —
 *   walking the ring from the pointer, i.e. from the oldest hand-out, at most
 *   `SPECULATION_SCAN` tasks — once that task has run more than `speculativeK` × the median
 *   duration of its job's finished tasks (with at least `MIN_FINISHED_FOR_SPECULATION`
 *   finished). At most one extra copy per task, never on the node already running it, only
 *   for jobs with speculation on. The first result wins; the other copy is cancelled.
 * - **Results.** A result is accepted from any node that was handed that attempt, even a
 *   late one whose lease expired, as long as the task has no result yet (first wins); the
 *   other live copies are cancelled. A result for an attempt the node never held is stale.
 *
 * Cost: hand-out, result, expiry and node loss are O(log n) or O(copies of the node) —
 * no scan of the backlog or the ring (lease expiry is a heap; waiting tasks are queued per
 * class and priority).
 */
import type { Mac } from '../nodes/mac.js';
import type { NodeCapacity, RunningTaskRef } from './contract.js';
import type { NormalRequirements } from './model.js';
import { DEFAULT_TASK_RESOURCES, type Resources } from '../protocol/messages.js';
import { Deque } from './deque.js';
import { MinHeap, RunningMedian } from './heap.js';

/** How many tasks, from the oldest hand-out on, a speculative request looks at. */
export const SPECULATION_SCAN = 64;
/** A job needs this many finished tasks before its median means anything. */
export const MIN_FINISHED_FOR_SPECULATION = 3;

export interface RingJobSpec {
  id: number;
  priority: number;
  timeoutMs: number;
  maxAttempts: number;
  requirements: NormalRequirements;
  speculative: boolean;
  /** Attempts beyond the first for tasks that exit non-zero, each on a node they have not failed on (`submit --retries`). */
  retries?: number;
}

export interface RingEvents {
  /** A task ran out of attempts without a result (lease expired, node lost). */
  exhausted(task: OutTask, reason: string): void;
  /** A running copy must be stopped on its node. */
  cancel(mac: Mac, ref: RunningTaskRef, reason: string): void;
}

export interface RingOptions {
  now: () => number;
  leaseGraceMs: number;
  speculativeK: number;
  events?: Partial<RingEvents>;
}

export interface Copy {
  attempt: number;
  mac: Mac;
  startedAt: number;
  leaseUntil: number;
  progress: number | null;
  speculative: boolean;
}

export interface Handout {
  task: OutTask;
  attempt: number;
  speculative: boolean;
  leaseUntil: number;
}

export type Completion =
  /** The task has its result now: record it (the other copies were cancelled). */
  | { kind: 'accepted'; task: OutTask }
  /** A failed attempt; the task runs again (or goes on in its other copy). */
  | { kind: 'retrying'; task: OutTask }
  /** A failed attempt and the last one: record it as the task's final result. */
  | { kind: 'exhausted'; task: OutTask }
  /** The node was never handed this attempt. */
  | { kind: 'stale' }
  /** Not an out task: done already, cancelled, or never handed out. The caller asks its store. */
  | { kind: 'unknown' };

export class RingJob {
  readonly spec: RingJobSpec;
  readonly cls: ReqClass;
  /** Fresh task ids as [from, to] pairs (inclusive), ascending, consumed from #head. */
  readonly #ranges: number[] = [];
  #head = 0;
  /** Fresh tasks in the backlog. */
  queued = 0;
  /** Tasks of this job in the ring. */
  readonly out = new Set<OutTask>();
  readonly durations = new RunningMedian();
  cancelled = false;
  /** Listed in its bucket's job queue. */
  listed = false;

  constructor(spec: RingJobSpec, cls: ReqClass) {
    this.spec = spec;
    this.cls = cls;
  }

  /** The next fresh id, without taking it. */
  peekId(): number | undefined {
    return this.#head < this.#ranges.length ? this.#ranges[this.#head] : undefined;
  }

  addRange(from: number, to: number): void {
    if (to < from) return;
    const r = this.#ranges;
    const last = r.length - 1;
    if (last > this.#head && r[last]! + 1 === from) r[last] = to;
    else r.push(from, to);
    this.queued += to - from + 1;
  }

  popId(): number | undefined {
    const r = this.#ranges;
    if (this.#head >= r.length) return undefined;
    const id = r[this.#head]!;
    if (id === r[this.#head + 1]) {
      this.#head += 2;
      if (this.#head === r.length) {
        r.length = 0;
        this.#head = 0;
      }
    } else r[this.#head] = id + 1;
    this.queued--;
    return id;
  }

  /** Removes one fresh id (a cancelled task); false if it is not queued. */
  removeId(id: number): boolean {
    const r = this.#ranges;
    for (let i = this.#head; i < r.length; i += 2) {
      const from = r[i]!;
      const to = r[i + 1]!;
      if (id < from) return false;
      if (id > to) continue;
      if (from === to) r.splice(i, 2);
      else if (id === from) r[i] = id + 1;
      else if (id === to) r[i + 1] = id - 1;
      else r.splice(i, 2, from, id - 1, id + 1, to);
      this.queued--;
      return true;
    }
    return false;
  }

  hasQueuedId(id: number): boolean {
    const r = this.#ranges;
    for (let i = this.#head; i < r.length; i += 2) if (id >= r[i]! && id <= r[i + 1]!) return true;
    return false;
  }

  clearQueued(): number {
    const n = this.queued;
    this.#ranges.length = 0;
    this.#head = 0;
    this.queued = 0;
    return n;
  }
}

export class OutTask {
  readonly id: number;
  readonly job: RingJob;
  /** Hand-outs so far (the last attempt number). */
  attempts: number;
  /** Live copies (at most two: the first and one speculative). */
  copies: Copy[] = [];
  /** Which node got each attempt (index attempt - 1), to tell late results from stale ones. */
  readonly handedTo: (Mac | undefined)[] = [];
  speculated = false;
  /** Nodes an attempt of it exited non-zero on (jobs with `retries`): it is not handed to them again. */
  avoid: Mac[] | undefined;
  /** Queued to be handed out again. */
  waiting = false;
  prev: OutTask = this;
  next: OutTask = this;

  constructor(id: number, job: RingJob, attempts: number) {
    this.id = id;
    this.job = job;
    this.attempts = attempts;
  }
}

/** One priority level of one requirement class: tasks waiting to be handed out again, then fresh jobs. */
class Bucket {
  readonly waiting = new Deque<OutTask>();
  readonly jobs = new Deque<RingJob>();
  constructor(readonly priority: number) {}

  /** Drops stale heads; true if something can be handed out. */
  clean(): boolean {
    while (this.waiting.length > 0 && !this.waiting.peek()!.waiting) this.waiting.shift();
    while (this.jobs.length > 0 && this.jobs.peek()!.queued === 0) this.jobs.shift()!.listed = false;
    return this.waiting.length > 0 || this.jobs.length > 0;
  }
}

export class ReqClass {
  readonly buckets = new Map<number, Bucket>();
  /** Priorities with a bucket, highest first. */
  readonly priorities: number[] = [];
  /** What each of its tasks spends of a node's free resources. */
  readonly cost: Readonly<Resources>;
  constructor(
    readonly key: string,
    readonly req: NormalRequirements,
  ) {
    this.cost = req.request ?? DEFAULT_TASK_RESOURCES;
  }

  bucket(priority: number): Bucket {
    let b = this.buckets.get(priority);
    if (!b) {
      b = new Bucket(priority);
      this.buckets.set(priority, b);
      let i = 0;
      while (i < this.priorities.length && this.priorities[i]! > priority) i++;
      this.priorities.splice(i, 0, priority);
    }
    return b;
  }

  /** The highest-priority bucket with something in it; drops empty ones on the way. */
  top(): Bucket | undefined {
    while (this.priorities.length > 0) {
      const p = this.priorities[0]!;
      const b = this.buckets.get(p)!;
      if (b.clean()) return b;
      this.priorities.shift();
      this.buckets.delete(p);
    }
    return undefined;
  }

  fits(node: NodeCapacity): boolean {
    return fits(this.req, node);
  }
}

/** How many waiting entries of a bucket a node looks past, skipping tasks that failed on it. */
export const AVOID_SCAN = 64;

/**
 * The first thing this node may take in a class, highest priority first: a waiting task that
 * did not fail on it (looking past at most AVOID_SCAN entries per bucket), else a fresh task.
 */
function candidateIn(cls: ReqClass, mac: Mac): { bucket: Bucket; task?: OutTask } | undefined {
  if (!cls.top()) return undefined;
  for (const p of cls.priorities) {
    const b = cls.buckets.get(p)!;
    if (!b.clean()) continue;
    let seen = 0;
    for (const t of b.waiting) {
      if (++seen > AVOID_SCAN) break;
      if (t.waiting && !t.avoid?.includes(mac)) return { bucket: b, task: t };
    }
    if (b.jobs.length > 0) return { bucket: b };
  }
  return undefined;
}

/** Attempts that count against `maxAttempts`: all but those that exited non-zero on a node it then avoids. */
function otherAttempts(t: OutTask): number {
  return t.attempts - (t.avoid?.length ?? 0);
}

export function fits(req: NormalRequirements, node: NodeCapacity): boolean {
  if (node.cores < req.minCores || node.memoryMiB < req.minMemoryMiB) return false;
  const r = req.request;
  // A request must fit what the node allocates at all, else it would wait there forever.
  if (
    r &&
    (r.cores > (node.alloc?.cores ?? node.cores) || r.memMiB > (node.alloc?.memMiB ?? node.memoryMiB) || r.gpus > (node.alloc?.gpus ?? 0))
  )
    return false;
  // Jobs stored before images existed have no `image`: any node.
  if (req.image && node.image !== req.image) return false;
  for (const l of req.labels) if (!node.labels.includes(l)) return false;
  return true;
}

export function requirementsKey(req: NormalRequirements): string {
  const r = req.request;
  return `${req.minCores}|${req.minMemoryMiB}|${[...req.labels].sort().join(',')}|${req.image ?? ''}|${r ? `${r.cores},${r.memMiB},${r.gpus}` : ''}`;
}

/** Whether `cost` fits in `free`. */
export function within(cost: Readonly<Resources>, free: Readonly<Resources>): boolean {
  return cost.cores <= free.cores && cost.memMiB <= free.memMiB && cost.gpus <= free.gpus;
}

interface LeaseEntry {
  task: OutTask;
  attempt: number;
}

export interface RingCounts {
  /** Fresh tasks in the backlog. */
  queued: number;
  /** Out tasks waiting to be handed out again. */
  waiting: number;
  /** Out tasks with at least one live copy. */
  running: number;
  /** Live copies (running + speculative extras). */
  copies: number;
}

export class TaskRing {
  readonly #now: () => number;
  readonly #graceMs: number;
  readonly #k: number;
  readonly #events: RingEvents;
  readonly #jobs = new Map<number, RingJob>();
  readonly #classes = new Map<string, ReqClass>();
  readonly #fitCache = new Map<string, ReqClass[]>();
  readonly #out = new Map<number, OutTask>();
  readonly #byNode = new Map<Mac, Set<OutTask>>();
  readonly #leases = new MinHeap<LeaseEntry>();
  #pointer: OutTask | null = null;
  #queued = 0;
  #waiting = 0;
  #copies = 0;

  constructor(opts: RingOptions) {
    this.#now = opts.now;
    this.#graceMs = opts.leaseGraceMs;
    this.#k = opts.speculativeK;
    this.#events = { exhausted: () => {}, cancel: () => {}, ...opts.events };
  }

  // ---- jobs and the backlog -------------------------------------------------------------

  addJob(spec: RingJobSpec): RingJob {
    const existing = this.#jobs.get(spec.id);
    if (existing) return existing;
    const key = requirementsKey(spec.requirements);
    let cls = this.#classes.get(key);
    if (!cls) {
      cls = new ReqClass(key, spec.requirements);
      this.#classes.set(key, cls);
      this.#fitCache.clear();
    }
    const job = new RingJob(spec, cls);
    this.#jobs.set(spec.id, job);
    return job;
  }

  job(id: number): RingJob | undefined {
    return this.#jobs.get(id);
  }

  /** Queues the fresh tasks `from..to` (inclusive) of a job, after those already queued. */
  enqueue(job: RingJob, from: number, to: number = from): void {
    if (job.cancelled || to < from) return;
    job.addRange(from, to);
    this.#queued += to - from + 1;
    if (!job.listed) {
      job.listed = true;
      const jobs = job.cls.bucket(job.spec.priority).jobs;
      // Jobs come in id order (submission, recovery), so this is a push.
      const last = jobs.peekLast();
      if (last === undefined || last.spec.id < job.spec.id) jobs.push(job);
      else {
        const all = [...jobs, job].sort((a, b) => a.spec.id - b.spec.id);
        jobs.removeWhere(() => true);
        for (const j of all) jobs.push(j);
      }
    }
  }

  /** Forgets a finished job (no queued or out task left). */
  dropJob(id: number): void {
    const job = this.#jobs.get(id);
    if (job && job.queued === 0 && job.out.size === 0) this.#jobs.delete(id);
  }

  // ---- hand-out -------------------------------------------------------------------------

  /**
   * Hands out up to `max` tasks to this node: waiting tasks, then fresh ones, then a
   * speculative copy. With `free` (the node's free resources), only tasks whose request fits
   * in it, each spending its request from it (the caller's object is updated).
   */
  take(node: NodeCapacity, max: number, free?: Resources): Handout[] {
    const now = this.#now();
    this.expire(now);
    const out: Handout[] = [];
    if (max <= 0) return out;
    const classes = this.#fitting(node);
    while (out.length < max) {
      const h = this.#takeQueued(node, classes, now, free) ?? this.#takeSpeculative(node, now, free);
      if (!h) break;
      if (free) {
        const c = h.task.job.cls.cost;
        free.cores -= c.cores;
        free.memMiB -= c.memMiB;
        free.gpus -= c.gpus;
      }
      out.push(h);
    }
    return out;
  }

  #takeQueued(node: NodeCapacity, classes: readonly ReqClass[], now: number, free: Resources | undefined): Handout | undefined {
    let best: Bucket | undefined;
    let bestWaiting = false;
    let bestId = 0;
    let bestTask: OutTask | undefined;
    for (const cls of classes) {
      if (free && !within(cls.cost, free)) continue;
      const c = candidateIn(cls, node.mac);
      if (!c) continue;
      const b = c.bucket;
      const w = c.task !== undefined;
      const id = w ? c.task!.id : b.jobs.peek()!.peekId()!;
      if (
        best === undefined ||
        b.priority > best.priority ||
        (b.priority === best.priority && (w && !bestWaiting ? true : w === bestWaiting && id < bestId))
      ) {
        best = b;
        bestWaiting = w;
        bestId = id;
        bestTask = c.task;
      }
    }
    if (!best) return undefined;
    let task: OutTask;
    if (bestWaiting) {
      task = bestTask!;
      // Taken from behind tasks this node must not run: its entry stays, dropped when it reaches the head.
      if (best.waiting.peek() === task) best.waiting.shift();
      task.waiting = false;
      this.#waiting--;
      this.#unlink(task);
    } else {
      const job = best.jobs.peek()!;
      const id = job.popId()!;
      this.#queued--;
      if (job.queued === 0) {
        best.jobs.shift();
        job.listed = false;
      }
      task = new OutTask(id, job, 0);
      this.#out.set(id, task);
      job.out.add(task);
    }
    this.#insertBeforePointer(task);
    return this.#handOut(task, node.mac, now, false);
  }

  #takeSpeculative(node: NodeCapacity, now: number, free: Resources | undefined): Handout | undefined {
    let t = this.#pointer;
    for (let i = 0; t !== null && i < SPECULATION_SCAN; i++) {
      if (this.#laggerFor(t, node, now) && (!free || within(t.job.cls.cost, free))) {
        t.speculated = true;
        return this.#handOut(t, node.mac, now, true);
      }
      t = t.next;
      if (t === this.#pointer) break;
    }
    return undefined;
  }

  #laggerFor(t: OutTask, node: NodeCapacity | undefined, now: number): boolean {
    const job = t.job;
    if (!job.spec.speculative || t.speculated || t.copies.length !== 1 || otherAttempts(t) >= job.spec.maxAttempts) return false;
    const median = job.durations.median;
    if (median === undefined || job.durations.count < MIN_FINISHED_FOR_SPECULATION) return false;
    const c = t.copies[0]!;
    if (now - c.startedAt <= this.#k * median) return false;
    return node === undefined || (c.mac !== node.mac && !t.avoid?.includes(node.mac) && job.cls.fits(node));
  }

  /** Whether some node could get a speculative copy now (the engine's timer asks, to wake idle nodes). */
  hasLagger(now: number = this.#now()): boolean {
    let t = this.#pointer;
    for (let i = 0; t !== null && i < SPECULATION_SCAN; i++) {
      if (this.#laggerFor(t, undefined, now)) return true;
      t = t.next;
      if (t === this.#pointer) break;
    }
    return false;
  }

  #handOut(task: OutTask, mac: Mac, now: number, speculative: boolean): Handout {
    const attempt = ++task.attempts;
    const leaseUntil = now + task.job.spec.timeoutMs + this.#graceMs;
    task.copies.push({ attempt, mac, startedAt: now, leaseUntil, progress: null, speculative });
    task.handedTo[attempt - 1] = mac;
    this.#copies++;
    this.#nodeSet(mac).add(task);
    this.#leases.push(leaseUntil, { task, attempt });
    return { task, attempt, speculative, leaseUntil };
  }

  // ---- results --------------------------------------------------------------------------

  /**
   * An attempt ended on `mac`. `final`: the task has its outcome (done, or failed in a way
   * not worth retrying); `retryable`: the attempt failed (timeout, signal, start error).
   */
  complete(taskId: number, attempt: number, mac: Mac, outcome: 'final' | 'retryable' | 'exit', durationMs?: number): Completion {
    const t = this.#out.get(taskId);
    if (!t) return { kind: 'unknown' };
    if (attempt < 1 || t.handedTo[attempt - 1] !== mac) return { kind: 'stale' };
    const copy = t.copies.find((c) => c.attempt === attempt);
    if (outcome === 'exit') {
      const retries = t.job.spec.retries ?? 0;
      if ((t.avoid?.length ?? 0) >= retries) {
        // No retry left: this attempt's failure is the task's result.
        this.#finish(t, 'another copy finished first', attempt);
        return retries > 0 ? { kind: 'exhausted', task: t } : { kind: 'accepted', task: t };
      }
      if (!t.avoid) t.avoid = [mac];
      else if (!t.avoid.includes(mac)) t.avoid.push(mac);
      if (!copy) return { kind: 'retrying', task: t };
      this.#dropCopy(t, copy);
      if (t.copies.length === 0) this.#toWaiting(t);
      return { kind: 'retrying', task: t };
    }
    if (outcome === 'final') {
      this.#finish(t, 'another copy finished first', attempt);
      if (durationMs !== undefined && Number.isFinite(durationMs) && durationMs >= 0) t.job.durations.add(durationMs);
      return { kind: 'accepted', task: t };
    }
    if (!copy) return { kind: 'retrying', task: t }; // a late failure of a copy already given up on
    this.#dropCopy(t, copy);
    if (t.copies.length > 0) return { kind: 'retrying', task: t };
    if (otherAttempts(t) >= t.job.spec.maxAttempts) {
      this.#finish(t, '', attempt);
      return { kind: 'exhausted', task: t };
    }
    this.#toWaiting(t);
    return { kind: 'retrying', task: t };
  }

  /** Progress of a running copy, 0..1. */
  progress(mac: Mac, taskId: number, attempt: number, fraction: number): boolean {
    const c = this.#out.get(taskId)?.copies.find((x) => x.attempt === attempt && x.mac === mac);
    if (!c || !Number.isFinite(fraction)) return false;
    c.progress = Math.min(1, Math.max(0, fraction));
    return true;
  }

  // ---- leases, lost nodes, re-adoption -------------------------------------------------

  /** Ends the copies whose lease has expired; returns how many tasks now wait to be handed out again. */
  expire(now: number = this.#now()): number {
    let requeued = 0;
    const heap = this.#leases;
    while (heap.size > 0 && heap.peekKey()! <= now) {
      const { task, attempt } = heap.pop()!;
      const c = task.copies.find((x) => x.attempt === attempt);
      if (!c || c.leaseUntil > now || this.#out.get(task.id) !== task) continue;
      this.#dropCopy(task, c);
      if (task.copies.length === 0 && this.#orphan(task, 'lease expired')) requeued++;
    }
    return requeued;
  }

  /** When the next lease expires (for the caller's timer), or undefined. */
  nextExpiry(): number | undefined {
    return this.#leases.peekKey();
  }

  /** The node is gone: its copies end now; returns how many tasks now wait to be handed out again. */
  nodeLost(mac: Mac): number {
    const set = this.#byNode.get(mac);
    if (!set) return 0;
    let requeued = 0;
    for (const t of [...set]) {
      for (const c of t.copies.filter((x) => x.mac === mac)) this.#dropCopy(t, c);
      if (t.copies.length === 0 && this.#orphan(t, 'node lost')) requeued++;
    }
    this.#byNode.delete(mac);
    return requeued;
  }

  /**
   * A node (re)connected running these attempts. Keeps those it holds a live lease for, and
   * revives those waiting to be handed out again whose latest attempt is the node's; the
   * rest must be cancelled on the node. Copies the node does not report are over.
   */
  readopt(mac: Mac, running: readonly RunningTaskRef[], now: number = this.#now()): { keep: RunningTaskRef[]; cancel: RunningTaskRef[] } {
    const keep: RunningTaskRef[] = [];
    const cancel: RunningTaskRef[] = [];
    const reported = new Set<OutTask>();
    for (const ref of running) {
      const t = this.#out.get(ref.taskId);
      const live = t?.copies.find((c) => c.attempt === ref.attempt && c.mac === mac);
      if (t && live && live.leaseUntil > now) {
        keep.push(ref);
        reported.add(t);
      } else if (t?.waiting && t.attempts === ref.attempt && t.handedTo[ref.attempt - 1] === mac) {
        t.waiting = false;
        this.#waiting--;
        const leaseUntil = now + t.job.spec.timeoutMs + this.#graceMs;
        t.copies.push({ attempt: ref.attempt, mac, startedAt: now, leaseUntil, progress: null, speculative: false });
        this.#copies++;
        this.#nodeSet(mac).add(t);
        this.#leases.push(leaseUntil, { task: t, attempt: ref.attempt });
        keep.push(ref);
        reported.add(t);
      } else cancel.push(ref);
    }
    const set = this.#byNode.get(mac);
    if (set)
      for (const t of [...set]) {
        if (reported.has(t)) continue;
        for (const c of t.copies.filter((x) => x.mac === mac)) this.#dropCopy(t, c);
        if (t.copies.length === 0) this.#orphan(t, 'node no longer runs it');
      }
    return { keep, cancel };
  }

  /**
   * Puts back an out task after a restart: its attempts so far and its copies as stored.
   * Copies whose lease has passed are over; a task with no live copy waits (or fails if it
   * has no attempt left). Call in hand-out order, oldest first.
   */
  restore(
    job: RingJob,
    taskId: number,
    attempts: number,
    copies: readonly Omit<Copy, 'progress'>[],
    now: number = this.#now(),
    avoid?: readonly Mac[],
  ): OutTask {
    let t = this.#out.get(taskId);
    if (t) return t;
    t = new OutTask(taskId, job, attempts);
    if (avoid?.length) t.avoid = [...avoid];
    this.#out.set(taskId, t);
    job.out.add(t);
    this.#insertBeforePointer(t);
    for (const c of copies) {
      t.handedTo[c.attempt - 1] = c.mac;
      if (c.speculative) t.speculated = true;
      if (c.leaseUntil <= now) continue;
      t.copies.push({ ...c, progress: null });
      this.#copies++;
      this.#nodeSet(c.mac).add(t);
      this.#leases.push(c.leaseUntil, { task: t, attempt: c.attempt });
    }
    if (t.copies.length === 0) this.#orphan(t, 'lease expired while the dispatcher was down');
    return t;
  }

  // ---- cancellation ---------------------------------------------------------------------

  /** Cancels one task: out (its copies are cancelled) or fresh in the backlog. */
  cancelTask(job: RingJob, taskId: number, reason: string): 'out' | 'queued' | 'absent' {
    const t = this.#out.get(taskId);
    if (t) {
      this.#finish(t, reason);
      return 'out';
    }
    if (job.removeId(taskId)) {
      this.#queued--;
      return 'queued';
    }
    return 'absent';
  }

  /** Cancels a whole job; returns the ids of its out tasks (now ended). */
  cancelJob(job: RingJob, reason: string): number[] {
    job.cancelled = true;
    this.#queued -= job.clearQueued();
    const ids: number[] = [];
    for (const t of [...job.out]) {
      ids.push(t.id);
      this.#finish(t, reason);
    }
    return ids;
  }

  // ---- views ----------------------------------------------------------------------------

  counts(): RingCounts {
    return { queued: this.#queued, waiting: this.#waiting, running: this.#out.size - this.#waiting, copies: this.#copies };
  }

  outTask(id: number): OutTask | undefined {
    return this.#out.get(id);
  }

  /** Out task ids from the pointer round the ring (oldest hand-out first). */
  order(): number[] {
    const ids: number[] = [];
    let t = this.#pointer;
    if (!t) return ids;
    do {
      ids.push(t.id);
      t = t.next;
    } while (t !== this.#pointer);
    return ids;
  }

  /** Tasks running on a node (attempts of its live copies). */
  runningOn(mac: Mac): RunningTaskRef[] {
    const refs: RunningTaskRef[] = [];
    for (const t of this.#byNode.get(mac) ?? [])
      for (const c of t.copies) if (c.mac === mac) refs.push({ taskId: t.id, attempt: c.attempt });
    return refs;
  }

  /** Whether some queued or waiting task fits this node (without taking it). */
  hasWorkFor(node: NodeCapacity): boolean {
    for (const cls of this.#fitting(node)) if (cls.top()) return true;
    return false;
  }

  // ---- internals ------------------------------------------------------------------------

  #fitting(node: NodeCapacity): readonly ReqClass[] {
    const a = node.alloc;
    const key = `${node.cores}|${node.memoryMiB}|${node.labels.join(',')}|${node.image ?? ''}|${a ? `${a.cores},${a.memMiB},${a.gpus}` : ''}`;
    let list = this.#fitCache.get(key);
    if (!list) {
      list = [...this.#classes.values()].filter((c) => c.fits(node));
      if (this.#fitCache.size > 10_000) this.#fitCache.clear();
      this.#fitCache.set(key, list);
    }
    return list;
  }

  #nodeSet(mac: Mac): Set<OutTask> {
    let s = this.#byNode.get(mac);
    if (!s) {
      s = new Set();
      this.#byNode.set(mac, s);
    }
    return s;
  }

  #dropCopy(t: OutTask, c: Copy): void {
    const i = t.copies.indexOf(c);
    if (i < 0) return;
    t.copies.splice(i, 1);
    this.#copies--;
    if (!t.copies.some((x) => x.mac === c.mac)) {
      const s = this.#byNode.get(c.mac);
      s?.delete(t);
      if (s && s.size === 0) this.#byNode.delete(c.mac);
    }
  }

  /** The task has no live copy left: it waits for a node again, or fails. Returns true if it waits. */
  #orphan(t: OutTask, reason: string): boolean {
    if (otherAttempts(t) >= t.job.spec.maxAttempts) {
      this.#finish(t, '');
      this.#events.exhausted(t, `${reason} (attempt ${t.attempts} of ${t.job.spec.maxAttempts})`);
      return false;
    }
    this.#toWaiting(t);
    return true;
  }

  #toWaiting(t: OutTask): void {
    t.waiting = true;
    this.#waiting++;
    t.job.cls.bucket(t.job.spec.priority).waiting.push(t);
  }

  /** Removes a task from the ring for good, cancelling its live copies except `except`. */
  #finish(t: OutTask, reason: string, except?: number): void {
    for (const c of [...t.copies]) {
      this.#dropCopy(t, c);
      if (c.attempt !== except) this.#events.cancel(c.mac, { taskId: t.id, attempt: c.attempt }, reason);
    }
    if (t.waiting) {
      t.waiting = false; // its queue entry is dropped lazily
      this.#waiting--;
    }
    this.#unlink(t);
    this.#out.delete(t.id);
    t.job.out.delete(t);
  }

  #insertBeforePointer(t: OutTask): void {
    const p = this.#pointer;
    if (p === null) {
      t.prev = t.next = t;
      this.#pointer = t;
      return;
    }
    const tail = p.prev;
    tail.next = t;
    t.prev = tail;
    t.next = p;
    p.prev = t;
  }

  #unlink(t: OutTask): void {
    if (t.next === t) {
      if (this.#pointer === t) this.#pointer = null;
    } else {
      t.prev.next = t.next;
      t.next.prev = t.prev;
      if (this.#pointer === t) this.#pointer = t.next; // the pointer moves on
    }
    t.prev = t.next = t;
  }
}
