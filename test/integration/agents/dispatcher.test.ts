/**
 * Real processes end to end: the dispatcher (dist/bin/dispatcher.mjs, real engine and store)
 * and real agents (dist/bin/node-agent.mjs) on loopback, jobs submitted through the API.
 * Trust, timeouts that kill whole process groups and are retried, agents killed or frozen
 * mid-task, a node busy on every core, a graceful dispatcher restart with running tasks.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tempDir } from '../../unit/agent/temp-dirs.js';
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { rawPublicKey } from '../../../dispatcher/src/trust/secrets.js';
import { groupMembers } from '../../../node-agent/src/proc.js';
import { agentFor, startAgent, waitFor, type AgentProcess } from './harness.js';
import { AGENT_BIN, ROOT } from '../../lab/paths.js';
import { resultsOf, startDispatcher, type DispatcherProcess, type JobView } from '../../lab/dispatcher.js';
import { DISPATCHER_BIN } from '../../lab/paths.js';

let disp: DispatcherProcess | undefined;
const agents: AgentProcess[] = [];

beforeAll(() => {
  if (!existsSync(AGENT_BIN) || !existsSync(DISPATCHER_BIN)) execFileSync('make', ['build'], { cwd: ROOT, stdio: 'inherit' });
});

afterEach(async () => {
  for (const a of agents.splice(0)) {
    try {
      process.kill(a.child.pid!, 'SIGCONT');
    } catch {
      /* gone */
    }
    await a.kill('SIGKILL');
  }
  await disp?.stop('SIGKILL');
  disp = undefined;
});

function agent(d: DispatcherProcess, mac: string, extra: string[] = []): AgentProcess {
  const a = agentFor(d, mac, extra);
  agents.push(a);
  return a;
}

async function jobDone(d: DispatcherProcess, id: number, timeoutMs = 30_000): Promise<JobView> {
  let job: JobView | undefined;
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    job = await d.api<JobView>('GET', `/api/v1/jobs/${id}`);
    if (job.state === 'done') return job;
    await sleep(100);
  }
  throw new Error(`job ${id} not done: ${JSON.stringify(job)}`);
}

const logTime = (l: Record<string, unknown>) => Date.parse(String(l.time));
const alive = (pid: number) => {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return false;
  }
};

describe('real dispatcher and agents: trust', () => {
  it('refuses an agent with a wrong token and hands it nothing', async () => {
    disp = await startDispatcher();
    await disp.api('POST', '/api/v1/jobs', { command: ['true'] });
    const a = startAgent([
      '--dispatcher',
      disp.url,
      '--enroll-token',
      'wrong-wrong-wrong-wrong',
      '--dispatcher-key',
      join(disp.dataDir, 'identity.pub'),
      '--mac',
      '52:54:00:00:10:01',
      '--work-dir',
      join(disp.dataDir, 'a'),
    ]);
    agents.push(a);
    await a.waitForLine(/refused by the dispatcher \(bad-token\): wrong enrollment token/);
    await waitFor('log', () => disp!.logs.find((l) => l.msg === 'agent refused' && l.reason === 'bad-token'));
    const nodes = await disp.api<{ nodes: unknown[] }>('GET', '/api/v1/nodes');
    expect(nodes.nodes).toEqual([]);
    expect((await disp.api<JobView>('GET', '/api/v1/jobs/1')).counts).toMatchObject({ queued: 1, running: 0 });
  });

  it("an agent holding another dispatcher's key refuses to run its tasks", async () => {
    disp = await startDispatcher();
    const marker = join(tempDir('lc-marker-'), 'ran');
    await disp.api('POST', '/api/v1/jobs', { command: ['touch', marker] });
    const wrong = join(disp.dataDir, 'other.pub');
    writeFileSync(wrong, rawPublicKey(generateKeyPairSync('ed25519').publicKey).toString('base64'));
    const a = startAgent([
      '--dispatcher',
      disp.url,
      '--enroll-token',
      readFileSync(join(disp.dataDir, 'enroll.token'), 'utf8').trim(),
      '--dispatcher-key',
      wrong,
      '--mac',
      '52:54:00:00:10:02',
      '--work-dir',
      join(disp.dataDir, 'a'),
    ]);
    agents.push(a);
    await a.waitForLine(/REFUSING the dispatcher .* signature does not verify/);
    await sleep(500);
    expect(existsSync(marker)).toBe(false);
    expect((await disp.api<JobView>('GET', '/api/v1/jobs/1')).counts).toMatchObject({ queued: 1, running: 0 });
  });
});

