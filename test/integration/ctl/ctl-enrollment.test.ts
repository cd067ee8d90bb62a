/**
 * `dispatcherctl enroll-token create|list|revoke` and `dispatcherctl forget` (the built
 * bundle, as a process) against a dispatcher whose agents are the in-memory NodeControl fake.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDispatcher, testMac, type TestDispatcher } from '../../lab/in-process-dispatcher.js';
import { FakeControl } from '../../lab/fake-control.js';
import { baseEnv, runCtl } from '../../lab/run-ctl.js';
import { EXIT } from '../../../dispatcher/src/ctl/errors.js';
import type { EnrollTokenCreated, EnrollTokenList } from '../../../dispatcher/src/api/enrollment/schemas.js';

let d: TestDispatcher;
let control: FakeControl;
let admin: Record<string, string>;

beforeAll(async () => {
  d = await startTestDispatcher();
  control = new FakeControl(d.core.nodes);
  d.operator.attachControl(control);
  for (const i of [1, 2]) d.core.nodes.admit(testMac(i));
  control.connect(testMac(1));
  admin = { ...baseEnv(d.url), LILCLUSTER_TOKEN: d.token };
}, 60_000);

afterAll(async () => {
  await d?.stop();
});

describe('dispatcherctl enroll-token', () => {
  it('creates a token for one MAC (shown once), lists it without the token, revokes it', async () => {
    const c = await runCtl(['enroll-token', 'create', '--mac', '52-54-00-aa-bb-cc', '--expires', '2h', '--json'], admin);
    expect(c.code).toBe(EXIT.OK);
    const created = JSON.parse(c.stdout) as EnrollTokenCreated;
    expect(created.token).toMatch(/^lce_/);
    expect(created.info).toMatchObject({ mac: '52:54:00:aa:bb:cc' });
    expect(created.info.expiresAt - created.info.createdAt).toBe(2 * 3600_000);
    expect(d.core.enrollTokens.check('52:54:00:aa:bb:cc' as never, created.token)).toMatchObject({ ok: true });

    const l = await runCtl(['enroll-token', 'list'], admin);
    expect(l.stdout).toMatch(new RegExp(`${created.info.id}\\s+52:54:00:aa:bb:cc`));
    expect(l.stdout).not.toContain(created.token);
    expect((JSON.parse((await runCtl(['enroll-token', 'list', '--json'], admin)).stdout) as EnrollTokenList).tokens).toHaveLength(1);

    expect((await runCtl(['enroll-token', 'revoke', created.info.id], admin)).stdout).toContain(`revoked ${created.info.id}`);
    const again = await runCtl(['enroll-token', 'revoke', created.info.id], admin);
    expect(again.code).toBe(EXIT.FAILED);
    expect(again.stderr).toMatch(/no enrollment token/);
  });

  it('refuses a bad lifetime before asking the dispatcher, and needs the admin token', async () => {
    const bad = await runCtl(['enroll-token', 'create', '--expires', 'soon'], admin);
    expect(bad.code).toBe(EXIT.USAGE);
    expect(bad.stderr).toMatch(/30m, 12h or 7d/);
    expect((await runCtl(['enroll-token', 'create'], baseEnv(d.url))).code).toBe(EXIT.UNAUTHORIZED);
  });
});

describe('dispatcherctl forget', () => {
  it('forgets a node that is not connected, and refuses a connected one with a hint', async () => {
    const busy = await runCtl(['forget', 'node1'], admin);
    expect(busy.code).toBe(EXIT.FAILED);
    expect(busy.stderr).toMatch(/node1 is connected/);
    expect(busy.stderr).toMatch(/poweroff node1/);
    const ok = await runCtl(['forget', 'node2'], admin);
    expect(ok.code).toBe(EXIT.OK);
    expect(ok.stdout).toMatch(/node2 \(.*\) forgotten/);
    expect(d.core.nodes.byName('node2')).toBeUndefined();
    expect((await runCtl(['forget', 'node2'], admin)).code).toBe(EXIT.FAILED);
  });
});
