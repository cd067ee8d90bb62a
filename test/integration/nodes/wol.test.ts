/**
 * Wake-on-LAN on a real interface: the magic packet leaves on the node network's interface
 * only (SO_BINDTOIFINDEX), or as the subnet's directed broadcast without an interface, and a
 * listener on the node side receives it. Two node networks in one namespace prove the
 * packet does not leak onto the other. Needs root (network namespaces).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createLab, type Lab, type Netns, type LabProcess } from '../../lab/netns.js';
import { ROOT } from '../../lab/paths.js';

const SENDER = join(ROOT, 'test/artifacts/lc-op-wol-sender.mjs');
const MAC = '52:54:00:12:34:56';

// Prints each magic packet's MAC as `WAKE <mac> from <address>`.
const LISTENER = `
const s = require('node:dgram').createSocket({ type: 'udp4', reuseAddr: true });
s.on('message', (m, r) => {
  const mac = [...m.subarray(6, 12)].map((b) => b.toString(16).padStart(2, '0')).join(':');
  const ok = m.length === 102 && m.subarray(0, 6).every((b) => b === 0xff);
  console.log((ok ? 'WAKE ' : 'JUNK ') + mac + ' from ' + r.address);
});
s.bind(9, '0.0.0.0', () => console.log('LISTENING'));
`;

describe('Wake-on-LAN on a real interface', () => {
  let lab: Lab;
  let disp: Netns;
  let listeners: LabProcess[];

  beforeAll(async () => {
    mkdirSync(join(ROOT, 'test/artifacts'), { recursive: true });
    execFileSync(join(ROOT, 'node_modules/.bin/esbuild'), [
      join(ROOT, 'test/integration/nodes/wol-sender.ts'),
      '--bundle',
      '--platform=node',
      '--format=esm',
      '--target=node20',
      '--packages=external',
      '--log-level=warning',
      `--outfile=${SENDER}`,
    ]);
    lab = await createLab('op');
    disp = await lab.namespace('disp');
    const n1 = await lab.namespace('net1');
    const n2 = await lab.namespace('net2');
    await lab.veth({ ns: disp, name: 'nodes1', address: '10.77.1.1/24' }, { ns: n1, name: 'eth0', address: '10.77.1.50/24' });
    await lab.veth({ ns: disp, name: 'nodes2', address: '10.77.2.1/24' }, { ns: n2, name: 'eth0', address: '10.77.2.50/24' });
    listeners = [n1, n2].map((ns) => ns.spawn(process.execPath, ['-e', LISTENER]));
    await Promise.all(listeners.map((l) => l.waitForOutput(/LISTENING/, 10_000)));
  }, 60_000);

  afterAll(async () => {
    await lab?.cleanup();
  });

  const wakes = (l: LabProcess) =>
    l
      .output()
      .split('\n')
      .filter((x) => x.startsWith('WAKE'));

  it('sends on the configured interface only, to the limited broadcast', async () => {
    const r = await disp.exec(process.execPath, [SENDER, MAC, 'nodes2']);
    expect(JSON.parse(r.stdout)).toEqual({ destination: '255.255.255.255', port: 9, packets: 3 });
    await listeners[1]!.waitForOutput(/WAKE 52:54:00:12:34:56 from 10\.77\.2\.1/, 5000);
    await new Promise((res) => setTimeout(res, 300));
    expect(wakes(listeners[1]!)).toHaveLength(3);
    expect(wakes(listeners[0]!)).toHaveLength(0);
  });

  it("without an interface, sends to the node subnet's directed broadcast", async () => {
    const before = wakes(listeners[0]!).length;
    const r = await disp.exec(process.execPath, [SENDER, MAC, '-', '10.77.1.1', '255.255.255.0']);
    expect(JSON.parse(r.stdout)).toMatchObject({ destination: '10.77.1.255' });
    await new Promise((res) => setTimeout(res, 500));
    expect(wakes(listeners[0]!).length - before).toBe(3);
  });
});
