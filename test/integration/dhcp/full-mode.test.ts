/**
 * Full-mode DHCP against real clients: the dispatcher process in a namespace serving a bridge,
 * busybox udhcpc and the dhcp-probe client in another namespace, a second interface the
 * dispatcher must ignore. Needs root.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, type Lab, type Netns, type Iface } from '../../lab/netns.js';
import { buildProbe, removeTempDirs, eventually, probe, probeDora, udhcpcEvents, udhcpcScript, udpRcvbufErrors } from './harness.js';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { encodePacket } from '../../../dispatcher/src/dhcp/codec.js';

let lab: Lab;
let srv: Netns;
let cli: Netns;
let other: Netns;
let br: Iface;
const c: Iface[] = [];
let otherCli: Iface;
let d: DispatcherProcess;
let script: string;
const dataDirs: string[] = [];

const SERVER = '10.60.0.1';
const RANGE = ['--range', '10.60.1.1-10.60.4.254'];

beforeAll(async () => {
  await buildProbe();
  script = udhcpcScript();
  lab = await createLab('dhcp');
  srv = await lab.namespace('srv');
  cli = await lab.namespace('cli');
  other = await lab.namespace('other');
  br = await lab.bridge(srv, { address: `${SERVER}/16` });
  for (let i = 0; i < 3; i++) {
    const [s, cl] = await lab.veth({ ns: srv }, { ns: cli, name: `c${i}` });
    await lab.attach(s, br);
    c.push(cl);
  }
  // A second network on the server that the dispatcher must not serve.
  const [, oc] = await lab.veth({ ns: srv, name: 'other0', address: '10.61.0.1/24' }, { ns: other, name: 'o0' });
  otherCli = oc;
  d = await startDispatcher({
    ns: srv,
    tftp: true,
    logLevel: 'debug',
    args: ['--interface', br.name, '--dhcp', 'full', ...RANGE, '--lease-seconds', '120'],
  });
  dataDirs.push(d.dataDir);
}, 60_000);

afterAll(async () => {
  await d?.stop();
  await lab?.cleanup();
  removeTempDirs();
});

function udhcpc(ns: Netns, iface: string, extra: string[] = []) {
  return ns.spawn('udhcpc', ['-i', iface, '-f', '-s', script, '-t', '5', '-T', '1', ...extra]);
}

describe('full-mode DHCP with real clients', () => {
  it('busybox udhcpc gets an address, renews it (from the lease cache) and releases it; the lease follows in the store', async () => {
    const u = udhcpc(cli, c[0]!.name, ['-R']);
    const bound = await eventually(() => udhcpcEvents(u.output()).find((e) => e.event === 'bound'), 15_000, 'udhcpc bound');
    expect(bound.ip).toMatch(/^10\.60\.[1-4]\.\d+$/);
    expect(bound.serverid).toBe(SERVER);
    expect(bound.lease).toBe('120');
    const row = () =>
      d.query<{ ip: string; state: string; expires_at: number }>('SELECT ip, state, expires_at FROM dhcp_leases WHERE ip = ?', bound.ip)[0];
    expect(row()).toMatchObject({ ip: bound.ip, state: 'bound' });
    const firstExpiry = row()!.expires_at;

    await new Promise((r) => setTimeout(r, 1100));
    u.child.kill('SIGUSR1'); // renew now: unicast REQUEST from the leased address
    const renewed = await eventually(() => udhcpcEvents(u.output()).find((e) => e.event === 'renew'), 15_000, 'udhcpc renew');
    expect(renewed.ip).toBe(bound.ip);
    // A renewal this young is confirmed from the stored lease (lease caching): the client gets
    // what is left of it, and the store is not written. (Past the threshold a renewal writes
    // a new expiry: test/unit/dhcp/handlers.test.ts.)
    expect(Number(renewed.lease)).toBeGreaterThanOrEqual(115);
    expect(Number(renewed.lease)).toBeLessThan(120);
    expect(row()!.expires_at).toBe(firstExpiry);
    expect(d.logs.some((l) => l.msg === 'DHCP serving')).toBe(true);

    await u.stop('SIGTERM'); // -R: release on exit
    await eventually(() => row()?.state === 'released', 10_000, 'lease released in the store');
  });

  it('two clients never get one address, and 300 clients at once all get distinct addresses without a dropped datagram', async () => {
    const u1 = udhcpc(cli, c[0]!.name);
    const u2 = udhcpc(cli, c[1]!.name);
    const b1 = await eventually(() => udhcpcEvents(u1.output()).find((e) => e.event === 'bound'), 15_000, 'client 1 bound');
    const b2 = await eventually(() => udhcpcEvents(u2.output()).find((e) => e.event === 'bound'), 15_000, 'client 2 bound');
    expect(b1.ip).not.toBe(b2.ip);
    await u1.stop();
    await u2.stop();

    const dropsBefore = await udpRcvbufErrors(srv);
    const results = await probeDora(cli, {
      iface: c[2]!.name,
      to: { address: '255.255.255.255', port: 67 },
      dora: { count: 300, macPrefix: '02:dd:01:00', timeoutMs: 30_000 },
    });
    const ips = results.map((r) => r.ip);
    expect(results.filter((r) => !r.ip)).toEqual([]);
    expect(new Set(ips).size).toBe(300);
    expect(ips).not.toContain(b1.ip);
    expect(ips).not.toContain(b2.ip);
    // No datagram lost by the server's socket (the kernel's own count). Retransmissions only
    // mean a slow answer on a busy machine, so they are reported, not asserted.
    expect(await udpRcvbufErrors(srv)).toBe(dropsBefore);
    const slowest = Math.max(...results.map((r) => r.ms ?? 0));
    console.log(`300 clients: slowest exchange ${slowest} ms, ${results.reduce((n, r) => n + r.retransmits, 0)} retransmissions`);
    const rows = d.query<{ n: number; ips: number }>(
      "SELECT count(*) AS n, count(DISTINCT ip) AS ips FROM dhcp_leases WHERE mac LIKE '02:dd:01:00:%' AND state = 'bound'",
    )[0]!;
    expect(rows).toEqual({ n: 300, ips: 300 });
  });

  it('gives a PXE ROM its TFTP first stage and iPXE the boot script, and keeps the boot timeline', async () => {
    const pxe = { vendorClass: 'PXEClient:Arch:00000:UNDI:002001', clientArch: 0, clientUuid: `00${'11'.repeat(16)}` };
    const [rom] = await probeDora(cli, {
      iface: c[2]!.name,
      to: { address: '255.255.255.255', port: 67 },
      dora: { count: 1, macPrefix: '52:54:00:60', template: pxe },
    });
    expect(rom).toMatchObject({ bootFile: 'undionly.kpxe', hostname: expect.stringMatching(/^node\d+$/) });
    expect(rom!.mac).toBe('52:54:00:60:00:00');
    const ipxe = await probe(cli, {
      iface: c[2]!.name,
      to: { address: '255.255.255.255', port: 67 },
      packets: [{ type: 'discover', xid: 99, mac: '52:54:00:60:00:00', ...pxe, userClass: 'iPXE', ipxeOptions: '130101' }],
    });
    expect(ipxe).toHaveLength(1);
    expect(ipxe[0]!.packet).toMatchObject({ type: 'offer', yiaddr: rom!.ip, ipxeOptions: 'b00101' });
    expect(String(ipxe[0]!.packet.bootFile)).toMatch(
      new RegExp(`^http://${SERVER.replaceAll('.', '\\.')}:\\d+/boot\\.ipxe\\?mac=\\$\\{net0/mac\\}$`),
    );
    await eventually(
      () => d.query<{ stage: string }>('SELECT stage FROM boot_stages WHERE mac = ? ORDER BY id', '52:54:00:60:00:00').length >= 6,
      5_000,
      'timeline',
    );
    const stages = d.query<{ stage: string; boot: number }>(
      'SELECT stage, boot FROM boot_stages WHERE mac = ? ORDER BY id',
      '52:54:00:60:00:00',
    );
    expect(stages.map((s) => s.stage)).toEqual(['dhcp.discover', 'dhcp.offer', 'dhcp.request', 'dhcp.ack', 'dhcp.discover', 'dhcp.offer']);
    expect(new Set(stages.map((s) => s.boot)).size).toBe(1);
  });

  it('answers through a relay: unicast to the relay on port 67, with giaddr', async () => {
    await cli.addAddress(c[2]!.name, '10.60.0.2/16');
    const replies = await probe(cli, {
      iface: c[2]!.name,
      bindPort: 67,
      to: { address: SERVER, port: 67 },
      packets: [{ type: 'discover', xid: 4242, mac: '02:dd:02:00:00:01', giaddr: '10.60.0.2', hops: 1 }],
    });
    expect(replies).toHaveLength(1);
    expect(replies[0]!.port).toBe(67);
    expect(replies[0]!.packet).toMatchObject({ type: 'offer', giaddr: '10.60.0.2', routers: ['10.60.0.2'] });
    await cli.exec('ip', ['addr', 'del', '10.60.0.2/16', 'dev', c[2]!.name]);
  });

  it('never answers on another interface of the machine', async () => {
    const r = await other.exec('udhcpc', ['-i', otherCli.name, '-n', '-q', '-f', '-s', script, '-t', '3', '-T', '1'], {
      allowFailure: true,
      timeoutMs: 20_000,
    });
    expect(r.code).not.toBe(0);
    expect(udhcpcEvents(r.stdout).find((e) => e.event === 'bound')).toBeUndefined();
    const replies = await probe(other, {
      iface: otherCli.name,
      to: { address: '255.255.255.255', port: 67 },
      packets: [{ type: 'discover', xid: 5, mac: '02:dd:03:00:00:01' }],
    });
    expect(replies).toEqual([]);
    // ...while the node network is still served
    expect(
      await probe(cli, {
        iface: c[2]!.name,
        to: { address: '255.255.255.255', port: 67 },
        packets: [{ type: 'discover', xid: 6, mac: '02:dd:03:00:00:02' }],
      }),
    ).toHaveLength(1);
  });

  it('survives hostile input: garbage is dropped, logged at most 10 times a minute per field, and service goes on', async () => {
    const garbage = [Buffer.alloc(10), Buffer.alloc(300, 0xff), Buffer.from('GET / HTTP/1.1\r\n\r\n')];
    const valid = encodePacket({
      op: 'request',
      type: 'discover',
      xid: 1,
      secs: 0,
      hops: 0,
      broadcast: true,
      ciaddr: '0.0.0.0',
      yiaddr: '0.0.0.0',
      siaddr: '0.0.0.0',
      giaddr: '0.0.0.0',
      mac: '02:dd:04:00:00:01' as never,
      serverName: '',
    });
    const lying = Buffer.from(valid);
    lying[241] = 200; // option 53 claims 200 bytes
    const flood = `const s=require('dgram').createSocket('udp4');s.bind(0,()=>{s.setBroadcast(true);const p=${JSON.stringify([...garbage, lying].map((b) => b.toString('hex')))};let n=0;const go=()=>{for(let i=0;i<50;i++)s.send(Buffer.from(p[n++%p.length],'hex'),67,'${SERVER}');if(n<2000)setImmediate(go);else setTimeout(()=>s.close(),200)};go()})`;
    await cli.addAddress(c[2]!.name, '10.60.0.3/16');
    await cli.exec(process.execPath, ['-e', flood], { timeoutMs: 30_000 });
    await cli.exec('ip', ['addr', 'del', '10.60.0.3/16', 'dev', c[2]!.name]);
    expect(d.child.exitCode).toBeNull();
    const malformedLines = d.logs.filter((l) => l.msg === 'malformed DHCP packet dropped');
    expect(malformedLines.length).toBeGreaterThan(0);
    const perField = new Map<string, number>();
    for (const l of malformedLines) perField.set(String(l.field), (perField.get(String(l.field)) ?? 0) + 1);
    for (const n of perField.values()) expect(n).toBeLessThanOrEqual(10);
    expect([...perField.keys()].sort()).toEqual(['header', 'op', 'option 53 (DHCP message type)'].sort());
    expect(
      await probe(cli, {
        iface: c[2]!.name,
        to: { address: '255.255.255.255', port: 67 },
        packets: [{ type: 'discover', xid: 7, mac: '02:dd:04:00:00:02' }],
      }),
    ).toHaveLength(1);
  });

  it('keeps leases across a restart of the dispatcher', async () => {
    const u = udhcpc(cli, c[0]!.name);
    const bound = await eventually(() => udhcpcEvents(u.output()).find((e) => e.event === 'bound'), 15_000, 'bound');
    await d.stop();
    d = await startDispatcher({
      ns: srv,
      tftp: true,
      logLevel: 'debug',
      dataDir: d.dataDir,
      args: ['--interface', br.name, '--dhcp', 'full', ...RANGE, '--lease-seconds', '120'],
    });
    expect(d.logs.find((l) => l.msg === 'DHCP serving')?.leases).toBeGreaterThan(300);
    // Another machine asking for that very address is refused...
    const nak = await probe(cli, {
      iface: c[2]!.name,
      to: { address: '255.255.255.255', port: 67 },
      packets: [{ type: 'request', xid: 8, mac: '02:dd:05:00:00:01', requestedIp: bound.ip }],
    });
    expect(nak[0]?.packet).toMatchObject({ type: 'nak' });
    // ...while the owner renews it.
    u.child.kill('SIGUSR1');
    const renewed = await eventually(() => udhcpcEvents(u.output()).find((e) => e.event === 'renew'), 15_000, 'renew after restart');
    expect(renewed.ip).toBe(bound.ip);
    await u.stop();
  });
});
