/**
 * Dispatch engine micro-benchmark, in process (no sockets): the engine with its real store
 * (SQLite WAL, synchronous FULL, group commit) in a temp dir, driven by simulated agents that
 * answer at once. Every result is durable before its agent sees the acknowledgement.
 *
 *   node dist/bench/dispatch-engine.mjs [throughput|latency|depth|submit|recovery|e2e|all]
 *
 * Prints `RESULT name=... key=value ...` lines, one per figure:
 *   dispatch_engine_throughput   100 agents × 1 slot (and × 4 slots): tasks/s; p50/p99 of
 *                                hand-out → durable result
 *   dispatch_engine_latency      submit → durable result of one-task jobs on idle agents
 *   dispatch_engine_depth        hand-out rate and p99 with 10,000 vs 1,000,000 tasks queued
 *                                (kept at that depth while measuring)
 *   dispatch_engine_submit_1m    a 1,000,000-row CSV params file streamed into the engine
 *   dispatch_engine_recovery     kill -9 with 1,000,000 queued: a new process, from spawn to
 *                                its first task handed out; and to every queued task handed out
 *   dispatch_submit_1m_e2e       the same file with dispatcherctl to the real dispatcher process
 *   dispatch_recovery_e2e        the real dispatcher killed with -9 with 1,000,000 queued,
 *                                restarted: spawn → listening, and → first task acknowledged to
 *                                a simulated agent (bench/sim-agents.ts, the real protocol)
 *
 * The library side of the side-by-side bench: `runThroughput` etc. are exported for it.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { openStore } from '../dispatcher/src/store/database.js';
import { GroupCommit } from '../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../dispatcher/src/store/migrations.js';
import { EventLog } from '../dispatcher/src/events/event-log.js';
import { silentLogger } from '../dispatcher/src/log.js';
import { TaskDispatcher } from '../dispatcher/src/dispatch/engine.js';
import type { NodeCapacity } from '../dispatcher/src/dispatch/contract.js';
import type { TaskAssignment, TaskResult } from '../dispatcher/src/protocol/messages.js';
import type { Mac } from '../dispatcher/src/nodes/mac.js';

export interface BenchEngine {
  dir: string;
  engine: TaskDispatcher;
  commits: GroupCommit;
  close(): void;
}

export function openBenchEngine(dir = mkdtempSync(join(tmpdir(), 'lc-bench-dispatch-'))): BenchEngine {
  const db = openStore({ dataDir: dir, migrations: allMigrations });
  const commits = new GroupCommit(db);
  const events = new EventLog(db, commits);
  const engine = new TaskDispatcher({
    config: { dataDir: dir, leaseGraceSeconds: 10, speculativeK: 2 },
    log: silentLogger(),
    db,
    commits,
    events,
  });
  return {
    dir,
    engine,
    commits,
    close: () => {
      engine.stop();
      commits.close();
      db.close();
    },
  };
}

export function agentNode(i: number): NodeCapacity {
  const hex = i.toString(16).padStart(4, '0');
  return { mac: `52:54:00:00:${hex.slice(0, 2)}:${hex.slice(2)}` as Mac, name: `sim${i}`, labels: [], cores: 4, memoryMiB: 8192 };
}

function result(a: TaskAssignment): TaskResult {
  return {
    taskId: a.taskId,
    attempt: a.attempt,
    exitCode: 0,
    signal: null,
    timedOut: false,
    error: null,
    startedAt: Date.now(),
    durationMs: 0,
    maxRssKiB: 1000,
    stdout: '',
    stderr: '',
    stdoutTruncated: false,
    stderrTruncated: false,
    outputsTarGzB64: null,
  };
}

function* csvRows(n: number): Generator<string> {
  yield 'i\n';
  const CH = 10_000;
  for (let i = 0; i < n; i += CH) {
    let s = '';
    for (let j = i; j < Math.min(n, i + CH); j++) s += `${j}\n`;
    yield s;
  }
}

export async function submitSweep(engine: TaskDispatcher, n: number, priority = 0): Promise<number> {
  const job = await engine.submitJobStream({ command: ['true', '{i}'], priority }, 'csv', Readable.from(csvRows(n)));
  return job.id;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export interface DriveResult {
  n: number;
  perS: number;
  p50: number;
  p99: number;
  takeP99Us: number;
}

/**
 * `agents` simulated agents with `slots` slots each: take, answer at once, wait for the
 * acknowledgement (durable), take again; an agent with nothing to do waits for the engine's
 * tasks-available signal, as the hub's agents do. Stops after `total` results.
 * `onProgress` runs after each acknowledged batch (the depth bench tops the queue up there).
 */
