/**
 * ProxyDHCP beside another DHCP server: dnsmasq (`--port=0`, addresses only) in its own
 * namespace on the same bridge as the dispatcher in `--dhcp proxy` mode. A PXE-like client
 * (dhcp-probe) must get its address from dnsmasq and its boot file from the dispatcher;
 * an OS client (udhcpc) must hear from dnsmasq only. Needs root.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { createLab, type Iface, type Lab, type LabProcess, type Netns } from '../../lab/netns.js';
import { buildProbe, removeTempDirs, tempDir, eventually, probe, udhcpcEvents, udhcpcScript } from './harness.js';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';

let lab: Lab;
let srv: Netns;
let dhcpd: Netns;
let cli: Netns;
let c0: Iface;
let dnsmasq: LabProcess;
let d: DispatcherProcess;

const PROXY = '10.62.0.1';
const DNSMASQ = '10.62.0.2';
const BIOS = { vendorClass: 'PXEClient:Arch:00000:UNDI:002001', clientArch: 0, clientUuid: `00${'22'.repeat(16)}` };
const UEFI = { vendorClass: 'PXEClient:Arch:00007:UNDI:003000', clientArch: 7, clientUuid: `00${'33'.repeat(16)}` };

beforeAll(async () => {
  await buildProbe();
  lab = await createLab('dhcp');
  srv = await lab.namespace('srv');
  dhcpd = await lab.namespace('dnsmasq');
  cli = await lab.namespace('cli');
  const br = await lab.bridge(srv, { address: `${PROXY}/24` });
  const [s1] = await lab.veth({ ns: srv }, { ns: dhcpd, name: 'd0', address: `${DNSMASQ}/24` });
  await lab.attach(s1, br);
  const [s2, cl] = await lab.veth({ ns: srv }, { ns: cli, name: 'c0' });
  await lab.attach(s2, br);
  c0 = cl;
  const leases = join(tempDir('lc-dnsmasq-'), 'leases');
  dnsmasq = dhcpd.spawn('dnsmasq', [
    '--no-daemon',
    '--conf-file=/dev/null',
    '--port=0',
    '--interface=d0',
    '--bind-interfaces',
    '--user=root',
    '--no-ping',
    '--dhcp-range=10.62.0.100,10.62.0.150,255.255.255.0,120',
    `--dhcp-leasefile=${leases}`,
    '--log-dhcp',
    '--log-facility=-',
  ]);
  await dnsmasq.waitForOutput(/DHCP, IP range 10\.62\.0\.100/, 10_000);
  d = await startDispatcher({ ns: srv, tftp: true, logLevel: 'debug', args: ['--interface', br.name, '--dhcp', 'proxy'] });
}, 60_000);

afterAll(async () => {
  await d?.stop();
  await lab?.cleanup();
  removeTempDirs();
});

describe('ProxyDHCP beside dnsmasq', () => {
  it('a BIOS PXE client gets its address from dnsmasq and its boot file from the dispatcher', async () => {
    const mac = '52:54:00:62:00:01';
    const offers = await probe(cli, {
      iface: c0.name,
      to: { address: '255.255.255.255', port: 67 },
      packets: [{ type: 'discover', xid: 1, mac, broadcast: true, ...BIOS }],
    });
    const fromDnsmasq = offers.filter((o) => o.from === DNSMASQ);
    const fromUs = offers.filter((o) => o.from === PROXY);
    expect(fromDnsmasq).toHaveLength(1);
    expect(fromUs).toHaveLength(1);
    expect(fromDnsmasq[0]!.packet).toMatchObject({ type: 'offer', yiaddr: expect.stringMatching(/^10\.62\.0\.(1[0-4]\d|150)$/) });
    expect(fromDnsmasq[0]!.packet.bootFile).toBeUndefined();
    expect(fromUs[0]!.packet).toMatchObject({
      type: 'offer',
      yiaddr: '0.0.0.0',
      siaddr: PROXY,
      serverId: PROXY,
      vendorClass: 'PXEClient',
      bootFile: 'undionly.kpxe',
      vendorOptions: '060108ff',
      clientUuid: BIOS.clientUuid,
    });

    // The client takes dnsmasq's address; the dispatcher stays out of that exchange.
    const yiaddr = String(fromDnsmasq[0]!.packet.yiaddr);
    const acks = await probe(cli, {
      iface: c0.name,
      to: { address: '255.255.255.255', port: 67 },
      packets: [
        { type: 'request', xid: 2, mac, broadcast: true, serverId: String(fromDnsmasq[0]!.packet.serverId), requestedIp: yiaddr, ...BIOS },
      ],
    });
    expect(acks.map((a) => [a.from, a.packet.type, a.packet.yiaddr])).toEqual([[DNSMASQ, 'ack', yiaddr]]);
  });

  it('a UEFI PXE client is offered its file without option 43 and gets it from the boot server on port 4011', async () => {
    const mac = '52:54:00:62:00:02';
    const offers = await probe(cli, {
      iface: c0.name,
      to: { address: '255.255.255.255', port: 67 },
      packets: [{ type: 'discover', xid: 3, mac, broadcast: true, ...UEFI }],
    });
    const ours = offers.find((o) => o.from === PROXY)!.packet;
    expect(ours).toMatchObject({ bootFile: 'ipxe.efi', vendorClass: 'PXEClient' });
    expect(ours.vendorOptions).toBeUndefined();
    const ip = String(offers.find((o) => o.from === DNSMASQ)!.packet.yiaddr);
    await cli.addAddress(c0.name, `${ip}/24`);
    try {
      const acks = await probe(cli, {
        iface: c0.name,
        to: { address: PROXY, port: 4011 },
        packets: [{ type: 'request', xid: 4, mac, ciaddr: ip, ...UEFI }],
      });
      expect(acks).toHaveLength(1);
      expect(acks[0]!.packet).toMatchObject({ type: 'ack', ciaddr: ip, bootFile: 'ipxe.efi', siaddr: PROXY, clientUuid: UEFI.clientUuid });
    } finally {
      await cli.exec('ip', ['addr', 'flush', 'dev', c0.name]);
    }
    await eventually(
      () => d.query('SELECT 1 FROM boot_stages WHERE mac = ? AND stage = ?', mac, 'proxy.ack').length > 0,
      5_000,
      'proxy.ack recorded',
    );
    expect(d.query<{ stage: string }>('SELECT stage FROM boot_stages WHERE mac = ? ORDER BY id', mac).map((s) => s.stage)).toEqual([
      'dhcp.discover',
      'proxy.offer',
      'proxy.ack',
    ]);
  });

  it('sends iPXE to the boot script through a ProxyDHCP offer', async () => {
    const offers = await probe(cli, {
      iface: c0.name,
      to: { address: '255.255.255.255', port: 67 },
      packets: [{ type: 'discover', xid: 5, mac: '52:54:00:62:00:03', broadcast: true, ...BIOS, userClass: 'iPXE', ipxeOptions: '130101' }],
    });
    const ours = offers.find((o) => o.from === PROXY)!.packet;
    expect(String(ours.bootFile)).toMatch(/^http:\/\/10\.62\.0\.1:\d+\/boot\.ipxe\?mac=\$\{net0\/mac\}$/);
    expect(ours).toMatchObject({ vendorClass: 'PXEClient', serverId: PROXY, yiaddr: '0.0.0.0' });
    expect(ours.ipxeOptions).toBeUndefined();
    expect(offers.some((o) => o.from === DNSMASQ)).toBe(true);
  });

  it('an OS DHCP client (udhcpc) is served by dnsmasq alone', async () => {
    const u = cli.spawn('udhcpc', ['-i', c0.name, '-f', '-s', udhcpcScript(), '-t', '5', '-T', '1']);
    const bound = await eventually(() => udhcpcEvents(u.output()).find((e) => e.event === 'bound'), 15_000, 'udhcpc bound');
    expect(bound.serverid).toBe(DNSMASQ);
    expect(bound.boot_file).toBe('');
    await u.stop();
    expect(d.logs.filter((l) => l.msg === 'proxy offer').length).toBe(3); // the three PXE clients above, nobody else
    expect(d.query('SELECT count(*) AS n FROM dhcp_leases')).toEqual([{ n: 0 }]); // proxy mode hands out no address
  });
});
