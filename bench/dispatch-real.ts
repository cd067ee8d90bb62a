/**
 * Dispatch figures through the REAL dispatcher process (dist/bin/dispatcher.mjs) over the agent
 * WebSocket protocol, for the side-by-side bench (bench/dispatch.sh). Every result is durable
 * (SQLite WAL, synchronous FULL, group commit) before its agent sees the acknowledgement.
 *
 *   node dist/bench/dispatch-real.mjs throughput [--tasks 200000] [--agents 100] [--slots 32] [--chunk 10000]
 *        [--store URL] [--name dispatch_real_throughput]
 *        dispatcher + bench/sim-agents (its own process, 100 agents answering at once): the tasks
 *        are submitted over HTTP in chunks while the agents wait, as the peers' producers do;
 *        tasks/s = tasks / (first submit → last result acknowledged); hand-out → ack p50/p99;
 *        group commit's transactions and durability steps from /metrics. --store postgres://…
 *        runs the dispatcher on that PostgreSQL, --name names the RESULT line
 *   node dist/bench/dispatch-real.mjs latency [--jobs 2000]
 *        one-task jobs submitted one after the other (POST, awaited) onto 100 idle agents:
 *        submit → durable result (its acknowledgement reaching the agent) p50/p99
 *   node dist/bench/dispatch-real.mjs depth [--depths 10000,1000000] [--seconds 10] [--recovery]
 *        per depth: a fresh dispatcher, a params file of that many rows submitted with
 *        `dispatcherctl submit --params` (timed), then sim-agents for --seconds while the queue
 *        is topped up to that depth over HTTP (the same way at every depth): hand-out rate and
 *        p99. --recovery, at the largest depth: agents connected, kill -9, restart on the same
 *        data dir and port: exec → listening, → first task handed to a waiting agent, → first
 *        result acknowledged
 *   node dist/bench/dispatch-real.mjs lost [--heartbeat 1] [--repeats 3]
 *        an agent holding tasks freezes (no message, socket open): its last message → its
 *        tasks reach another agent, in heartbeat intervals
 *   node dist/bench/dispatch-real.mjs busy [--heartbeat 1] [--seconds 60]
 *        a real node-agent with 2 × cores CPU-bound tasks for a minute: never declared lost
 *
 * Prints `RESULT name=... key=value ...` lines. PROFILE_DIR=dir runs the dispatcher with
 * --cpu-prof (one .cpuprofile per dispatcher process, written when it stops);
 * DISPATCHER_LOG_DIR=dir keeps each dispatcher's log there.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseDispatcherPublicKey } from '../dispatcher/src/protocol/session.js';
import type { KeyObject } from 'node:crypto';
import { FleetAgent, fleetMac } from './dispatch-fleet.js';

const ROOT = join(fileURLToPath(import.meta.url), '../../..');
const DISPATCHER = join(ROOT, 'dist/bin/dispatcher.mjs');
const CTL = join(ROOT, 'dist/bin/dispatcherctl.mjs');
const SIM = join(ROOT, 'dist/bench/sim-agents.mjs');
const AGENT = join(ROOT, 'dist/bin/node-agent.mjs');

// ---------------------------------------------------------------- processes, stopped by PID

const children = new Set<ChildProcess>();
function track(p: ChildProcess): ChildProcess {
  children.add(p);
  p.once('exit', () => children.delete(p));
  return p;
}
/** Temp dirs still to remove (an interrupted run skips the `finally` blocks). */
const tempDirs = new Set<string>();
function killAll(): void {
  for (const c of children) if (c.pid) process.kill(c.pid, 'SIGKILL');
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

function lines(stream: NodeJS.ReadableStream, onLine: (l: string) => void): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (d: string) => {
    const parts = (rest + d).split('\n');
    rest = parts.pop()!;
    for (const l of parts) onLine(l);
  });
}

function procCpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const r = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(r[11]) + Number(r[12])) * 10; // utime + stime, USER_HZ = 100
}
function procRssMiB(pid: number): number {
  return Math.round(Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))![1]) / 1024);
}
const load1 = (): string => readFileSync('/proc/loadavg', 'latin1').split(' ')[0]!;