export async function drive(
  engine: TaskDispatcher,
  agents: number,
  slots: number,
  total: number,
  onProgress?: (done: number) => void,
): Promise<DriveResult> {
  const lat = new Float64Array(total + agents * slots);
  const take = new Float64Array(total + agents * slots);
  let nTake = 0;
  let n = 0;
  let taken = 0;
  const waiters = new Set<() => void>();
  const off = engine.onTasksAvailable(() => {
    for (const w of [...waiters]) w();
    waiters.clear();
  });
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: agents }, async (_, i) => {
      const node = agentNode(i);
      while (taken < total) {
        const ts = performance.now();
        const tasks = engine.takeTasks(node, Math.min(slots, total - taken));
        if (tasks.length === 0) {
          const s = engine.stats();
          if (s.queued + s.running === 0 && !s.recovering) break;
          await new Promise<void>((r) => {
            waiters.add(r);
            setTimeout(r, 50).unref();
          });
          continue;
        }
        const t = performance.now();
        take[nTake++] = (t - ts) * 1000;
        taken += tasks.length;
        await engine.submitResults(node, tasks.map(result));
        const dt = performance.now() - t;
        for (let k = 0; k < tasks.length; k++) lat[n++] = dt;
        onProgress?.(n);
      }
    }),
  );
  off();
  const secs = (performance.now() - t0) / 1000;
  const sorted = lat.slice(0, n).sort();
  return {
    n,
    perS: n / secs,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    takeP99Us: percentile(take.slice(0, nTake).sort(), 99),
  };
}

export async function runThroughput(slots = 1, tasks = 200_000): Promise<DriveResult & { avgCommitMs: number; perCommit: number }> {
  const e = openBenchEngine();
  try {
    await submitSweep(e.engine, tasks + 20_000);
    await drive(e.engine, 100, slots, 20_000); // warm-up: JIT, page cache
    const c0 = { ...e.commits.stats };
    const r = await drive(e.engine, 100, slots, tasks);
    const commits = e.commits.stats.commits - c0.commits;
    return {
      ...r,
      avgCommitMs: (e.commits.stats.totalCommitMs - c0.totalCommitMs) / commits,
      perCommit: (e.commits.stats.writes - c0.writes) / commits,
    };
  } finally {
    e.close();
    rmSync(e.dir, { recursive: true, force: true });
  }
}

/** One-task jobs submitted one after the other onto 100 idle agents: submit → durable result. */
export async function runLatency(jobs = 2000): Promise<{ p50: number; p99: number }> {
  const e = openBenchEngine();
  try {
    const pending = new Map<number, (t: number) => void>();
    const stop = { now: false };
    const waiters = new Set<() => void>();
    const off = e.engine.onTasksAvailable(() => {
      for (const w of [...waiters]) w();
      waiters.clear();
    });
    const agents = Array.from({ length: 100 }, async (_, i) => {
      const node = agentNode(i);
      while (!stop.now) {
        const tasks = e.engine.takeTasks(node, 1);
        if (tasks.length === 0) {
          await new Promise<void>((r) => waiters.add(r));
          continue;
        }
        await e.engine.submitResults(node, tasks.map(result));
        const t = performance.now();
        for (const a of tasks) pending.get(a.jobId)?.(t);
      }
    });
    const lat = new Float64Array(jobs);
    for (let j = 0; j < jobs; j++) {
      const t0 = performance.now();
      const job = await e.engine.submitJob({ command: ['true'] });
      // Registered before any agent can take the task: they are woken on a later turn.
      const done = await new Promise<number>((r) => pending.set(job.id, r));
      lat[j] = done - t0;
      pending.delete(job.id);
    }
    stop.now = true;
    for (const w of [...waiters]) w();
    off();
    await Promise.all(agents);
    const sorted = lat.sort();
    return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
  } finally {
    e.close();
    rmSync(e.dir, { recursive: true, force: true });
  }
}

