/**
 * Submissions written to the store, one at a time (a job's task ids are consecutive), and
 * committed (fsync) before they resolve. Big sweeps from a params file are staged in chunks
 * under a `staging` job that becomes `active` in one last commit; a crash or a bad row
 * leaves nothing queued (staged rows are deleted, at once or at the next start).
 */
import { StringDecoder } from 'node:string_decoder';
import { randomBytes } from 'node:crypto';
import type { GroupCommit } from '../store/group-commit.js';
import type { DispatchStore, NewTaskRow } from './store.js';
import type { BlobStore } from './blobs.js';
import { badSubmission, paramsFileProblem, validateSubmission } from './submission.js';
import { createParamsParser, ParamsFileError, type ParamsFormat } from './params-file.js';
import { MAX_TASKS_PER_JOB, type JobView } from '../api/jobs/schemas.js';
import type { JobSpec } from './model.js';

/** Rows per staged chunk of a streamed sweep (one commit each). */
export const STAGE_ROWS = 50_000;

export interface SubmissionIngestDeps {
  store: DispatchStore;
  blobs: BlobStore;
  commits: GroupCommit;
  now: () => number;
  /** The next ids not in the store. */
  nextIds: { jobId: number; taskId: number };
  /** A write committed, or a DispatcherError saying what could not be written. */
  write: <T>(write: () => T, what: string) => Promise<T>;
  storeWarn: (err: unknown, what: string) => void;
  /** The job is durable: queue its tasks. */
  activate: (jobId: number, spec: JobSpec, first: number, count: number, inputsKey: string | null, submittedAt: number) => JobView;
}

export class SubmissionIngest {
  readonly #d: SubmissionIngestDeps;
  #nextJobId: number;
  #nextTaskId: number;
  #submitChain: Promise<unknown> = Promise.resolve();

  constructor(deps: SubmissionIngestDeps) {
    this.#d = deps;
    this.#nextJobId = deps.nextIds.jobId;
    this.#nextTaskId = deps.nextIds.taskId;
  }

  /** The first task id not given out yet. */
  get nextTaskId(): number {
    return this.#nextTaskId;
  }

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
      const submittedAt = this.#d.now();
      const inputsKey = v.spec.inputs ? randomBytes(18).toString('base64url') : null;
      try {
        await this.#d.write(() => {
          this.#d.store.insertJob({
            id: jobId,
            name: v.spec.name,
            spec: v.spec,
            state: 'active',
            first_task_id: first,
            task_count: rows.length,
            inputs_key: inputsKey,
            submitted_at: submittedAt,
          });
          this.#d.store.insertTasks(jobId, first, rows);
        }, 'submission');
      } catch (err) {
        // Rolled back: nothing of it is in the store, its ids are free again.
        this.#nextJobId = jobId;
        this.#nextTaskId = first;
        throw err;
      }
      return this.#d.activate(jobId, v.spec, first, rows.length, inputsKey, submittedAt);
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
      const store = this.#d.store;
      const jobId = this.#nextJobId++;
      const first = this.#nextTaskId;
      const submittedAt = this.#d.now();
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
          await this.#d.write(
            () =>
              store.insertJob({
                id: jobId,
                name: v.spec.name,
                spec: v.spec,
                state: 'staging',
                first_task_id: first,
                task_count: 0,
                inputs_key: inputsKey,
                submitted_at: submittedAt,
              }),
            'submission',
          );
        const rows = batch;
        const at = first + staged;
        batch = [];
        staged += rows.length;
        await this.#d.write(() => store.insertTasks(jobId, at, rows), 'submission');
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
          await this.#d.write(() => {
            store.insertJob({
              id: jobId,
              name: spec.name,
              spec,
              state: 'active',
              first_task_id: first,
              task_count: rows.length,
              inputs_key: inputsKey,
              submitted_at: submittedAt,
            });
            store.insertTasks(jobId, first, rows);
          }, 'submission');
        } else {
          if (batch.length) await stage();
          await this.#d.write(() => store.s.activateJob.run(count, JSON.stringify(spec), jobId), 'submission');
        }
        this.#nextTaskId = first + count;
        return this.#d.activate(jobId, spec, first, count, inputsKey, submittedAt);
      } catch (err) {
        if (staged === 0)
          this.#nextJobId = jobId; // nothing written: the id is free again
        else this.#nextTaskId = Math.max(this.#nextTaskId, first + staged);
        if (staged > 0) {
          const last = first + staged - 1;
          await this.#d.commits
            .run(() => {
              store.s.deleteTasksFrom.run(first, last);
              store.s.deleteJob.run(jobId);
            })
            .catch((e) => this.#d.storeWarn(e, 'staging cleanup'));
        }
        if (err instanceof ParamsFileError) throw paramsFileProblem(err);
        throw err;
      }
    });
  }

  #checkInputs(spec: JobSpec): void {
    if (spec.inputs && !this.#d.blobs.has(spec.inputs)) throw badSubmission(`inputs: no uploaded tar with id ${spec.inputs}`, undefined);
  }

  /** Runs submissions one at a time: a job's task ids are consecutive. */
  #serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#submitChain.then(work);
    this.#submitChain = run.catch(() => {});
    return run;
  }
}
