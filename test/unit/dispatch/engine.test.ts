import { afterEach, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { openEngine, node, okResult, tempDir, type Harness } from './helpers.js';
import type { RunningTaskRef } from '../../../dispatcher/src/dispatch/contract.js';
import { DispatcherError } from '../../../dispatcher/src/errors.js';
import { TASKS_BY_STATE, TASKS_DISPATCHED_TOTAL } from '../../../dispatcher/src/metrics/names.js';

const open: Harness[] = [];
function engine(dir?: string, opts?: Parameters<typeof openEngine>[1]): Harness {
  const h = openEngine(dir, opts);
  open.push(h);
  return h;
}
afterEach(() => {
  for (const h of open.splice(0)) {
    try {
      h.close();
    } catch {
      /* closed by the test */
    }
  }
});

const lines = (text: string) => Readable.from([text]);

describe('dispatch engine', () => {
  it('runs a sweep: one task per row, placeholders substituted, results durable and counted', async () => {
    const h = engine();
    const job = await h.engine.submitJob({
      command: ['echo', '{x}', 'and {y}'],
      env: { Y: '{y}' },
      stdin: 'in {x}',
      params: [
        { x: 1, y: 'a' },
        { x: 2, y: 'b' },
      ],
    });
    expect(job.counts).toMatchObject({ total: 2, queued: 2 });
    const tasks = h.engine.takeTasks(node(1), 10);
    expect(tasks.map((t) => [t.command, t.env, Buffer.from(t.stdinB64!, 'base64').toString()])).toEqual([
      [['echo', '1', 'and a'], { Y: 'a' }, 'in 1'],
      [['echo', '2', 'and b'], { Y: 'b' }, 'in 2'],
    ]);
    expect(h.engine.getJob(job.id).counts).toMatchObject({ running: 2, queued: 0 });
    expect(await h.engine.submitResults(node(1), [okResult(tasks[0]!), okResult(tasks[1]!, { exitCode: 3 })])).toEqual([
      'recorded',
      'recorded',
    ]);
    expect(h.engine.getJob(job.id)).toMatchObject({ state: 'done', counts: { done: 1, failed: 1, running: 0, queued: 0 } });
    // Durable: a fresh look at the database sees the results.
    expect(h.db.prepare('SELECT count(*) FROM results').pluck().get()).toBe(2);
    expect(h.events.list({ kind: 'job.' }).map((e) => e.kind)).toEqual(['job.submitted', 'job.done']);
  });

  it('records a task once: the second copy of a result is a duplicate, a result from a node that never had the task is stale', async () => {
    const h = engine();
    await h.engine.submitJob({ command: ['true'] });
    const [t] = h.engine.takeTasks(node(1), 1);
    expect(await h.engine.submitResults(node(1), [okResult(t!)])).toEqual(['recorded']);
    expect(await h.engine.submitResults(node(1), [okResult(t!)])).toEqual(['duplicate']);
    expect(await h.engine.submitResults(node(2), [okResult({ taskId: 999, attempt: 1 })])).toEqual(['stale']);
    expect(h.db.prepare('SELECT count(*) FROM results').pluck().get()).toBe(1);
    expect(h.engine.stats()).toMatchObject({ duplicates: 1, stale: 1, done: 1 });
  });

  it('retries timeouts and start errors up to the attempts, then records the last failure as the result', async () => {
    const h = engine();
    const job = await h.engine.submitJob({ command: ['sleep', '100'], timeoutSeconds: 1, maxAttempts: 2 });
    const [a1] = h.engine.takeTasks(node(1), 1);
    expect(await h.engine.submitResults(node(1), [okResult(a1!, { exitCode: null, signal: 'SIGKILL', timedOut: true })])).toEqual([
      'recorded',
    ]);
    expect(h.engine.getJob(job.id).counts).toMatchObject({ queued: 1, failed: 0 });
    const [a2] = h.engine.takeTasks(node(2), 1);
    expect(a2!.attempt).toBe(2);
    await h.engine.submitResults(node(2), [okResult(a2!, { exitCode: null, error: 'spawn sleep ENOENT' })]);
    const task = h.engine.getTask(a1!.taskId);
    expect(task).toMatchObject({ state: 'failed', attempts: 2, result: { attempt: 2, error: 'spawn sleep ENOENT' } });
    expect(task.failures).toEqual([expect.objectContaining({ attempt: 1, reason: 'timed out' })]);
    expect(h.events.list({ kind: 'task.failed' })).toHaveLength(1);
  });

  it('hands the tasks of a lost node out again at once and tells the hub tasks are available', async () => {
    const h = engine();
    await h.engine.submitJob({ command: ['true'], tasks: [{}, {}] });
    let available = 0;
    h.engine.onTasksAvailable(() => available++);
    const first = h.engine.takeTasks(node(1), 2);
    expect(first).toHaveLength(2);
    expect(h.engine.takeTasks(node(2), 2)).toHaveLength(0);
    h.engine.nodeLost(node(1).mac);
    await new Promise((r) => setImmediate(r));
    expect(available).toBe(1);
    expect(h.engine.takeTasks(node(2), 2).map((t) => t.attempt)).toEqual([2, 2]);
  });

  it('expires leases (timeout plus grace) on its tick and hands the task out again', async () => {
    const clock = { t: 1_000_000 };
    const h = engine(undefined, { clock, leaseGraceSeconds: 5 });
    await h.engine.submitJob({ command: ['true'], timeoutSeconds: 10 });
    h.engine.takeTasks(node(1), 1);
    clock.t += 14_999;
    h.engine.tick();
    expect(h.engine.takeTasks(node(2), 1)).toHaveLength(0);
    clock.t += 1;
    h.engine.tick();
    expect(h.engine.takeTasks(node(2), 1)[0]).toMatchObject({ attempt: 2 });
  });

  it('gives a speculative copy to an idle node, takes the first result and cancels the other copy', async () => {
    const clock = { t: 1_000_000 };
    const h = engine(undefined, { clock });
    const job = await h.engine.submitJob({ command: ['work', '{i}'], params: [0, 1, 2, 3].map((i) => ({ i })) });
    const cancels: { mac: string; ref: RunningTaskRef; reason: string }[] = [];
    h.engine.onCancel((mac, ref, reason) => cancels.push({ mac, ref, reason }));
    const fast = h.engine.takeTasks(node(1), 3);
    const [slow] = h.engine.takeTasks(node(2), 1);
    await h.engine.submitResults(
      node(1),
      fast.map((t) => okResult(t, { durationMs: 1000 })),
    );
    clock.t += 2001;
    h.engine.tick();
    const [copy] = h.engine.takeTasks(node(3), 1);
    expect(copy).toMatchObject({ taskId: slow!.taskId, attempt: 2 });
    expect(h.engine.getTask(slow!.taskId).copies.map((c) => c.speculative)).toEqual([false, true]);
    expect(await h.engine.submitResults(node(3), [okResult(copy!)])).toEqual(['recorded']);
    expect(cancels).toEqual([{ mac: node(2).mac, ref: { taskId: slow!.taskId, attempt: 1 }, reason: 'another copy finished first' }]);
    expect(await h.engine.submitResults(node(2), [okResult(slow!)])).toEqual(['duplicate']);
    expect(h.engine.getJob(job.id).counts.done).toBe(4);
  });

  it('does not copy tasks of a job that switched speculation off', async () => {
    const clock = { t: 1_000_000 };
    const h = engine(undefined, { clock });
    await h.engine.submitJob({ command: ['w', '{i}'], speculative: false, params: [0, 1, 2, 3].map((i) => ({ i })) });
    const fast = h.engine.takeTasks(node(1), 3);
    h.engine.takeTasks(node(2), 1);
    await h.engine.submitResults(
      node(1),
      fast.map((t) => okResult(t, { durationMs: 1000 })),
    );
    clock.t += 100_000;
    expect(h.engine.takeTasks(node(3), 1)).toHaveLength(0);
  });

  it('matches requirements: a task no node can run waits without blocking the others', async () => {
    const h = engine();
    const gpu = await h.engine.submitJob({ command: ['train'], priority: 10, requirements: { labels: ['gpu'], minMemoryMiB: 4096 } });
    const cpu = await h.engine.submitJob({ command: ['crunch'] });
    expect(h.engine.takeTasks(node(1), 5).map((t) => t.jobId)).toEqual([cpu.id]);
    expect(h.engine.takeTasks(node(2, ['gpu'], 4, 2048), 5)).toHaveLength(0);
    expect(h.engine.takeTasks(node(3, ['gpu'], 4, 8192), 5).map((t) => t.jobId)).toEqual([gpu.id]);
  });

  it('hands out higher priorities first, across jobs', async () => {
    const h = engine();
    const low = await h.engine.submitJob({ command: ['a'], tasks: [{}, {}], priority: -1 });
    const mid = await h.engine.submitJob({ command: ['b'], tasks: [{}, {}] });
    const high = await h.engine.submitJob({ command: ['c'], tasks: [{}], priority: 5 });
    expect(h.engine.takeTasks(node(1), 10).map((t) => t.jobId)).toEqual([high.id, mid.id, mid.id, low.id, low.id]);
  });

  it('applies per-task overrides over the template', async () => {
    const h = engine();
    await h.engine.submitJob({
      command: ['default'],
      env: { A: '1', B: '2' },
      stdin: 'x',
      tasks: [{}, { command: 'echo over', env: { B: '3' }, cwd: 'sub', stdinB64: 'AAE=' }],
    });
    const [a, b] = h.engine.takeTasks(node(1), 2);
    expect(a).toMatchObject({ command: ['default'], env: { A: '1', B: '2' }, cwd: null, stdinB64: Buffer.from('x').toString('base64') });
    expect(b).toMatchObject({ command: 'echo over', env: { A: '1', B: '3' }, cwd: 'sub', stdinB64: 'AAE=' });
  });

  it('cancels a job: queued tasks never run, running copies are cancelled, late results are dropped', async () => {
    const h = engine();
    const job = await h.engine.submitJob({ command: ['x', '{i}'], params: [1, 2, 3, 4].map((i) => ({ i })) });
    const cancels: RunningTaskRef[] = [];
    h.engine.onCancel((_m, ref) => cancels.push(ref));
    const running = h.engine.takeTasks(node(1), 1);
    await h.engine.submitResults(node(1), [okResult(running[0]!)]);
    const [r2] = h.engine.takeTasks(node(1), 1);
    const v = await h.engine.cancelJob(job.id);
    expect(v).toMatchObject({ state: 'cancelled', counts: { done: 1, cancelled: 3, queued: 0, running: 0 } });
    expect(cancels).toEqual([{ taskId: r2!.taskId, attempt: 1 }]);
    expect(h.engine.takeTasks(node(2), 10)).toHaveLength(0);
    expect(await h.engine.submitResults(node(1), [okResult(r2!)])).toEqual(['stale']);
    expect(h.engine.listTasks({ jobId: job.id, state: 'cancelled' }).tasks.map((t) => t.index)).toEqual([1, 2, 3]);
    expect(h.engine.stats()).toMatchObject({ cancelled: 3, done: 1, queued: 0 });
  });

  it('cancels one task, queued or running', async () => {
    const h = engine();
    const job = await h.engine.submitJob({ command: ['x', '{i}'], params: [1, 2, 3].map((i) => ({ i })) });
    const [t1] = h.engine.takeTasks(node(1), 1);
    const cancels: RunningTaskRef[] = [];
    h.engine.onCancel((_m, ref) => cancels.push(ref));
    expect((await h.engine.cancelTask(t1!.taskId)).state).toBe('cancelled');
    expect(cancels).toEqual([{ taskId: t1!.taskId, attempt: 1 }]);
    expect((await h.engine.cancelTask(job.firstTaskId + 2)).state).toBe('cancelled');
    const rest = h.engine.takeTasks(node(1), 10);
    expect(rest.map((t) => t.taskId)).toEqual([job.firstTaskId + 1]);
    await h.engine.submitResults(
      node(1),
      rest.map((t) => okResult(t)),
    );
    expect(h.engine.getJob(job.id)).toMatchObject({ state: 'done', counts: { done: 1, cancelled: 2 } });
    await expect(h.engine.cancelTask(424242)).rejects.toMatchObject({ code: 'DSP_ERR_TASK_NOT_FOUND' });
  });

  it('lists tasks page by page and by state', async () => {
    const h = engine();
    const job = await h.engine.submitJob({ command: ['x', '{i}'], params: Array.from({ length: 25 }, (_, i) => ({ i })) });
    const out = h.engine.takeTasks(node(1), 5);
    await h.engine.submitResults(
      node(1),
      out.slice(0, 2).map((t) => okResult(t)),
    );
    const ids: number[] = [];
    let after: number | undefined;
    for (;;) {
      const page = h.engine.listTasks({ jobId: job.id, afterId: after, limit: 10 });
      ids.push(...page.tasks.map((t) => t.id));
      if (page.nextAfterId === null) break;
      after = page.nextAfterId;
    }
    expect(ids).toEqual(Array.from({ length: 25 }, (_, i) => job.firstTaskId + i));
    expect(h.engine.listTasks({ jobId: job.id, state: 'done' }).tasks.map((t) => t.index)).toEqual([0, 1]);
    // A finished task says where its result came from and after how many hand-outs (the page shows both).
    expect(h.engine.listTasks({ jobId: job.id, state: 'done' }).tasks[0]).toMatchObject({ ranOn: node(1).mac, attempts: 1 });
    expect(h.engine.listTasks({ jobId: job.id, state: 'queued' }).tasks[0]!.ranOn).toBeNull();
    expect(h.engine.listTasks({ jobId: job.id, state: 'running' }).tasks.map((t) => t.index)).toEqual([2, 3, 4]);
    expect(h.engine.listTasks({ jobId: job.id, state: 'queued' }).tasks).toHaveLength(20);
    expect(h.engine.listTasks({ state: 'running' }).tasks[0]).toMatchObject({ nodes: [node(1).mac], params: { i: '2' } });
    expect(() => h.engine.listTasks({ jobId: 999 })).toThrow(DispatcherError);
  });

  it('keeps progress fractions in memory for the page', async () => {
    const h = engine();
    await h.engine.submitJob({ command: ['x'] });
    const [t] = h.engine.takeTasks(node(1), 1);
    h.engine.progress(node(1).mac, t!, 0.42);
    expect(h.engine.getTask(t!.taskId)).toMatchObject({ state: 'running', progress: 0.42, copies: [{ progress: 0.42 }] });
  });

  it('registers its figures for /metrics', async () => {
    const h = engine();
    await h.engine.submitJob({ command: ['x'], tasks: [{}, {}, {}] });
    h.engine.takeTasks(node(1), 1);
    expect(h.metrics.value(TASKS_BY_STATE, { state: 'queued' })).toBe(2);
    expect(h.metrics.value(TASKS_BY_STATE, { state: 'running' })).toBe(1);
    expect(h.metrics.value(TASKS_DISPATCHED_TOTAL)).toBe(1);
    expect(h.metrics.render()).toContain('lilcluster_dispatch_result_commit_seconds');
  });

  describe('streamed sweeps', () => {
    it('queues one task per CSV row and keeps the columns', async () => {
      const h = engine();
      const job = await h.engine.submitJobStream(
        { command: ['run', '{a}', '{b}'] },
        'csv',
        lines('a,b,note\n1,x,first\n2,"y, z",second\n'),
      );
      expect(job).toMatchObject({ columns: ['a', 'b', 'note'], counts: { total: 2 } });
      expect(h.engine.takeTasks(node(1), 5).map((t) => t.command)).toEqual([
        ['run', '1', 'x'],
        ['run', '2', 'y, z'],
      ]);
    });

    it('refuses a file with a missing field, naming the line, and queues nothing', async () => {
      const h = engine();
      const rows = ['{"x": 1}', '{"x": 2}', '{"y": 3}'].join('\n');
      const err = await h.engine.submitJobStream({ command: ['e', '{x}'] }, 'jsonl', lines(rows)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DispatcherError);
      expect((err as DispatcherError).message).toBe('params line 3, column "x": missing field "x" (the command uses {x})');
      expect(h.engine.listJobs()).toHaveLength(0);
      expect(h.db.prepare('SELECT count(*) FROM tasks').pluck().get()).toBe(0);
    });

    it('removes staged rows when a big file fails late', async () => {
      const h = engine();
      const gen = function* () {
        yield 'x\n';
        for (let i = 0; i < 60_000; i++) yield `${i}\n`;
        yield '1,2\n';
      };
      const err = await h.engine.submitJobStream({ command: ['e', '{x}'] }, 'csv', Readable.from(gen())).catch((e: unknown) => e);
      expect((err as Error).message).toMatch(/^params line 60002: 2 fields/);
      expect(h.db.prepare('SELECT count(*) FROM tasks').pluck().get()).toBe(0);
      expect(h.db.prepare('SELECT count(*) FROM jobs').pluck().get()).toBe(0);
      const ok = await h.engine.submitJob({ command: ['true'] });
      expect(h.engine.takeTasks(node(1), 1)[0]!.taskId).toBe(ok.firstTaskId);
    });
  });

  describe('after a restart', () => {
    it('keeps a task whose lease the node still holds: the node delivers, nothing runs twice', async () => {
      const dir = tempDir();
      const a = engine(dir);
      await a.engine.submitJob({ command: ['x', '{i}'], params: [1, 2, 3].map((i) => ({ i })) });
      const held = a.engine.takeTasks(node(1), 2);
      a.close();
      const b = engine(dir);
      await b.engine.ready;
      // Task 3 was never handed out: it is queued; 1 and 2 wait for node 1.
      expect(b.engine.takeTasks(node(2), 5).map((t) => t.taskId)).toEqual([held[1]!.taskId + 1]);
      const r = b.engine.readopt(
        node(1),
        held.map((t) => ({ taskId: t.taskId, attempt: t.attempt })),
      );
      expect(r.keep).toHaveLength(2);
      expect(
        await b.engine.submitResults(
          node(1),
          held.map((t) => okResult(t)),
        ),
      ).toEqual(['recorded', 'recorded']);
      expect(b.db.prepare('SELECT max(attempt) FROM results').pluck().get()).toBe(1);
    });

    it('hands out again the tasks whose node does not come back within their lease, and records a late result once', async () => {
      const dir = tempDir();
      const clock = { t: 5_000_000 };
      const a = engine(dir, { clock, leaseGraceSeconds: 1 });
      await a.engine.submitJob({ command: ['x'], timeoutSeconds: 2 });
      const [t] = a.engine.takeTasks(node(1), 1);
      a.close();
      clock.t += 3001;
      const b = engine(dir, { clock, leaseGraceSeconds: 1 });
      const [again] = b.engine.takeTasks(node(2), 1);
      expect(again).toMatchObject({ taskId: t!.taskId, attempt: 2 });
      // The first node shows up late with its result: first wins, the new copy is cancelled.
      const cancels: RunningTaskRef[] = [];
      b.engine.onCancel((_m, ref) => cancels.push(ref));
      expect(await b.engine.submitResults(node(1), [okResult(t!)])).toEqual(['recorded']);
      expect(cancels).toEqual([{ taskId: t!.taskId, attempt: 2 }]);
      expect(await b.engine.submitResults(node(2), [okResult(again!)])).toEqual(['duplicate']);
    });

    it('serves at once with a big backlog and reads the rest back as it is needed, in order', async () => {
      const dir = tempDir();
      const a = engine(dir);
      const gen = function* () {
        yield 'i\n';
        for (let i = 0; i < 120_000; i += 1000) yield Array.from({ length: 1000 }, (_, k) => `${i + k}\n`).join('');
      };
      const low = await a.engine.submitJobStream({ command: ['w', '{i}'] }, 'csv', Readable.from(gen()));
      const high = await a.engine.submitJob({ command: ['h'], priority: 3 });
      a.close();
      const b = engine(dir);
      expect(b.engine.stats()).toMatchObject({ recovering: true, queued: 120_001 });
      const first = b.engine.takeTasks(node(1), 3);
      expect(first.map((t) => t.jobId)).toEqual([high.id, low.id, low.id]);
      const ids: number[] = first.slice(1).map((t) => t.taskId);
      for (;;) {
        const batch = b.engine.takeTasks(node(1), 10_000);
        if (batch.length === 0) break;
        expect(batch.length).toBe(Math.min(10_000, 120_000 - ids.length)); // never short while more is on disk
        ids.push(...batch.map((t) => t.taskId));
      }
      expect(ids).toHaveLength(120_000);
      expect(ids).toEqual([...ids].sort((x, y) => x - y));
      expect(new Set(ids).size).toBe(120_000);
      expect(b.engine.stats()).toMatchObject({ recovering: false, queued: 0, running: 120_001 });
    });

    it('finishes a submission interrupted mid-way by removing its staged rows', async () => {
      const dir = tempDir();
      const a = engine(dir);
      // What a crash during staging leaves: a staging job and some of its rows.
      a.db
        .prepare(
          `INSERT INTO jobs (id, name, spec, state, priority, first_task_id, task_count, submitted_at) VALUES (7, NULL, '{}', 'staging', 0, 1, 0, 0)`,
        )
        .run();
      a.db.prepare('INSERT INTO tasks (id, job_id, vars) VALUES (1, 7, NULL), (2, 7, NULL)').run();
      a.close();
      const b = engine(dir);
      expect(b.db.prepare('SELECT count(*) FROM tasks').pluck().get()).toBe(0);
      expect(b.engine.listJobs()).toHaveLength(0);
      await b.engine.submitJob({ command: ['x'] });
      expect(b.engine.takeTasks(node(1), 1)).toHaveLength(1);
    });
  });
});
