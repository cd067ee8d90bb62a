#!/usr/bin/env node
/**
 * Agent-side figures, with real processes on loopback (run `make build` first):
 *
 *   e2e   dispatcher (real engine, durable results) + real agents running `true` per task:
 *         tasks/s from submission to the last result, p50/p99 of task durations
 *   idle  dispatcher with N simulated agents (bench/sim-agents) connected and heartbeating:
 *         dispatcher RSS and CPU while idle
 *
 *   node bench/agents.mjs [e2e|idle|all] [--tasks 20000] [--agents 2] [--slots 4] [--prefetch 4]
 *                         [--sim 1000] [--idle-seconds 30] [--runs 3]
 *
 * Prints `RESULT name=... key=value ...` lines (the bench-peers format), one per run and a
 * median line per figure.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const ROOT = resolve(import.meta.dirname, '..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const mode = ['e2e', 'idle', 'all'].includes(process.argv[2]) ? process.argv[2] : 'all';
const TASKS = Number(arg('tasks', 20000));
const AGENTS = Number(arg('agents', 2));
const SLOTS = Number(arg('slots', 4));
const PREFETCH = Number(arg('prefetch', 4));
const SIM = Number(arg('sim', 1000));
const IDLE_S = Number(arg('idle-seconds', 30));
const RUNS = Number(arg('runs', 3));

// Task work dirs on a tmpfs, as on the RAM image (/tmp here may be a disk: a directory per task costs milliseconds there).
const WORK_ROOT = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();

const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});
process.on('SIGINT', () => process.exit(130));

function run(cmd, args, opts = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  children.add(child);
  child.on('exit', () => children.delete(child));
  const out = [];
  let rest = '';
  child.stdout.setEncoding('utf8').on('data', (d) => {
    const parts = (rest + d).split('\n');
    rest = parts.pop();
    out.push(...parts);
  });
  child.stderr.setEncoding('utf8').on('data', () => {});
  return { child, out, done: new Promise((r) => child.on('exit', (code) => r(code))) };
}

async function startDispatcher(dataDir) {
  const d = run(process.execPath, [
    join(ROOT, 'dist/bin/dispatcher.mjs'),
    '--dhcp',
    'off',
    '--no-tftp',
    '--http-host',
    '127.0.0.1',
    '--http-port',
    '0',
    '--data-dir',
    dataDir,
  ]);
  for (let i = 0; i < 400; i++) {
    await sleep(25);
    const line = d.out.find((l) => l.includes('"dispatcher started"'));
    if (line) {
      const port = JSON.parse(line).httpPort;
      return { ...d, port, url: `http://127.0.0.1:${port}`, token: readFileSync(join(dataDir, 'admin.token'), 'utf8').trim() };
    }
  }
  throw new Error('dispatcher did not start');
}

async function api(d, method, path, body) {
  const res = await fetch(`${d.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${d.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

function cpuTicks(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(rest[11]) + Number(rest[12]); // utime + stime
}
function rssMiB(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  return Math.round(Number(m[1]) / 1024);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function e2eOnce() {
  const dataDir = mkdtempSync(join(tmpdir(), 'lc-bench-agents-'));
  const d = await startDispatcher(dataDir);
  const enroll = readFileSync(join(dataDir, 'enroll.token'), 'utf8').trim();
  const agents = [];
  for (let i = 0; i < AGENTS; i++) {
    const mac = `52:54:00:be:00:${i.toString(16).padStart(2, '0')}`;
    agents.push(
      run(process.execPath, [
        join(ROOT, 'dist/bin/node-agent.mjs'),
        '--dispatcher',
        d.url,
        '--enroll-token',
        enroll,
        '--dispatcher-key',
        join(dataDir, 'identity.pub'),
        '--mac',
        mac,
        '--slots',
        String(SLOTS),
        '--prefetch',
        String(PREFETCH),
        '--work-dir',
        join(WORK_ROOT, `lc-bench-agent${i}-${process.pid}`),
      ]),
    );
  }
  for (const a of agents) while (!a.out.some((l) => /connected to the dispatcher/.test(l))) await sleep(20);
  const d0 = cpuOf(d.child.pid);
  const a0 = agents.map((a) => cpuOf(a.child.pid));
  const t0 = performance.now();
  const job = await api(d, 'POST', '/api/v1/jobs', {
    command: ['true'],
    params: Array.from({ length: TASKS }, (_, i) => ({ i })),
    speculative: false,
  });
  let view = job;
  while (view.state !== 'done') {
    await sleep(20);
    view = await api(d, 'GET', `/api/v1/jobs/${job.id}`);
  }
  const seconds = (performance.now() - t0) / 1000;
  const c = view.counts;
  // CPU per task, ms: the dispatcher, the agents themselves, and the tasks they ran (reaped children).
  const dCpu = cpuOf(d.child.pid).self - d0.self;
  const aCpu = agents.map((a, i) => {
    const x = cpuOf(a.child.pid);
    return { self: x.self - a0[i].self, kids: x.kids - a0[i].kids };
  });
  const perTask = (ms) => (ms / TASKS).toFixed(2);
  const cpuNote = `cpu_ms_per_task dispatcher=${perTask(dCpu)} agents=${perTask(aCpu.reduce((n, x) => n + x.self, 0))} tasks=${perTask(aCpu.reduce((n, x) => n + x.kids, 0))}`;
  for (const a of agents) a.child.kill('SIGTERM');
  d.child.kill('SIGTERM');
  await Promise.all([...agents.map((a) => a.done), d.done]);
  rmSync(dataDir, { recursive: true, force: true });
  for (let i = 0; i < AGENTS; i++) rmSync(join(WORK_ROOT, `lc-bench-agent${i}-${process.pid}`), { recursive: true, force: true });
  const tps = Math.round(TASKS / seconds);
  console.log(
    `RESULT name=agents-e2e-true agents=${AGENTS} slots=${SLOTS} prefetch=${PREFETCH} tasks=${TASKS} done=${c.done} failed=${c.failed} seconds=${seconds.toFixed(2)} tasks_per_s=${tps} ${cpuNote}`,
  );
  return tps;
}

/** CPU time of a process and of its reaped children, ms (USER_HZ = 100). */
function cpuOf(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const r = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return { self: (Number(r[11]) + Number(r[12])) * 10, kids: (Number(r[13]) + Number(r[14])) * 10 };
}

