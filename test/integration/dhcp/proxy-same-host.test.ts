/**
 * ProxyDHCP on the host that already runs the DHCP server (a small lab: dnsmasq hands out the
 * addresses on the dispatcher's own interface). dnsmasq holds port 67; with bind-interfaces it
 * lets others share it (SO_REUSEADDR), and the dispatcher takes the port's broadcasts only:
 * PXE clients hear both servers, dnsmasq keeps its unicast renewals. Without bind-interfaces
 * dnsmasq holds the port alone and the dispatcher says what to change. Needs root.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { createLab, type Iface, type Lab, type LabProcess, type Netns } from '../../lab/netns.js';
import { buildProbe, probe, removeTempDirs, tempDir } from './harness.js';
import { spawnDispatcher, startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';

let lab: Lab;
let srv: Netns;
let cli: Netns;
let c0: Iface;
let bridge: string;

const SERVER = '10.63.0.1';
const BIOS = { vendorClass: 'PXEClient:Arch:00000:UNDI:002001', clientArch: 0, clientUuid: `00${'44'.repeat(16)}` };

function startDnsmasq(shareable: boolean): LabProcess {
  const leases = join(tempDir('lc-dnsmasq-'), 'leases');
  return srv.spawn('dnsmasq', [
    '--no-daemon',
    '--conf-file=/dev/null',
    '--port=0',
    `--interface=${bridge}`,
    ...(shareable ? ['--bind-interfaces'] : []),
    '--user=root',
    '--no-ping',
    '--dhcp-range=10.63.0.100,10.63.0.150,255.255.255.0,120',
    `--dhcp-leasefile=${leases}`,
    '--log-dhcp',
    '--log-facility=-',
  ]);
}

beforeAll(async () => {
  await buildProbe();
  lab = await createLab('dhcp');
  srv = await lab.namespace('srv');
  cli = await lab.namespace('cli');
  const br = await lab.bridge(srv, { address: `${SERVER}/24` });
  bridge = br.name;
  const [s, c] = await lab.veth({ ns: srv }, { ns: cli, name: 'c0' });
  await lab.attach(s, br);
  c0 = c;
}, 60_000);

afterAll(async () => {
  await lab?.cleanup();
  removeTempDirs();
});

describe('ProxyDHCP beside a DHCP server on the same host', () => {
  it('shares port 67 with dnsmasq (bind-interfaces): PXE clients get both offers, dnsmasq keeps its renewals', async () => {
    const dnsmasq = startDnsmasq(true);
    await dnsmasq.waitForOutput(/DHCP, IP range 10\.63\.0\.100/, 10_000);
    let d: DispatcherProcess | undefined;
    try {
      d = await startDispatcher({ ns: srv, tftp: true, logLevel: 'debug', args: ['--interface', bridge, '--dhcp', 'proxy'] });
      expect(d.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('another DHCP server holds port 67'))).toBe(true);

      const mac = '52:54:00:63:00:01';
      const offers = await probe(cli, {
        iface: c0.name,
        to: { address: '255.255.255.255', port: 67 },
        packets: [{ type: 'discover', xid: 1, mac, broadcast: true, ...BIOS }],
      });
      // Both servers answer from the same address: tell them apart by what they offer.
      const address = offers.filter((o) => o.packet.yiaddr !== '0.0.0.0');
      const boot = offers.filter((o) => o.packet.bootFile !== undefined);
      expect(address).toHaveLength(1);
      expect(address[0]!.packet.yiaddr).toMatch(/^10\.63\.0\.(1[0-4]\d|150)$/);
      expect(boot).toHaveLength(1);
      expect(boot[0]).toMatchObject({ from: SERVER, port: 67 });
      expect(boot[0]!.packet).toMatchObject({
        type: 'offer',
        yiaddr: '0.0.0.0',
        serverId: SERVER,
        vendorClass: 'PXEClient',
        bootFile: 'undionly.kpxe',
      });

      // The address is taken from dnsmasq; a renewal (unicast to port 67) reaches dnsmasq, not us.
      const ip = String(address[0]!.packet.yiaddr);
      const acks = await probe(cli, {
        iface: c0.name,
        to: { address: '255.255.255.255', port: 67 },
        packets: [{ type: 'request', xid: 2, mac, broadcast: true, serverId: SERVER, requestedIp: ip, ...BIOS }],
      });
      expect(acks.map((a) => [a.packet.type, a.packet.yiaddr])).toEqual([['ack', ip]]);
      await cli.addAddress(c0.name, `${ip}/24`);
      const received = await dhcpReceived(d);
      const renewed = await probe(cli, {
        iface: c0.name,
        to: { address: SERVER, port: 67 },
        packets: [{ type: 'request', xid: 3, mac, ciaddr: ip }],
      });
      expect(renewed.map((a) => [a.packet.type, a.packet.yiaddr])).toEqual([['ack', ip]]);
      expect(await dhcpReceived(d)).toBe(received);
    } finally {
      await cli.exec('ip', ['addr', 'flush', 'dev', c0.name]);
      await d?.stop();
      await dnsmasq.stop();
    }
  });

  it('says what to change when the other server holds port 67 alone (dnsmasq without bind-interfaces)', async () => {
    const dnsmasq = startDnsmasq(false);
    await dnsmasq.waitForOutput(/DHCP, IP range 10\.63\.0\.100/, 10_000);
    try {
      const p = spawnDispatcher({ ns: srv, tftp: true, args: ['--interface', bridge, '--dhcp', 'proxy'] });
      const { code } = await p.exited;
      expect(code).not.toBe(0);
      const out = p.output();
      expect(out).toContain('cannot listen on DHCP port 67: held by another DHCP server that does not share it');
      expect(out).toContain('bind-interfaces');
      expect(out).not.toContain('run the dispatcher with --dhcp proxy');
    } finally {
      await dnsmasq.stop();
    }
  });
});

/** Packets the dispatcher's DHCP sockets received, from its metrics. */
async function dhcpReceived(d: DispatcherProcess): Promise<number> {
  const port = Number(d.logs.find((l) => l.msg === 'dispatcher started')?.httpPort);
  // The dispatcher listens inside the namespace: read its metrics from there.
  const { stdout: text } = await srv.exec(process.execPath, [
    '-e',
    `fetch('http://${SERVER}:${port}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`,
  ]);
  const m = /lilcluster_dhcp_packets_total\{kind="received"\} (\d+)/.exec(text);
  if (!m) throw new Error('no DHCP received counter in /metrics');
  return Number(m[1]);
}
