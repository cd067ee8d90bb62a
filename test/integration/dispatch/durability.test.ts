/**
 * The engine's durability promises against kill -9, with real processes and a real data dir:
 * an acknowledged submission is never lost, an acknowledged result is never lost, no task is
 * recorded twice, tasks whose lease is still held are re-adopted and deliver without running
 * again, and everything ends with exactly one result per task within its attempts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import Database from 'better-sqlite3';
import { startPostgres, type Postgres } from '../../lab/postgres.js';
import { readSnapshot } from '../../../dispatcher/src/store/postgres/shared-store.js';
import { parseStoreUrl } from '../../../dispatcher/src/store/postgres/connection.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';

let work: string;
let workerJs: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'lc-dispatch-kill-'));
  // Inside the repo, so that the bundle's imports find node_modules.
  workerJs = join(import.meta.dirname, '../../../dist/test', `dispatch-worker-${process.pid}.mjs`);
  await build({
    entryPoints: [join(import.meta.dirname, 'worker.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    packages: 'external',
    outfile: workerJs,
    logLevel: 'warning',
  });
});

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(workerJs, { force: true });
});

interface Run {
  lines: string[];
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Runs the worker; kills it with SIGKILL once `killAfter` says so (or lets it finish). */
function runWorker(
  args: string[],
  opts: { stdin?: string; killAfter?: (lines: string[]) => boolean; timeoutMs?: number; store?: string },
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [workerJs, ...args], {
      cwd: join(import.meta.dirname, '../../..'),
      env: { ...process.env, ...(opts.store ? { LC_TEST_STORE: opts.store } : {}) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    let rest = '';
    let stderr = '';
    let killed = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`worker ${args.join(' ')} did not finish; stderr: ${stderr.slice(-2000)}`));
    }, opts.timeoutMs ?? 60_000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      const parts = (rest + d).split('\n');
      rest = parts.pop()!;
      lines.push(...parts);
      if (!killed && opts.killAfter?.(lines)) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      // A line cut by the kill is not a promise the worker made.
      resolve({ lines, code, signal, stderr });
    });
    child.stdin.end(opts.stdin ?? '');
  });
}

interface Ledger {
  submitted: Map<number, { first: number; count: number; maxAttempts: number }>;
  /** Final results acknowledged as recorded: task -> attempt. */
  recorded: Map<number, number>;
  /** Retryable failures acknowledged as recorded. */
  failures: Set<string>;
  /** What each agent holds (handed out, not acknowledged), per MAC. */
  held: Map<string, Map<number, number>>;
  kept: { task: number; attempt: number }[];
}

function newLedger(): Ledger {
  return { submitted: new Map(), recorded: new Map(), failures: new Set(), held: new Map(), kept: [] };
}

function absorb(l: Ledger, lines: string[]): void {
  for (const line of lines) {
    const [kind, ...f] = line.split(' ');
    if (kind === 'SUBMITTED') l.submitted.set(Number(f[0]), { first: Number(f[1]), count: Number(f[2]), maxAttempts: Number(f[3]) });
    else if (kind === 'TAKE' || kind === 'KEEP') {
      const [mac, task, attempt] = [f[0]!, Number(f[1]), Number(f[2])];
      if (!l.held.has(mac)) l.held.set(mac, new Map());
      l.held.get(mac)!.set(task, attempt);
      if (kind === 'KEEP') l.kept.push({ task, attempt });
    } else if (kind === 'ACK') {
      const [mac, task, attempt, what, outcome] = [f[0]!, Number(f[1]), Number(f[2]), f[3], f[4]];
      l.held.get(mac)?.delete(task);
      if (outcome === 'recorded' && what === 'final' && !l.recorded.has(task)) l.recorded.set(task, attempt);
      if (outcome === 'recorded' && what === 'retry') l.failures.add(`${task}:${attempt}`);
    }
  }
}

