/**
 * Task resources on the dispatcher's side: the ring hands a node only tasks whose requests fit
 * what it said it has free, a request larger than every node is refused at submission with
 * the field named, and a task killed for memory is a final failure (outcome oom).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TaskRing, type RingJobSpec } from '../../../dispatcher/src/dispatch/ring.js';
import type { NodeCapacity } from '../../../dispatcher/src/dispatch/contract.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';
import type { Resources, TaskResult } from '../../../dispatcher/src/protocol/messages.js';
import { knownNode, requestTooLarge } from '../../../dispatcher/src/dispatch/resources.js';
import { classify, oomText } from '../../../dispatcher/src/dispatch/result-recorder.js';
import { validateSubmission } from '../../../dispatcher/src/dispatch/submission.js';
import type { DispatcherError } from '../../../dispatcher/src/errors.js';
import { okResult } from '../agent/fakes.js';

const node = (alloc?: Resources, cores = 4, memoryMiB = 4096): NodeCapacity => ({
  mac: '52:54:00:00:00:01' as Mac,
  name: 'node1',
  labels: [],
  cores,
  memoryMiB,
  ...(alloc ? { alloc } : {}),
});

function spec(id: number, request?: Resources, priority = 0): RingJobSpec {
  return {
    id,
    priority,
    timeoutMs: 60_000,
    maxAttempts: 3,
    requirements: { labels: [], minCores: 0, minMemoryMiB: 0, ...(request ? { request } : {}) },
    speculative: false,
  };
}

function ringWith(...jobs: [RingJobSpec, number, number][]): TaskRing {
  const ring = new TaskRing({ now: () => 1_000, leaseGraceMs: 1000, speculativeK: 2 });
  for (const [s, from, to] of jobs) ring.enqueue(ring.addJob(s), from, to);
  return ring;
}

describe('hand-outs by resources', () => {
  it('spends each task’s request from the free resources and stops when nothing fits', () => {
    const ring = ringWith([spec(1, { cores: 2, memMiB: 1000, gpus: 0 }), 1, 10]);
    const free = { cores: 5, memMiB: 4000, gpus: 0 };
    expect(ring.take(node({ cores: 8, memMiB: 8000, gpus: 0 }), 100, free).map((h) => h.task.id)).toEqual([1, 2]);
    expect(free).toEqual({ cores: 1, memMiB: 2000, gpus: 0 });
    expect(ring.take(node({ cores: 8, memMiB: 8000, gpus: 0 }), 100, free)).toEqual([]);
  });

  it('counts a task without a request as one core and no memory', () => {
    const ring = ringWith([spec(1), 1, 10]);
    const free = { cores: 3, memMiB: 0, gpus: 0 };
    expect(ring.take(node({ cores: 4, memMiB: 0, gpus: 0 }), 100, free)).toHaveLength(3);
    expect(free).toEqual({ cores: 0, memMiB: 0, gpus: 0 });
  });

  it('lets smaller requests past a big one that does not fit now (backfill), and hands the big one when it fits', () => {
    const ring = ringWith([spec(1, { cores: 4, memMiB: 0, gpus: 0 }, 5), 1, 1], [spec(2), 2, 3]);
    const n = node({ cores: 4, memMiB: 1000, gpus: 0 });
    expect(ring.take(n, 10, { cores: 2, memMiB: 1000, gpus: 0 }).map((h) => h.task.id)).toEqual([2, 3]);
    expect(ring.take(n, 10, { cores: 4, memMiB: 1000, gpus: 0 }).map((h) => h.task.id)).toEqual([1]);
  });

  it('never hands a node a request larger than it allocates at all, nor GPUs it does not have', () => {
    const ring = ringWith([spec(1, { cores: 1, memMiB: 5000, gpus: 0 }), 1, 1], [spec(2, { cores: 1, memMiB: 0, gpus: 1 }), 2, 2]);
    const small = node({ cores: 4, memMiB: 4000, gpus: 0 });
    expect(ring.hasWorkFor(small)).toBe(false);
    expect(ring.take(small, 10, { cores: 4, memMiB: 100_000, gpus: 5 })).toEqual([]);
    // An agent that said nothing of GPUs has none; one that did gets the GPU task.
    expect(ring.take(node(), 10)).toEqual([]);
    const gpuNode = node({ cores: 4, memMiB: 8000, gpus: 1 });
    expect(ring.take(gpuNode, 10, { cores: 4, memMiB: 8000, gpus: 1 }).map((h) => h.task.id)).toEqual([1, 2]);
  });

  it('without free resources (an agent that counts slots only) hands out by count as before', () => {
    const ring = ringWith([spec(1, { cores: 2, memMiB: 100, gpus: 0 }), 1, 10]);
    expect(ring.take(node(), 3)).toHaveLength(3);
  });

  it('never hands out more than the free resources, whatever the mix (property)', () => {
    const req = fc.record({
      cores: fc.integer({ min: 1, max: 4 }),
      memMiB: fc.integer({ min: 0, max: 2000 }),
      gpus: fc.integer({ min: 0, max: 1 }),
    });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.option(req, { nil: undefined }), fc.integer({ min: 1, max: 5 })), { minLength: 1, maxLength: 6 }),
        fc.record({
          cores: fc.integer({ min: 0, max: 8 }),
          memMiB: fc.integer({ min: 0, max: 4000 }),
          gpus: fc.integer({ min: 0, max: 2 }),
        }),
        (jobs, free0) => {
          let next = 1;
          const ring = ringWith(
            ...jobs.map(([r, n], i): [RingJobSpec, number, number] => {
              const from = next;
              next += n;
              return [spec(i + 1, r), from, from + n - 1];
            }),
          );
          const free = { ...free0 };
          const hs = ring.take(node({ cores: 8, memMiB: 4000, gpus: 2 }), 1000, free);
          const spent = { cores: 0, memMiB: 0, gpus: 0 };
          for (const h of hs) {
            const c = h.task.job.spec.requirements.request ?? { cores: 1, memMiB: 0, gpus: 0 };
            spent.cores += c.cores;
            spent.memMiB += c.memMiB;
            spent.gpus += c.gpus;
          }
          expect(spent.cores).toBeLessThanOrEqual(free0.cores);
          expect(spent.memMiB).toBeLessThanOrEqual(free0.memMiB);
          expect(spent.gpus).toBeLessThanOrEqual(free0.gpus);
          expect(free).toEqual({ cores: free0.cores - spent.cores, memMiB: free0.memMiB - spent.memMiB, gpus: free0.gpus - spent.gpus });
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('a request larger than every node', () => {
  const nodes = [
    knownNode('a', { cpu: { cores: 4 }, memoryMiB: 2048 }),
    knownNode('b', { cpu: { cores: 8 }, memoryMiB: 16384, resources: { cores: 8, memMiB: 12000, gpus: 1 } }),
  ];

  it('is refused naming the field, the flag and the largest node', () => {
    expect(requestTooLarge({ memoryMiB: 20000 }, nodes)).toMatchObject({
      field: 'resources.memoryMiB',
      flag: '--mem',
      message: expect.stringMatching(/^resources\.memoryMiB: 20000 MiB per task is more than any node .* 12000 MiB, on b/),
    });
    expect(requestTooLarge({ cores: 9 }, nodes)).toMatchObject({ field: 'resources.cores', flag: '--cores' });
  });

  it('passes when some node has it', () => {
    expect(requestTooLarge({ cores: 8, memoryMiB: 12000, gpus: 1 }, nodes)).toBeNull();
    expect(requestTooLarge(undefined, nodes)).toBeNull();
  });

  it('is not judged on what no node has said (no node yet, GPUs of a node that never told)', () => {
    expect(requestTooLarge({ memoryMiB: 1 << 20 }, [])).toBeNull();
    expect(requestTooLarge({ gpus: 4 }, [knownNode('a', { cpu: { cores: 4 }, memoryMiB: 2048 })])).toBeNull();
    expect(requestTooLarge({ gpus: 2 }, nodes)).toBeNull(); // node a never said
    expect(requestTooLarge({ gpus: 2 }, [nodes[1]!])).toMatchObject({ field: 'resources.gpus', flag: '--gpus' });
  });
});

describe('submission of resources', () => {
  const refusal = (body: unknown) => {
    try {
      validateSubmission(body);
    } catch (err) {
      return (err as DispatcherError).message;
    }
    throw new Error('accepted');
  };

  it('normalises a request, defaulting to one core and no memory', () => {
    expect(validateSubmission({ command: 'x', resources: { memoryMiB: 512 } }).spec.requirements.request).toEqual({
      cores: 1,
      memMiB: 512,
      gpus: 0,
    });
    expect(validateSubmission({ command: 'x', resources: { cores: 2, gpus: 1 } }).spec.requirements.request).toEqual({
      cores: 2,
      memMiB: 0,
      gpus: 1,
    });
    expect(validateSubmission({ command: 'x' }).spec.requirements.request).toBeUndefined();
  });

  it.each([
    [{ cores: 0 }, /resources\/cores|resources\.cores/],
    [{ memoryMiB: -1 }, /resources\/memoryMiB|resources\.memoryMiB/],
    [{ cores: 1.5 }, /resources\/cores|resources\.cores/],
    [{ mem: 5 }, /mem/],
  ])('refuses %j naming the field', (resources, re) => {
    expect(refusal({ command: 'x', resources })).toMatch(re);
  });
});

describe('outcome oom', () => {
  const r = (extra: Partial<TaskResult>): TaskResult =>
    okResult({ taskId: 1, attempt: 1 }, { exitCode: null, signal: 'SIGKILL', ...extra });

  it('is final (it would exceed its memory again anywhere), unlike another SIGKILL', () => {
    expect(classify(r({ oom: true, memPeakKiB: 204800 }))).toBe('failed');
    expect(classify(r({}))).toBe('retry');
    expect(classify(r({ oom: false, exitCode: 0, signal: null }))).toBe('done');
  });

  it('says its peak', () => {
    expect(oomText({ memPeakKiB: 204800 })).toBe('out of memory (peak 200 MiB)');
    expect(oomText({ memPeakKiB: null })).toBe('out of memory');
  });
});
