/**
 * The dispatch engine's tables and statements (SQLite, in the dispatcher's store). Pure SQL:
 * what to write and read; when to write (group commit, batching) is the engine's business.
 *
 * A job's tasks have consecutive ids (`first_task_id` .. `first_task_id + task_count - 1`:
 * submissions are serialised), so a job's tasks and results are primary-key ranges and the
 * 1,000,000-row tables need no secondary index. A task's state column says queued (0) or
 * finished (done 1, failed 2, cancelled 3); whether a queued task is running lives in
 * `task_leases`, one row per hand-out still of interest (lease_until 0: the attempt is over).
 * `results.task_id` is the primary key: one task, one result, whatever arrives twice.
 */
import type { Db, Migration } from '../store/database.js';
import type { JobState } from '../api/jobs/schemas.js';
import type { JobSpec } from './model.js';

export const dispatchMigrations: Migration[] = [
  {
    name: 'dispatch/001-create',
    sql: `CREATE TABLE jobs (
      id INTEGER PRIMARY KEY,
      name TEXT,
      spec TEXT NOT NULL,
      state TEXT NOT NULL,
      priority INTEGER NOT NULL,
      first_task_id INTEGER NOT NULL,
      task_count INTEGER NOT NULL,
      done INTEGER NOT NULL DEFAULT 0,
      failed INTEGER NOT NULL DEFAULT 0,
      cancelled INTEGER NOT NULL DEFAULT 0,
      inputs_key TEXT,
      submitted_at INTEGER NOT NULL,
      finished_at INTEGER
    );
    CREATE INDEX jobs_state ON jobs(state, id);
    CREATE INDEX jobs_first_task ON jobs(first_task_id);
    CREATE TABLE tasks (
      id INTEGER PRIMARY KEY,
      job_id INTEGER NOT NULL,
      state INTEGER NOT NULL DEFAULT 0,
      vars TEXT,
      spec TEXT
    );
    CREATE TABLE task_leases (
      task_id INTEGER NOT NULL,
      attempt INTEGER NOT NULL,
      mac TEXT NOT NULL,
      started_at INTEGER NOT NULL,
      lease_until INTEGER NOT NULL,
      speculative INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (task_id, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE results (
      task_id INTEGER PRIMARY KEY,
      attempt INTEGER NOT NULL,
      mac TEXT,
      status INTEGER NOT NULL,
      exit_code INTEGER,
      signal TEXT,
      timed_out INTEGER NOT NULL DEFAULT 0,
      error TEXT,
      started_at INTEGER,
      duration_ms REAL,
      max_rss_kib INTEGER,
      stdout TEXT NOT NULL DEFAULT '',
      stderr TEXT NOT NULL DEFAULT '',
      stdout_truncated INTEGER NOT NULL DEFAULT 0,
      stderr_truncated INTEGER NOT NULL DEFAULT 0,
      outputs BLOB,
      recorded_at INTEGER NOT NULL
    );
    CREATE TABLE attempt_failures (
      task_id INTEGER NOT NULL,
      attempt INTEGER NOT NULL,
      mac TEXT,
      reason TEXT NOT NULL,
      at INTEGER NOT NULL,
      PRIMARY KEY (task_id, attempt)
    ) WITHOUT ROWID;`,
  },
  {
    // Task resources: a task its cgroup killed for memory ends as outcome oom, with its peak.
    name: 'dispatch/002-results-oom',
    sql: `ALTER TABLE results ADD COLUMN oom INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE results ADD COLUMN mem_peak_kib INTEGER;`,
  },
  {
    // submit --retries: a retried non-zero exit is an attempt failure with its exit code; its node is avoided.
    name: 'dispatch/003-failure-exit-code',
    sql: 'ALTER TABLE attempt_failures ADD COLUMN exit_code INTEGER;',
  },
];

/** tasks.state values. */
export const TaskRowState = { queued: 0, done: 1, failed: 2, cancelled: 3 } as const;
export type TaskRowState = (typeof TaskRowState)[keyof typeof TaskRowState];

export interface JobRow {
  id: number;
  name: string | null;
  spec: string;
  state: JobState | 'staging';
  priority: number;
  first_task_id: number;
  task_count: number;
  done: number;
  failed: number;
  cancelled: number;
  inputs_key: string | null;
  submitted_at: number;
  finished_at: number | null;
}

export interface LeaseRow {
  task_id: number;
  attempt: number;
  mac: string;
  started_at: number;
  lease_until: number;
  speculative: number;
}

