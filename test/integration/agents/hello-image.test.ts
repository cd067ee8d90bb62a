/**
 * The agent's hello with the booted image (node-agent/src/booted-image.ts) against the real
 * hub on loopback: the dispatcher's hello schema is closed, so a field too many or misspelt
 * would get the agent refused. The connection is the agent's own DispatcherConnection.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parseDispatcherPublicKey } from '../../../dispatcher/src/protocol/session.js';
import { bootedImage, healthOf } from '../../../node-agent/src/booted-image.js';
import { DispatcherConnection } from '../../../node-agent/src/connection.js';
import type { SessionInfo } from '../../../node-agent/src/seams.js';
import { FAKE_INVENTORY } from '../../unit/protocol/fixtures.js';
import { FakeEngine } from './fake-engine.js';
import { startHub, waitFor, type TestHub } from './harness.js';

let hub: TestHub | undefined;
let conn: DispatcherConnection | undefined;

afterEach(async () => {
  await conn?.stop();
  await hub?.stop();
  conn = hub = undefined;
});

describe('hello with the booted image', () => {
  it('is admitted by the hub with every BootedImage field, the failed health check with its detail', async () => {
    hub = await startHub(new FakeEngine());
    const h = hub;
    const { image } = bootedImage(
      'console=ttyS0 lc.image=ml@2026-12-07.1 lc.via=kexec',
      healthOf({ kind: 'refused', reason: 'its health check `python3 -c "import torch"` exited with status 1' }),
    );
    expect(image).toMatchObject({ via: 'kexec', health: 'failed' });
    const lines: string[] = [];
    let session: SessionInfo | undefined;
    conn = new DispatcherConnection({
      url: h.wsUrl,
      auth: { kind: 'enroll', token: h.enrollToken },
      mac: '52:54:00:0b:00:01',
      dispatcherKey: parseDispatcherPublicKey(readFileSync(h.pubKeyFile, 'utf8')),
      insecure: false,
      slots: 1,
      agentVersion: '0.0.0-test',
      ...(image ? { image } : {}),
      inventory: async () => FAKE_INVENTORY,
      say: (l) => lines.push(l),
    });
    conn.start({
      helloState: () => ({ running: [], undelivered: [] }),
      connected: (s) => (session = s),
      message: () => {},
      disconnected: (why) => lines.push(`disconnected: ${why}`),
    });
    await waitFor('the welcome', () => session);
    expect(lines.filter((l) => /refused|rejected|protocol/i.test(l))).toEqual([]);
    expect(h.lines.filter((l) => l.level === 50 || /invalid|schema/i.test(String(l.msg)))).toEqual([]);
  });
});
