import { describe, expect, it, vi } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, POWER_DELAY_MS } from '../../../node-agent/src/agent.js';
import type { TaskAssignment } from '../../../dispatcher/src/protocol/messages.js';
import { FakeInventory, FakePower, FakeReporter, FakeRunner, FakeSource, trueTask } from './fakes.js';
import { decodeForAgent, type AgentInbound } from '../../../node-agent/src/task-batch.js';

const task = (taskId: number, attempt = 1): TaskAssignment => trueTask(taskId, { attempt });
const ticks = async (n = 3) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

function make(opts: { slots?: number; prefetch?: number; power?: FakePower } = {}) {
  const source = new FakeSource();
  const runner = new FakeRunner();
  const reporter = new FakeReporter();
  const power = opts.power ?? new FakePower();
  const lines: string[] = [];
  const agent = new Agent(
    { source, runner, reporter, inventory: new FakeInventory(), power },
    { slots: opts.slots ?? 2, prefetch: opts.prefetch ?? 0, execTimeoutMs: 1000, say: (l) => lines.push(l) },
  );
  agent.start();
  return { agent, source, runner, reporter, power, lines };
}

describe('agent core', () => {
  it('asks for as many tasks as it has free slots, runs them, reports and forgets results once acknowledged', async () => {
    const { source, runner, reporter, agent } = make({ slots: 2 });
    source.connect();
    expect(source.of('heartbeat')).toHaveLength(1);
    expect(source.of('ready')).toEqual([{ type: 'ready', n: 2 }]);
    source.deliver({ type: 'tasks', tasks: [task(1), task(2)] });
    expect(runner.started.map((t) => t.taskId)).toEqual([1, 2]);
    expect(source.of('ready')).toHaveLength(1); // no free slot: asks for nothing more
    runner.finish(1, { stdout: 'one\n' });
    await ticks();
    const sent = source.of('results');
    expect(sent).toHaveLength(1);
    expect(sent[0]!.results).toMatchObject([{ taskId: 1, attempt: 1, exitCode: 0, stdout: 'one\n' }]);
    expect(sent[0]!.ready).toBe(1); // the freed slot is asked for in the same message
    expect(source.of('ready')).toHaveLength(1);
    expect(reporter.size).toBe(1);
    source.deliver({ type: 'ack', refs: [{ taskId: 1, attempt: 1 }] });
    expect(reporter.size).toBe(0);
    expect(agent.counts).toMatchObject({ started: 2, finished: 1, acked: 1 });
  });

  it('asks for no task while its runner cannot start any (a broken task root)', async () => {
    const { source, runner } = make({ slots: 2 });
    runner.refused = 'the task root is broken: /run/lilcluster/root/bin/sh is missing';
    source.connect();
    expect(source.of('heartbeat')).toHaveLength(1);
    expect(source.of('ready')).toEqual([]);
  });

  it('batches results that finish together into one message', async () => {
    const { source, runner } = make({ slots: 4 });
    source.connect();
    source.deliver({ type: 'tasks', tasks: [task(1), task(2), task(3)] });
    for (const id of [1, 2, 3]) runner.finish(id);
    await ticks();
    expect(source.of('results')).toHaveLength(1);
    expect(source.of('results')[0]!.results.map((r) => r.taskId)).toEqual([1, 2, 3]);
  });

  it('reports running tasks and undelivered results in its next hello, and sends the results again', async () => {
    const { source, runner } = make({ slots: 2 });
    source.connect();
    source.deliver({ type: 'tasks', tasks: [task(1), task(2)] });
    runner.finish(1);
    await ticks();
    source.disconnect();
    const hello = source.handlers!.helloState();
    expect(hello.running.map((r) => r.taskId)).toEqual([2]);
    expect(hello.undelivered).toEqual([{ taskId: 1, attempt: 1 }]);
    source.sent.length = 0;
    source.connect();
    await ticks();
    expect(source.of('results')[0]!.results.map((r) => r.taskId)).toEqual([1]);
    expect(source.of('ready')).toEqual([{ type: 'ready', n: 1 }]); // one slot still busy with task 2
  });

  it('stops a task the dispatcher cancels without reporting it, and fills the slot again', async () => {
    const { source, runner } = make({ slots: 1 });
    source.connect();
    source.deliver({ type: 'tasks', tasks: [task(5, 2)] });
    source.deliver({ type: 'cancel', refs: [{ taskId: 5, attempt: 2 }], reason: 'other copy won', report: false });
    await ticks();
    expect(runner.cancelled).toEqual([{ taskId: 5, reason: 'other copy won' }]);
    expect(source.of('results')).toHaveLength(0);
    expect(source.of('ready').at(-1)).toEqual({ type: 'ready', n: 1 });
  });

  it('queues prefetched tasks and starts them as slots free up', async () => {
    const { source, runner, agent } = make({ slots: 1, prefetch: 2 });
    source.connect();
    expect(source.of('ready')).toEqual([{ type: 'ready', n: 3 }]);
    source.deliver({ type: 'tasks', tasks: [task(1), task(2), task(3)] });
    expect(runner.running).toEqual([1]);
    expect(agent.queued).toBe(2);
    source.disconnect();
    expect(source.handlers!.helloState().running.map((r) => r.taskId)).toEqual([1, 2, 3]); // queued ones are held too
    source.connect();
    runner.finish(1);
    await ticks();
    expect(runner.running).toEqual([2]);
    source.deliver({ type: 'cancel', refs: [{ taskId: 3, attempt: 1 }], reason: 'not leased', report: false });
    expect(agent.queued).toBe(0);
  });

  it('sends progress, throttled', async () => {
    const { source, runner } = make({ slots: 1 });
    source.connect();
    source.deliver({ type: 'tasks', tasks: [task(1)] });
    runner.progress(1, 0.1);
    runner.progress(1, 0.2);
    runner.progress(1, 0.3);
    expect(source.of('progress')).toHaveLength(0);
    await vi.waitFor(() =>
      expect(source.of('progress')).toEqual([{ type: 'progress', items: [{ taskId: 1, attempt: 1, fraction: 0.3 }] }]),
    );
  });

  it('refuses power commands when the machine says so', async () => {
    const power = new FakePower('needs --allow-power');
    const { source } = make({ power });
    source.connect();
    source.deliver({ type: 'control', id: 1, command: { kind: 'reboot' } });
    expect(source.of('control-ack')).toEqual([{ type: 'control-ack', id: 1, ok: false, error: 'needs --allow-power' }]);
    await sleep(POWER_DELAY_MS + 100);
    expect(power.calls).toEqual([]);
  });

  it('acknowledges a reboot, then reboots', async () => {
    const { source, power } = make();
    source.connect();
    source.deliver({ type: 'control', id: 2, command: { kind: 'reboot' } });
    expect(source.of('control-ack')).toEqual([{ type: 'control-ack', id: 2, ok: true }]);
    expect(power.calls).toEqual([]);
    await vi.waitFor(() => expect(power.calls).toEqual(['reboot']), { timeout: POWER_DELAY_MS + 1000 });
  });

  it('runs exec and inspect, streaming exec output', async () => {
    const { source } = make();
    source.connect();
    source.deliver({ type: 'control', id: 3, command: { kind: 'exec', command: 'uname' } });
    source.deliver({ type: 'control', id: 4, command: { kind: 'inspect' } });
    await ticks();
    expect(source.of('control-output')).toEqual([
      { type: 'control-output', id: 3, stream: 'stdout', data: 'hello\n' },
      { type: 'control-output', id: 3, stream: 'stderr', data: 'warn\n' },
    ]);
    expect(source.of('control-done')).toEqual([
      { type: 'control-done', id: 3, ok: true, result: { exitCode: 0, signal: null, durationMs: 3, timedOut: false } },
      { type: 'control-done', id: 4, ok: true, result: { fake: true } },
    ]);
  });

  it('cancels a task for the operator and reports it as cancelled', async () => {
    const { source, runner } = make({ slots: 1 });
    source.connect();
    source.deliver({ type: 'tasks', tasks: [task(9)] });
    source.deliver({ type: 'control', id: 5, command: { kind: 'cancel', taskId: 9 } });
    expect(source.of('control-ack')).toEqual([{ type: 'control-ack', id: 5, ok: true }]);
    await ticks();
    expect(source.of('results')[0]!.results[0]).toMatchObject({
      taskId: 9,
      signal: 'SIGTERM',
      error: 'cancelled: cancelled by the operator',
    });
    source.deliver({ type: 'control', id: 6, command: { kind: 'cancel', taskId: 77 } });
    expect(source.of('control-ack').at(-1)).toMatchObject({ id: 6, ok: false, error: 'task 77 is not running here' });
    expect(runner.cancelled).toHaveLength(1);
  });

  it('does not run a task twice when the same assignment arrives again', () => {
    const { source, runner } = make({ slots: 2 });
    source.connect();
    source.deliver({ type: 'tasks', tasks: [task(1)] });
    source.deliver({ type: 'tasks', tasks: [task(1)] });
    expect(runner.started).toHaveLength(1);
  });
});

