/**
 * startDhcp in-process on loopback, on high ports: the socket plumbing (decode → handler →
 * encode → send back), counters and metrics, `off` mode, and a clear error when the port is
 * taken. Nothing here broadcasts: only the ProxyDHCP port answers the sender by unicast.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createSocket, type Socket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCore, closeCore, type Core } from '../../../dispatcher/src/core.js';
import { resolveConfig, type DhcpMode } from '../../../dispatcher/src/config.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import { startDhcp, type DhcpService } from '../../../dispatcher/src/dhcp/server.js';
import { decodePacket, DecodeError, encodePacket, type ReceivedPacket } from '../../../dispatcher/src/dhcp/codec.js';
import { DispatcherError } from '../../../dispatcher/src/errors.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function core(mode: DhcpMode): Core {
  const dataDir = mkdtempSync(join(tmpdir(), 'lc-dhcp-svc-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const c = createCore({
    config: resolveConfig({ dataDir, dhcp: { mode }, ...(mode === 'full' ? { interface: 'lo' } : {}) }),
    log: silentLogger(),
    network: { name: undefined, ifindex: undefined, address: '127.0.0.1', netmask: '255.0.0.0', mac: undefined },
    cluster: parseClusterFile('nodes: []'),
  });
  cleanups.push(() => closeCore(c));
  return c;
}

async function freePort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function client(): Promise<{ sock: Socket; replies: ReceivedPacket[]; port: number }> {
  const sock = createSocket('udp4');
  const replies: ReceivedPacket[] = [];
  sock.on('message', (m) => {
    const d = decodePacket(m);
    if (!(d instanceof DecodeError)) replies.push(d);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => sock.close(() => r())));
  return { sock, replies, port: sock.address().port };
}

const until = async (f: () => boolean, ms = 5_000) => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('the DHCP service on real sockets', () => {
  it('answers a ProxyDHCP REQUEST on the PXE port back to the sender, and survives garbage', async () => {
    const c = core('proxy');
    const pxePort = await freePort();
    const svc: DhcpService = await startDhcp(c, { httpPort: 8080, dhcpPort: await freePort(), pxePort });
    cleanups.push(() => svc.stop());
    const { sock, replies } = await client();
    await new Promise((r) => setTimeout(r, 80)); // past the bind settle window
    const send = (b: Buffer) => new Promise<void>((r) => sock.send(b, pxePort, '127.0.0.1', () => r()));
    for (const junk of [Buffer.alloc(5), Buffer.alloc(400, 0xee), Buffer.from('hello')]) await send(junk);
    await send(
      encodePacket({
        op: 'request',
        type: 'request',
        xid: 77,
        secs: 0,
        hops: 0,
        broadcast: false,
        ciaddr: '127.0.0.1',
        yiaddr: '0.0.0.0',
        siaddr: '0.0.0.0',
        giaddr: '0.0.0.0',
        mac: '52:54:00:77:00:01' as Mac,
        serverName: '',
        vendorClass: 'PXEClient:Arch:00007:UNDI:003000',
        clientArch: 7,
      }),
    );
    await until(() => replies.length === 1);
    expect(replies[0]).toMatchObject({
      op: 'reply',
      type: 'ack',
      xid: 77,
      bootFile: 'ipxe.efi',
      siaddr: '127.0.0.1',
      vendorClass: 'PXEClient',
    });
    expect(svc.counters).toMatchObject({ received: 4, malformed: 3, proxyAck: 1 });
    expect(c.metrics.render()).toMatch(/lilcluster_dhcp_packets_total\{kind="malformed"\} 3/);
  });

  it('opens nothing in off mode', async () => {
    const svc = await startDhcp(core('off'));
    cleanups.push(() => svc.stop());
    expect(svc.mode).toBe('off');
    expect(svc.stats()).toEqual({ leases: 0, poolSize: 0, offers: 0 });
  });

  it.each([
    ['full', /already in use/, /--dhcp proxy \(it shares port 67 with a server that allows it\) or --dhcp off/],
    ['proxy', /held by another DHCP server that does not share it/, /bind-interfaces/],
  ] as const)('in %s mode refuses to start on a port held exclusively, saying what to do', async (mode, message, hint) => {
    const taken = createSocket('udp4');
    await new Promise<void>((r) => taken.bind(0, '0.0.0.0', () => r()));
    cleanups.push(() => new Promise<void>((r) => taken.close(() => r())));
    const err = await startDhcp(core(mode), { dhcpPort: taken.address().port, pxePort: await freePort() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DispatcherError);
    expect(err).toMatchObject({ code: 'DSP_ERR_CONFIG', message: expect.stringMatching(message), hint: expect.stringMatching(hint) });
  });
});
