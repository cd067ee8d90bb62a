/**
 * Task resources with real processes on loopback: the dispatcher, two agents that hand out
 * different cores and memory (`--slots`, `--task-memory`), and dispatcherctl. Tasks print the
 * time they start and end; from those, on each node, the cores and memory of the tasks running
 * at once never exceed what its agent hands out, whatever the mix of requests. A request larger
 * than every node is refused at submission, naming the field; a bad size never leaves the CLI.
 * (The kernel's side, a task killed for memory: test/e2e/resources.test.ts, in QEMU.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { agentFor, waitFor, type AgentProcess } from '../agents/harness.js';
import { CTL_BIN, DISPATCHER_BIN, ROOT } from '../../lab/paths.js';
import { ctlAdmin } from '../../lab/run-ctl.js';
import { resultsOf, startDispatcher, type DispatcherProcess, type JobView } from '../../lab/dispatcher.js';

const BIG = { mac: '52:54:00:e2:0f:01', cores: 4, memMiB: 1024 };
const SMALL = { mac: '52:54:00:e2:0f:02', cores: 2, memMiB: 512 };

let work: string;
let disp: DispatcherProcess;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  if (!existsSync(DISPATCHER_BIN) || !existsSync(CTL_BIN)) execFileSync('make', ['build'], { cwd: ROOT, stdio: 'inherit' });
  work = mkdtempSync(join(tmpdir(), 'lc-resources-'));
  disp = await startDispatcher({ dataDir: join(work, 'data'), heartbeatSeconds: 1 });
  for (const n of [BIG, SMALL])
    agents.push(agentFor(disp, n.mac, ['--slots', String(n.cores), '--prefetch', '2', '--task-memory', String(n.memMiB)]));
  await waitFor('2 agents connected', () => disp.logs.filter((l) => l.msg === 'agent welcomed').length >= 2, 30_000);
});

afterAll(async () => {
  for (const a of agents) await a.kill('SIGKILL');
  await disp?.stop('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

const ctl = (args: string[]) => ctlAdmin(disp, args);

/** A task that prints its start and end (ns) around a short sleep. */
const TIMED = 'echo "$(date +%s%N)"; sleep 0.3; echo "$(date +%s%N)"';

interface Interval {
  mac: string;
  from: number;
  to: number;
  cores: number;
  memMiB: number;
}

async function intervals(job: number, cores: number, memMiB: number): Promise<Interval[]> {
  return (await resultsOf(disp, job)).map((l) => {
    expect(l.result?.exitCode, JSON.stringify(l.result)).toBe(0);
    const [from, to] = l.result!.stdout.trim().split('\n').map(Number);
    return { mac: l.result!.mac!, from: from!, to: to!, cores, memMiB };
  });
}

/** The most cores and memory held at once on `mac`, over every task start. */
function peakOn(all: Interval[], mac: string): { cores: number; memMiB: number; tasks: number } {
  const mine = all.filter((i) => i.mac === mac);
  let peak = { cores: 0, memMiB: 0, tasks: mine.length };
  for (const at of mine) {
    const live = mine.filter((i) => i.from <= at.from && at.from < i.to);
    const c = live.reduce((n, i) => n + i.cores, 0);
    const m = live.reduce((n, i) => n + i.memMiB, 0);
    peak = { cores: Math.max(peak.cores, c), memMiB: Math.max(peak.memMiB, m), tasks: mine.length };
  }
  return peak;
}

async function waitDone(job: number): Promise<void> {
  const end = Date.now() + 120_000;
  while ((await disp.api<JobView>('GET', `/api/v1/jobs/${job}`)).state !== 'done') {
    if (Date.now() > end) throw new Error(`timed out waiting for job ${job}`);
    await sleep(100);
  }
}

