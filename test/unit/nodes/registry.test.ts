import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { NodeRegistry } from '../../../dispatcher/src/nodes/registry.js';
import { parseClusterFile, type ClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';

function open(dir: string, cluster: ClusterFile = { enrollment: 'auto', nodes: [] }) {
  const db = openStore({ dataDir: dir, migrations: allMigrations });
  const commits = new GroupCommit(db);
  const events = new EventLog(db, commits);
  const nodes = new NodeRegistry(db, commits, events, cluster);
  return { db, commits, events, nodes };
}
const mac = (s: string) => parseMac(s) as Mac;

describe('node registry', () => {
  it('names unknown machines node1, node2, ... in order of first sight and keeps them across restarts', () => {
    const dir = mkdtempSync(join(tmpdir(), 'reg-'));
    const a = open(dir);
    expect(a.nodes.admit(mac('52:54:00:00:00:0b'))).toMatchObject({ kind: 'boot', node: { name: 'node1' } });
    expect(a.nodes.admit(mac('52:54:00:00:00:0a'))).toMatchObject({ kind: 'boot', node: { name: 'node2' } });
    a.commits.close();
    a.db.close();
    const b = open(dir);
    expect(b.nodes.byMac(mac('52:54:00:00:00:0b'))?.name).toBe('node1');
    expect(b.nodes.admit(mac('52:54:00:00:00:0c'))).toMatchObject({ node: { name: 'node3' } });
  });

  it('gives cluster-file names precedence and skips them for auto names', () => {
    const dir = mkdtempSync(join(tmpdir(), 'reg-'));
    const cluster = parseClusterFile('nodes:\n  - {name: node1, mac: "52:54:00:00:00:01", labels: [gpu]}\n');
    const r = open(dir, cluster);
    expect(r.nodes.byMac(mac('52:54:00:00:00:01'))).toMatchObject({ name: 'node1', labels: ['gpu'], state: 'off' });
    expect(r.nodes.admit(mac('52:54:00:00:00:99'))).toMatchObject({ node: { name: 'node2' } });
  });

  it('holds new machines pending under approve and refuses them under deny', () => {
    const r1 = open(':memory:', { enrollment: 'approve', nodes: [] });
    const d = r1.nodes.admit(mac('52:54:00:00:00:01'));
    expect(d.kind).toBe('pending');
    r1.nodes.approve('node1');
    expect(r1.nodes.admit(mac('52:54:00:00:00:01')).kind).toBe('boot');
    const r2 = open(':memory:', { enrollment: 'deny', nodes: [] });
    expect(r2.nodes.admit(mac('52:54:00:00:00:01')).kind).toBe('deny');
    expect(r2.nodes.size).toBe(0);
    expect(r2.nodes.denied()).toHaveLength(1);
  });

  it('records every state change as an event', () => {
    const r = open(':memory:');
    const m = mac('52:54:00:00:00:01');
    r.nodes.admit(m);
    r.nodes.setState(m, 'ready');
    r.nodes.setState(m, 'ready');
    r.nodes.setState(m, 'busy', 'task 1');
    const states = r.events.list({ kind: 'node.state' });
    expect(states.map((e) => e.data)).toEqual([
      { from: 'booting', to: 'ready' },
      { from: 'ready', to: 'busy', reason: 'task 1' },
    ]);
  });

  it.each([
    ['an unknown field', 'nodes:\n  - {name: a, mac: "52:54:00:00:00:01", color: red}\n', /nodes\[0\]\.color: unknown field/],
    ['a bad MAC', 'nodes:\n  - {name: a, mac: "zz"}\n', /nodes\[0\]\.mac/],
    ['a duplicate name', 'nodes:\n  - {name: a, mac: "52:54:00:00:00:01"}\n  - {name: a, mac: "52:54:00:00:00:02"}\n', /duplicate name/],
    ['a bad policy', 'enrollment: maybe\n', /enrollment/],
  ])('rejects a cluster file with %s, naming the field', (_what, text, re) => {
    expect(() => parseClusterFile(text)).toThrow(re);
  });
});
