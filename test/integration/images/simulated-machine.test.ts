/**
 * The simulated machine's own guards for `images: true` (simulated-machine.ts): the host's
 * /usr/sbin/kexec is real, so a machine whose fake kexec does not prove itself inside the
 * namespace must not start the agent; and a boot script without a kernel line is no boot.
 * Needs root (namespaces).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { SimulatedMachine, kernelArgsOf } from '../../lab/simulated-machine.js';
import { waitUntil } from '../../lab/run-ctl.js';
import type { NodeList } from '../../../dispatcher/src/api/schemas.js';

let d: DispatcherProcess;
const machines: SimulatedMachine[] = [];

beforeAll(async () => {
  d = await startDispatcher();
}, 30_000);

afterAll(async () => {
  for (const m of machines) {
    await m.stop();
    m.cleanup();
  }
  await d?.stop();
});

function machine(mac: string, extra: Partial<ConstructorParameters<typeof SimulatedMachine>[0]> = {}): SimulatedMachine {
  const m = new SimulatedMachine({ dispatcherUrl: d.url, mac, pubKeyFile: d.pubKeyFile, images: true, ...extra });
  machines.push(m);
  return m;
}

describe('simulated machine with images', () => {
  it('refuses to start the agent when the fake kexec does not answer its probe inside the namespace', async () => {
    // Bound over /usr/sbin/kexec all the same, but not the fake: it answers nothing.
    const m = machine('52:54:00:ce:00:01', { fakeKexec: '#!/bin/sh\nexit 0\n' });
    m.powerOn();
    await waitUntil('the machine off', () => m.state === 'off' && m.history.length > 0, 20_000);
    expect(m.history).toEqual(['unsafe']);
    expect(m.output).toMatch(/\/usr\/sbin\/kexec does not answer as the fake kexec: not starting the agent/);
    expect(m.output).not.toMatch(/node-agent|connected/i);
    const nodes = (await d.api<NodeList>('GET', '/api/v1/nodes')).nodes;
    expect(nodes.find((n) => n.mac === m.mac)?.connected ?? false).toBe(false);
  });

  it('boots nothing from a boot script without a kernel line', async () => {
    const server: Server = createServer((_req, res) => res.end('#!ipxe\necho lc.token=abc but no kernel\n'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const m = machine('52:54:00:ce:00:02', { bootUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
      m.powerOn();
      await waitUntil('the machine off', () => m.state === 'off' && m.history.length > 0, 20_000);
      expect(m.history).toEqual(['pxe-failed']);
      expect(m.output).toMatch(/no kernel line in the boot script/);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('reads the kernel arguments of a boot script', () => {
    const script =
      '#!ipxe\nkernel --name vmlinuz http://h/image/a/1/vmlinuz?mac=x initrd=initrd.img lc.token=t lc.image=a@1 quiet || goto retry\n';
    expect(kernelArgsOf(script)).toBe('initrd=initrd.img lc.token=t lc.image=a@1 quiet');
    expect(() => kernelArgsOf('#!ipxe\nboot\n')).toThrow(/no kernel line/);
  });
});