describe('real dispatcher and agents: tasks', () => {
  it('kills a task that sleeps past its timeout with its whole process group, and retries it up to its attempts', async () => {
    disp = await startDispatcher();
    const pids = join(disp.dataDir, 'pids');
    agent(disp, '52:54:00:00:11:01', ['--kill-grace', '300']);
    const job = await disp.api<JobView>('POST', '/api/v1/jobs', {
      command: `sleep 30 & echo $$ $! >> ${pids}; sleep 30`,
      timeoutSeconds: 1,
      maxAttempts: 2,
      speculative: false,
    });
    const done = await jobDone(disp, job.id, 30_000);
    expect(done.counts).toMatchObject({ total: 1, failed: 1, done: 0 });
    const task = await disp.api<{ result: { attempt: number; timedOut: boolean; signal: string }; failures: { attempt: number }[] }>(
      'GET',
      `/api/v1/tasks/${job.firstTaskId}`,
    );
    expect(task.result).toMatchObject({ attempt: 2, timedOut: true, signal: 'SIGTERM' });
    expect(task.failures.map((f) => f.attempt)).toEqual([1]);
    const groups = readFileSync(pids, 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' ').map(Number));
    expect(groups).toHaveLength(2); // two attempts, no third
    for (const [pgid, bg] of groups) {
      expect(groupMembers(pgid!)).toEqual([]);
      expect(alive(bg!)).toBe(false);
    }
  });

  it('finishes elsewhere the tasks of an agent killed with -9 mid-task', async () => {
    disp = await startDispatcher();
    const a = agent(disp, '52:54:00:00:11:02', ['--slots', '2']);
    await a.waitForLine(/connected to the dispatcher/);
    const job = await disp.api<JobView>('POST', '/api/v1/jobs', {
      command: 'sleep 1; echo task {i}',
      params: [0, 1, 2, 3].map((i) => ({ i })),
      speculative: false,
    });
    let running = 0;
    for (let i = 0; i < 50 && running < 2; i++) {
      running = (await disp.api<JobView>('GET', `/api/v1/jobs/${job.id}`)).counts.running;
      await sleep(50);
    }
    expect(running).toBe(2);
    await a.kill('SIGKILL');
    await waitFor('node lost', () => disp!.logs.find((l) => l.msg === 'agent gone'));
    agent(disp, '52:54:00:00:11:03', ['--slots', '2']);
    const done = await jobDone(disp, job.id);
    expect(done.counts).toMatchObject({ done: 4, failed: 0 });
    const results = await resultsOf(disp, job.id);
    expect(results.map((r) => r.result!.stdout).sort()).toEqual(['task 0\n', 'task 1\n', 'task 2\n', 'task 3\n']);
    expect(new Set(results.map((r) => r.result!.node))).toEqual(new Set(['node2']));
  });
});

describe('real dispatcher and agents: liveness', () => {
  it('declares a frozen agent lost within 3 heartbeat intervals and hands its task out again', async () => {
    disp = await startDispatcher({ heartbeatSeconds: 1 });
    const a = agent(disp, '52:54:00:00:12:01');
    await a.waitForLine(/connected to the dispatcher/);
    const job = await disp.api<JobView>('POST', '/api/v1/jobs', { command: 'sleep 3; echo ok', speculative: false });
    for (let i = 0; i < 50 && (await disp.api<JobView>('GET', `/api/v1/jobs/${job.id}`)).counts.running === 0; i++) await sleep(50);
    await sleep(1100);
    const stoppedAt = Date.now();
    process.kill(a.child.pid!, 'SIGSTOP');
    const gone = await waitFor('agent gone', () => disp!.logs.find((l) => l.msg === 'agent gone'), 8000);
    expect(logTime(gone) - stoppedAt).toBeLessThanOrEqual(3000 + 100);
    expect(String(gone.why)).toMatch(/no message for/);
    const b = agent(disp, '52:54:00:00:12:02');
    await b.waitForLine(/connected to the dispatcher/);
    const done = await jobDone(disp, job.id);
    expect(done.counts.done).toBe(1);
    expect((await resultsOf(disp, job.id))[0]!.result).toMatchObject({ node: 'node2', stdout: 'ok\n', attempt: 2 });
  });

  it('never declares lost a node whose tasks keep every core at 100 %', async () => {
    disp = await startDispatcher({ heartbeatSeconds: 0.5 });
    const cores = Number(execFileSync('nproc').toString().trim());
    agent(disp, '52:54:00:00:12:03', ['--slots', String(cores)]);
    const job = await disp.api<JobView>('POST', '/api/v1/jobs', {
      command: [process.execPath, '-e', 'const e = Date.now() + 7000; while (Date.now() < e);'],
      params: Array.from({ length: cores }, (_, i) => ({ i })),
      speculative: false,
    });
    const done = await jobDone(disp, job.id, 40_000);
    expect(done.counts).toMatchObject({ done: cores, failed: 0 });
    const results = await resultsOf(disp, job.id);
    expect(results.map((r) => [r.result!.attempt, r.result!.durationMs >= 6900])).toEqual(results.map(() => [1, true]));
    expect(disp.logs.filter((l) => l.msg === 'agent gone')).toEqual([]);
  });
});

describe('real dispatcher and agents: graceful restart', () => {
  it('re-adopts running tasks after a dispatcher restart, with no re-execution', async () => {
    disp = await startDispatcher();
    const { port, dataDir } = disp;
    const runs = join(dataDir, 'runs');
    const a = agent(disp, '52:54:00:00:13:01', ['--slots', '2']);
    await a.waitForLine(/connected to the dispatcher/);
    const job = await disp.api<JobView>('POST', '/api/v1/jobs', {
      command: `echo {i} >> ${runs}; sleep {s}; echo done {i}`,
      params: [
        { i: 0, s: 0.5 },
        { i: 1, s: 3 },
      ],
      speculative: false,
    });
    await waitFor('both started', () => existsSync(runs) && readFileSync(runs, 'utf8').trim().split('\n').length === 2);
    await disp.stop('SIGTERM');
    await sleep(1500); // the short task ends while the dispatcher is down: its result waits on the agent
    disp = await startDispatcher({ dataDir, port });
    const done = await jobDone(disp, job.id);
    expect(done.counts).toMatchObject({ done: 2, failed: 0 });
    expect((await resultsOf(disp, job.id)).map((r) => [r.result!.stdout, r.result!.attempt])).toEqual([
      ['done 0\n', 1],
      ['done 1\n', 1],
    ]);
    expect(readFileSync(runs, 'utf8').trim().split('\n').sort()).toEqual(['0', '1']); // each ran once
    expect(disp.logs.some((l) => l.msg === 'agent re-adopted')).toBe(true);
  });
});
