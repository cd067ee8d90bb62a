import { describe, expect, it } from 'vitest';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { NodeRegistry } from '../../../dispatcher/src/nodes/registry.js';
import { NodeWatchdog } from '../../../dispatcher/src/nodes/watchdog.js';
import { FakeControl } from '../../lab/fake-control.js';
import { testMac } from '../../lab/in-process-dispatcher.js';

function setup() {
  let t = 1_000_000;
  const now = () => t;
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  const commits = new GroupCommit(db);
  const events = new EventLog(db, commits, now);
  const nodes = new NodeRegistry(db, commits, events, { enrollment: 'auto', nodes: [] }, now);
  const control = new FakeControl(nodes);
  const dog = new NodeWatchdog(nodes, () => control, now, { giveUpMs: 60_000, reconnectGraceMs: 30_000 });
  return { nodes, control, dog, advance: (ms: number) => (t += ms) };
}

describe('node watchdog', () => {
  it('declares lost a node still rebooting after the give-up time', () => {
    const { nodes, control, dog, advance } = setup();
    control.connect(testMac(1));
    nodes.setState(testMac(1), 'rebooting', 'operator reboot', { by: 'operator' });
    control.live.delete(testMac(1));
    advance(59_000);
    dog.check();
    expect(nodes.byMac(testMac(1))!.state).toBe('rebooting');
    advance(2_000);
    dog.check();
    expect(nodes.byMac(testMac(1))!.state).toBe('lost');
  });

  it('puts the drain flag back on a draining node whose agent reconnected', () => {
    const { nodes, control, dog } = setup();
    control.connect(testMac(1));
    nodes.setState(testMac(1), 'draining', 'operator drain', { by: 'operator' });
    expect(control.isDraining(testMac(1))).toBe(false);
    dog.check();
    expect(control.isDraining(testMac(1))).toBe(true);
  });

  it('declares lost, after a grace period, a node the store says is ready but whose agent never came back', () => {
    const { nodes, control, dog, advance } = setup();
    control.connect(testMac(1));
    control.connect(testMac(2));
    control.live.delete(testMac(1)); // as after a dispatcher restart: no connection yet
    advance(20_000);
    dog.check();
    expect(nodes.byMac(testMac(1))!.state).toBe('ready');
    advance(11_000);
    dog.check();
    expect(nodes.byMac(testMac(1))!.state).toBe('lost');
    expect(nodes.byMac(testMac(2))!.state).toBe('ready');
  });
});