describe('task resources, real dispatcher and agents', () => {
  it('packs by cores and memory: no node ever runs more than its agent hands out', async () => {
    const rows = join(work, 'rows.csv');
    writeFileSync(rows, `i\n${Array.from({ length: 12 }, (_, i) => i).join('\n')}\n`);
    // 2 cores and 300 MiB each: 2 at once on the big node (cores), 1 on the small one (memory).
    const heavy = await ctl(['submit', '--params', rows, '--cores', '2', '--mem', '300M', '--shell', '--', `${TIMED} # {i}`]);
    expect(heavy.code, heavy.stderr).toBe(0);
    // Tasks without a request (one core each) fill what is left.
    const light = await ctl(['submit', '--params', rows, '--shell', '--', `${TIMED} # {i}`]);
    expect(light.code, light.stderr).toBe(0);
    const [h, l] = [Number(heavy.stdout.trim()), Number(light.stdout.trim())];
    await waitDone(h);
    await waitDone(l);
    const all = [...(await intervals(h, 2, 300)), ...(await intervals(l, 1, 0))];
    const big = peakOn(all, BIG.mac);
    const small = peakOn(all, SMALL.mac);
    expect(big.tasks + small.tasks).toBe(24);
    expect(big.tasks).toBeGreaterThan(0);
    expect(small.tasks).toBeGreaterThan(0);
    expect(big.cores).toBeLessThanOrEqual(BIG.cores);
    expect(big.memMiB).toBeLessThanOrEqual(BIG.memMiB);
    expect(small.cores).toBeLessThanOrEqual(SMALL.cores);
    expect(small.memMiB).toBeLessThanOrEqual(SMALL.memMiB);
    // The big node did run tasks side by side (packing, not one at a time).
    expect(big.cores).toBeGreaterThan(2);

    const job = await disp.api<{ resources: unknown }>('GET', `/api/v1/jobs/${h}`);
    expect(job.resources).toEqual({ cores: 2, memoryMiB: 300, gpus: 0 });
  }, 180_000);

  it('shows what each node hands out and holds (API and dispatcherctl nodes)', async () => {
    type Nodes = {
      nodes: {
        mac: string;
        resources?: { cores: { total: number; allocated: number }; memoryMiB: { total: number; allocated: number }; enforced: boolean };
      }[];
    };
    // `allocated` comes with heartbeats (every second here): the jobs above are over, so it falls back to 0.
    const end = Date.now() + 10_000;
    let big;
    for (;;) {
      big = (await disp.api<Nodes>('GET', '/api/v1/nodes')).nodes.find((n) => n.mac === BIG.mac)!;
      if (big.resources?.cores.allocated === 0 || Date.now() > end) break;
      await sleep(100);
    }
    expect(big.resources).toMatchObject({ cores: { total: 4, allocated: 0 }, memoryMiB: { total: 1024, allocated: 0 } });
    expect(typeof big.resources!.enforced).toBe('boolean');
    const table = await ctl(['nodes']);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/ALLOC CORES\s+ALLOC MEM/);
    expect(table.stdout).toMatch(/0\/4\s+0 MiB\/1\.0 GiB/);
  });

  it('refuses a request larger than every node, naming the field; and a bad size before sending anything', async () => {
    const mem = await ctl(['submit', '--mem', '2G', '--', 'true']);
    expect(mem.code).not.toBe(0);
    expect(mem.stderr).toMatch(/resources\.memoryMiB: 2048 MiB per task is more than any node can give a task \(the most: 1024 MiB/);
    expect(mem.stderr).toMatch(/--mem/);
    const cores = await ctl(['submit', '--cores', '5', '--', 'true']);
    expect(cores.code).not.toBe(0);
    expect(cores.stderr).toMatch(/resources\.cores: 5 cores per task/);
    const bad = await ctl(['submit', '--mem', '12X', '--', 'true']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--mem: "12X" is not a size/);
    const gpus = await ctl(['submit', '--gpus', '1', '--', 'true']);
    expect(gpus.code).not.toBe(0);
    expect(gpus.stderr).toMatch(/resources\.gpus: 1 GPU per task/);
    // Through the API: the stable code.
    const res = await fetch(`${disp.url}/api/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${disp.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: ['true'], resources: { memoryMiB: 4096 } }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('DSP_ERR_RESOURCES_TOO_LARGE');
    expect(disp.logs.some((l) => l.msg === 'submission refused' && String(l.field) === 'resources.memoryMiB')).toBe(true);
    // Nothing of it was queued.
    const jobs = await disp.api<{ jobs: unknown[] }>('GET', '/api/v1/jobs');
    expect(jobs.jobs).toHaveLength(2);
  });
});