interface Dispatcher {
  proc: ChildProcess;
  pid: number;
  port: number;
  url: string;
  dataDir: string;
  token: string;
  enrollToken: string;
  key: KeyObject;
  /** performance.now() at spawn and at its "dispatcher started" line. */
  spawnedAt: number;
  startedAt: number;
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

let profileSeq = 0;
async function startDispatcher(
  dataDir: string,
  opts: { port?: number; heartbeat?: number; label: string; store?: string },
): Promise<Dispatcher> {
  const nodeArgs: string[] = [];
  if (process.env.PROFILE_DIR) {
    const dir = join(process.env.PROFILE_DIR, `${opts.label}-${process.pid}-${++profileSeq}`);
    mkdirSync(dir, { recursive: true });
    nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${dir}`);
  }
  const args = [
    DISPATCHER,
    '--dhcp',
    'off',
    '--no-tftp',
    '--http-host',
    '127.0.0.1',
    '--http-port',
    String(opts.port ?? 0),
    '--data-dir',
    dataDir,
    '--log-level',
    'info',
  ];
  if (opts.heartbeat !== undefined) args.push('--heartbeat', String(opts.heartbeat));
  if (opts.store) args.push('--store', opts.store);
  const spawnedAt = performance.now();
  const proc = track(spawn(process.execPath, [...nodeArgs, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.stderr!.resume();
  // DISPATCHER_LOG_DIR=dir keeps each dispatcher's log (its stdout), to see what it said under load.
  if (process.env.DISPATCHER_LOG_DIR) {
    mkdirSync(process.env.DISPATCHER_LOG_DIR, { recursive: true });
    proc.stdout!.pipe(createWriteStream(join(process.env.DISPATCHER_LOG_DIR, `${opts.label}-${process.pid}-${++profileSeq}.log`)));
  }
  const port = await new Promise<number>((resolve, reject) => {
    lines(proc.stdout!, (l) => {
      if (l.includes('"dispatcher started"')) resolve((JSON.parse(l) as { httpPort: number }).httpPort);
    });
    proc.once('exit', (code) => reject(new Error(`dispatcher exited (${code}) before it started`)));
  });
  const startedAt = performance.now();
  return {
    proc,
    pid: proc.pid!,
    port,
    url: `http://127.0.0.1:${port}`,
    dataDir,
    spawnedAt,
    startedAt,
    token: readFileSync(join(dataDir, 'admin.token'), 'utf8').trim(),
    enrollToken: readFileSync(join(dataDir, 'enroll.token'), 'utf8').trim(),
    key: parseDispatcherPublicKey(readFileSync(join(dataDir, 'identity.pub'), 'utf8')),
    kill9: async () => {
      proc.kill('SIGKILL');
      await exited;
    },
    stop: async () => {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function api<T>(d: Dispatcher, method: string, path: string, body?: string, type = 'application/json'): Promise<T> {
  const res = await fetch(`${d.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${d.token}`, ...(body !== undefined ? { 'content-type': type } : {}) },
    ...(body !== undefined ? { body } : {}),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

/** A sweep of `n` no-op tasks (`true <i>`) in one streamed request; resolves once it is durable. */
async function submitSweep(d: Dispatcher, n: number, from = 0): Promise<number> {
  let rows = '';
  for (let i = from; i < from + n; i++) rows += `${i}\n`;
  const spec = JSON.stringify({ command: ['true', '{i}'], speculative: false });
  const job = await api<{ id: number }>(d, 'POST', '/api/v1/jobs?format=csv', `${spec}\ni\n${rows}`, 'application/x-lilcluster-sweep');
  return job.id;
}

interface EngineStats {
  queued: number;
  running: number;
  done: number;
  recovering: boolean;
}
const engineStats = (d: Dispatcher) => api<{ stats: EngineStats }>(d, 'GET', '/api/v1/dispatch').then((r) => r.stats);

interface SimResult {
  fields: Record<string, string>;
  /** performance.now() when its RESULT line arrived. */
  at: number;
}

/** bench/sim-agents in its own process; `connected` resolves once all its agents are in. */
function startSim(d: Dispatcher, args: string[]): { connected: Promise<void>; result: Promise<SimResult>; proc: ChildProcess } {
  const proc = track(
    spawn(process.execPath, [SIM, '--dispatcher', d.url, '--data-dir', d.dataDir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }),
  );
  let onConnected!: () => void;
  const connected = new Promise<void>((r) => (onConnected = r));
  const stderr: string[] = [];
  lines(proc.stderr!, (l) => {
    stderr.push(l);
    if (/agents connected/.test(l)) onConnected();
  });
  const result = new Promise<SimResult>((resolve, reject) => {
    lines(proc.stdout!, (l) => {
      if (!l.startsWith('RESULT ')) return;
      resolve({
        at: performance.now(),
        fields: Object.fromEntries(
          l
            .split(' ')
            .slice(1)
            .map((kv) => kv.split('=') as [string, string]),
        ),
      });
    });
    proc.once('exit', (code) => reject(new Error(`sim-agents exited ${code}: ${stderr.slice(-5).join(' | ')}`)));
  });
  return { connected, result, proc };
}

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'nan');

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : dflt;
}
const num = (name: string, dflt: number) => Number(arg(name, String(dflt)));

function tempDir(what: string): string {
  const d = mkdtempSync(join(tmpdir(), `lc-bench-dispatch-${what}-`));
  tempDirs.add(d);
  return d;
}

// ---------------------------------------------------------------- throughput

/** Group commit's counters from /metrics: transactions, writes, durability steps (WAL fsync or PostgreSQL shipping). */
async function storeMetrics(
  d: Dispatcher,
): Promise<{ commits: number; writes: number; syncs: number; syncSeconds: number; pgRows: number; pgFailures: number }> {
  const text = await (await fetch(`${d.url}/metrics`)).text();
  const value = (metric: string) => Number(new RegExp(`^${metric} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return {
    commits: value('lilcluster_store_commits_total'),
    writes: value('lilcluster_store_writes_total'),
    syncs: value('lilcluster_store_wal_syncs_total'),
    syncSeconds: value('lilcluster_store_wal_sync_seconds_total'),
    // the PostgreSQL store's shipping: rows shipped, and ships that failed (the session lost)
    pgRows: value('lilcluster_store_postgres_rows_total'),
    pgFailures: value('lilcluster_store_postgres_failures_total'),
  };
}

async function throughput(): Promise<void> {
  const tasks = num('tasks', 200_000);
  const agents = num('agents', 100);
  const slots = num('slots', 32);
  const chunk = num('chunk', 10_000);
  // --store postgres://…: the same workload on the PostgreSQL store (bench/dispatch-postgres.sh)
  const store = arg('store', '');
  const name = arg('name', 'dispatch_real_throughput');
  const dir = tempDir('tput');
  const d = await startDispatcher(join(dir, 'data'), { label: store ? 'throughput-postgres' : 'throughput', ...(store ? { store } : {}) });
  try {
    const sim = startSim(d, ['--agents', String(agents), '--slots', String(slots), '--tasks', String(tasks), '--duration', '600']);
    await sim.connected;
    const load = load1();
    const m0 = await storeMetrics(d);
    const cpu0 = procCpuMs(d.pid);
    const t0 = performance.now();
    for (let i = 0; i < tasks; i += chunk) await submitSweep(d, Math.min(chunk, tasks - i), i);
    const submitted = performance.now();
    const r = await sim.result;
    const secs = (r.at - t0) / 1000;
    const cpuMs = procCpuMs(d.pid) - cpu0;
    const rss = procRssMiB(d.pid);
    const s = await engineStats(d);
    if (s.done < tasks) throw new Error(`only ${s.done} of ${tasks} tasks done`);
    const m1 = await storeMetrics(d);
    const commits = m1.commits - m0.commits;
    const syncs = m1.syncs - m0.syncs;
    console.log(
      `RESULT name=${name} agents=${agents} slots=${slots} tasks=${tasks} chunk=${chunk} seconds=${f(secs)} tasks_per_s=${Math.round(tasks / secs)} ` +
        `handout_to_ack_p50_ms=${r.fields.ack_p50_ms} handout_to_ack_p99_ms=${r.fields.ack_p99_ms} submit_s=${f((submitted - t0) / 1000)} ` +
        `dispatcher_cpu_us_per_task=${f((cpuMs * 1000) / tasks, 1)} dispatcher_cpu_pct=${f(cpuMs / 10 / secs, 0)} rss_mib=${rss} ` +
        `messages_per_task=${f((Number(r.fields.messages_in) + Number(r.fields.messages_out)) / tasks, 3)} ` +
        `store_commits=${commits} writes_per_commit=${f((m1.writes - m0.writes) / commits, 1)} durable_syncs=${syncs} ` +
        `tasks_per_sync=${f(tasks / syncs, 1)} sync_ms_mean=${f((m1.syncSeconds - m0.syncSeconds) * (1000 / syncs), 2)} ` +
        `sync_busy_pct=${f((100 * (m1.syncSeconds - m0.syncSeconds)) / secs, 0)} ` +
        (store ? `shipped_rows_per_task=${f((m1.pgRows - m0.pgRows) / tasks, 2)} ship_failures=${m1.pgFailures - m0.pgFailures} ` : '') +
        `load1=${load}`,
    );
  } finally {
    await d.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- latency

async function latency(): Promise<void> {
  const jobs = num('jobs', 2000);
  const dir = tempDir('lat');
  const d = await startDispatcher(join(dir, 'data'), { label: 'latency' });
  const jobOfTask = new Map<number, number>();
  const waiting = new Map<number, (at: number) => void>();
  // An ack may come before the POST's answer has been read: kept by job id.
  const ackedAt = new Map<number, number>();
  const fleet = Array.from(
    { length: 100 },
    (_, i) =>
      new FleetAgent({
        dispatcher: d.url,
        mac: fleetMac('52:54:fd', i),
        enrollToken: d.enrollToken,
        dispatcherKey: d.key,
        slots: 1,
        answer: true,
        onTasks: (ts) => {
          for (const t of ts) jobOfTask.set(t.taskId, t.jobId);
        },
        onAck: (refs, at) => {
          for (const r of refs) {
            const job = jobOfTask.get(r.taskId)!;
            ackedAt.set(job, at);
            waiting.get(job)?.(at);
          }
        },
      }),
  );
  try {
    await Promise.all(fleet.map((a) => a.start()));
    const load = load1();
    const lat: number[] = [];
    for (let j = 0; j < jobs + 200; j++) {
      const t0 = performance.now();
      let resolveDone!: (at: number) => void;
      const done = new Promise<number>((r) => (resolveDone = r));
      const job = await api<{ id: number }>(d, 'POST', '/api/v1/jobs', JSON.stringify({ command: ['true'] }));
      waiting.set(job.id, resolveDone);
      if (ackedAt.has(job.id)) resolveDone(ackedAt.get(job.id)!);
      const at = await done;
      waiting.delete(job.id);
      if (j >= 200) lat.push(at - t0); // the first 200: warm-up (JIT)
    }
    lat.sort((a, b) => a - b);
    console.log(
      `RESULT name=dispatch_real_latency what=submit_to_durable_result agents=100 jobs=${jobs} p50_ms=${f(percentile(lat, 50))} p99_ms=${f(percentile(lat, 99))} load1=${load}`,
    );
  } finally {
    for (const a of fleet) a.close();
    await d.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- depth, 1M submit, recovery

async function depth(): Promise<void> {
  const depths = arg('depths', '10000,1000000').split(',').map(Number);
  const seconds = num('seconds', 10);
  const withRecovery = process.argv.includes('--recovery');
  for (const want of depths) {
    const dir = tempDir(`depth${want}`);
    const dataDir = join(dir, 'data');
    let d = await startDispatcher(dataDir, { label: `depth${want}` });
    try {
      // The params file, submitted as a user would.
      const file = join(dir, 'params.csv');
      await writeRows(file, want);
      const loadSubmit = load1();
      const t0 = performance.now();
      const ctl = await run(process.execPath, [CTL, 'submit', '--params', file, '--no-speculative', '--', 'true', '{i}'], {
        LILCLUSTER_URL: d.url,
        LILCLUSTER_DATA_DIR: dataDir,
      });
      const submitS = (performance.now() - t0) / 1000;
      if (ctl.code !== 0) throw new Error(`dispatcherctl submit failed: ${ctl.stderr}`);
      console.log(
        `RESULT name=dispatch_real_submit rows=${want} seconds=${f(submitS)} rows_per_s=${Math.round(want / submitS)} what=dispatcherctl_submit_params_csv load1=${loadSubmit}`,
      );

      // Hand-outs with the queue kept at that depth: top-ups of TOP_UP tasks over HTTP whenever it is below.
      const TOP_UP = 10_000;
      let stop = false;
      let minQueued = Infinity;
      let maxQueued = 0;
      let topUps = 0;
      let next = want;
      const topper = (async () => {
        while (!stop) {
          const s = await engineStats(d);
          minQueued = Math.min(minQueued, s.queued);
          maxQueued = Math.max(maxQueued, s.queued);
          if (s.queued < want) {
            await submitSweep(d, TOP_UP, next);
            next += TOP_UP;
            topUps++;
          } else await sleep(10);
        }
      })();
      const sim = startSim(d, [
        '--agents',
        '100',
        '--slots',
        String(num('slots', 32)),
        '--duration',
        String(seconds),
        '--mac-prefix',
        '52:54:fc',
      ]);
      const load = load1();
      const r = await sim.result;
      stop = true;
      await topper;
      console.log(
        `RESULT name=dispatch_real_depth queued=${want} seconds=${r.fields.seconds} tasks_per_s=${r.fields.tasks_per_s} handout_to_ack_p50_ms=${r.fields.ack_p50_ms} ` +
          `handout_to_ack_p99_ms=${r.fields.ack_p99_ms} queued_min=${minQueued} queued_max=${maxQueued} top_ups=${topUps} load1=${load}`,
      );

      if (withRecovery && want === Math.max(...depths)) {
        const port = d.port;
        // Back to the full depth; then agents at work when the axe falls.
        const s = await engineStats(d);
        if (s.queued < want) await submitSweep(d, want - s.queued, next);
        const marks = { welcome: 0, task: 0, ack: 0 };
        let since = Infinity;
        const mark = (k: keyof typeof marks) => (at: number) => {
          if (at >= since && !marks[k]) marks[k] = at;
        };
        const fleet = Array.from(
          { length: 8 },
          (_, i) =>
            new FleetAgent({
              dispatcher: d.url,
              mac: fleetMac('52:54:fb', i),
              enrollToken: d.enrollToken,
              dispatcherKey: d.key,
              slots: 4,
              answer: true,
              reconnectMs: 20,
              onWelcome: mark('welcome'),
              onTasks: (_, at) => mark('task')(at),
              onAck: (_, at) => mark('ack')(at),
            }),
        );
        await Promise.all(fleet.map((a) => a.start()));
        await sleep(1000);
        const queuedAtKill = (await engineStats(d)).queued;
        const loadRec = load1();
        await d.kill9();
        since = performance.now();
        d = await startDispatcher(dataDir, { port, label: 'recovery' });
        while (!marks.ack) await sleep(5);
        const after = await engineStats(d);
        for (const a of fleet) a.close();
        const ms = (t: number) => Math.round(t - d.spawnedAt);
        console.log(
          `RESULT name=dispatch_real_recovery queued=${queuedAtKill} listen_ms=${ms(d.startedAt)} first_welcome_ms=${ms(marks.welcome)} first_task_ms=${ms(marks.task)} ` +
            `first_ack_ms=${ms(marks.ack)} queued_after=${after.queued} what=kill9_exec_to_first_task_to_waiting_agent load1=${loadRec}`,
        );
      }
    } finally {
      await d.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

function writeRows(file: string, n: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(file);
    out.on('error', reject);
    out.write('i\n');
    let i = 0;
    const more = () => {
      while (i < n) {
        let s = '';
        for (const end = Math.min(n, i + 10_000); i < end; i++) s += `${i}\n`;
        if (!out.write(s)) return void out.once('drain', more);
      }
      out.end(resolve);
    };
    more();
  });
}

function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = track(spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }));
    let stdout = '';
    let stderr = '';
    p.stdout!.setEncoding('utf8').on('data', (x: string) => (stdout += x));
    p.stderr!.setEncoding('utf8').on('data', (x: string) => (stderr += x));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// ---------------------------------------------------------------- lost node

async function lost(): Promise<void> {
  const hb = num('heartbeat', 1);
  const repeats = num('repeats', 3);
  const dir = tempDir('lost');
  const d = await startDispatcher(join(dir, 'data'), { label: 'lost', heartbeat: hb });
  try {
    const gaps: number[] = [];
    for (let r = 0; r < repeats; r++) {
      const frozen = new FleetAgent({
        dispatcher: d.url,
        mac: fleetMac('52:54:fa', r),
        enrollToken: d.enrollToken,
        dispatcherKey: d.key,
        slots: 4,
        answer: false,
      });
      await frozen.start();
      const job = await api<{ id: number }>(
        d,
        'POST',
        '/api/v1/jobs',
        JSON.stringify({ command: ['true', '{i}'], params: [0, 1, 2, 3].map((i) => ({ i })), speculative: false }),
      );
      while (frozen.held.filter((t) => t.jobId === job.id).length < 4) await sleep(5);
      const mine = new Set(frozen.held.map((t) => t.taskId));
      let rehandedAt = 0;
      const other = new FleetAgent({
        dispatcher: d.url,
        mac: fleetMac('52:54:f9', r),
        enrollToken: d.enrollToken,
        dispatcherKey: d.key,
        slots: 4,
        answer: true,
        onTasks: (ts, at) => {
          if (!rehandedAt && ts.some((t) => mine.has(t.taskId))) rehandedAt = at;
        },
      });
      await other.start();
      // Freeze at a random phase of the heartbeat cycle, after a heartbeat or two.
      await sleep(hb * 1000 * (1 + Math.random()));
      frozen.freeze();
      const last = frozen.lastSentAt;
      const load = load1();
      const deadline = performance.now() + hb * 1000 * 10;
      while (!rehandedAt && performance.now() < deadline) await sleep(2);
      frozen.close();
      other.close();
      if (!rehandedAt) throw new Error(`tasks of the frozen agent not handed out again within 10 heartbeat intervals`);
      const gap = rehandedAt - last;
      gaps.push(gap);
      // The same count the busy-node figure relies on must see this loss (a check of the check).
      const lostEvents = await lostEventsOf(d, frozen.o.mac);
      if (lostEvents < 1) throw new Error('the frozen agent was not recorded as lost (node.state event)');
      console.log(
        `RESULT name=dispatch_lost_node_once heartbeat_s=${hb} last_message_to_rehand_ms=${Math.round(gap)} intervals=${f(gap / (hb * 1000), 3)} lost_events=${lostEvents} load1=${load}`,
      );
      await sleep(200);
    }
    gaps.sort((a, b) => a - b);
    const max = gaps[gaps.length - 1]!;
    console.log(
      `RESULT name=dispatch_lost_node heartbeat_s=${hb} repeats=${repeats} median_ms=${Math.round(percentile(gaps, 50))} max_ms=${Math.round(max)} ` +
        `max_intervals=${f(max / (hb * 1000), 3)} median_intervals=${f(percentile(gaps, 50) / (hb * 1000), 3)}`,
    );
  } finally {
    await d.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** How many times the registry declared this node lost (its `node.state` events). */
async function lostEventsOf(d: Dispatcher, node: string): Promise<number> {
  const r = await api<{ events: { kind: string; data: { to?: string } | null }[] }>(
    d,
    'GET',
    `/api/v1/events?node=${encodeURIComponent(node)}&kind=node.state&limit=1000`,
  );
  return r.events.filter((e) => e.kind === 'node.state' && e.data?.to === 'lost').length;
}

// ---------------------------------------------------------------- busy node

interface NodeView {
  name: string;
  state: string;
  lastHeartbeat: number | null;
}

async function busy(): Promise<void> {
  const hb = num('heartbeat', 1);
  const seconds = num('seconds', 60);
  const slots = num('slots', cpus().length * 2);
  const dir = tempDir('busy');
  const dataDir = join(dir, 'data');
  const d = await startDispatcher(dataDir, { label: 'busy', heartbeat: hb });
  const mac = '52:54:00:bb:00:01';
  const agent = track(
    spawn(
      process.execPath,
      [
        AGENT,
        '--dispatcher',
        d.url,
        '--enroll-token',
        d.enrollToken,
        '--dispatcher-key',
        join(dataDir, 'identity.pub'),
        '--mac',
        mac,
        '--slots',
        String(slots),
        '--work-dir',
        join(dir, 'work'),
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    ),
  );
  agent.stdout!.resume();
  agent.stderr!.resume();
  try {
    let node: NodeView | undefined;
    for (let i = 0; i < 400 && !node; i++) {
      await sleep(50);
      node = (await api<{ nodes: NodeView[] }>(d, 'GET', '/api/v1/nodes')).nodes.find(
        (n) => n.state !== 'lost' && n.lastHeartbeat !== null,
      );
    }
    if (!node) throw new Error('the agent never connected');
    // Every slot busy at 100 % CPU (a shell loop: no forks, no I/O) for the whole run.
    const busySeconds = seconds - 2;
    const job = await api<{ id: number }>(
      d,
      'POST',
      '/api/v1/jobs',
      JSON.stringify({
        command: ['bash', '-c', `while [ $SECONDS -lt ${busySeconds} ]; do :; done`],
        params: Array.from({ length: slots }, (_, i) => ({ i })),
        speculative: false,
        timeoutSeconds: seconds * 3,
      }),
    );
    const cpuStat = () => readFileSync('/proc/stat', 'latin1').split('\n')[0]!.split(/\s+/).slice(1).map(Number);
    const c0 = cpuStat();
    const load = load1();
    const t0 = performance.now();
    let maxSilenceMs = 0;
    let lastHb = node.lastHeartbeat!;
    let maxHbGap = 0;
    const states = new Set<string>();
    let view: { state: string; counts: { done: number; failed: number } };
    for (;;) {
      await sleep(100);
      const n = (await api<{ nodes: NodeView[] }>(d, 'GET', '/api/v1/nodes')).nodes.find((x) => x.name === node!.name)!;
      states.add(n.state);
      if (n.lastHeartbeat !== null && n.lastHeartbeat !== lastHb) {
        maxHbGap = Math.max(maxHbGap, n.lastHeartbeat - lastHb);
        lastHb = n.lastHeartbeat;
      }
      maxSilenceMs = Math.max(maxSilenceMs, Date.now() - lastHb);
      view = await api(d, 'GET', `/api/v1/jobs/${job.id}`);
      if (view.state === 'done' || performance.now() - t0 > seconds * 3000) break;
    }
    const c1 = cpuStat();
    const total = c1.reduce((a, b) => a + b, 0) - c0.reduce((a, b) => a + b, 0);
    const idle = c1[3]! + c1[4]! - (c0[3]! + c0[4]!);
    const lostEvents = await lostEventsOf(d, node.name);
    console.log(
      `RESULT name=dispatch_busy_node heartbeat_s=${hb} seconds=${f((performance.now() - t0) / 1000, 1)} slots=${slots} cores=${cpus().length} machine_cpu_busy_pct=${f((100 * (total - idle)) / total, 0)} ` +
        `tasks_done=${view!.counts.done} tasks_failed=${view!.counts.failed} lost_events=${lostEvents} states=${[...states].join('/')} ` +
        `max_heartbeat_gap_ms=${maxHbGap} max_silence_ms=${maxSilenceMs} lost_after_ms=${3 * hb * 1000} load1=${load}`,
    );
  } finally {
    agent.kill('SIGTERM');
    await d.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- main

const modes: Record<string, () => Promise<void>> = { throughput, latency, depth, lost, busy };
const mode = process.argv[2] ?? '';
if (!modes[mode]) {
  process.stderr.write(`usage: dispatch-real.mjs ${Object.keys(modes).join('|')} [options] (see the header of bench/dispatch-real.ts)\n`);
  process.exit(2);
}
try {
  await modes[mode]!();
  process.exit(0);
} catch (err) {
  process.stderr.write(`dispatch-real ${mode}: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
}
