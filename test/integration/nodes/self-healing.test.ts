/**
 * Self-healing without a BMC, with real processes on loopback: the dispatcher
 * (dist/bin/dispatcher.mjs), real agents (dist/bin/node-agent.mjs) and dispatcherctl.
 *
 * - A black-hole node: its PATH finds a `checker` that cannot load its library (exit 127, as a
 *   node missing a shared library does), the others find one that works. It fails its tasks
 *   fastest, is drained as suspect after `suspectAfter` failures in a row with the evidence,
 *   and with `--retries` every task it failed moves to another node: the job completes.
 * - The cluster file's health check, run by each agent every second: a failure drains the
 *   node (reason: its first line), a pass undrains it, a hang is killed at its timeout and
 *   counts as a failure, and an operator's drain is never undone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentFor, waitFor, type AgentProcess } from '../agents/harness.js';
import { CTL_BIN, DISPATCHER_BIN, ROOT } from '../../lab/paths.js';
import { ctlAdmin } from '../../lab/run-ctl.js';
import { startDispatcher, type DispatcherProcess, type JobView } from '../../lab/dispatcher.js';
import type { NodeDetail, NodeList, ClusterEvent } from '../../../dispatcher/src/api/schemas.js';
import type { TaskDetail, TaskSummary } from '../../../dispatcher/src/api/jobs/schemas.js';

let work: string;
const disps: DispatcherProcess[] = [];
const agents: AgentProcess[] = [];

beforeAll(() => {
  if (!existsSync(DISPATCHER_BIN) || !existsSync(CTL_BIN)) execFileSync('make', ['build'], { cwd: ROOT, stdio: 'inherit' });
  work = mkdtempSync(join(tmpdir(), 'lc-self-healing-'));
});

afterAll(async () => {
  for (const a of agents) await a.kill('SIGKILL');
  for (const d of disps) await d.stop('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

/** A real agent enrolled with the dispatcher, with extra environment (its PATH, its health state file). */
function agent(d: DispatcherProcess, mac: string, env: Record<string, string>, extra: string[] = []): AgentProcess {
  const a = agentFor(d, mac, extra, env);
  agents.push(a);
  return a;
}

const ctl = (d: DispatcherProcess, args: string[]) => ctlAdmin(d, args);

async function nodeByMac(d: DispatcherProcess, mac: string): Promise<NodeDetail> {
  const list = await d.api<NodeList>('GET', '/api/v1/nodes');
  const n = list.nodes.find((x) => x.mac === mac);
  if (!n) throw new Error(`no node ${mac}`);
  return d.api<NodeDetail>('GET', `/api/v1/nodes/${n.name}`);
}

