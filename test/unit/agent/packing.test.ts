/**
 * The agent packs tasks by cores, memory and GPUs: it never runs more than it hands out, starts
 * tasks in order as room frees, and asks for work with what it has free (`ready {free}`).
 */
import { describe, expect, it } from 'vitest';
import { Agent } from '../../../node-agent/src/agent.js';
import type { Resources, TaskAssignment } from '../../../dispatcher/src/protocol/messages.js';
import { FakeInventory, FakePower, FakeReporter, FakeRunner, FakeSource, trueTask } from './fakes.js';

const task = (taskId: number, resources?: Resources): TaskAssignment => trueTask(taskId, resources ? { resources } : {});
const ticks = async (n = 3) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

function make(cores: number, memMiB: number, prefetch = 0, gpus = 0) {
  const source = new FakeSource();
  const runner = new FakeRunner();
  const reporter = new FakeReporter();
  const lines: string[] = [];
  const agent = new Agent(
    { source, runner, reporter, inventory: new FakeInventory(), power: new FakePower() },
    { slots: cores, prefetch, execTimeoutMs: 1000, say: (l) => lines.push(l), resources: { cores, memMiB, gpus, enforced: true } },
  );
  agent.start();
  return { agent, source, runner, reporter, lines };
}

describe('agent packing by resources', () => {
  it('asks with its free resources, and again with what a finished task freed', async () => {
    const { source, runner } = make(4, 1000);
    source.connect();
    expect(source.of('ready')).toEqual([{ type: 'ready', n: 4, free: { cores: 4, memMiB: 1000, gpus: 0 } }]);
    source.deliver({ type: 'tasks', tasks: [task(1, { cores: 2, memMiB: 600, gpus: 0 }), task(2)] });
    expect(runner.started.map((t) => t.taskId)).toEqual([1, 2]);
    runner.finish(1);
    await ticks();
    const r = source.of('results');
    expect(r).toHaveLength(1);
    // Held: task 2 (1 core). Asked for and not received: 2 tasks; 4 cores and 1000 MiB less tasks 1 and 2's.
    // To ask: 4 - 1 (running) - 2 = 1 task; 4 - 1 - 1 = 2 cores; 1000 - 400 = 600 MiB.
    expect(r[0]).toMatchObject({ ready: 1, free: { cores: 2, memMiB: 600, gpus: 0 } });
  });

  it('never runs more cores, memory or GPUs than it hands out, starting queued tasks in order as room frees', async () => {
    const { source, runner, agent } = make(4, 1000, 4, 1);
    source.connect();
    source.deliver({
      type: 'tasks',
      tasks: [
        task(1, { cores: 3, memMiB: 100, gpus: 0 }),
        task(2, { cores: 2, memMiB: 100, gpus: 0 }), // waits for cores
        task(3), // behind it: no overtaking
        task(4, { cores: 1, memMiB: 950, gpus: 1 }),
      ],
    });
    expect(runner.started.map((t) => t.taskId)).toEqual([1]);
    expect(agent.allocated).toEqual({ cores: 3, memMiB: 100, gpus: 0 });
    runner.finish(1);
    await ticks();
    expect(runner.started.map((t) => t.taskId)).toEqual([1, 2, 3]);
    expect(agent.allocated).toEqual({ cores: 3, memMiB: 100, gpus: 0 });
    // Task 4's 950 MiB do not fit beside task 2's 100 (1000 handed out): it waits, though a core is free.
    runner.finish(3);
    await ticks();
    expect(runner.started.map((t) => t.taskId)).toEqual([1, 2, 3]);
    runner.finish(2);
    await ticks();
    expect(runner.started.map((t) => t.taskId)).toEqual([1, 2, 3, 4]);
    expect(agent.allocated).toEqual({ cores: 1, memMiB: 950, gpus: 1 });
  });

  it('gives a GPU task GPUs of its own (CUDA_VISIBLE_DEVICES), and takes them back when it ends', async () => {
    const { source, runner } = make(4, 1000, 0, 3);
    source.connect();
    source.deliver({ type: 'tasks', tasks: [task(1, { cores: 1, memMiB: 0, gpus: 2 }), task(2, { cores: 1, memMiB: 0, gpus: 1 })] });
    expect(runner.started.map((t) => [t.taskId, t.env.CUDA_VISIBLE_DEVICES])).toEqual([
      [1, '0,1'],
      [2, '2'],
    ]);
    runner.finish(1);
    await ticks();
    source.deliver({ type: 'tasks', tasks: [task(3, { cores: 1, memMiB: 0, gpus: 2 })] });
    expect(runner.started.at(-1)!.env.CUDA_VISIBLE_DEVICES).toBe('0,1');
  });

  it('reports a task larger than the whole node as not started, and goes on', async () => {
    const { source, runner, reporter, lines } = make(2, 500);
    source.connect();
    source.deliver({ type: 'tasks', tasks: [task(1, { cores: 1, memMiB: 501, gpus: 0 }), task(2)] });
    expect(runner.started.map((t) => t.taskId)).toEqual([2]);
    expect(reporter.results.get('1:1')?.error).toMatch(/needs 1 cores, 501 MiB .* this node hands out 2 cores, 500 MiB/);
    expect(lines.join('\n')).toMatch(/task 1 attempt 1 refused/);
  });

  it('asks for nothing while every core is held or asked for, and says what it holds in heartbeats', () => {
    const { source } = make(2, 500);
    source.connect();
    expect(source.of('ready')).toHaveLength(1);
    source.deliver({ type: 'tasks', tasks: [task(1, { cores: 2, memMiB: 0, gpus: 0 })] });
    expect(source.of('ready')).toHaveLength(1);
    source.handlers!.connected({ nodeName: 'n', heartbeatMs: 60_000, missedHeartbeats: 3, maxMessageBytes: 1 << 20, verified: true });
    expect(source.of('heartbeat').at(-1)).toMatchObject({ allocated: { cores: 2, memMiB: 0, gpus: 0 } });
  });
});
