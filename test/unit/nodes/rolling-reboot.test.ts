/**
 * Rolling reboot against the NodeControl fake and a real registry: concurrency never above
 * the batch, running tasks waited for, nodes back under their names, failures stop the rest.
 */
import { describe, expect, it } from 'vitest';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { NodeRegistry } from '../../../dispatcher/src/nodes/registry.js';
import { NodeActions } from '../../../dispatcher/src/nodes/actions.js';
import { Operations, type OperationView } from '../../../dispatcher/src/nodes/rolling-reboot.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { FakeControl } from '../../lab/fake-control.js';
import { testMac } from '../../lab/in-process-dispatcher.js';

function setup(n: number) {
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  const commits = new GroupCommit(db);
  const events = new EventLog(db, commits);
  const nodes = new NodeRegistry(db, commits, events, { enrollment: 'auto', nodes: [] });
  const control = new FakeControl(nodes);
  control.rebootMs = 30;
  for (let i = 1; i <= n; i++) control.connect(testMac(i));
  const actions = new NodeActions({
    nodes,
    events,
    log: silentLogger(),
    control: () => control,
    wakeTarget: () => ({ ifindex: undefined, address: '127.0.0.1', netmask: '255.0.0.0' }),
  });
  const ops = new Operations({ actions, nodes, events, log: silentLogger(), pollMs: 5, drainSettleMs: 20 });
  return { nodes, events, control, actions, ops };
}

