/**
 * Suspect detection (nodes/suspect.ts) and the drains node-health.ts makes and undoes, on a
 * real store and registry: a failing health check drains with its first line, passing
 * undrains, an operator's drain stays; K failures in a row while the job succeeds elsewhere
 * drain as suspect with the evidence; the owner of a drain survives a restart.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openStore, type Db } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { NodeRegistry } from '../../../dispatcher/src/nodes/registry.js';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { MIN_REPORT_GAP_MS, NodeHealthMonitor, type HealthReport } from '../../../dispatcher/src/nodes/node-health.js';
import { SuspectDetector, type AttemptEnd } from '../../../dispatcher/src/nodes/suspect.js';
import type { NodeControl } from '../../../dispatcher/src/agents/control-contract.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const mac = (n: number) => `52:54:00:00:02:0${n}` as Mac;
const CLUSTER = `
suspectAfter: 3
healthCheck: {command: /usr/local/bin/node-check}
nodes:
  - {name: n1, mac: "${mac(1)}"}
  - {name: n2, mac: "${mac(2)}"}
  - {name: n3, mac: "${mac(3)}"}
`;

function fakeControl(): NodeControl & { drained: Set<Mac> } {
  const drained = new Set<Mac>();
  return {
    drained,
    isConnected: () => true,
    connected: () => [],
    send: async () => ({ ok: true, ackMs: 0 }),
    setDraining: (m, d) => void (d ? drained.add(m) : drained.delete(m)),
    isDraining: (m) => drained.has(m),
    liveStatus: () => undefined,
  };
}

interface World {
  db: Db;
  commits: GroupCommit;
  events: EventLog;
  nodes: NodeRegistry;
  health: NodeHealthMonitor;
  control: ReturnType<typeof fakeControl>;
  close(): void;
}
const opened: World[] = [];
afterEach(() => {
  for (const w of opened.splice(0)) w.close();
});

function world(dir = mkdtempSync(join(tmpdir(), 'lc-health-'))): World & { dir: string } {
  const db = openStore({ dataDir: dir, migrations: allMigrations });
  const commits = new GroupCommit(db);
  const events = new EventLog(db, commits);
  const cluster = parseClusterFile(CLUSTER);
  const nodes = new NodeRegistry(db, commits, events, cluster);
  // Each reading of the clock is a second later: reports arrive an interval apart.
  let t = Date.now();
  const health = new NodeHealthMonitor({ db, commits, events, nodes, log: silentLogger(), cluster, now: () => (t += 1000) });
  const control = fakeControl();
  health.attach(control);
  for (const i of [1, 2, 3]) if (nodes.byMac(mac(i))!.state === 'off') nodes.recordHello(mac(i), {});
  const w = {
    dir,
    db,
    commits,
    events,
    nodes,
    health,
    control,
    close() {
      commits.close();
      db.close();
    },
  };
  opened.push(w);
  return w;
}

const fail = (output: string, over: Partial<HealthReport> = {}): HealthReport => ({
  ok: false,
  exitCode: 1,
  timedOut: false,
  output,
  durationMs: 5,
  ...over,
});
const pass: HealthReport = { ok: true, exitCode: 0, timedOut: false, output: 'fine\n', durationMs: 5 };
let taskId = 1;
const attempt = (m: Mac, jobId: number, exitCode: number | null, over: Partial<AttemptEnd> = {}): AttemptEnd => ({
  mac: m,
  taskId: taskId++,
  attempt: 1,
  jobId,
  exitCode,
  signal: null,
  timedOut: false,
  error: null,
  ...over,
});

describe('health check drains', () => {
  it('drains a node whose check fails, with its first line, and undrains it when it passes', () => {
    const w = world();
    w.health.report(mac(1), fail('\n/scratch is full\ndetails follow\n'));
    const n = w.nodes.byMac(mac(1))!;
    expect(n.state).toBe('draining');
    expect(w.control.drained.has(mac(1))).toBe(true);
    const ev = w.events.recent();
    expect(ev.findLast((e) => e.kind === 'node.state' && e.node === 'n1')?.message).toBe('n1 ready → draining: health: /scratch is full');
    expect(ev.find((e) => e.kind === 'node.health')?.data).toMatchObject({ ok: false, output: '\n/scratch is full\ndetails follow\n' });
    expect(w.health.view(mac(1)).health).toMatchObject({ ok: false, output: '\n/scratch is full\ndetails follow\n' });
    w.health.report(mac(1), pass);
    expect(w.nodes.byMac(mac(1))!.state).toBe('ready');
    expect(w.control.drained.has(mac(1))).toBe(false);
    expect(w.health.view(mac(1)).health).toMatchObject({ ok: true });
  });

  it("never undoes an operator's drain", () => {
    const w = world();
    w.control.setDraining(mac(2), true);
    w.nodes.setState(mac(2), 'draining', 'operator drain', { by: 'operator' });
    w.health.report(mac(2), fail('broken'));
    w.health.report(mac(2), pass);
    expect(w.nodes.byMac(mac(2))!.state).toBe('draining');
    expect(w.control.drained.has(mac(2))).toBe(true);
  });

  it('drains again after an operator undrains a node whose check still fails', () => {
    const w = world();
    w.health.report(mac(1), fail('broken'));
    w.control.setDraining(mac(1), false);
    w.nodes.setState(mac(1), 'ready', 'operator undrain', { by: 'operator' });
    w.health.report(mac(1), fail('broken'));
    expect(w.nodes.byMac(mac(1))!.state).toBe('draining');
  });

  it('remembers across a restart which drains are its own', async () => {
    const w = world();
    w.health.report(mac(1), fail('broken'));
    await w.commits.run(() => {});
    w.close();
    opened.splice(opened.indexOf(w), 1);
    const w2 = world(w.dir);
    w2.control.setDraining(mac(1), true);
    expect(w2.nodes.byMac(mac(1))!.state).toBe('draining');
    w2.health.report(mac(1), pass);
    expect(w2.nodes.byMac(mac(1))!.state).toBe('ready');
  });
});

describe('health reports not asked for', () => {
  it('drops a report from a node the cluster file gives no check', () => {
    const w = world();
    const cluster = parseClusterFile(CLUSTER.replace('healthCheck: {command: /usr/local/bin/node-check}\n', ''));
    const h = new NodeHealthMonitor({ ...w, log: silentLogger(), cluster, now: Date.now });
    h.attach(w.control);
    h.report(mac(1), fail('broken'));
    expect(w.nodes.byMac(mac(1))!.state).toBe('ready');
    expect(h.view(mac(1)).health).toBeUndefined();
  });
});

describe('health report floods', () => {
  it('drops reports closer together than MIN_REPORT_GAP_MS', () => {
    const w = world();
    let t = 1_000_000;
    const cluster = parseClusterFile(CLUSTER);
    const h = new NodeHealthMonitor({ ...w, log: silentLogger(), cluster, now: () => t });
    h.attach(w.control);
    h.report(mac(3), fail('broken'));
    expect(w.nodes.byMac(mac(3))!.state).toBe('draining');
    t += MIN_REPORT_GAP_MS - 1;
    h.report(mac(3), pass); // too soon: dropped
    expect(w.nodes.byMac(mac(3))!.state).toBe('draining');
    t += 1;
    h.report(mac(3), pass);
    expect(w.nodes.byMac(mac(3))!.state).toBe('ready');
  });
});

describe('suspect detection', () => {
  it('drains a node after K failures in a row while the job succeeds elsewhere, with the evidence', () => {
    const w = world();
    // The black hole fails fast: its failures come before the others' first success.
    for (let i = 0; i < 3; i++) w.health.attemptEnded(attempt(mac(1), 7, 127));
    expect(w.nodes.byMac(mac(1))!.state).toBe('ready');
    w.health.attemptEnded(attempt(mac(2), 7, 0));
    expect(w.nodes.byMac(mac(1))!.state).toBe('draining');
    const s = w.health.view(mac(1)).suspect!;
    expect(s.failures.map((f) => [f.jobId, f.exitCode])).toEqual([
      [7, 127],
      [7, 127],
      [7, 127],
    ]);
    expect(s.succeededElsewhere).toEqual([{ jobId: 7, nodes: ['n2'] }]);
    expect(w.events.recent().find((e) => e.kind === 'node.suspect')?.message).toMatch(
      /^n1 is suspect: 3 tasks in a row failed here \(exit 127\) while their jobs succeeded elsewhere \(job 7 on n2\)/,
    );
    // Undrain clears it, and counting starts again.
    w.control.setDraining(mac(1), false);
    w.nodes.setState(mac(1), 'ready', 'operator undrain', { by: 'operator' });
    expect(w.health.view(mac(1)).suspect).toBeUndefined();
    w.health.attemptEnded(attempt(mac(1), 7, 1));
    expect(w.nodes.byMac(mac(1))!.state).toBe('ready');
  });

  it('does not blame a node for a job that fails everywhere', () => {
    const w = world();
    for (let i = 0; i < 4; i++) w.health.attemptEnded(attempt(mac(1), 8, 1));
    for (let i = 0; i < 4; i++) w.health.attemptEnded(attempt(mac(2), 8, 1));
    expect(w.nodes.byMac(mac(1))!.state).toBe('ready');
    expect(w.nodes.byMac(mac(2))!.state).toBe('ready');
  });

  it('a success on the node breaks its streak; timeouts and signals do not count', () => {
    const d = new SuspectDetector(3);
    const m = mac(1);
    d.observe(attempt(mac(2), 9, 0), 0);
    d.observe(attempt(m, 9, 1), 0);
    d.observe(attempt(m, 9, 1), 0);
    d.observe(attempt(m, 9, 0), 0);
    d.observe(attempt(m, 9, null, { timedOut: true }), 0);
    d.observe(attempt(m, 9, null, { signal: 'SIGKILL' }), 0);
    expect(d.observe(attempt(m, 9, 1), 0)).toEqual([]);
    expect(d.observe(attempt(m, 9, 1), 0)).toEqual([]);
    expect(d.observe(attempt(m, 9, null, { error: 'cannot start x: ENOENT' }), 0)).toHaveLength(1);
  });

  it('suspectAfter: 0 never judges', () => {
    const d = new SuspectDetector(0);
    d.observe(attempt(mac(2), 10, 0), 0);
    for (let i = 0; i < 50; i++) expect(d.observe(attempt(mac(1), 10, 1), 0)).toEqual([]);
  });
});