function heldJson(l: Ledger, except: Set<string> = new Set()): string {
  const out: Record<string, { taskId: number; attempt: number }[]> = {};
  for (const [mac, m] of l.held) if (!except.has(mac)) out[mac] = [...m].map(([taskId, attempt]) => ({ taskId, attempt }));
  return JSON.stringify(out);
}

/** What the store holds must honour every acknowledgement so far, and be consistent with itself. */
function checkStore(db: Database.Database, l: Ledger): { tasks: number; results: number } {
  {
    for (const [id, j] of l.submitted) {
      const row = db.prepare('SELECT state, first_task_id, task_count FROM jobs WHERE id = ?').get(id) as
        | { state: string; first_task_id: number; task_count: number }
        | undefined;
      expect(row, `acknowledged job ${id}`).toBeDefined();
      expect(row!.state).not.toBe('staging');
      expect([row!.first_task_id, row!.task_count]).toEqual([j.first, j.count]);
      expect(
        db
          .prepare('SELECT count(*) FROM tasks WHERE id >= ? AND id < ?')
          .pluck()
          .get(j.first, j.first + j.count),
      ).toBe(j.count);
    }
    const result = db.prepare('SELECT attempt FROM results WHERE task_id = ?').pluck();
    for (const [task] of l.recorded) expect(result.get(task), `acknowledged result of task ${task}`).toBeDefined();
    const failure = db.prepare('SELECT 1 FROM attempt_failures WHERE task_id = ? AND attempt = ?').pluck();
    for (const k of l.failures) {
      const [t, a] = k.split(':').map(Number);
      // A retryable failure is kept unless the task got its result since (then the result says it all).
      if (!result.get(t)) expect(failure.get(t, a), `acknowledged failure ${k}`).toBe(1);
    }
    // Same transaction: a task's state, its result and its job's counters agree.
    const mismatched = db
      .prepare(`SELECT count(*) FROM tasks t LEFT JOIN results r ON r.task_id = t.id WHERE (r.task_id IS NULL) != (t.state = 0)`)
      .pluck()
      .get();
    expect(mismatched).toBe(0);
    const counters = db
      .prepare(`SELECT j.id, j.done, j.failed,
        (SELECT count(*) FROM results r WHERE r.task_id >= j.first_task_id AND r.task_id < j.first_task_id + j.task_count AND r.status = 1) AS rd,
        (SELECT count(*) FROM results r WHERE r.task_id >= j.first_task_id AND r.task_id < j.first_task_id + j.task_count AND r.status = 2) AS rf
      FROM jobs j WHERE j.state != 'staging'`)
      .all() as { id: number; done: number; failed: number; rd: number; rf: number }[];
    for (const c of counters) expect([c.id, c.done, c.failed]).toEqual([c.id, c.rd, c.rf]);
    return {
      tasks: db.prepare(`SELECT count(*) FROM tasks t JOIN jobs j ON t.job_id = j.id WHERE j.state != 'staging'`).pluck().get() as number,
      results: db.prepare('SELECT count(*) FROM results').pluck().get() as number,
    };
  }
}

/** A kill condition: `acks` ACK lines seen, and a task taken (per the lines) at least `heldMs` ago is still held. */
function killWhen(acks: number, heldMs: number): (lines: string[]) => boolean {
  const takenAt = new Map<string, number>();
  let parsed = 0;
  let acked = 0;
  return (lines) => {
    const now = Date.now();
    for (; parsed < lines.length; parsed++) {
      const [kind, mac, task] = lines[parsed]!.split(' ');
      if (kind === 'TAKE') takenAt.set(`${mac} ${task}`, now);
      else if (kind === 'ACK') {
        acked++;
        takenAt.delete(`${mac} ${task}`);
      }
    }
    return acked >= acks && [...takenAt.values()].some((t) => now - t >= heldMs);
  };
}