async function finish(ops: Operations, id: number, timeoutMs = 10_000): Promise<OperationView> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const op = ops.get(id)!;
    if (op.state !== 'running') return op;
    if (Date.now() > end) throw new Error(`operation still running: ${JSON.stringify(op)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('rolling reboot', () => {
  it.each([1, 2, 3])('reboots every node, at most %i out of service at once, each back under its name', async (batch) => {
    const { ops, nodes, control } = setup(7);
    let out = 0;
    let maxOut = 0;
    const watch = setInterval(() => {
      out = nodes.list().filter((n) => n.state === 'draining' || n.state === 'rebooting' || !control.isConnected(n.mac)).length;
      maxOut = Math.max(maxOut, out);
    }, 1);
    const op = ops.startRollingReboot({ batch });
    const done = await finish(ops, op.id);
    clearInterval(watch);
    expect(done.state).toBe('done');
    expect(done.nodes.map((n) => n.phase)).toEqual(Array(7).fill('back'));
    expect(maxOut).toBeLessThanOrEqual(batch);
    expect(maxOut).toBeGreaterThan(0);
    expect(control.sent.filter((s) => s.cmd.kind === 'reboot')).toHaveLength(7);
    for (let i = 1; i <= 7; i++) {
      expect(nodes.byMac(testMac(i))).toMatchObject({ name: `node${i}`, state: 'ready' });
      expect(control.isDraining(testMac(i))).toBe(false);
    }
    expect(done.message).toBe('7/7 nodes back');
  });

  it('waits for running tasks before rebooting a node, and hands it no new ones meanwhile', async () => {
    const { ops, control } = setup(2);
    control.live.get(testMac(1))!.running = [{ taskId: 1, attempt: 1, progress: null, startedAt: Date.now() }];
    const op = ops.startRollingReboot({ nodes: ['node1'] });
    await new Promise((r) => setTimeout(r, 150));
    expect(ops.get(op.id)!.nodes[0]).toMatchObject({ phase: 'draining', runningTasks: 1 });
    expect(control.isDraining(testMac(1))).toBe(true);
    expect(control.sent.some((s) => s.cmd.kind === 'reboot')).toBe(false);
    control.live.get(testMac(1))!.running = [];
    const done = await finish(ops, op.id);
    expect(done.state).toBe('done');
    expect(control.sent.filter((s) => s.cmd.kind === 'reboot').map((s) => s.mac)).toEqual([testMac(1)]);
  });

  it('stops when a node does not come back, and starts no further node', async () => {
    const { ops, control, nodes } = setup(4);
    const origSend = control.send.bind(control);
    // node2's "reboot" never brings it back.
    control.send = async (mac, cmd, opts) => {
      const r = await origSend(mac, cmd, opts);
      if (mac === testMac(2) && cmd.kind === 'reboot') control.rebootMs = 1e9;
      return r;
    };
    const op = ops.startRollingReboot({ batch: 1, backTimeoutMs: 300 });
    const done = await finish(ops, op.id);
    expect(done.state).toBe('failed');
    expect(done.nodes.map((n) => n.phase)).toEqual(['back', 'failed', 'skipped', 'skipped']);
    expect(done.message).toMatch(/1\/4 nodes back; failed: node2 \(not back after 0 s\)/);
    expect(control.sent.filter((s) => s.cmd.kind === 'reboot')).toHaveLength(2);
    expect(nodes.byName('node3')!.state).toBe('ready');
    expect(control.isDraining(testMac(3))).toBe(false);
  });

  it('skips a node whose tasks outlast the drain timeout, and goes on with the others', async () => {
    const { ops, control, nodes } = setup(2);
    control.live.get(testMac(1))!.running = [{ taskId: 1, attempt: 1, progress: null, startedAt: Date.now() }];
    const op = ops.startRollingReboot({ drainTimeoutMs: 100 });
    const done = await finish(ops, op.id);
    expect(done.nodes.map((n) => [n.name, n.phase])).toEqual([
      ['node1', 'skipped'],
      ['node2', 'back'],
    ]);
    expect(done.state).toBe('failed');
    expect(nodes.byName('node1')!.state).toBe('busy');
    expect(control.isDraining(testMac(1))).toBe(false);
  });

  it('can be cancelled: no new node starts, drained nodes are released', async () => {
    const { ops, control, nodes } = setup(3);
    control.live.get(testMac(1))!.running = [{ taskId: 1, attempt: 1, progress: null, startedAt: Date.now() }];
    const op = ops.startRollingReboot({});
    await new Promise((r) => setTimeout(r, 50));
    ops.cancel(op.id);
    const done = await finish(ops, op.id);
    expect(done.state).toBe('cancelled');
    expect(done.nodes.map((n) => n.phase)).toEqual(['skipped', 'skipped', 'skipped']);
    expect(control.sent.some((s) => s.cmd.kind === 'reboot')).toBe(false);
    expect(nodes.byName('node1')!.state).toBe('busy');
    expect(() => ops.cancel(op.id)).toThrow(/already cancelled/);
  });

  it('refuses unknown or disconnected nodes, and a second operation while one runs', async () => {
    const { ops, control } = setup(2);
    expect(() => ops.startRollingReboot({ nodes: ['node1', 'nodeX'] })).toThrow(/no node named "nodeX"/);
    control.disconnect(testMac(2));
    expect(() => ops.startRollingReboot({ nodes: ['node2'] })).toThrow(/node2 is lost: its agent is not connected/);
    control.live.get(testMac(1))!.running = [{ taskId: 1, attempt: 1, progress: null, startedAt: Date.now() }];
    const op = ops.startRollingReboot({});
    expect(op.nodes.map((n) => n.name)).toEqual(['node1']);
    expect(() => ops.startRollingReboot({})).toThrow(/still running/);
    control.live.get(testMac(1))!.running = [];
    await finish(ops, op.id);
  });

  it('records every phase as an event', async () => {
    const { ops, events } = setup(1);
    const op = ops.startRollingReboot({});
    await finish(ops, op.id);
    expect(events.list({ kind: 'operation' }).map((e) => e.message)).toEqual([
      `rolling reboot #${op.id} of 1 nodes, 1 at a time`,
      `rolling reboot #${op.id}: node1 draining`,
      `rolling reboot #${op.id}: node1 rebooting`,
      `rolling reboot #${op.id}: node1 back (boot #0)`,
      `rolling reboot #${op.id} done: 1/1 nodes back`,
    ]);
  });
});
