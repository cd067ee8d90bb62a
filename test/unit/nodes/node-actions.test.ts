/** Node actions: state checks that refuse and change nothing, outcomes recorded as events. */
import { describe, expect, it } from 'vitest';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { NodeRegistry } from '../../../dispatcher/src/nodes/registry.js';
import { NodeActions, NO_AGENTS } from '../../../dispatcher/src/nodes/actions.js';
import { DispatcherError } from '../../../dispatcher/src/errors.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { FakeControl } from '../../lab/fake-control.js';
import { testMac } from '../../lab/in-process-dispatcher.js';

function setup() {
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  const commits = new GroupCommit(db);
  const events = new EventLog(db, commits);
  const nodes = new NodeRegistry(db, commits, events, { enrollment: 'approve', nodes: [] });
  const control = new FakeControl(nodes);
  for (const i of [1, 2]) {
    nodes.admit(testMac(i));
    nodes.approve(`node${i}`);
    control.connect(testMac(i));
  }
  nodes.admit(testMac(3)); // pending
  const actions = new NodeActions({
    nodes,
    events,
    log: silentLogger(),
    control: () => control,
    wakeTarget: () => ({ ifindex: undefined, address: '127.0.0.1', netmask: '255.0.0.0' }),
    wakeOptions: { destination: '127.0.0.1', port: 9 },
  });
  return { nodes, events, control, actions };
}

async function refused(p: Promise<unknown> | (() => unknown), code: string): Promise<DispatcherError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    expect(err).toBeInstanceOf(DispatcherError);
    expect((err as DispatcherError).code).toBe(code);
    return err as DispatcherError;
  }
  throw new Error('expected a refusal');
}

describe('node actions', () => {
  it('finds nodes by name, MAC or UUID and names an unknown one', async () => {
    const { actions } = setup();
    expect(actions.resolve('node1').name).toBe('node1');
    expect(actions.resolve('52-54-00-00-00-02').name).toBe('node2');
    expect(actions.resolve(`uuid-${testMac(1)}`).name).toBe('node1');
    const e = await refused(() => actions.resolve('nope'), 'DSP_ERR_NODE_NOT_FOUND');
    expect(e.message).toBe('no node named "nope"');
    expect(e.status).toBe(404);
  });

  it('records an acknowledged command and its time as an event', async () => {
    const { actions, events, nodes } = setup();
    const r = await actions.reboot('node1');
    expect(r).toMatchObject({ node: 'node1', action: 'reboot', state: 'rebooting' });
    expect(r.ackMs).toBeGreaterThanOrEqual(0);
    const ev = events.list({ kind: 'node.command' }).at(-1)!;
    expect(ev).toMatchObject({ node: 'node1', data: { command: 'reboot', ok: true } });
    expect(nodes.byName('node1')!.state).toBe('rebooting');
  });

  it('records a refused command as a failed event and changes nothing', async () => {
    const { actions, events, nodes, control } = setup();
    control.refuse.add('reboot');
    const e = await refused(actions.reboot('node1'), 'DSP_ERR_NODE_STATE');
    expect(e.message).toContain("node1's agent refused reboot");
    expect(events.list({ kind: 'node.command' }).at(-1)).toMatchObject({ data: { command: 'reboot', ok: false } });
    expect(nodes.byName('node1')!.state).toBe('ready');
  });

  it.each([
    ['drain a pending (booting) node', (a: NodeActions) => a.drain('node3'), 'DSP_ERR_NODE_STATE'],
    ['undrain a ready node', (a: NodeActions) => a.undrain('node1'), 'DSP_ERR_NODE_STATE'],
    ['approve an admitted node', (a: NodeActions) => a.approve('node1'), 'DSP_ERR_NODE_STATE'],
    ['wake a connected node', (a: NodeActions) => a.wake('node1'), 'DSP_ERR_NODE_STATE'],
    ['reboot a pending node', (a: NodeActions) => a.reboot('node3'), 'DSP_ERR_NODE_STATE'],
    ['inspect a node whose agent is gone', (a: NodeActions) => a.inspect('node2'), 'DSP_ERR_NODE_OFFLINE'],
  ])('refuses to %s', async (_what, f, code) => {
    const { actions, control, nodes } = setup();
    control.disconnect(testMac(2));
    const before = JSON.stringify(nodes.list());
    await refused(async () => f(actions), code);
    expect(JSON.stringify(nodes.list())).toBe(before);
  });

  it('drains and undrains through the hub flag and the registry state', () => {
    const { actions, control, nodes } = setup();
    expect(actions.drain('node1').state).toBe('draining');
    expect(control.isDraining(testMac(1))).toBe(true);
    expect(actions.drain('node1').message).toBe('already draining');
    expect(actions.undrain('node1').state).toBe('ready');
    expect(control.isDraining(testMac(1))).toBe(false);
    expect(nodes.byName('node1')!.state).toBe('ready');
  });

  it('keeps the last inspect snapshot for the page', async () => {
    const { actions } = setup();
    const r = await actions.inspect('node1');
    expect(r.snapshot).toMatchObject({ temperatures: { main: 41 } });
    expect(actions.lastInspect(actions.resolve('node1'))).toEqual({ at: r.at, snapshot: r.snapshot });
  });

  it('streams exec output and returns its exit code', async () => {
    const { actions } = setup();
    const out: string[] = [];
    const r = await actions.exec(actions.execTarget('node1'), ['fail'], undefined, (s, c) => out.push(`${s}:${c}`));
    expect(r.exitCode).toBe(3);
    expect(out).toEqual(['stdout:ran fail\n', 'stderr:a line on stderr\n']);
  });

  it('without an agent hub, every node is offline', async () => {
    const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
    const commits = new GroupCommit(db);
    const events = new EventLog(db, commits);
    const nodes = new NodeRegistry(db, commits, events, { enrollment: 'auto', nodes: [] });
    nodes.admit(testMac(1));
    const actions = new NodeActions({
      nodes,
      events,
      log: silentLogger(),
      control: () => NO_AGENTS,
      wakeTarget: () => ({ ifindex: undefined, address: '127.0.0.1', netmask: '255.0.0.0' }),
    });
    await refused(actions.reboot('node1'), 'DSP_ERR_NODE_OFFLINE');
  });
});
