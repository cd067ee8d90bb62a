import { describe, expect, it } from 'vitest';
import { helloState, transitionApplies } from '../../../dispatcher/src/nodes/states.js';
import { NODE_STATES, type NodeState } from '../../../dispatcher/src/api/schemas.js';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { NodeRegistry } from '../../../dispatcher/src/nodes/registry.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';

describe('node state policy', () => {
  it.each<[NodeState, NodeState, boolean]>([
    ['ready', 'busy', true],
    ['busy', 'ready', true],
    ['ready', 'lost', true],
    ['lost', 'booting', true],
    ['booting', 'lost', false],
    ['booting', 'ready', true],
    ['draining', 'busy', false],
    ['draining', 'ready', false],
    ['draining', 'lost', true],
    ['draining', 'rebooting', true],
    ['rebooting', 'lost', false],
    ['rebooting', 'ready', false],
    ['rebooting', 'busy', false],
    ['rebooting', 'booting', true],
    ['rebooting', 'off', true],
    ['off', 'lost', false],
    ['off', 'ready', false],
    ['off', 'booting', true],
  ])('activity may move a node %s → %s: %s', (from, to, applies) => {
    expect(transitionApplies(from, to, 'activity')).toBe(applies);
  });

  it('lets the operator make any change, and no one a change to the same state', () => {
    for (const from of NODE_STATES) for (const to of NODE_STATES) expect(transitionApplies(from, to, 'operator')).toBe(from !== to);
  });

  it.each<[NodeState, NodeState | undefined]>([
    ['booting', 'ready'],
    ['rebooting', 'ready'],
    ['lost', 'ready'],
    ['off', 'ready'],
    ['draining', undefined],
    ['busy', undefined],
    ['ready', undefined],
  ])('a hello moves a %s node to %s', (from, to) => {
    expect(helloState(from)).toBe(to);
  });
});

describe('node registry with the state policy', () => {
  function open() {
    const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
    const commits = new GroupCommit(db);
    const events = new EventLog(db, commits);
    return { nodes: new NodeRegistry(db, commits, events, { enrollment: 'auto', nodes: [] }), events };
  }
  const mac = parseMac('52:54:00:00:00:01') as Mac;

  it('keeps a rebooting node rebooting when its connection closes, and ends it with the next hello', () => {
    const { nodes, events } = open();
    nodes.admit(mac);
    nodes.recordHello(mac, {});
    expect(nodes.byMac(mac)!.state).toBe('ready');
    nodes.setState(mac, 'rebooting', 'operator reboot', { by: 'operator' });
    nodes.setState(mac, 'lost', 'connection closed');
    expect(nodes.byMac(mac)!.state).toBe('rebooting');
    nodes.recordHello(mac, {});
    expect(nodes.byMac(mac)!.state).toBe('ready');
    expect(events.list({ kind: 'node.state' }).map((e) => `${e.data!.from}→${e.data!.to}`)).toEqual([
      'booting→ready',
      'ready→rebooting',
      'rebooting→ready',
    ]);
  });

  it('keeps a draining node draining while tasks start and end', () => {
    const { nodes } = open();
    nodes.admit(mac);
    nodes.recordHello(mac, {});
    nodes.setState(mac, 'draining', 'operator drain', { by: 'operator' });
    nodes.setState(mac, 'busy', 'running tasks');
    nodes.setState(mac, 'ready', 'idle');
    expect(nodes.byMac(mac)!.state).toBe('draining');
  });

  it('records per-node settings as an event and keeps them across a restart', () => {
    const dir = `/tmp/lc-op-settings-${process.pid}-${Date.now()}`;
    const db = openStore({ dataDir: dir, migrations: allMigrations });
    const commits = new GroupCommit(db);
    const events = new EventLog(db, commits);
    const nodes = new NodeRegistry(db, commits, events, { enrollment: 'auto', nodes: [] });
    nodes.admit(mac);
    nodes.updateSettings(mac, { labels: ['gpu'], firstStage: 'snponly.efi' });
    nodes.updateSettings(mac, { labels: ['gpu'] }); // no change, no event
    expect(events.list({ kind: 'node.settings' })).toHaveLength(1);
    commits.close();
    db.close();
    const db2 = openStore({ dataDir: dir, migrations: allMigrations });
    const c2 = new GroupCommit(db2);
    const again = new NodeRegistry(db2, c2, new EventLog(db2, c2), { enrollment: 'auto', nodes: [] });
    expect(again.byMac(mac)).toMatchObject({ labels: ['gpu'], firstStage: 'snponly.efi' });
    db2.close();
  });
});