export interface ResultRow {
  task_id: number;
  attempt: number;
  mac: string | null;
  status: number;
  exit_code: number | null;
  signal: string | null;
  timed_out: number;
  error: string | null;
  started_at: number | null;
  duration_ms: number | null;
  max_rss_kib: number | null;
  stdout: string;
  stderr: string;
  stdout_truncated: number;
  stderr_truncated: number;
  outputs: Buffer | null;
  recorded_at: number;
  oom: number;
  mem_peak_kib: number | null;
}

/**
 * The results columns, in the order of the INSERT's parameters: the statement and its
 * arguments are both built from this list (positional binding is cheaper than named).
 */
const RESULT_COLUMNS = [
  'task_id',
  'attempt',
  'mac',
  'status',
  'exit_code',
  'signal',
  'timed_out',
  'error',
  'started_at',
  'duration_ms',
  'max_rss_kib',
  'stdout',
  'stderr',
  'stdout_truncated',
  'stderr_truncated',
  'outputs',
  'recorded_at',
  'oom',
  'mem_peak_kib',
] as const satisfies readonly (keyof ResultRow)[];
// Every column of ResultRow is in the list (a compile error names the one missing).
const allResultColumns: Record<Exclude<keyof ResultRow, (typeof RESULT_COLUMNS)[number]>, never> = {};
void allResultColumns;

/** Counts to add to a job's done / failed / cancelled columns. */
export interface JobDelta {
  done: number;
  failed: number;
  cancelled: number;
}

/** A job's counts once a delta is added; `finished`: the write also marked it done. */
export interface CommittedJob {
  id: number;
  done: number;
  failed: number;
  cancelled: number;
  finished: boolean;
}

/** Rows per multi-row INSERT of tasks (3 parameters each, well under SQLite's limit). */
const TASK_INSERT_ROWS = 500;
/** Rows per multi-row INSERT of task_leases (6 parameters each). */
const LEASE_INSERT_ROWS = 200;

export interface NewTaskRow {
  vars: string | null;
  spec: string | null;
}

export interface NewLease {
  taskId: number;
  attempt: number;
  mac: string;
  startedAt: number;
  leaseUntil: number;
  speculative: boolean;
}

export class DispatchStore {
  readonly db: Db;
  readonly #s;
  readonly #insertTasksMany;
  readonly #insertLeasesMany;