interface Backend {
  name: string;
  /** The worker's --store (undefined: SQLite in the data dir). */
  store(): string | undefined;
  /** The store as a new dispatcher would read it. */
  open(dir: string): Promise<Database.Database>;
}

let pg: Postgres | undefined;
const backends: Backend[] = [
  { name: 'SQLite', store: () => undefined, open: async (dir) => new Database(join(dir, 'dispatcher.db'), { readonly: true }) },
  {
    name: 'PostgreSQL',
    store: () => pg!.url,
    open: () => readSnapshot(parseStoreUrl(pg!.url), allMigrations),
  },
];

afterAll(async () => {
  await pg?.destroy();
});

describe.each(backends)('dispatch engine durability (kill -9), $name store', (backend) => {
  beforeAll(async () => {
    if (backend.name === 'PostgreSQL') pg ??= await startPostgres();
  });

  async function check(dir: string, l: Ledger): Promise<{ tasks: number; results: number }> {
    const db = await backend.open(dir);
    try {
      return checkStore(db, l);
    } finally {
      db.close();
    }
  }

  it('loses no acknowledged submission or result, records each task once, and finishes every task after two crashes', async () => {
    const dir = join(work, `data-${backend.name}`);
    const store = backend.store();
    const l = newLedger();

    // 1. Submissions and results flow; the dispatcher dies mid-way (mid-submission, likely).
    // The kill waits until some task has been held for 50 ms (by the worker's slow agent):
    // its hand-out is in the store, so the agents' return below has something to re-adopt.
    const acks = 1500 + Math.floor(Math.random() * 1500);
    const r1 = await runWorker([dir, 'run'], { killAfter: killWhen(acks, 50), store });
    expect(r1.signal, r1.stderr).toBe('SIGKILL');
    absorb(l, r1.lines);
    expect(l.submitted.size).toBeGreaterThan(0);
    expect(l.recorded.size).toBeGreaterThan(500);
    await check(dir, l);

    // 2. The agents come back (one never does) with what they held; the dispatcher dies again.
    const r2 = await runWorker([dir, 'resume', 'm0'], {
      stdin: heldJson(l),
      killAfter: (lines) => lines.filter((x) => x.startsWith('ACK')).length >= 800,
      store,
    });
    absorb(l, r2.lines);
    expect(l.kept.length).toBeGreaterThan(0);
    await check(dir, l);

    // 3. Everyone comes back; every task gets its result.
    const r3 = await runWorker([dir, 'resume'], { stdin: heldJson(l), timeoutMs: 90_000, store });
    expect(r3.code, r3.stderr).toBe(0);
    absorb(l, r3.lines);
    expect(r3.lines.at(-1)).toBe('DONE');
    const { tasks, results } = await check(dir, l);
    expect(results).toBe(tasks);

    const db = await backend.open(dir);
    try {
      // Within attempts, for every job.
      const over = db
        .prepare(
          `SELECT count(*) FROM results r JOIN tasks t ON t.id = r.task_id JOIN jobs j ON j.id = t.job_id WHERE r.attempt > json_extract(j.spec, '$.maxAttempts')`,
        )
        .pluck()
        .get();
      expect(over).toBe(0);
      expect(db.prepare(`SELECT count(*) FROM jobs WHERE state != 'done'`).pluck().get()).toBe(0);
      // Re-adopted tasks delivered their own attempt: nothing was run again.
      const attemptOf = db.prepare('SELECT attempt FROM results WHERE task_id = ?').pluck();
      const keptAndDelivered = l.kept.filter((k) => l.recorded.get(k.task) === k.attempt);
      expect(keptAndDelivered.length).toBeGreaterThan(0);
      for (const k of keptAndDelivered) expect(attemptOf.get(k.task)).toBe(k.attempt);
      // Every acknowledged result is the one kept (first wins, never overwritten).
      for (const [task, attempt] of l.recorded) expect(attemptOf.get(task), `task ${task}`).toBe(attempt);
    } finally {
      db.close();
    }
  });
});