describe('agent core: a batch with an assignment it cannot accept', () => {
  it('runs the valid tasks, reports the invalid one failed with the reason, and asks for its slot again', async () => {
    const { source, runner, reporter } = make({ slots: 2 });
    source.connect();
    expect(source.of('ready')).toEqual([{ type: 'ready', n: 2 }]);
    // What the connection makes of a tasks message whose second assignment has timeoutMs 0.
    const partial = decodeForAgent(JSON.stringify({ type: 'tasks', tasks: [task(1), { ...task(2), timeoutMs: 0 }] }));
    source.handlers!.message(partial as AgentInbound);
    expect(runner.started.map((t) => t.taskId)).toEqual([1]);
    await ticks();
    const sent = source.of('results');
    expect(sent).toHaveLength(1);
    expect(sent[0]!.results).toMatchObject([
      { taskId: 2, attempt: 1, exitCode: null, error: expect.stringMatching(/^assignment refused by the agent: \/timeoutMs/) },
    ]);
    expect(sent[0]!.ready).toBe(1); // the refused task's slot, asked for in the same message
    expect(reporter.size).toBe(1);
  });

  it('asks for work again when not even the batch size could be read', async () => {
    const { source } = make({ slots: 3 });
    source.connect();
    source.handlers!.message({ type: 'tasks-partial', tasks: [], refused: [], total: null, problem: 'tasks: not an array' });
    expect(source.of('ready')).toEqual([
      { type: 'ready', n: 3 },
      { type: 'ready', n: 3 },
    ]);
  });
});
