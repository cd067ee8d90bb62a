/**
 * The power service: which BMC a node has (own, or its label group's with the address
 * pattern), back-off per BMC after failures, one event per call, and password files refused
 * when others can read them. The BMC here is a scripted driver; the real ones are in
 * test/integration/power.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';
import { BackOff, PowerService } from '../../../dispatcher/src/power/service.js';
import { BmcFailure, expandAddress, type BmcDriver, type BmcSpec, type PowerState } from '../../../dispatcher/src/power/bmc.js';
import type { DispatcherError } from '../../../dispatcher/src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'lc-power-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const PW = join(dir, 'bmc.pw');
writeFileSync(PW, 'Sekr1t\n', { mode: 0o600 });

function setup(script: Record<string, () => void>) {
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  const events = new EventLog(db, new GroupCommit(db));
  let now = 1_000_000;
  const calls: string[] = [];
  const power = new Map<string, PowerState>();
  const driver = (b: BmcSpec): BmcDriver => ({
    async status() {
      calls.push(`${b.address} status`);
      script[b.address]?.();
      return power.get(b.address) ?? 'on';
    },
    async act(action) {
      calls.push(`${b.address} ${action}`);
      script[b.address]?.();
      if (action === 'on' || action === 'off') power.set(b.address, action);
    },
  });
  const service = new PowerService({
    cluster: {
      enrollment: 'auto',
      nodes: [
        {
          name: 'node1',
          mac: parseMac('52:54:00:00:00:01') as Mac,
          labels: ['rack1'],
          bmc: { type: 'ipmi', address: '10.9.9.9', user: 'admin', passwordFile: PW },
        },
      ],
      bmcs: [{ labels: ['rack1', 'rack2'], type: 'redfish', address: '10.1.0.{n}:8443', user: 'root', passwordFile: PW }],
    },
    events,
    log: silentLogger(),
    now: () => now,
    driver,
  });
  return { service, events, calls, power, tick: (ms: number) => (now += ms) };
}

describe('BMC of a node', () => {
  it('is its own, else its label group with {n} from its name, else none', () => {
    const { service } = setup({});
    expect(service.bmcOf({ name: 'node1', labels: ['rack1'] })?.address).toBe('10.9.9.9');
    expect(service.bmcOf({ name: 'node12', labels: ['rack2'] })).toEqual({
      type: 'redfish',
      address: '10.1.0.12:8443',
      user: 'root',
      passwordFile: PW,
    });
    expect(service.bmcOf({ name: 'node12', labels: ['gpu'] })).toBeNull();
    expect(service.bmcOf({ name: 'head', labels: ['rack1'] })).toBeNull();
    expect(expandAddress('bmc-{name}.lan', 'node7')).toBe('bmc-node7.lan');
    expect(expandAddress('10.0.0.{n}', 'n007')).toBe('10.0.0.7');
  });

  it('missing: a clear refusal naming the node, recorded nowhere near a BMC', async () => {
    const { service, calls } = setup({});
    await expect(service.run({ name: 'node5', labels: [] }, 'cycle')).rejects.toMatchObject({
      code: 'DSP_ERR_NO_BMC',
      message: 'node5 has no BMC in the cluster file',
    });
    expect(calls).toEqual([]);
  });
});

describe('back-off', () => {
  it('doubles per failure in a row, up to its cap, and resets on success', () => {
    const b = new BackOff(1000, 8000);
    expect([b.failed(0), b.failed(0), b.failed(0), b.failed(0), b.failed(0)]).toEqual([1000, 2000, 4000, 8000, 8000]);
    expect(b.waitMs(3000)).toBe(5000);
    b.succeeded();
    expect(b.waitMs(0)).toBe(0);
  });

  it('refuses calls to a failing BMC at once, leaves other BMCs alone, records each call', async () => {
    let down = true;
    const { service, events, calls, tick } = setup({
      '10.9.9.9': () => {
        if (down) throw new BmcFailure('timeout', 'ipmi BMC 10.9.9.9 did not answer');
      },
    });
    const node1 = { name: 'node1', labels: ['rack1'] };
    const err = await service.run(node1, 'off').catch((e: DispatcherError) => e);
    expect(err).toMatchObject({ code: 'DSP_ERR_BMC_TIMEOUT', status: 504 });
    expect((err as Error).message).toBe('node1: power off through the ipmi BMC 10.9.9.9 failed: ipmi BMC 10.9.9.9 did not answer');
    // A storm of retries reaches the BMC not once.
    for (let i = 0; i < 20; i++) await expect(service.run(node1, 'status')).rejects.toMatchObject({ code: 'DSP_ERR_BMC_BACKOFF' });
    expect(calls).toEqual(['10.9.9.9 off']);
    // Another node's BMC answers meanwhile.
    await expect(service.run({ name: 'node3', labels: ['rack1'] }, 'on')).resolves.toMatchObject({
      bmc: 'redfish BMC 10.1.0.3:8443',
      power: 'on',
    });
    tick(2_000);
    await expect(service.run(node1, 'status')).rejects.toMatchObject({ code: 'DSP_ERR_BMC_TIMEOUT' });
    tick(2_000);
    await expect(service.run(node1, 'status')).rejects.toMatchObject({
      code: 'DSP_ERR_BMC_BACKOFF',
      message: /failed 2 time\(s\) in a row; not calling it again for 2 s/,
    });
    down = false;
    tick(2_000);
    await expect(service.run(node1, 'cycle')).resolves.toMatchObject({
      power: null,
      message: 'power cycle done through the ipmi BMC 10.9.9.9',
    });
    expect(calls).toEqual(['10.9.9.9 off', '10.1.0.3:8443 on', '10.9.9.9 status', '10.9.9.9 status', '10.9.9.9 cycle']);
    const power = events.list({ kind: 'node.power', limit: 100 });
    // The storm of refusals is one event (the first of its back-off window).
    expect(power.map((e) => (e.data as { code?: string }).code ?? 'ok')).toEqual([
      'DSP_ERR_BMC_TIMEOUT',
      'DSP_ERR_BMC_BACKOFF',
      'ok',
      'DSP_ERR_BMC_TIMEOUT',
      'DSP_ERR_BMC_BACKOFF',
      'ok',
    ]);
    expect(power.at(-1)).toMatchObject({
      message: 'node1: power cycle done through the ipmi BMC 10.9.9.9',
      node: 'node1',
      data: { action: 'cycle', ok: true, bmc: 'ipmi BMC 10.9.9.9' },
    });
    expect(power[0]).toMatchObject({ data: { action: 'off', ok: false, code: 'DSP_ERR_BMC_TIMEOUT', backoffMs: 2000 } });
    expect(JSON.stringify(power)).not.toContain('Sekr1t');
  });

  it('wrong credentials back off too (BMCs lock accounts) with a hint on the cluster file', async () => {
    const { service } = setup({
      '10.9.9.9': () => {
        throw new BmcFailure('auth', 'ipmi BMC 10.9.9.9 refused the credentials of user "admin"');
      },
    });
    await expect(service.run({ name: 'node1', labels: [] }, 'status')).rejects.toMatchObject({
      code: 'DSP_ERR_BMC_AUTH',
      hint: 'check user and passwordFile of this BMC in the cluster file',
    });
    await expect(service.run({ name: 'node1', labels: [] }, 'status')).rejects.toMatchObject({ code: 'DSP_ERR_BMC_BACKOFF' });
  });
});

describe('cycle', () => {
  it('of a machine that is off powers it on (BMCs refuse to cycle it)', async () => {
    const { service, calls, power } = setup({});
    power.set('10.9.9.9', 'off');
    await expect(service.run({ name: 'node1', labels: [] }, 'cycle')).resolves.toMatchObject({
      power: 'on',
      message: 'it was off: power on done through the ipmi BMC 10.9.9.9',
    });
    expect(calls).toEqual(['10.9.9.9 status', '10.9.9.9 on']);
  });
});

describe('password file', () => {
  it('readable by group or others: refused, naming the file and its mode', async () => {
    const { service, calls } = setup({});
    chmodSync(PW, 0o640);
    try {
      await expect(service.run({ name: 'node1', labels: [] }, 'status')).rejects.toMatchObject({
        code: 'DSP_ERR_CONFIG',
        message: `node1: passwordFile of the ipmi BMC 10.9.9.9: ${PW} is readable or writable by group or others (mode 0640); chmod 600 it`,
      });
      expect(calls).toEqual([]);
    } finally {
      chmodSync(PW, 0o600);
    }
  });
});
