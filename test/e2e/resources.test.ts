/**
 * Enforced task resources (issue 14, point 4) under QEMU: one machine (2 vCPUs, 1 GiB) boots
 * the real image, whose /init mounts cgroup v2, so its agent runs each task in its own cgroup.
 *
 *   1. The node says its tasks are held to their requests (`resources.enforced`).
 *   2. A task that goes past its `--mem` (`tail /dev/zero` grows without end) is killed alone
 *      and reported as outcome `oom` with its peak memory; a task running beside it finishes,
 *      the agent stays up on the same connection, and the next job runs.
 *
 * The image is the one the QEMU e2e tests share (test/lab/pxe-lab.ts, E2E_IMAGE).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildForE2e, PxeLab, type LabMachine } from '../lab/pxe-lab.js';

interface TaskView {
  state: string;
  result: {
    exitCode: number | null;
    signal: string | null;
    error?: string;
    oom?: boolean;
    memPeakKiB?: number | null;
    mac: string | null;
  } | null;
}
interface JobCounts {
  id: number;
  state: string;
  firstTaskId: number;
  counts: { done: number; failed: number; running: number };
}
interface NodeResources {
  cores: { total: number; allocated: number };
  memoryMiB: { total: number; allocated: number };
  enforced: boolean;
}

let rack: PxeLab;
let node1: LabMachine;

beforeAll(async () => {
  buildForE2e();
  rack = await PxeLab.create({ area: 'resources', subnet: 71 });
  node1 = await rack.machine({ name: 'node1', cpus: 2, memoryMiB: 1024 });
  await rack.startDispatcher({ cluster: rack.clusterNodes() });
  await node1.powerOn();
}, 600_000);

afterAll(async () => {
  await rack?.cleanup();
});

const submit = async (...args: string[]) => Number((await rack.ok('submit', ...args)).trim());
const job = async (id: number): Promise<JobCounts> => {
  const j = (await rack.json<{ jobs: JobCounts[] }>('jobs')).jobs.find((x) => x.id === id);
  if (!j) throw new Error(`no job ${id}`);
  return j;
};

describe('enforced task resources on a booted node', () => {
  it('holds tasks to their requests by cgroup v2 (the image mounts it)', async () => {
    const n = await rack.nodeUp('node1', 240_000);
    const r = n.resources as NodeResources;
    expect(r.enforced, node1.console().slice(-3000)).toBe(true);
    expect(r.cores.total).toBe(2);
    // 1 GiB less the kernel, the RAM root and the agent's reserve.
    expect(r.memoryMiB.total).toBeGreaterThan(200);
    expect(r.memoryMiB.total).toBeLessThan(1024);
    expect(node1.console()).toMatch(/held to their requests by cgroup v2/);
  }, 300_000);

  it('kills a task past its --mem alone, as outcome oom with its peak; the agent and the other task go on', async () => {
    // The node is up for the dispatcher a moment before the agent's line reaches the serial console.
    await node1.waitForConsole(/connected to the dispatcher as node1/, 60_000);
    const consoleBefore = node1.console();
    const sessions = (s: string) => s.split('connected to the dispatcher as node1').length - 1;
    const beside = await submit('--cores', '1', '--', 'sh', '-c', 'sleep 12; echo survived');
    await rack.until('the task beside running', async () => (await job(beside)).counts.running || undefined, 60_000);
    const hog = await submit('--mem', '64M', '--attempts', '3', '--', 'tail', '/dev/zero');
    const hogJob = await rack.until('the hog ended', async () => ((await job(hog)).state === 'done' ? job(hog) : undefined), 120_000);
    expect(hogJob.counts).toMatchObject({ done: 0, failed: 1 });
    const t = await rack.json<TaskView>('task', String(hogJob.firstTaskId));
    expect(t.state).toBe('failed');
    expect(t.result).toMatchObject({ oom: true, signal: 'SIGKILL' });
    // Killed at its limit: it held about 64 MiB at its peak, and never much more.
    expect(t.result!.memPeakKiB).toBeGreaterThan(48 * 1024);
    expect(t.result!.memPeakKiB).toBeLessThanOrEqual(64 * 1024);
    // A final outcome: not handed out again elsewhere (it would exceed its memory anywhere).
    expect((await rack.ok('task', String(hogJob.firstTaskId))).replace(/\s+/g, ' ')).toMatch(
      /outcome:? oom: killed for exceeding its memory request/,
    );

    // The results export says so too.
    const lines = (await rack.ok('results', String(hog), '--format', 'jsonl')).trim().split('\n');
    expect(JSON.parse(lines[0]!)).toMatchObject({ state: 'failed', result: { oom: true, memPeakKiB: t.result!.memPeakKiB } });

    const besideJob = await rack.until(
      'the task beside done',
      async () => ((await job(beside)).state === 'done' ? job(beside) : undefined),
      60_000,
    );
    expect(besideJob.counts).toMatchObject({ done: 1, failed: 0 });
    const b = await rack.json<TaskView & { result: { stdout?: string } }>('task', String(besideJob.firstTaskId));
    expect(b.result).toMatchObject({ exitCode: 0 });
    // The same agent all along: no new session, and it takes the next job.
    expect(sessions(node1.console())).toBe(sessions(consoleBefore));
    const next = await submit('--mem', '32M', '--', 'true');
    await rack.until('the next job done', async () => ((await job(next)).state === 'done' ? true : undefined), 60_000);
    expect((await job(next)).counts).toMatchObject({ done: 1 });
    expect((await rack.node('node1'))?.state).toMatch(/ready|busy/);
  }, 240_000);

  it('reports a missing command as a start failure, not as the cgroup wrapper exit 127', async () => {
    const missing = await submit('--mem', '32M', '--', 'no-such-command-lc');
    const ended = await rack.until(
      'the job with a missing command ended',
      async () => ((await job(missing)).state === 'done' ? job(missing) : undefined),
      120_000,
    );
    expect(ended.counts).toMatchObject({ done: 0, failed: 1 });
    const t = await rack.json<TaskView>('task', String(ended.firstTaskId));
    expect(t.result).toMatchObject({ exitCode: null, error: expect.stringMatching(/cannot start no-such-command-lc: ENOENT/) });
  }, 120_000);
});
