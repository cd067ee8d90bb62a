/**
 * Self-healing: a node lost past its rule's delay is power-cycled through its BMC, at most
 * maxCyclesPerHour times an hour; a kernel panic on its console cycles it at once; a node
 * without a BMC gets one event saying why it cannot be healed. Real store, registry, event
 * log, console log and power service; the BMC is a scripted driver (real ones: test/e2e).
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
import { ConsoleLog } from '../../../dispatcher/src/console/store.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import { PowerService } from '../../../dispatcher/src/power/service.js';
import {
  BOOT_HUNG_MS,
  CycleBudget,
  HEAL_BOOT_GRACE_MS,
  SelfHealing,
  isPanicLine,
  lostVerdict,
} from '../../../dispatcher/src/power/healing.js';
import { powerStatesOf } from '../../../dispatcher/src/power/power-state.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const dir = mkdtempSync(join(tmpdir(), 'lc-healing-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const PW = join(dir, 'bmc.pw');
writeFileSync(PW, 'Sekr1t\n', { mode: 0o600 });

const M1 = '52:54:00:00:00:01' as Mac;
const M2 = '52:54:00:00:00:02' as Mac;
const HOUR = 3600_000;

function setup(healing = 'healing: {lostAfterSeconds: 30, maxCyclesPerHour: 2}') {
  const cluster = parseClusterFile(
    `${healing}
nodes:
  - {name: node1, mac: "${M1}", labels: [rack1], bmc: {type: ipmi, address: 10.9.9.1, user: admin, passwordFile: ${PW}}}
  - {name: node2, mac: "${M2}"}
`,
  );
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  const commits = new GroupCommit(db);
  let now = 10 * HOUR;
  const clock = () => now;
  const events = new EventLog(db, commits, clock);
  const nodes = new NodeRegistry(db, commits, events, cluster, clock);
  const calls: string[] = [];
  const power = new PowerService({
    cluster,
    events,
    log: silentLogger(),
    now: clock,
    driver: (b) => ({
      status: async () => 'on',
      act: async (a) => void calls.push(`${b.address} ${a}`),
    }),
  });
  const console = new ConsoleLog(db);
  const core = { nodes, events, log: silentLogger(), now: clock };
  powerStatesOf(core); // follows the events from now on, as the dispatcher's does from its start
  const healer = new SelfHealing({ core, policy: cluster.healing!, power, console });
  const lose = (mac: Mac) => nodes.setState(mac, 'lost', 'missed heartbeats', { by: 'operator' });
  const heals = () => events.list({ kind: 'node.heal' });
  return { nodes, events, power, console, healer, calls, lose, heals, core, advance: (ms: number) => (now += ms) };
}

describe('healing: pure parts', () => {
  it.each([
    ['Kernel panic - not syncing: sysrq triggered crash', true],
    ['[  12.3] Kernel panic - not syncing: Fatal exception in interrupt', true],
    ['Fatal exception', true],
    ['Oops: 0002 [#1] SMP PTI', false],
    ['sysrq: Trigger a crash', false],
    ['panic_on_oops=0', false],
  ])('%j is a panic: %s', (line, want) => {
    expect(isPanicLine(line)).toBe(want);
  });

  it('the budget is a sliding hour per node', () => {
    const b = new CycleBudget();
    b.record(M1, 0);
    b.record(M1, 10 * 60_000);
    expect(b.nextAllowedAt(M1, 20 * 60_000, 2)).toBe(HOUR);
    expect(b.nextAllowedAt(M1, HOUR, 2)).toBeNull();
    expect(b.count(M1, HOUR)).toBe(1);
    expect(b.nextAllowedAt(M2, 0, 1)).toBeNull();
  });

  it('waits for the delay, then cycles, refuses past the limit and without a BMC', () => {
    const rule = { lostAfterSeconds: 60, maxCyclesPerHour: 1 };
    const lost = { state: 'lost' as const, stateSince: 0 };
    expect(lostVerdict(lost, rule, true, null, 0, 59_000)).toEqual({ kind: 'wait' });
    expect(lostVerdict(lost, rule, true, null, 0, 61_000)).toMatchObject({
      kind: 'cycle',
      reason: 'lost for 61 s (healing: lostAfterSeconds 60)',
    });
    expect(lostVerdict(lost, rule, true, 5000, 1, 61_000)).toMatchObject({ kind: 'limit', nextAt: 5000 });
    expect(lostVerdict(lost, rule, false, null, 0, 61_000)).toMatchObject({ kind: 'no-bmc' });
    expect(lostVerdict({ state: 'off', stateSince: 0 }, rule, true, null, 0, 10 * HOUR)).toEqual({ kind: 'wait' });
    expect(lostVerdict(lost, rule, true, null, 0, 61_000, true)).toEqual({ kind: 'wait' });
  });

  it('cycles a node whose boot hung (booting, no hello) after BOOT_HUNG_MS, not before', () => {
    const rule = { lostAfterSeconds: 60, maxCyclesPerHour: 2 };
    const booting = { state: 'booting' as const, stateSince: 0 };
    expect(lostVerdict(booting, rule, true, null, 0, 61_000)).toEqual({ kind: 'wait' });
    expect(lostVerdict(booting, rule, true, null, 0, BOOT_HUNG_MS - 1)).toEqual({ kind: 'wait' });
    expect(lostVerdict(booting, rule, true, null, 0, BOOT_HUNG_MS)).toEqual({
      kind: 'cycle',
      reason: `booting for ${BOOT_HUNG_MS / 1000} s without its agent saying hello: the boot hung`,
    });
    expect(lostVerdict(booting, rule, true, 5000, 2, BOOT_HUNG_MS)).toMatchObject({ kind: 'limit' });
    expect(lostVerdict(booting, rule, false, null, 0, BOOT_HUNG_MS)).toMatchObject({ kind: 'no-bmc' });
    // The boot after our own cycle is under the cycle's grace.
    expect(lostVerdict(booting, rule, true, null, 0, BOOT_HUNG_MS, true)).toEqual({ kind: 'wait' });
  });
});

describe('healing: the service', () => {
  it('cycles a node lost past the delay through its BMC, with the console lines in the event', async () => {
    const s = setup();
    s.console.append(M1, 'kernel', ['watchdog: BUG: soft lockup - CPU#0 stuck for 22s!'], 1);
    s.console.append(M1, 'serial', ['login:'], 2);
    s.console.flush();
    s.lose(M1);
    s.advance(29_000);
    await s.healer.tick();
    expect(s.calls).toEqual([]);
    s.advance(2000);
    await s.healer.tick();
    expect(s.calls).toEqual(['10.9.9.1 cycle']);
    expect(s.nodes.byMac(M1)!.state).toBe('rebooting');
    const [e] = s.heals();
    expect(e).toMatchObject({
      node: 'node1',
      data: {
        cause: 'lost',
        healed: true,
        reason: 'lost for 31 s (healing: lostAfterSeconds 30)',
        console: ['kernel: watchdog: BUG: soft lockup - CPU#0 stuck for 22s!', 'serial: login:'],
      },
    });
    expect(e!.message).toMatch(/node1 power-cycled through its BMC: lost for 31 s.*console: serial: login:/);
    const power = s.events.list({ kind: 'node.power' });
    expect(power.at(-1)!.data).toMatchObject({ action: 'cycle', ok: true, by: 'healing' });
    expect(powerStatesOf(s.core).of(M1)).toMatchObject({ state: 'on', by: 'healing' });
  });

  it('stops at maxCyclesPerHour (one event saying so), and cycles again once the hour has passed', async () => {
    const s = setup();
    for (let i = 0; i < 2; i++) {
      s.lose(M1);
      s.advance(31_000);
      await s.healer.tick();
    }
    expect(s.calls).toHaveLength(2);
    s.lose(M1);
    s.advance(31_000);
    await s.healer.tick();
    s.advance(5000);
    await s.healer.tick();
    expect(s.calls).toHaveLength(2);
    const refused = s.heals().filter((e) => e.data?.healed === false);
    expect(refused).toHaveLength(1);
    expect(refused[0]!.message).toMatch(
      /node1 is lost and not power-cycled: already power-cycled 2 time\(s\) in the last hour \(healing: maxCyclesPerHour 2\); next possible at/,
    );
    s.advance(HOUR);
    await s.healer.tick();
    expect(s.calls).toHaveLength(3);
  });

  it('operator power commands are not counted against the limit', async () => {
    const s = setup('healing: {lostAfterSeconds: 30, maxCyclesPerHour: 1}');
    const n1 = s.nodes.byMac(M1)!;
    for (let i = 0; i < 3; i++) await s.power.run(n1, 'cycle');
    s.lose(M1);
    s.advance(31_000);
    await s.healer.tick();
    expect(s.calls).toEqual(['10.9.9.1 cycle', '10.9.9.1 cycle', '10.9.9.1 cycle', '10.9.9.1 cycle']);
  });

  it('a node that began a new boot after the cycle is not cycled again for the late lost of its old connection', async () => {
    const s = setup('healing: {lostAfterSeconds: 30, maxCyclesPerHour: 5}');
    s.lose(M1);
    s.advance(31_000);
    await s.healer.tick();
    expect(s.calls).toHaveLength(1);
    // It boots (DHCP), then the hub times out the connection of the boot that was cut short.
    s.nodes.recordBoot(M1);
    s.lose(M1);
    s.advance(31_000);
    await s.healer.tick();
    expect(s.calls).toHaveLength(1);
    // Never back past the grace: cycled again. Not booting at all after the cycle: cycled after the delay.
    s.advance(HEAL_BOOT_GRACE_MS);
    await s.healer.tick();
    expect(s.calls).toHaveLength(2);
    s.lose(M1);
    s.advance(31_000);
    await s.healer.tick();
    expect(s.calls).toHaveLength(3);
  });

  it('a panic cycle seen by a pass before the node is marked rebooting still gets its boot grace', async () => {
    const s = setup('healing: {lostAfterSeconds: 1, maxCyclesPerHour: 5}');
    s.nodes.setState(M1, 'ready', 'hello', { by: 'operator' });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const healer = new SelfHealing({
      core: s.core,
      policy: { lostAfterSeconds: 1, maxCyclesPerHour: 5, panic: true, groups: [] },
      power: {
        bmcOf: (n) => s.power.bmcOf(n),
        run: async (n, op, o) => {
          await gate;
          return s.power.run(n, op, o);
        },
      },
      console: s.console,
    });
    healer.onConsole([{ id: 1, mac: M1, source: 'kernel', ts: 1, text: 'Kernel panic - not syncing: x' }]);
    await healer.tick(); // the node still reads ready: the cycle is under way
    release();
    await expect.poll(() => s.nodes.byMac(M1)!.state).toBe('rebooting');
    s.nodes.recordBoot(M1);
    s.lose(M1); // the old connection's late timeout
    s.advance(5000);
    await healer.tick();
    expect(s.calls).toEqual(['10.9.9.1 cycle']);
  });

  it('a node without a BMC: one event per lost episode saying why it cannot be healed', async () => {
    const s = setup();
    s.lose(M2);
    s.advance(31_000);
    await s.healer.tick();
    s.advance(1000);
    await s.healer.tick();
    const e = s.heals();
    expect(e).toHaveLength(1);
    expect(e[0]!.message).toMatch(/^node2 cannot be healed: it has no BMC in the cluster file/);
    expect(s.calls).toEqual([]);
  });

  it('off nodes are never healed', async () => {
    const s = setup();
    s.nodes.setState(M1, 'off', 'power policy: idle', { by: 'operator' });
    s.advance(HOUR);
    await s.healer.tick();
    s.healer.onConsole([{ id: 1, mac: M1, source: 'kernel', ts: 1, text: 'Kernel panic - not syncing: x' }]);
    expect(s.calls).toEqual([]);
    expect(s.heals()).toEqual([]);
  });

  it('a kernel panic cycles the node at once, once per boot', async () => {
    const s = setup();
    s.nodes.setState(M1, 'ready', 'hello', { by: 'operator' });
    s.healer.start(60_000);
    try {
      s.console.append(M1, 'kernel', ['sysrq: Trigger a crash', 'Kernel panic - not syncing: sysrq triggered crash'], 5);
      s.console.append(M1, 'serial', ['Kernel panic - not syncing: sysrq triggered crash'], 5);
      s.console.flush();
      await expect.poll(() => s.calls).toEqual(['10.9.9.1 cycle']);
      await expect.poll(() => s.heals()).toHaveLength(1);
      expect(s.heals()[0]).toMatchObject({
        data: { cause: 'panic', healed: true, reason: 'kernel panic: Kernel panic - not syncing: sysrq triggered crash' },
      });
      // The same boot's later lines are the same panic; a new boot's panic is a new one.
      s.healer.onConsole([{ id: 9, mac: M1, source: 'kernel', ts: 6, text: 'Kernel panic - not syncing: again' }]);
      expect(s.calls).toHaveLength(1);
      s.nodes.recordBoot(M1);
      s.healer.onConsole([{ id: 10, mac: M1, source: 'kernel', ts: 7, text: 'Kernel panic - not syncing: again' }]);
      await expect.poll(() => s.calls).toHaveLength(2);
    } finally {
      s.healer.stop();
    }
  });

  it('a BMC that fails: the heal event says so and the node is left lost', async () => {
    const s = setup();
    const failing = new SelfHealing({
      core: s.core,
      policy: { lostAfterSeconds: 1, maxCyclesPerHour: 3, panic: true, groups: [] },
      power: {
        bmcOf: (n) => s.power.bmcOf(n),
        run: async () => {
          throw new Error('node1: power cycle through the ipmi BMC 10.9.9.1 failed: did not answer');
        },
      },
      console: s.console,
    });
    s.lose(M1);
    s.advance(2000);
    await failing.tick();
    expect(s.nodes.byMac(M1)!.state).toBe('lost');
    expect(s.heals()[0]).toMatchObject({ data: { healed: false, error: expect.stringMatching(/did not answer/) } });
  });
});