async function idleOnce() {
  const dataDir = mkdtempSync(join(tmpdir(), 'lc-bench-idle-'));
  const d = await startDispatcher(dataDir);
  const sim = run(process.execPath, [
    join(ROOT, 'dist/bench/sim-agents.mjs'),
    '--dispatcher',
    d.url,
    '--data-dir',
    dataDir,
    '--agents',
    String(SIM),
    '--idle',
    '--duration',
    String(IDLE_S + 30),
  ]);
  for (;;) {
    await sleep(250);
    const metrics = await fetch(`${d.url}/metrics`)
      .then((r) => r.text())
      .catch(() => '');
    if (Number(/^lilcluster_agents_connected (\d+)/m.exec(metrics)?.[1] ?? 0) >= SIM) break;
    if (sim.child.exitCode !== null) throw new Error('sim-agents exited');
  }
  await sleep(5000); // settle after the connection burst
  const t1 = cpuTicks(d.child.pid);
  const w0 = performance.now();
  await sleep(IDLE_S * 1000);
  const t2 = cpuTicks(d.child.pid);
  const wall = (performance.now() - w0) / 1000;
  const cpuPct = ((t2 - t1) / 100 / wall) * 100; // USER_HZ = 100
  const rss = rssMiB(d.child.pid);
  sim.child.kill('SIGTERM');
  d.child.kill('SIGTERM');
  await Promise.all([sim.done, d.done]);
  rmSync(dataDir, { recursive: true, force: true });
  console.log(
    `RESULT name=dispatcher-idle-agents agents=${SIM} heartbeat_s=5 seconds=${IDLE_S} rss_mib=${rss} cpu_pct=${cpuPct.toFixed(1)}`,
  );
  return { rss, cpuPct };
}

/** The floor of the machine, measured in the same run: one Node loop spawning `true`, 8 at a time. */
async function bareOnce() {
  const N = Math.min(TASKS, 5000);
  let started = 0;
  let done = 0;
  const before = cpuOf(process.pid);
  const t0 = performance.now();
  await new Promise((resolve) => {
    const next = () => {
      if (started >= N) return;
      started++;
      const c = spawn('/bin/true', [], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      c.stdout.resume();
      c.stderr.resume();
      c.on('close', () => (++done === N ? resolve() : next()));
    };
    for (let i = 0; i < 8; i++) next();
  });
  const tps = Math.round(N / ((performance.now() - t0) / 1000));
  const after = cpuOf(process.pid);
  console.log(
    `RESULT name=bare-node-spawn-true concurrency=8 tasks=${N} tasks_per_s=${tps} cpu_ms_per_task parent=${((after.self - before.self) / N).toFixed(2)} tasks=${((after.kids - before.kids) / N).toFixed(2)}`,
  );
  return tps;
}

if (mode === 'e2e' || mode === 'all') {
  const xs = [];
  const bare = [];
  for (let i = 0; i < RUNS; i++) {
    bare.push(await bareOnce());
    xs.push(await e2eOnce());
  }
  bare.push(await bareOnce());
  console.log(
    `RESULT name=agents-e2e-true-median runs=${RUNS} tasks_per_s=${median(xs)} all=${xs.join('/')} bare_node_spawn_median=${median(bare)} ratio=${(median(xs) / median(bare)).toFixed(2)}`,
  );
}
if (mode === 'idle' || mode === 'all') {
  const xs = [];
  for (let i = 0; i < RUNS; i++) xs.push(await idleOnce());
  console.log(
    `RESULT name=dispatcher-idle-agents-median runs=${RUNS} agents=${SIM} rss_mib=${median(xs.map((x) => x.rss))} cpu_pct=${median(xs.map((x) => x.cpuPct)).toFixed(1)}`,
  );
}
process.exit(0);