/**
 * Hand-out rate with `depth` tasks queued, kept at that depth: every TOP_UP results, TOP_UP
 * more tasks are submitted (at both depths alike, so the top-ups cost both the same).
 */
export async function runDepth(depth: number, measured = 60_000): Promise<DriveResult> {
  const e = openBenchEngine();
  try {
    await submitSweep(e.engine, depth);
    const TOP_UP = 5000;
    let next = TOP_UP;
    const submissions: Promise<unknown>[] = [];
    const topUp = (done: number) => {
      if (done < next) return;
      next += TOP_UP;
      submissions.push(submitSweep(e.engine, TOP_UP));
    };
    await drive(e.engine, 100, 1, 10_000, topUp); // warm-up
    next = TOP_UP;
    const r = await drive(e.engine, 100, 1, measured, topUp);
    await Promise.all(submissions);
    return r;
  } finally {
    e.close();
    rmSync(e.dir, { recursive: true, force: true });
  }
}

/** A 1,000,000-row CSV params file on disk, streamed into the engine: seconds to durable. */
export async function runSubmit(rows = 1_000_000): Promise<{ seconds: number; rowsPerS: number }> {
  const e = openBenchEngine();
  const file = join(e.dir, 'params.csv');
  writeFileSync(file, 'seed,alpha\n' + Array.from({ length: rows }, (_, i) => `${i},${(i % 97) / 10}`).join('\n') + '\n');
  try {
    const t0 = performance.now();
    const job = await e.engine.submitJobStream(
      { command: ['./simulate', '--seed', '{seed}', '--alpha', '{alpha}'] },
      'csv',
      createReadStream(file),
    );
    const seconds = (performance.now() - t0) / 1000;
    if (job.counts.total !== rows) throw new Error(`queued ${job.counts.total} of ${rows}`);
    return { seconds, rowsPerS: rows / seconds };
  } finally {
    e.close();
    rmSync(e.dir, { recursive: true, force: true });
  }
}

/**
 * kill -9 with `rows` queued and some running, then a new process on the same data dir:
 * from spawn to its first task handed out, and to every queued task read back.
 */
export async function runRecovery(rows = 1_000_000): Promise<{ firstTaskMs: number; allQueuedMs: number; queued: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'lc-bench-recovery-'));
  try {
    await child(['fill', dir, String(rows)], { killOn: 'FILLED' });
    const out = await child(['serve', dir], {});
    const first = /FIRST (\d+(?:\.\d+)?)/.exec(out)!;
    const all = /ALL (\d+(?:\.\d+)?) (\d+)/.exec(out)!;
    return { firstTaskMs: Number(first[1]), allQueuedMs: Number(all[1]), queued: Number(all[2]) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function child(args: string[], opts: { killOn?: string }): Promise<string> {
  return new Promise((resolve, reject) => {
    const spawnedAt = Date.now();
    const p = spawn(process.execPath, [fileURLToPath(import.meta.url), 'child', String(spawnedAt), ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (opts.killOn && out.includes(opts.killOn)) p.kill('SIGKILL');
    });
    p.on('error', reject);
    p.on('close', (code, signal) =>
      code === 0 || signal === 'SIGKILL' ? resolve(out) : reject(new Error(`bench child ${args[0]} exited ${code ?? signal}`)),
    );
  });
}

/** The child side of runRecovery. */
async function childMain(spawnedAt: number, what: string, dir: string, rows: string | undefined): Promise<void> {
  if (what === 'fill') {
    const e = openBenchEngine(dir);
    await submitSweep(e.engine, Number(rows));
    // Some tasks running when the axe falls: their leases must come back too.
    for (let i = 0; i < 100; i++) e.engine.takeTasks(agentNode(i), 4);
    e.commits.flush();
    process.stdout.write('FILLED\n');
    setInterval(() => {}, 1000); // stay alive until the SIGKILL
    return;
  } else {
    const e = openBenchEngine(dir);
    const node = agentNode(999);
    const tasks = e.engine.takeTasks(node, 1);
    const first = Date.now() - spawnedAt;
    if (tasks.length !== 1) throw new Error('no task handed out after recovery');
    // Everything queued, read back as it is needed: hand the rest out in batches of 10,000.
    const queued = e.engine.stats().queued;
    for (let n = 1; n > 0; ) n = e.engine.takeTasks(node, 10_000).length;
    const all = Date.now() - spawnedAt;
    process.stdout.write(`FIRST ${first}\nALL ${all} ${queued}\n`);
    e.close();
  }
}

// ---- end to end: the real dispatcher process, dispatcherctl, simulated agents --------------

const ROOT = join(fileURLToPath(import.meta.url), '../../..');

interface DispatcherProc {
  port: number;
  kill(): Promise<void>;
}

function startDispatcherProc(dataDir: string, port = 0): Promise<DispatcherProc & { startedMs: number }> {
  const t0 = Date.now();
  const p = spawn(
    process.execPath,
    [
      join(ROOT, 'dist/bin/dispatcher.mjs'),
      '--dhcp',
      'off',
      '--no-tftp',
      '--http-host',
      '127.0.0.1',
      '--http-port',
      String(port),
      '--data-dir',
      dataDir,
      '--log-level',
      'info',
    ],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  return new Promise((resolve, reject) => {
    let buf = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.includes('"dispatcher started"')) continue;
        const httpPort = (JSON.parse(line) as { httpPort: number }).httpPort;
        resolve({
          port: httpPort,
          startedMs: Date.now() - t0,
          kill: async () => {
            p.kill('SIGKILL');
            await exited;
          },
        });
      }
    });
    p.on('exit', (code) => reject(new Error(`dispatcher exited (${code}) before it started`)));
  });
}

