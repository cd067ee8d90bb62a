/**
 * Dispatch engine micro-benchmark, in process (no sockets): the engine with its real store
 * (SQLite WAL, synchronous FULL, group commit) in a temp dir, driven by simulated agents that
 * answer at once. Every result is durable before its agent sees the acknowledgement.
 *
 *   node dist/bench/dispatch-engine.mjs [throughput|depth|submit|recovery|all]
 *
 * Prints `RESULT name=... key=value ...` lines (see bench/README.md).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { openStore } from '../dispatcher/src/store/database.js';
import { GroupCommit } from '../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../dispatcher/src/store/migrations.js';
import { EventLog } from '../dispatcher/src/events/event-log.js';
import { silentLogger } from '../dispatcher/src/log.js';
import { TaskDispatcher } from '../dispatcher/src/dispatch/engine.js';
import type { NodeCapacity, TaskAssignment, TaskResult } from '../dispatcher/src/dispatch/contract.js';
import type { Mac } from '../dispatcher/src/nodes/mac.js';

function openEngine(dir: string) {
  const db = openStore({ dataDir: dir, migrations: allMigrations });
  const commits = new GroupCommit(db);
  const events = new EventLog(db, commits);
  const engine = new TaskDispatcher({ config: { dataDir: dir, leaseGraceSeconds: 10, speculativeK: 2 }, log: silentLogger(), db, commits, events });
  return { db, commits, engine, close: () => (engine.stop(), commits.flush(), db.close()) };
}

function agentNode(i: number): NodeCapacity {
  const hex = i.toString(16).padStart(4, '0');
  return { mac: `52:54:00:00:${hex.slice(0, 2)}:${hex.slice(2)}` as Mac, name: `sim${i}`, labels: [], cores: 4, memoryMiB: 8192 };
}

function result(a: TaskAssignment): TaskResult {
  return { taskId: a.taskId, attempt: a.attempt, exitCode: 0, signal: null, timedOut: false, error: null, startedAt: Date.now(), durationMs: 0, maxRssKiB: 1000, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false, outputsTarGzB64: null };
}

function* csvRows(n: number, offset = 0): Generator<string> {
  yield 'i\n';
  const CH = 10_000;
  for (let i = 0; i < n; i += CH) {
    let s = '';
    for (let j = i; j < Math.min(n, i + CH); j++) s += `${j + offset}\n`;
    yield s;
  }
}

async function submitSweep(engine: TaskDispatcher, n: number, priority = 0): Promise<number> {
  const job = await engine.submitJobStream({ command: ['true', '{i}'], priority }, 'csv', Readable.from(csvRows(n)));
  return job.id;
}

function percentile(sorted: Float64Array | number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * `agents` simulated agents, each with `slots` slots: take, answer at once, wait for the
 * acknowledgement (durable), take again. Runs until `total` results are acknowledged.
 * Latency: from hand-out to durable result, per task.
 */
async function drive(engine: TaskDispatcher, agents: number, slots: number, total: number): Promise<{ n: number; perS: number; p50: number; p99: number; lat: Float64Array }> {
  const lat = new Float64Array(total + agents * slots);
  let n = 0;
  let taken = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: agents }, async (_, i) => {
      const node = agentNode(i);
      while (taken < total) {
        const tasks = engine.takeTasks(node, Math.min(slots, total - taken));
        if (tasks.length === 0) {
          const s = engine.stats();
          if (s.queued + s.running === 0) break;
          await new Promise((r) => setImmediate(r));
          continue;
        }
        taken += tasks.length;
        const t = performance.now();
        await engine.submitResults(node, tasks.map(result));
        const dt = performance.now() - t;
        for (let k = 0; k < tasks.length; k++) lat[n++] = dt;
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  const sorted = lat.slice(0, n).sort();
  return { n, perS: n / secs, p50: percentile(sorted, 50), p99: percentile(sorted, 99), lat: sorted };
}

async function throughput(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'lc-bench-dispatch-'));
  const e = openEngine(dir);
  const total = Number(process.env.BENCH_TASKS ?? 200_000);
  await submitSweep(e.engine, total);
  await drive(e.engine, 100, 1, 20_000); // warm-up
  const r = await drive(e.engine, 100, Number(process.env.BENCH_SLOTS ?? 1), total - 20_000);
  console.log(`RESULT name=dispatch_engine_throughput agents=100 tasks=${r.n} tasks_per_s=${Math.round(r.perS)} p50_ms=${r.p50.toFixed(3)} p99_ms=${r.p99.toFixed(3)} commits=${e.commits.stats.commits} avg_commit_ms=${(e.commits.stats.totalCommitMs / e.commits.stats.commits).toFixed(3)}`);
  e.close();
  rmSync(dir, { recursive: true, force: true });
}

const mode = process.argv[2] ?? 'all';
const modes: Record<string, () => Promise<void>> = { throughput };
for (const [name, fn] of Object.entries(modes)) if (mode === 'all' || mode === name) await fn();
