/**
 * What an agent is sent for a hand-out: the job's template with the task's override and
 * params applied. Fresh tasks are handed out in id order, so task rows are read ahead a page
 * at a time in one range scan instead of one lookup per hand-out.
 */
import type { TaskAssignment } from '../protocol/messages.js';
import type { Handout } from './ring.js';
import type { DispatchStore } from './store.js';
import type { ActiveJob, ActiveJobs } from './active-jobs.js';
import { substituteTemplate } from './template.js';
import type { TaskOverride } from '../api/jobs/schemas.js';
import type { TaskTemplate } from './model.js';

/** Task rows read ahead at a hand-out (fresh tasks go out in id order). */
export const ROW_READ_AHEAD = 256;
/** Bound on rows read ahead and not handed out yet (cleared past it). */
export const ROW_CACHE_MAX = 50_000;

export class AssignmentBuilder {
  readonly #store: DispatchStore;
  readonly #jobs: ActiveJobs;
  readonly #rowCache = new Map<number, [string | null, string | null]>();

  constructor(deps: { store: DispatchStore; jobs: ActiveJobs }) {
    this.#store = deps.store;
    this.#jobs = deps.jobs;
  }

  /** Throws if the task cannot be built (job gone, row missing or unreadable). */
  build(h: Handout): TaskAssignment {
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
    const a: TaskAssignment = {
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
    const request = job.spec.requirements.request;
    if (request) a.resources = request;
    return a;
  }

  /** A task's (vars, spec); a miss reads ahead a page of the job's next rows. */
  #taskRow(id: number, job: ActiveJob): [string | null, string | null] | undefined {
    const hit = this.#rowCache.get(id);
    if (hit) {
      this.#rowCache.delete(id);
      return hit;
    }
    if (this.#rowCache.size > ROW_CACHE_MAX) this.#rowCache.clear();
    const last = Math.min(id + ROW_READ_AHEAD - 1, job.firstTaskId + job.taskCount - 1);
    let found: [string | null, string | null] | undefined;
    for (const [rid, vars, spec] of this.#store.s.taskVarsFrom.iterate(id, last) as IterableIterator<
      [number, string | null, string | null]
    >) {
      if (rid === id) found = [vars, spec];
      else this.#rowCache.set(rid, [vars, spec]);
    }
    return found;
  }
}

/** A job's template with one task's override applied (stdin and stdinB64 replace each other). */
export function applyOverride(t: TaskTemplate, o: TaskOverride): TaskTemplate {
  return {
    command: o.command ?? t.command,
    env: o.env ? { ...t.env, ...o.env } : t.env,
    cwd: o.cwd !== undefined ? o.cwd : t.cwd,
    stdin: o.stdin !== undefined ? o.stdin : o.stdinB64 !== undefined ? null : t.stdin,
    stdinB64: o.stdinB64 !== undefined ? o.stdinB64 : o.stdin !== undefined ? null : t.stdinB64,
  };
}