  constructor(db: Db) {
    this.db = db;
    this.#s = {
      maxJobId: db.prepare('SELECT max(id) FROM jobs').pluck(),
      maxTaskId: db.prepare('SELECT max(id) FROM tasks').pluck(),
      insertJob: db.prepare(`INSERT INTO jobs (id, name, spec, state, priority, first_task_id, task_count, inputs_key, submitted_at)
        VALUES (@id, @name, @spec, @state, @priority, @first_task_id, @task_count, @inputs_key, @submitted_at)`),
      activateJob: db.prepare(`UPDATE jobs SET state = 'active', task_count = ?, spec = ? WHERE id = ? AND state = 'staging'`),
      deleteJob: db.prepare('DELETE FROM jobs WHERE id = ?'),
      deleteTasksFrom: db.prepare('DELETE FROM tasks WHERE id >= ? AND id <= ?'),
      insertTask: db.prepare('INSERT INTO tasks (id, job_id, vars, spec) VALUES (?, ?, ?, ?)'),
      job: db.prepare('SELECT * FROM jobs WHERE id = ?'),
      jobsByState: db.prepare('SELECT * FROM jobs WHERE state = ? ORDER BY id'),
      stagingJobs: db.prepare(`SELECT * FROM jobs WHERE state = 'staging' ORDER BY id`),
      listJobs: db.prepare(`SELECT * FROM jobs WHERE state != 'staging' AND id < ? ORDER BY id DESC LIMIT ?`),
      listJobsByState: db.prepare(`SELECT * FROM jobs WHERE state = ? AND id < ? ORDER BY id DESC LIMIT ?`),
      totals: db.prepare(`SELECT coalesce(sum(task_count), 0) AS total, coalesce(sum(done), 0) AS done, coalesce(sum(failed), 0) AS failed,
        coalesce(sum(CASE WHEN state = 'cancelled' THEN task_count - done - failed ELSE cancelled END), 0) AS cancelled FROM jobs WHERE state != 'staging'`),
      taskVars: db.prepare('SELECT vars, spec FROM tasks WHERE id = ?').raw(),
      taskVarsFrom: db.prepare('SELECT id, vars, spec FROM tasks WHERE id >= ? AND id <= ? ORDER BY id').raw(),
      task: db.prepare('SELECT id, job_id, state, vars, spec FROM tasks WHERE id = ?'),
      queuedIds: db.prepare('SELECT id FROM tasks WHERE id >= ? AND id <= ? AND state = 0 ORDER BY id LIMIT ?').pluck(),
      tasksPage:
        db.prepare(`SELECT t.id, t.job_id, t.state, t.vars, r.exit_code, r.duration_ms, r.mac AS ran_on, r.attempt AS result_attempt FROM tasks t
        LEFT JOIN results r ON r.task_id = t.id
        WHERE t.id > ? AND t.id <= ? ORDER BY t.id LIMIT ?`),
      tasksPageByState:
        db.prepare(`SELECT t.id, t.job_id, t.state, t.vars, r.exit_code, r.duration_ms, r.mac AS ran_on, r.attempt AS result_attempt FROM tasks t
        LEFT JOIN results r ON r.task_id = t.id
        WHERE t.id > ? AND t.id <= ? AND t.state = ? ORDER BY t.id LIMIT ?`),
      leasesAll: db.prepare('SELECT * FROM task_leases ORDER BY started_at, task_id, attempt'),
      leasesOfTask: db.prepare('SELECT * FROM task_leases WHERE task_id = ? ORDER BY attempt'),
      endLease: db.prepare('UPDATE task_leases SET lease_until = 0 WHERE task_id = ? AND attempt = ?'),
      setLease: db.prepare('UPDATE task_leases SET lease_until = ?, started_at = ? WHERE task_id = ? AND attempt = ?'),
      endLeasesOfMac: db.prepare('UPDATE task_leases SET lease_until = 0 WHERE mac = ? AND lease_until > 0'),
      deleteLeases: db.prepare('DELETE FROM task_leases WHERE task_id = ?'),
      deleteLeasesRange: db.prepare('DELETE FROM task_leases WHERE task_id >= ? AND task_id <= ?'),
      insertResult: db.prepare(`INSERT INTO results (${RESULT_COLUMNS.join(', ')})
        VALUES (${RESULT_COLUMNS.map(() => '?').join(', ')}) ON CONFLICT(task_id) DO NOTHING`),
      hasResult: db.prepare('SELECT 1 FROM results WHERE task_id = ?').pluck(),
      result: db.prepare('SELECT * FROM results WHERE task_id = ?'),
      setTaskState: db.prepare('UPDATE tasks SET state = ? WHERE id = ? AND state = 0'),
      addCounts: db.prepare(
        'UPDATE jobs SET done = done + ?, failed = failed + ?, cancelled = cancelled + ? WHERE id = ? RETURNING done, failed, cancelled, task_count, state',
      ),
      finishJob: db.prepare(`UPDATE jobs SET state = ?, finished_at = ? WHERE id = ? AND state = 'active'`),
      cancelJob: db.prepare(
        `UPDATE jobs SET state = 'cancelled', finished_at = ?, cancelled = task_count - done - failed WHERE id = ? AND state = 'active'`,
      ),
      insertFailure: db.prepare(
        'INSERT OR IGNORE INTO attempt_failures (task_id, attempt, mac, reason, at, exit_code) VALUES (?, ?, ?, ?, ?, ?)',
      ),
      failures: db.prepare(
        'SELECT attempt, mac, reason, at, exit_code AS exitCode FROM attempt_failures WHERE task_id = ? ORDER BY attempt',
      ),
      /** Nodes a task exited non-zero on (its retries avoid them). */
      failedOn: db
        .prepare('SELECT mac FROM attempt_failures WHERE task_id = ? AND exit_code IS NOT NULL AND mac IS NOT NULL ORDER BY attempt')
        .pluck(),
      resultsPage: db.prepare(`SELECT t.id, t.state, t.vars, r.* FROM tasks t LEFT JOIN results r ON r.task_id = t.id
        WHERE t.id > ? AND t.id <= ? ORDER BY t.id LIMIT ?`),
      outputsPage: db.prepare(
        'SELECT task_id, outputs FROM results WHERE task_id > ? AND task_id <= ? AND outputs IS NOT NULL ORDER BY task_id LIMIT ?',
      ),
    };
    const values = (n: number, cols: number) => Array.from({ length: n }, () => `(${Array(cols).fill('?').join(',')})`).join(',');
    this.#insertTasksMany = db.prepare(`INSERT INTO tasks (id, job_id, vars, spec) VALUES ${values(TASK_INSERT_ROWS, 4)}`);
    this.#insertLeasesMany = db.prepare(
      `INSERT OR REPLACE INTO task_leases (task_id, attempt, mac, started_at, lease_until, speculative) VALUES ${values(LEASE_INSERT_ROWS, 6)}`,
    );
  }

  get s() {
    return this.#s;
  }

  nextIds(): { jobId: number; taskId: number } {
    return {
      jobId: ((this.#s.maxJobId.get() as number | null) ?? 0) + 1,
      taskId: ((this.#s.maxTaskId.get() as number | null) ?? 0) + 1,
    };
  }

  insertJob(row: {
    id: number;
    name: string | null;
    spec: JobSpec;
    state: 'staging' | 'active';
    first_task_id: number;
    task_count: number;
    inputs_key: string | null;
    submitted_at: number;
  }): void {
    this.#s.insertJob.run({ ...row, spec: JSON.stringify(row.spec), priority: row.spec.priority });
  }

  /** Inserts tasks with consecutive ids from `firstId`. */
  insertTasks(jobId: number, firstId: number, rows: readonly NewTaskRow[]): void {
    let i = 0;
    const args: unknown[] = new Array(TASK_INSERT_ROWS * 4);
    for (; i + TASK_INSERT_ROWS <= rows.length; i += TASK_INSERT_ROWS) {
      for (let j = 0; j < TASK_INSERT_ROWS; j++) {
        const r = rows[i + j]!;
        args[j * 4] = firstId + i + j;
        args[j * 4 + 1] = jobId;
        args[j * 4 + 2] = r.vars;
        args[j * 4 + 3] = r.spec;
      }
      this.#insertTasksMany.run(args);
    }
    for (; i < rows.length; i++) this.#s.insertTask.run(firstId + i, jobId, rows[i]!.vars, rows[i]!.spec);
  }

  insertLeases(leases: readonly NewLease[]): void {
    let i = 0;
    const args: unknown[] = new Array(LEASE_INSERT_ROWS * 6);
    const put = (l: NewLease, j: number) => {
      args[j * 6] = l.taskId;
      args[j * 6 + 1] = l.attempt;
      args[j * 6 + 2] = l.mac;
      args[j * 6 + 3] = l.startedAt;
      args[j * 6 + 4] = l.leaseUntil;
      args[j * 6 + 5] = l.speculative ? 1 : 0;
    };
    for (; i + LEASE_INSERT_ROWS <= leases.length; i += LEASE_INSERT_ROWS) {
      for (let j = 0; j < LEASE_INSERT_ROWS; j++) put(leases[i + j]!, j);
      this.#insertLeasesMany.run(args);
    }
    if (i < leases.length) {
      const rest = leases.length - i;
      const stmt = this.#leaseStmt(rest);
      const a: unknown[] = [];
      for (let j = 0; j < rest; j++) {
        const l = leases[i + j]!;
        a.push(l.taskId, l.attempt, l.mac, l.startedAt, l.leaseUntil, l.speculative ? 1 : 0);
      }
      stmt.run(a);
    }
  }

  readonly #leaseStmts = new Map<number, ReturnType<Db['prepare']>>();
  #leaseStmt(n: number): ReturnType<Db['prepare']> {
    let s = this.#leaseStmts.get(n);
    if (!s) {
      s = this.db.prepare(
        `INSERT OR REPLACE INTO task_leases (task_id, attempt, mac, started_at, lease_until, speculative) VALUES ${Array.from({ length: n }, () => '(?,?,?,?,?,?)').join(',')}`,
      );
      this.#leaseStmts.set(n, s);
    }
    return s;
  }

  /** Records a task's result; false if it had one already (the first one stays). */
  insertResult(row: ResultRow): boolean {
    const args: unknown[] = new Array(RESULT_COLUMNS.length);
    for (let i = 0; i < RESULT_COLUMNS.length; i++) args[i] = row[RESULT_COLUMNS[i]!];
    return this.#s.insertResult.run(args).changes > 0;
  }

  /** Adds counts to jobs (inside a write) and marks done the jobs that are complete. */
  addJobCounts(deltas: ReadonlyMap<number, JobDelta>, now: number): CommittedJob[] {
    const out: CommittedJob[] = [];
    for (const [id, d] of deltas) {
      const r = this.#s.addCounts.get(d.done, d.failed, d.cancelled, id) as
        | { done: number; failed: number; cancelled: number; task_count: number; state: string }
        | undefined;
      if (!r) continue;
      const finished = r.state === 'active' && r.done + r.failed + r.cancelled >= r.task_count;
      if (finished) this.#s.finishJob.run('done', now, id);
      out.push({ id, done: r.done, failed: r.failed, cancelled: r.cancelled, finished });
    }
    return out;
  }

  job(id: number): JobRow | undefined {
    return this.#s.job.get(id) as JobRow | undefined;
  }
}