/** Polls the node until `cond` holds (the API, no fixed sleeps). */
async function untilNode(
  d: DispatcherProcess,
  mac: string,
  what: string,
  cond: (n: NodeDetail) => boolean,
  ms = 20_000,
): Promise<NodeDetail> {
  const end = Date.now() + ms;
  let last: NodeDetail | undefined;
  for (;;) {
    last = await nodeByMac(d, mac).catch(() => undefined); // not registered yet: its agent is still enrolling
    if (last && cond(last)) return last;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify({ state: last?.state, health: last?.health })}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const PATH = '/usr/local/bin:/usr/bin:/bin';

/** A params file of `n` rows (column i: 0..n-1). */
function writeParams(n: number): string {
  const f = join(work, `params-${n}.csv`);
  writeFileSync(f, 'i\n' + Array.from({ length: n }, (_, i) => String(i % 10)).join('\n') + '\n');
  return f;
}

describe('black-hole node and --retries', () => {
  it('drains as suspect a node whose tasks all fail while the job completes on the others, retried elsewhere', async () => {
    mkdirSync(join(work, 'bh'));
    const d = await startDispatcher({ dataDir: join(work, 'bh'), heartbeatSeconds: 1, cluster: 'suspectAfter: 3\n' });
    disps.push(d);
    // The same program on every node; on the black hole it cannot load its library.
    const good = join(work, 'good-bin');
    const bad = join(work, 'bad-bin');
    mkdirSync(good);
    mkdirSync(bad);
    writeFileSync(join(good, 'checker'), '#!/bin/sh\nsleep 0.2\necho "checked $1"\n');
    writeFileSync(
      join(bad, 'checker'),
      '#!/bin/sh\necho "checker: error while loading shared libraries: libcheck.so.1: cannot open shared object file" >&2\nexit 127\n',
    );
    chmodSync(join(good, 'checker'), 0o755);
    chmodSync(join(bad, 'checker'), 0o755);
    const BAD = '52:54:00:5e:00:01';
    const GOOD = ['52:54:00:5e:00:02', '52:54:00:5e:00:03'];
    agent(d, BAD, { PATH: `${bad}:${PATH}` }, ['--slots', '2']);
    for (const m of GOOD) agent(d, m, { PATH: `${good}:${PATH}` }, ['--slots', '2']);
    await waitFor('3 agents connected', () => d.logs.filter((l) => l.msg === 'agent welcomed').length >= 3, 30_000);

    const params = join(work, 'items.csv');
    writeFileSync(params, 'i\n' + Array.from({ length: 24 }, (_, i) => String(i)).join('\n') + '\n');
    const sub = await ctl(d, ['submit', '--params', params, '--retries', '2', '--timeout', '60', '--', 'checker', '{i}']);
    expect(sub.code, sub.stderr).toBe(0);
    const job = Number(sub.stdout.trim());

    const drained = await untilNode(d, BAD, 'the black hole drained as suspect', (n) => n.state === 'draining' && !!n.suspect);
    expect(drained.suspect!.failures.length).toBe(3);
    expect(drained.suspect!.failures.every((f) => f.exitCode === 127 && f.jobId === job)).toBe(true);
    expect(drained.suspect!.succeededElsewhere).toEqual([
      { jobId: job, nodes: expect.arrayContaining([expect.stringMatching(/^node\d+$/)]) },
    ]);
    const events = await d.api<{ events: ClusterEvent[] }>('GET', `/api/v1/events?node=${drained.name}`);
    expect(
      events.events.some(
        (e) => e.kind === 'node.state' && /→ draining: suspect: 3 tasks in a row failed here \(exit 127\)/.test(e.message),
      ),
    ).toBe(true);

    // The job completes: every task the black hole failed ran again on a good node.
    const end = Date.now() + 60_000;
    let view: JobView | undefined;
    while (Date.now() < end) {
      view = await d.api<JobView>('GET', `/api/v1/jobs/${job}`);
      if (view.state === 'done') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(view!.counts).toMatchObject({ total: 24, done: 24, failed: 0 });
    const tasks = (await d.api<{ tasks: TaskSummary[] }>('GET', `/api/v1/jobs/${job}/tasks?limit=100`)).tasks;
    const retried = tasks.filter((t) => t.attempts > 1);
    expect(retried.length).toBeGreaterThanOrEqual(3);
    for (const t of retried) {
      const detail = await d.api<TaskDetail>('GET', `/api/v1/tasks/${t.id}`);
      expect(detail.failedOn).toEqual([BAD]);
      expect(detail.failures[0]).toMatchObject({ mac: BAD, exitCode: 127, reason: 'exit code 127' });
      expect(GOOD).toContain(detail.result!.mac);
      expect(detail.result!.stdout).toBe(`checked ${t.params!.i}\n`);
    }
    // The CLI shows both: the suspect mark on the node, the failed node on the task.
    const nodes = await ctl(d, ['nodes']);
    expect(nodes.stdout).toMatch(new RegExp(`${drained.name}\\s+draining !suspect`));
    const shown = await ctl(d, ['health', drained.name]);
    expect(shown.stdout).toMatch(/suspect since .*: 3 tasks in a row failed here/);
    expect(shown.stdout).toMatch(new RegExp(`task \\d+ \\(job ${job}, attempt 1\\): exit 127`));
    const task = await ctl(d, ['task', String(retried[0]!.id)]);
    expect(task.stdout).toMatch(new RegExp(`attempt 1:\\s+exit code 127 on ${BAD}`));
    expect(task.stdout).toMatch(new RegExp(`failed on:\\s+${BAD}`));

    // Undrain clears the suspect mark.
    const un = await ctl(d, ['undrain', drained.name]);
    expect(un.code, un.stderr).toBe(0);
    const back = await nodeByMac(d, BAD);
    expect(back.suspect).toBeUndefined();
    expect(back.state).not.toBe('draining');
  }, 120_000);
});

describe('health check', () => {
  it('drains on failure, undrains on pass, kills a hang at its timeout, and leaves an operator drain alone', async () => {
    const check =
      'state=$(cat "$HEALTH_STATE"); if [ "$state" = hang ]; then echo hanging; exec sleep 60; fi; [ "$state" = ok ] || { echo "disk check: $state"; echo "detail line"; exit 1; }; echo fine';
    mkdirSync(join(work, 'hc'));
    const d = await startDispatcher({
      dataDir: join(work, 'hc'),
      heartbeatSeconds: 1,
      cluster: `healthCheck:\n  command: ${JSON.stringify(check)}\n  intervalSeconds: 1\n  timeoutSeconds: 1\n`,
    });
    disps.push(d);
    const A = '52:54:00:4c:00:01';
    const B = '52:54:00:4c:00:02';
    const stateA = join(work, 'health-a');
    const stateB = join(work, 'health-b');
    writeFileSync(stateA, 'ok');
    writeFileSync(stateB, 'ok');
    agent(d, A, { PATH, HEALTH_STATE: stateA });
    agent(d, B, { PATH, HEALTH_STATE: stateB });
    const a = await untilNode(d, A, 'A passes its check', (n) => n.health?.ok === true && n.state === 'ready');
    expect(a.health!.output).toBe('fine\n');
    await untilNode(d, B, 'B passes its check', (n) => n.health?.ok === true);

    // A node failing its check at boot is drained before it is handed a task, though work waits.
    const C = '52:54:00:4c:00:03';
    const stateC = join(work, 'health-c');
    writeFileSync(stateC, 'no /scratch');
    const sub = await ctl(d, ['submit', '--params', writeParams(12), '--', 'sleep', '0.{i}']);
    expect(sub.code, sub.stderr).toBe(0);
    agent(d, C, { PATH, HEALTH_STATE: stateC });
    const c = await untilNode(d, C, 'C drained at boot', (n) => n.state === 'draining' && n.health?.ok === false);
    expect(c.health!.output).toBe('disk check: no /scratch\ndetail line\n');
    for (const end = Date.now() + 30_000; (await d.api<JobView>('GET', `/api/v1/jobs/${sub.stdout.trim()}`)).state !== 'done'; ) {
      if (Date.now() > end) throw new Error('the job did not finish on A and B');
      await new Promise((r) => setTimeout(r, 100));
    }
    const ran = (await d.api<{ tasks: TaskSummary[] }>('GET', `/api/v1/jobs/${sub.stdout.trim()}/tasks?limit=100`)).tasks;
    expect(ran.every((t) => t.state === 'done' && t.ranOn !== C)).toBe(true);

    // A failure drains, its first line the reason; the event has the whole output.
    writeFileSync(stateA, 'FULL /scratch');
    const failed = await untilNode(d, A, 'A drained by its check', (n) => n.state === 'draining');
    expect(failed.health).toMatchObject({ ok: false, output: 'disk check: FULL /scratch\ndetail line\n' });
    const ev = (await d.api<{ events: ClusterEvent[] }>('GET', `/api/v1/events?node=${failed.name}`)).events;
    expect(ev.some((e) => e.kind === 'node.state' && e.message.endsWith('→ draining: health: disk check: FULL /scratch'))).toBe(true);
    expect(ev.find((e) => e.kind === 'node.health' && e.data?.ok === false)?.data).toMatchObject({
      output: 'disk check: FULL /scratch\ndetail line\n',
    });
    expect((await ctl(d, ['nodes'])).stdout).toMatch(new RegExp(`${failed.name}\\s+draining !health`));
    expect((await ctl(d, ['health', failed.name])).stdout).toContain('--- health check output\ndisk check: FULL /scratch\ndetail line\n');

    // Passing again undrains it.
    writeFileSync(stateA, 'ok');
    await untilNode(d, A, 'A undrained by its check', (n) => n.state === 'ready' && n.health?.ok === true);

    // A hang is killed at its timeout and counts as a failure.
    writeFileSync(stateA, 'hang');
    const hung = await untilNode(d, A, 'A drained by a hung check', (n) => n.state === 'draining');
    expect(hung.health!.output.split('\n')[0]).toBe('timed out after 1s');
    expect(hung.health!.output).toContain('hanging');
    writeFileSync(stateA, 'ok');
    await untilNode(d, A, 'A back after the hang', (n) => n.state === 'ready');

    // An operator's drain is not undone by a check that fails and passes again.
    const b = await nodeByMac(d, B);
    expect((await ctl(d, ['drain', b.name])).code).toBe(0);
    writeFileSync(stateB, 'broken');
    await untilNode(d, B, 'B fails its check', (n) => n.health?.ok === false);
    writeFileSync(stateB, 'ok');
    const passed = await untilNode(d, B, 'B passes again', (n) => n.health?.ok === true);
    const checkedAt = passed.health!.checkedAt!;
    await untilNode(d, B, 'another pass of B', (n) => (n.health?.checkedAt ?? 0) > checkedAt);
    expect((await nodeByMac(d, B)).state).toBe('draining');
  }, 90_000);
});