function runCtl(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [join(ROOT, 'dist/bin/dispatcherctl.mjs'), ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * End to end with the real dispatcher: a 1,000,000-row CSV file submitted with dispatcherctl
 * (read, streamed over HTTP, validated, committed); then kill -9 and a restart on the same data
 * dir: from spawn to listening, and to the first task acknowledged to a simulated agent.
 */
export async function runEndToEnd(rows = 1_000_000): Promise<{ submitSeconds: number; listenMs: number; firstTaskMs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'lc-bench-e2e-'));
  const dataDir = join(dir, 'data');
  let d = await startDispatcherProc(dataDir);
  try {
    const file = join(dir, 'sweep.csv');
    writeFileSync(file, 'seed,alpha\n' + Array.from({ length: rows }, (_, i) => `${i},${(i % 97) / 10}`).join('\n') + '\n');
    const env = { LILCLUSTER_URL: `http://127.0.0.1:${d.port}`, LILCLUSTER_DATA_DIR: dataDir };
    const t0 = performance.now();
    const r = await runCtl(['submit', '--params', file, '--', './simulate', '--seed', '{seed}', '--alpha', '{alpha}'], env);
    const submitSeconds = (performance.now() - t0) / 1000;
    if (r.code !== 0) throw new Error(`submit failed: ${r.stderr}`);
    const port = d.port;
    await d.kill();
    const t1 = Date.now();
    d = await startDispatcherProc(dataDir, port);
    // Then one simulated agent (its own process: its start-up counts too) takes one task.
    const sim = await new Promise<string>((resolve, reject) => {
      const p = spawn(
        process.execPath,
        [
          join(ROOT, 'dist/bench/sim-agents.mjs'),
          '--dispatcher',
          `http://127.0.0.1:${port}`,
          '--data-dir',
          dataDir,
          '--agents',
          '1',
          '--slots',
          '1',
          '--tasks',
          '1',
          '--mac-prefix',
          '52:54:fb',
        ],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      let out = '';
      p.stdout.setEncoding('utf8').on('data', (x: string) => (out += x));
      p.on('error', reject);
      p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`sim-agents exited ${code}`))));
    });
    if (!/RESULT name=sim-agents/.test(sim)) throw new Error(`no task served after the restart: ${sim}`);
    return { submitSeconds, listenMs: d.startedMs, firstTaskMs: Date.now() - t1 };
  } finally {
    await d.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Median of each numeric field over several runs (the figures the README reports). */
async function medianOf<T extends object>(runs: number, fn: () => Promise<T>): Promise<T> {
  const all: Record<string, number>[] = [];
  for (let i = 0; i < runs; i++) all.push((await fn()) as unknown as Record<string, number>);
  const out: Record<string, number> = {};
  for (const k of Object.keys(all[0]!)) {
    if (typeof all[0]![k] !== 'number') continue;
    const v = all.map((r) => r[k]!).sort((a, b) => a - b);
    out[k] = v[Math.floor((v.length - 1) / 2)]!;
  }
  return out as unknown as T;
}

async function main(): Promise<void> {
  const [mode = 'all', ...rest] = process.argv.slice(2);
  if (mode === 'child') return childMain(Number(rest[0]), rest[1]!, rest[2]!, rest[3]);
  const runs = Math.max(1, Number(process.env.RUNS ?? 3));
  const want = (m: string) => mode === 'all' || mode === m;
  const f = (x: number, d = 3) => x.toFixed(d);
  const cpu = async <T>(fn: () => Promise<T & { n?: number }>) => {
    const c0 = process.cpuUsage();
    const r = await fn();
    const c = process.cpuUsage(c0);
    return { ...r, cpuUsPerTask: r.n ? (c.user + c.system) / r.n : 0 };
  };
  if (want('throughput')) {
    for (const slots of [1, 4]) {
      const r = await medianOf(runs, () => cpu(() => runThroughput(slots, Number(process.env.BENCH_TASKS ?? 200_000))));
      console.log(
        `RESULT name=dispatch_engine_throughput agents=100 slots=${slots} runs=${runs} tasks_per_s=${Math.round(r.perS)} p50_ms=${f(r.p50)} p99_ms=${f(r.p99)} avg_commit_ms=${f(r.avgCommitMs)} cpu_us_per_task=${f(r.cpuUsPerTask, 1)}`,
      );
    }
  }
  if (want('latency')) {
    const r = await medianOf(runs, () => runLatency());
    console.log(
      `RESULT name=dispatch_engine_latency what=submit_to_durable_result agents=100 runs=${runs} p50_ms=${f(r.p50)} p99_ms=${f(r.p99)}`,
    );
  }
  if (want('depth')) {
    // Interleaved, so load from elsewhere on the machine hits both depths alike.
    const small: DriveResult[] = [];
    const big: DriveResult[] = [];
    for (let i = 0; i < runs; i++) {
      small.push(await runDepth(10_000));
      big.push(await runDepth(1_000_000));
    }
    for (const [depth, list] of [
      [10_000, small],
      [1_000_000, big],
    ] as const) {
      const r = await medianOf(list.length, async () => list.shift()!);
      console.log(
        `RESULT name=dispatch_engine_depth queued=${depth} runs=${runs} tasks_per_s=${Math.round(r.perS)} p50_ms=${f(r.p50)} p99_ms=${f(r.p99)} take_p99_us=${f(r.takeP99Us, 1)}`,
      );
    }
  }
  if (want('submit')) {
    const r = await medianOf(runs, () => runSubmit());
    console.log(
      `RESULT name=dispatch_engine_submit_1m rows=1000000 runs=${runs} seconds=${f(r.seconds, 2)} rows_per_s=${Math.round(r.rowsPerS)}`,
    );
  }
  if (mode === 'e2e' || mode === 'all') {
    const r = await medianOf(runs, () => runEndToEnd());
    console.log(
      `RESULT name=dispatch_submit_1m_e2e rows=1000000 runs=${runs} seconds=${f(r.submitSeconds, 2)} what=dispatcherctl_http_engine`,
    );
    console.log(
      `RESULT name=dispatch_recovery_e2e queued=1000000 runs=${runs} listen_ms=${r.listenMs} first_task_ms=${r.firstTaskMs} what=kill9_restart_to_first_task_acked`,
    );
  }
  if (want('recovery')) {
    const r = await medianOf(runs, () => runRecovery());
    console.log(
      `RESULT name=dispatch_engine_recovery queued=${r.queued} runs=${runs} first_task_ms=${r.firstTaskMs} all_handed_out_ms=${r.allQueuedMs}`,
    );
  }
}

await main();
