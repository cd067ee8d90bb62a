/**
 * `submit --retries N`: a task that exits non-zero runs again on a node it has not failed on,
 * up to N more times, the last attempt's result being the task's; the nodes it failed on are
 * avoided across a dispatcher restart (attempt_failures keeps their exit codes).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { node, okResult, openEngine, tempDir, type Harness } from './helpers.js';
import type { AttemptEnd } from '../../../dispatcher/src/nodes/suspect.js';

const open: Harness[] = [];
afterEach(() => {
  for (const h of open.splice(0)) h.close();
});
function engine(dir?: string): Harness {
  const h = openEngine(dir);
  open.push(h);
  return h;
}

describe('retries of a non-zero exit on another node', () => {
  it('moves a failed task to another node, never back to the one it failed on', async () => {
    const h = engine();
    const ended: AttemptEnd[] = [];
    h.engine.onAttemptEnded((a) => ended.push(a));
    const job = await h.engine.submitJob({ command: ['run'], retries: 2 });
    expect(job.retries).toBe(2);
    const [a] = h.engine.takeTasks(node(1), 1);
    await h.engine.submitResults(node(1), [okResult(a!, { exitCode: 3, stderr: 'no libfoo' })]);
    expect(h.engine.getTask(a!.taskId)).toMatchObject({ state: 'queued', failedOn: [node(1).mac] });
    // The node it failed on gets nothing, however often it asks; another node gets it.
    expect(h.engine.takeTasks(node(1), 4)).toEqual([]);
    const [b] = h.engine.takeTasks(node(2), 4);
    expect(b).toMatchObject({ taskId: a!.taskId, attempt: 2 });
    await h.engine.submitResults(node(2), [okResult(b!)]);
    const t = h.engine.getTask(a!.taskId);
    expect(t).toMatchObject({ state: 'done', attempts: 2, exitCode: 0, retries: 2, failedOn: [node(1).mac] });
    expect(t.failures).toEqual([expect.objectContaining({ attempt: 1, mac: node(1).mac, reason: 'exit code 3', exitCode: 3 })]);
    expect(t.result).toMatchObject({ attempt: 2, mac: node(2).mac });
    expect(h.engine.listTasks({ jobId: job.id }).tasks[0]).toMatchObject({ state: 'done', attempts: 2 });
    // Both attempts reached the listeners (suspect detection), with their nodes.
    expect(ended.map((e) => [e.mac, e.exitCode])).toEqual([
      [node(1).mac, 3],
      [node(2).mac, 0],
    ]);
  });

  it('ends failed with the last attempt once its retries are spent', async () => {
    const h = engine();
    await h.engine.submitJob({ command: ['run'], retries: 1 });
    const [a] = h.engine.takeTasks(node(1), 1);
    await h.engine.submitResults(node(1), [okResult(a!, { exitCode: 1 })]);
    const [b] = h.engine.takeTasks(node(2), 1);
    await h.engine.submitResults(node(2), [okResult(b!, { exitCode: 7, stdout: 'second' })]);
    const t = h.engine.getTask(a!.taskId);
    expect(t).toMatchObject({ state: 'failed', attempts: 2, exitCode: 7, failedOn: [node(1).mac] });
    expect(t.result).toMatchObject({ attempt: 2, mac: node(2).mac, stdout: 'second' });
    expect(h.engine.takeTasks(node(3), 1)).toEqual([]);
    expect(h.events.recent().find((e) => e.kind === 'task.failed')?.message).toMatch(/failed after 2 attempts: exit code 7/);
  });

  it('without retries a non-zero exit is the result at once, as before', async () => {
    const h = engine();
    await h.engine.submitJob({ command: ['run'] });
    const [a] = h.engine.takeTasks(node(1), 1);
    await h.engine.submitResults(node(1), [okResult(a!, { exitCode: 2 })]);
    expect(h.engine.getTask(a!.taskId)).toMatchObject({ state: 'failed', attempts: 1, exitCode: 2, failures: [] });
  });

  it('a retry waits while the only nodes left are those it failed on', async () => {
    const h = engine();
    await h.engine.submitJob({ command: ['run'], retries: 3 });
    const [a] = h.engine.takeTasks(node(1), 1);
    await h.engine.submitResults(node(1), [okResult(a!, { exitCode: 1 })]);
    const [b] = h.engine.takeTasks(node(2), 1);
    await h.engine.submitResults(node(2), [okResult(b!, { exitCode: 1 })]);
    expect(h.engine.takeTasks(node(1), 1)).toEqual([]);
    expect(h.engine.takeTasks(node(2), 1)).toEqual([]);
    expect(h.engine.getTask(a!.taskId)).toMatchObject({ state: 'queued', failedOn: [node(1).mac, node(2).mac] });
    expect(h.engine.takeTasks(node(3), 1)).toMatchObject([{ taskId: a!.taskId, attempt: 3 }]);
  });

  it('other tasks of the job still go to the node a retry avoids', async () => {
    const h = engine();
    await h.engine.submitJob({ command: ['run', '{i}'], params: [{ i: 1 }, { i: 2 }, { i: 3 }], retries: 1 });
    const [a] = h.engine.takeTasks(node(1), 1);
    await h.engine.submitResults(node(1), [okResult(a!, { exitCode: 1 })]);
    // The retried task waits ahead of the fresh ones, but not for node1: it gets the next fresh task.
    const got = h.engine.takeTasks(node(1), 2);
    expect(got.map((t) => t.taskId)).toEqual([a!.taskId + 1, a!.taskId + 2]);
  });

  it('remembers the nodes to avoid across a restart', async () => {
    const dir = tempDir();
    const h = engine(dir);
    await h.engine.submitJob({ command: ['run'], retries: 2 });
    const [a] = h.engine.takeTasks(node(1), 1);
    await h.engine.submitResults(node(1), [okResult(a!, { exitCode: 1 })]);
    h.close();
    open.splice(open.indexOf(h), 1);
    const h2 = engine(dir);
    expect(h2.engine.takeTasks(node(1), 1)).toEqual([]);
    expect(h2.engine.takeTasks(node(2), 1)).toMatchObject([{ taskId: a!.taskId, attempt: 2 }]);
  });

  it('refuses retries out of bounds, naming the field', async () => {
    const h = engine();
    await expect(h.engine.submitJob({ command: ['run'], retries: -1 })).rejects.toThrow(/retries/);
    await expect(h.engine.submitJob({ command: ['run'], retries: 101 })).rejects.toThrow(/retries/);
  });
});
