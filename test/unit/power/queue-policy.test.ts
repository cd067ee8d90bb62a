/**
 * Power driven by the queue: the policy's decisions, a pure function of nodes, queue and
 * clock. The queue is a real task ring (dispatch/ring.ts), so the fit is the ring's own.
 */
import { describe, expect, it } from 'vitest';
import { TaskRing } from '../../../dispatcher/src/dispatch/ring.js';
import type { NormalRequirements } from '../../../dispatcher/src/dispatch/model.js';
import { decidePower, type PolicyNode, type PowerDecision } from '../../../dispatcher/src/power/queue-policy.js';
import type { PowerGroup } from '../../../dispatcher/src/power/policy-config.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const NOW = 1_000_000_000;
const ALL: PowerGroup = { labels: null, name: 'all nodes', idleOffSeconds: 60, minOn: 0, bootTimeoutSeconds: 300 };

function node(i: number, over: Partial<PolicyNode> = {}): PolicyNode {
  const mac = `52:54:00:00:00:${String(i).padStart(2, '0')}` as Mac;
  const labels = over.labels ?? [];
  return {
    name: `node${i}`,
    mac,
    labels,
    state: 'ready',
    connected: true,
    draining: false,
    running: 0,
    slots: 2,
    idleSince: null,
    capacity: { mac, name: `node${i}`, labels, cores: 4, memoryMiB: 4096, image: 'default' },
    powerOn: 'bmc',
    powerOff: 'bmc',
    offBy: null,
    waking: null,
    unreachable: false,
    ...over,
  };
}

const idle = (i: number, seconds: number, over: Partial<PolicyNode> = {}) => node(i, { idleSince: NOW - seconds * 1000, ...over });
const off = (i: number, over: Partial<PolicyNode> = {}) => node(i, { state: 'off', connected: false, slots: 2, ...over });

/** A queue of `tasks` tasks with these requirements, in a real ring. */
function queue(tasks: number, req: Partial<NormalRequirements> = {}) {
  const ring = new TaskRing({ now: () => NOW, leaseGraceMs: 1000, speculativeK: 0 });
  if (tasks > 0) {
    const job = ring.addJob({
      id: 1,
      priority: 0,
      timeoutMs: 60_000,
      maxAttempts: 3,
      speculative: false,
      requirements: { labels: [], minCores: 0, minMemoryMiB: 0, image: null, ...req },
    });
    ring.enqueue(job, 1, tasks);
  }
  return { hasWorkFor: (c: Parameters<TaskRing['hasWorkFor']>[0]) => ring.hasWorkFor(c), queued: ring.counts().queued };
}

const acts = (ds: PowerDecision[]) =>
  ds
    .filter((d) => d.kind !== 'hold')
    .map((d) => `${d.kind} ${d.node}`)
    .sort();
const reasonOf = (ds: PowerDecision[], name: string) => ds.find((d) => d.node === name)!.reason;

describe('power policy: idle nodes', () => {
  it('powers off nodes idle past idleOffSeconds, longest idle first, keeping minOn', () => {
    const g = { ...ALL, minOn: 2 };
    const ds = decidePower([g], [idle(1, 100), idle(2, 300), idle(3, 30)], queue(0), NOW);
    // node3 is not idle long enough and stays on; of node1 and node2 one more must stay: node2, idle longest, goes.
    expect(acts(ds)).toEqual(['off node2']);
    expect(reasonOf(ds, 'node2')).toMatch(/idle for 300 s \(policy: 60 s\).*2 of the group stay on \(min 2\)/);
    expect(reasonOf(ds, 'node1')).toBe('idle, kept on: the group keeps 2 on');
    expect(reasonOf(ds, 'node3')).toBe('idle for 30 s of 60');
  });

  it('with minOn 0 every idle node goes', () => {
    expect(acts(decidePower([ALL], [idle(1, 100), idle(2, 300)], queue(0), NOW))).toEqual(['off node1', 'off node2']);
  });

  it('keeps an idle node that queued tasks fit, and busy or draining ones', () => {
    const ds = decidePower(
      [ALL],
      [idle(1, 100), node(2, { state: 'busy', running: 1 }), idle(3, 100, { draining: true, state: 'draining' })],
      queue(1),
      NOW,
    );
    expect(acts(ds)).toEqual([]);
    expect(reasonOf(ds, 'node1')).toBe('idle, but queued tasks fit it');
    expect(reasonOf(ds, 'node2')).toMatch(/busy/);
    expect(reasonOf(ds, 'node3')).toBe('draining');
  });

  it('a node with no BMC is powered off by its agent; one the work does not fit is still powered off', () => {
    const ds = decidePower([ALL], [idle(1, 100, { powerOff: 'agent' })], queue(3, { labels: ['gpu'] }), NOW);
    expect(ds).toEqual([expect.objectContaining({ kind: 'off', node: 'node1', via: 'agent' })]);
  });

  it('groups are separate: each keeps its own minimum, a node in no group is left alone', () => {
    const gpu: PowerGroup = { labels: ['gpu'], name: 'labels gpu', idleOffSeconds: 10, minOn: 1, bootTimeoutSeconds: 300 };
    const ds = decidePower([gpu], [idle(1, 100, { labels: ['gpu'] }), idle(2, 100, { labels: ['gpu'] }), idle(3, 100)], queue(0), NOW);
    expect(acts(ds)).toEqual(['off node1']);
    expect(ds.find((d) => d.node === 'node3')).toMatchObject({ kind: 'hold', group: null, reason: 'in no group of the power policy' });
  });
});

