/**
 * Power driven by the queue, carried out: idle nodes drained and powered off through their
 * BMC (or their agent), off nodes powered on for queued work, a node that does not come back
 * tried again then marked unreachable with its boot timeline; every action an event with its
 * reason; plan() changes nothing. Real store, registry, events, timeline, power service and
 * task ring; the BMC is a scripted driver and the agents a NodeControl fake (the e2e test runs
 * the real ones).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { NodeRegistry } from '../../../dispatcher/src/nodes/registry.js';
import { BootTimeline } from '../../../dispatcher/src/boot/timeline.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import { PowerService } from '../../../dispatcher/src/power/service.js';
import { powerStatesOf } from '../../../dispatcher/src/power/power-state.js';
import { QueuePower } from '../../../dispatcher/src/power/queue-power.js';
import { TaskRing } from '../../../dispatcher/src/dispatch/ring.js';
import type { NodeControl, AgentLiveStatus } from '../../../dispatcher/src/agents/control-contract.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const dir = mkdtempSync(join(tmpdir(), 'lc-qpower-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const PW = join(dir, 'bmc.pw');
writeFileSync(PW, 'Sekr1t\n', { mode: 0o600 });
const M1 = '52:54:00:00:00:01' as Mac;
const M2 = '52:54:00:00:00:02' as Mac;

function setup() {
  const cluster = parseClusterFile(`powerPolicy: {idleOffSeconds: 10, minOn: 1, bootTimeoutSeconds: 60}
nodes:
  - {name: node1, mac: "${M1}", bmc: {type: ipmi, address: 10.9.9.1, user: admin, passwordFile: ${PW}}}
  - {name: node2, mac: "${M2}", bmc: {type: ipmi, address: 10.9.9.2, user: admin, passwordFile: ${PW}}}
`);
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  const commits = new GroupCommit(db);
  let now = 1_000_000;
  const clock = () => now;
  const events = new EventLog(db, commits, clock);
  const nodes = new NodeRegistry(db, commits, events, cluster, clock);
  const timeline = new BootTimeline(db, commits, clock);
  const core = {
    nodes,
    events,
    log: silentLogger(),
    now: clock,
    timeline,
    images: { assignments: { status: () => ({ image: 'default' }) } },
  };
  const states = powerStatesOf(core);
  const bmcCalls: string[] = [];
  const power = new PowerService({
    cluster,
    events,
    log: silentLogger(),
    now: clock,
    driver: (b) => ({ status: async () => 'off', act: async (a) => void bmcCalls.push(`${b.address} ${a}`) }),
  });
  // The agents: connected ones with their running tasks and drain flags.
  const live = new Map<Mac, AgentLiveStatus>();
  const draining = new Set<Mac>();
  const drainLog: string[] = [];
  const control: NodeControl = {
    isConnected: (mac) => live.has(mac),
    connected: () => [...live.keys()],
    send: async () => ({ ok: true, ackMs: 1 }),
    setDraining: (mac, d) => {
      drainLog.push(`${mac.slice(-2)} ${d}`);
      if (d) draining.add(mac);
      else draining.delete(mac);
    },
    isDraining: (mac) => draining.has(mac),
    liveStatus: (mac) => live.get(mac),
  };
  const hello = (mac: Mac, running = 0) => {
    live.set(mac, {
      connectedAt: now,
      lastHeartbeat: now,
      load1: 0,
      memUsedMiB: 0,
      memTotalMiB: 1024,
      uptimeS: 1,
      slots: 1,
      running: Array.from({ length: running }, (_, i) => ({ taskId: i + 1, attempt: 1, progress: null, startedAt: now })),
    });
    nodes.recordHello(mac, { inventory: { cpu: { cores: 1 }, memoryMiB: 1024 } });
    nodes.setState(mac, running ? 'busy' : 'ready', 'hello');
  };
  const ring = new TaskRing({ now: clock, leaseGraceMs: 1000, speculativeK: 0 });
  const queueTasks = (n: number) => {
    const job = ring.addJob({
      id: 1,
      priority: 0,
      timeoutMs: 60_000,
      maxAttempts: 3,
      speculative: false,
      requirements: { labels: [], minCores: 0, minMemoryMiB: 0, image: null },
    });
    ring.enqueue(job, 1, n);
  };
  const q = new QueuePower({
    core,
    policy: cluster.powerPolicy!,
    queue: { hasWorkFor: (c) => ring.hasWorkFor(c), stats: () => ({ queued: ring.counts().queued }) },
    control: () => control,
    actions: {
      poweroff: async () => {
        throw new Error('not used: both nodes have a BMC');
      },
      wake: async () => {
        throw new Error('not used: both nodes have a BMC');
      },
    },
    power,
    states,
  });
  const policyEvents = () => events.list({ kind: 'power.policy' });
  return { q, nodes, states, bmcCalls, live, drainLog, hello, queueTasks, policyEvents, timeline, advance: (ms: number) => (now += ms) };
}

describe('queue-driven power, carried out', () => {
  it('powers off an idle node (drained first), keeps minOn, then powers it on for queued work', async () => {
    const s = setup();
    s.hello(M1);
    s.hello(M2);
    await s.q.tick(); // both seen idle from now
    s.advance(5000);
    await s.q.tick();
    expect(s.bmcCalls).toEqual([]);
    s.advance(6000);
    // The dry run says what a pass would do, and does nothing.
    const plan = s.q.plan();
    expect(plan.decisions.filter((d) => d.kind === 'off').map((d) => d.node)).toEqual(['node1']);
    expect(s.bmcCalls).toEqual([]);
    await s.q.tick();
    expect(s.bmcCalls).toEqual(['10.9.9.1 off']);
    // Drained before, and left so until the connection is gone: the hub hands it nothing meanwhile.
    expect(s.drainLog).toEqual(['01 true']);
    expect(s.nodes.byMac(M1)!.state).toBe('off');
    expect(s.states.of(M1)).toMatchObject({ state: 'off', by: 'policy' });
    expect(s.policyEvents().at(-1)!.message).toMatch(
      /node1 powered off by the power policy \(BMC\): idle for 11 s \(policy: 10 s\), no queued task fits it, 1 of the group stay on \(min 1\)/,
    );
    // Its agent's connection drops: it is off, not lost.
    s.live.delete(M1);
    s.nodes.setState(M1, 'lost', 'connection closed');
    expect(s.nodes.byMac(M1)!.state).toBe('off');
    await s.q.tick();
    expect(s.drainLog).toEqual(['01 true', '01 false']);

    // node2 is busy with one task (one slot); two more are queued: node1 is powered on.
    s.live.delete(M2);
    s.hello(M2, 1);
    s.queueTasks(2);
    await s.q.tick();
    expect(s.bmcCalls).toEqual(['10.9.9.1 off', '10.9.9.1 on']);
    expect(s.policyEvents().at(-1)!.message).toMatch(/node1 powered on by the power policy \(BMC, try 1\): queued tasks fit it/);
    // While it boots, it is not powered on again.
    s.advance(30_000);
    await s.q.tick();
    expect(s.bmcCalls).toHaveLength(2);
    s.hello(M1);
    s.advance(1000);
    await s.q.tick();
    expect(s.policyEvents().at(-1)!.message).toMatch(/node1 is back 31 s after the policy powered it on/);
  });

  it('a node that does not come back is tried again, then marked unreachable with its boot timeline', async () => {
    const s = setup();
    s.hello(M2, 1);
    s.queueTasks(3);
    await s.q.tick();
    expect(s.bmcCalls).toEqual(['10.9.9.1 on']);
    s.advance(5000);
    s.timeline.record(M1, 'dhcp.discover', null, { newBoot: true });
    s.advance(56_000);
    await s.q.tick();
    // The second try cycles it (the service turns a cycle of a machine that is off into on).
    expect(s.bmcCalls).toEqual(['10.9.9.1 on', '10.9.9.1 on']);
    s.advance(61_000);
    await s.q.tick();
    expect(s.bmcCalls).toHaveLength(2);
    const e = s.policyEvents().at(-1)!;
    expect(e.message).toMatch(/node1 is unreachable: not back after 2 power-on tries \(60 s each\).*dhcp\.discover \+5s/);
    expect(e.data).toMatchObject({ action: 'unreachable', timeline: [{ stage: 'dhcp.discover', afterS: 5 }] });
    expect(s.states.unreachable(M1)).toMatchObject({ reason: expect.stringMatching(/not back after 2 power-on tries/) });
    // Left alone from then on; its agent's hello clears the mark.
    s.advance(120_000);
    await s.q.tick();
    expect(s.bmcCalls).toHaveLength(2);
    s.hello(M1);
    expect(s.states.unreachable(M1)).toBeUndefined();
  });
});