describe('power policy: queued work', () => {
  it('powers on an off node the queued tasks fit when no running node will take them', () => {
    const ds = decidePower([ALL], [off(1), node(2, { state: 'busy', running: 2 })], queue(1), NOW);
    expect(ds).toContainEqual(expect.objectContaining({ kind: 'on', node: 'node1', via: 'bmc', attempt: 1 }));
    expect(reasonOf(ds, 'node1')).toMatch(/queued tasks fit it and no running node will take them soon \(1 queued\)/);
  });

  it('does not power on when an on node with a free slot fits the work', () => {
    const ds = decidePower([ALL], [off(1), node(2, { state: 'busy', running: 1, slots: 2 })], queue(1), NOW);
    expect(acts(ds)).toEqual([]);
    expect(reasonOf(ds, 'node1')).toMatch(/will take the queued tasks/);
  });

  it('powers on as many nodes as the queue needs, counting their slots', () => {
    const ds = decidePower([ALL], [off(1), off(2), off(3), off(4)], queue(3), NOW);
    // 2 slots each: two nodes take three tasks.
    expect(acts(ds)).toEqual(['on node1', 'on node2']);
  });

  it('counts nodes on their way up as taking the work', () => {
    const ds = decidePower([ALL], [off(1, { waking: { since: NOW - 10_000, tries: 1 } }), off(2)], queue(2), NOW);
    expect(acts(ds)).toEqual([]);
    expect(reasonOf(ds, 'node1')).toMatch(/powered on 10 s ago, waiting for its agent \(up to 300 s\)/);
  });

  it('leaves off the nodes the work does not fit (labels, cores, memory, image: the ring decides)', () => {
    const nodes = [
      off(1, { capacity: { ...off(1).capacity, labels: [] } }),
      off(2, { capacity: { ...off(2).capacity, cores: 2 } }),
      off(3, { capacity: { ...off(3).capacity, memoryMiB: 512 } }),
      off(4, { capacity: { ...off(4).capacity, image: 'ml' } }),
      off(5, { labels: ['gpu'], capacity: { ...off(5).capacity, labels: ['gpu'] } }),
    ];
    const ds = decidePower([ALL], nodes, queue(1, { labels: ['gpu'], minCores: 4, minMemoryMiB: 1024, image: 'default' }), NOW);
    expect(acts(ds)).toEqual(['on node5']);
    expect(reasonOf(ds, 'node1')).toBe('off: no queued task fits it');
  });

  it("leaves the operator's off nodes and unreachable ones off", () => {
    const ds = decidePower([ALL], [off(1, { offBy: 'operator' }), off(2, { unreachable: true })], queue(5), NOW);
    expect(acts(ds)).toEqual([]);
    expect(reasonOf(ds, 'node1')).toMatch(/operator/);
    expect(reasonOf(ds, 'node2')).toMatch(/unreachable/);
  });

  it('falls back to Wake-on-LAN for a node without a BMC', () => {
    const ds = decidePower([ALL], [off(1, { powerOn: 'wol' })], queue(1), NOW);
    expect(ds).toEqual([expect.objectContaining({ kind: 'on', via: 'wol' })]);
  });
});

describe('power policy: nodes that do not come back', () => {
  it('tries again after bootTimeoutSeconds, then marks the node unreachable', () => {
    const late = NOW - 301_000;
    const second = decidePower([ALL], [off(1, { waking: { since: late, tries: 1 } })], queue(1), NOW);
    expect(second).toEqual([expect.objectContaining({ kind: 'on', attempt: 2 })]);
    expect(second[0]!.reason).toMatch(/not back 301 s after power-on try 1 of 2/);
    const third = decidePower([ALL], [off(1, { waking: { since: late, tries: 2 } })], queue(1), NOW);
    expect(third).toEqual([expect.objectContaining({ kind: 'unreachable', node: 'node1' })]);
  });

  it('a node that said hello is no longer waiting', () => {
    const ds = decidePower([ALL], [idle(1, 0, { waking: { since: NOW - 400_000, tries: 2 } })], queue(0), NOW);
    expect(acts(ds)).toEqual([]);
  });
});
