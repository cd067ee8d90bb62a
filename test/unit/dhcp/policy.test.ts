import { describe, expect, it } from 'vitest';
import type { DhcpPacket } from '../../../dispatcher/src/dhcp/codec.js';
import { decodePacket, encodePacket } from '../../../dispatcher/src/dhcp/codec.js';
import {
  leaseReply,
  nakReply,
  proxyReply,
  replyDestination,
  requestState,
  startsNewBoot,
  SAME_BOOT_WINDOW_MS,
  type LeaseParams,
} from '../../../dispatcher/src/dhcp/policy.js';
import { chooseFirstStage, type FirstStageDecision } from '../../../dispatcher/src/boot/first-stage.js';
import type { BootStage } from '../../../dispatcher/src/boot/timeline.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const req = (over: Partial<DhcpPacket & { isIPXE: boolean }> = {}): DhcpPacket & { isIPXE: boolean } => ({
  op: 'request',
  type: 'discover',
  xid: 42,
  secs: 3,
  hops: 0,
  broadcast: false,
  ciaddr: '0.0.0.0',
  yiaddr: '0.0.0.0',
  siaddr: '0.0.0.0',
  giaddr: '0.0.0.0',
  mac: '52:54:00:00:00:01' as Mac,
  serverName: '',
  isIPXE: false,
  ...over,
});
const params: LeaseParams = { serverId: '10.42.0.1', subnetMask: '255.255.255.0', routers: [], dns: ['10.42.0.53'], leaseSeconds: 3600 };
const site = { address: '10.42.0.1', httpPort: 8080 };
const bios: FirstStageDecision = { kind: 'tftp', file: 'undionly.kpxe' };
const uefi: FirstStageDecision = { kind: 'tftp', file: 'ipxe.efi' };
const script: FirstStageDecision = { kind: 'script', url: 'http://10.42.0.1:8080/boot.ipxe?mac=${net0/mac}' };
const httpBoot: FirstStageDecision = { kind: 'http', file: 'ipxe.efi', url: 'http://10.42.0.1:8080/pxe/ipxe.efi' };

describe('where a reply goes (RFC 2131 §4.1)', () => {
  it.each<[string, Partial<DhcpPacket>, DhcpPacket['type'], string, number]>([
    ['relayed: to the relay, port 67', { giaddr: '10.42.7.1' }, 'offer', '10.42.7.1', 67],
    ['relayed NAK: to the relay too', { giaddr: '10.42.7.1', ciaddr: '10.42.0.9' }, 'nak', '10.42.7.1', 67],
    ['NAK: broadcast', { ciaddr: '10.42.0.9' }, 'nak', '255.255.255.255', 68],
    ['a renewing client (ciaddr): unicast to it', { ciaddr: '10.42.0.9' }, 'ack', '10.42.0.9', 68],
    ['BROADCAST bit set: broadcast', { broadcast: true }, 'offer', '255.255.255.255', 68],
    ['no address, bit clear: broadcast (no ARP injection from Node)', { broadcast: false }, 'offer', '255.255.255.255', 68],
  ])('%s', (_w, over, type, address, port) => {
    const r = req(over);
    expect(replyDestination(r, { ...r, op: 'reply', type })).toEqual({ address, port });
  });
});

describe('DHCPREQUEST states (RFC 2131 §4.3.2)', () => {
  it.each<[string, Partial<DhcpPacket>, ReturnType<typeof requestState>]>([
    ['server id and requested address: SELECTING', { serverId: '10.42.0.1', requestedIp: '10.42.0.100' }, 'selecting'],
    ['requested address only: INIT-REBOOT', { requestedIp: '10.42.0.100' }, 'init-reboot'],
    ['ciaddr only: RENEWING or REBINDING', { ciaddr: '10.42.0.100' }, 'renewing'],
    ['server id without requested address: malformed', { serverId: '10.42.0.1' }, 'malformed'],
    ['server id with ciaddr: malformed', { serverId: '10.42.0.1', requestedIp: '10.42.0.100', ciaddr: '10.42.0.100' }, 'malformed'],
    ['requested address with ciaddr: malformed', { requestedIp: '10.42.0.100', ciaddr: '10.42.0.100' }, 'malformed'],
    ['nothing: malformed', {}, 'malformed'],
  ])('%s', (_w, over, state) => {
    expect(requestState(req({ type: 'request', ...over }))).toBe(state);
  });
});

describe('full-mode replies', () => {
  it('an OFFER to a BIOS PXE ROM carries the lease, the node name and the TFTP boot file (header and option 67, siaddr and option 66)', () => {
    const r = leaseReply(
      'offer',
      req({ vendorClass: 'PXEClient:Arch:00000:UNDI:002001', clientArch: 0 }),
      '10.42.0.100',
      params,
      bios,
      'node1',
    );
    expect(r).toMatchObject({
      op: 'reply',
      type: 'offer',
      xid: 42,
      yiaddr: '10.42.0.100',
      ciaddr: '0.0.0.0',
      serverId: '10.42.0.1',
      leaseSeconds: 3600,
      renewalSeconds: 1800,
      rebindingSeconds: 3150,
      subnetMask: '255.255.255.0',
      dns: ['10.42.0.53'],
      hostname: 'node1',
      siaddr: '10.42.0.1',
      tftpServer: '10.42.0.1',
      bootFile: 'undionly.kpxe',
    });
    expect(r.vendorClass).toBeUndefined(); // full mode does not echo PXEClient: EDK2 would then look for a boot server on 4011
    expect(r.ipxeOptions).toBeUndefined();
    const wire = encodePacket(r);
    expect(wire.subarray(108, 122).toString('latin1')).toBe('undionly.kpxe\0');
    expect(decodePacket(wire)).toMatchObject({ bootFile: 'undionly.kpxe', tftpServer: '10.42.0.1', siaddr: '10.42.0.1' });
  });

  it('an ACK to iPXE carries the boot script and no-pxedhcp (175.176 = 1)', () => {
    const r = leaseReply('ack', req({ type: 'request', isIPXE: true }), '10.42.0.100', params, script, 'node1');
    expect(r.bootFile).toBe(script.kind === 'script' ? script.url : '');
    expect(Array.from(r.ipxeOptions ?? [])).toEqual([176, 1, 1]);
  });

  it('an OFFER to a UEFI HTTP boot client echoes HTTPClient and gives the iPXE binary as a URL', () => {
    const r = leaseReply(
      'offer',
      req({ vendorClass: 'HTTPClient:Arch:00016:UNDI:003001', clientArch: 16 }),
      '10.42.0.100',
      params,
      httpBoot,
      undefined,
    );
    expect(r).toMatchObject({ vendorClass: 'HTTPClient', bootFile: 'http://10.42.0.1:8080/pxe/ipxe.efi' });
    expect(r.hostname).toBeUndefined();
  });

  it('an ACK to a renewing client keeps its ciaddr; relay information (82) and client id (61) are echoed', () => {
    const r = leaseReply(
      'ack',
      req({
        type: 'request',
        ciaddr: '10.42.0.100',
        giaddr: '10.42.0.254',
        relayAgentInfo: Uint8Array.of(1, 2, 0, 1),
        clientId: Uint8Array.of(1, 9),
      }),
      '10.42.0.100',
      params,
      { kind: 'none' },
      undefined,
    );
    expect(r).toMatchObject({ ciaddr: '10.42.0.100', giaddr: '10.42.0.254' });
    expect(Array.from(r.relayAgentInfo ?? [])).toEqual([1, 2, 0, 1]);
    expect(Array.from(r.clientId ?? [])).toEqual([1, 9]);
    expect(r.bootFile).toBeUndefined();
  });

  it('a NAK says why, has no address, and sets the BROADCAST bit when relayed', () => {
    const n = nakReply(req({ type: 'request', giaddr: '10.42.7.1' }), '10.42.0.1', 'requested address is not available');
    expect(n).toMatchObject({
      type: 'nak',
      yiaddr: '0.0.0.0',
      serverId: '10.42.0.1',
      message: 'requested address is not available',
      broadcast: true,
    });
    expect(n.leaseSeconds).toBeUndefined();
  });
});

describe('ProxyDHCP replies', () => {
  it('offers a BIOS PXE ROM the boot file with discovery control "use the boot file", no address, PXEClient and its GUID echoed', () => {
    const guid = Uint8Array.of(0, ...Array(16).fill(7));
    const r = proxyReply(
      req({ vendorClass: 'PXEClient:Arch:00000:UNDI:002001', clientArch: 0, clientUuid: guid }),
      'offer',
      bios,
      '10.42.0.1',
    );
    expect(r).toMatchObject({
      type: 'offer',
      yiaddr: '0.0.0.0',
      siaddr: '10.42.0.1',
      serverId: '10.42.0.1',
      vendorClass: 'PXEClient',
      bootFile: 'undionly.kpxe',
    });
    expect(Array.from(r.vendorOptions ?? [])).toEqual([6, 1, 8, 255]);
    expect(Array.from(r.clientUuid ?? [])).toEqual(Array.from(guid));
    expect(r.leaseSeconds).toBeUndefined();
  });

  it('offers UEFI firmware the file without option 43, so it asks the boot server on port 4011 (Pixiecore)', () => {
    const r = proxyReply(req({ clientArch: 7, vendorClass: 'PXEClient:Arch:00007:UNDI:003000' }), 'offer', uefi, '10.42.0.1');
    expect(r.vendorOptions).toBeUndefined();
    expect(r).toMatchObject({ bootFile: 'ipxe.efi', vendorClass: 'PXEClient', serverName: '10.42.0.1' });
  });

  it('offers iPXE the boot script as a PXE offer with a file, which iPXE takes over the DHCP server settings', () => {
    const r = proxyReply(req({ isIPXE: true }), 'offer', script, '10.42.0.1');
    expect(r).toMatchObject({
      vendorClass: 'PXEClient',
      serverId: '10.42.0.1',
      bootFile: 'http://10.42.0.1:8080/boot.ipxe?mac=${net0/mac}',
    });
    expect(r.ipxeOptions).toBeUndefined(); // no-pxedhcp belongs to the address server, not to us
  });

  it('answers a port 4011 REQUEST with an ACK that keeps the client address', () => {
    const r = proxyReply(req({ type: 'request', ciaddr: '192.168.1.50', clientArch: 7 }), 'ack', uefi, '10.42.0.1');
    expect(r).toMatchObject({ type: 'ack', ciaddr: '192.168.1.50', yiaddr: '0.0.0.0', bootFile: 'ipxe.efi' });
  });

  it('echoes HTTPClient to UEFI HTTP boot clients', () => {
    const c = { clientArch: 16, vendorClass: 'HTTPClient:Arch:00016:UNDI:003001', isIPXE: false };
    expect(proxyReply(req(c), 'offer', chooseFirstStage(c, undefined, site), '10.42.0.1').vendorClass).toBe('HTTPClient');
  });
});

describe('does a DISCOVER start a new boot', () => {
  const t = 1_000_000;
  const pxeDiscover = req({ vendorClass: 'PXEClient:Arch:00000:UNDI:002001' });
  const ipxeDiscover = req({ vendorClass: 'PXEClient:Arch:00000:UNDI:002001', isIPXE: true });
  const osDiscover = req({ vendorClass: 'udhcp 1.35.0' });
  it.each<[string, DhcpPacket & { isIPXE: boolean }, BootStage | undefined, number, boolean]>([
    ['first sight of a firmware', pxeDiscover, undefined, 0, true],
    ['firmware retransmitting its DISCOVER', pxeDiscover, 'dhcp.discover', 2_000, false],
    ['firmware after its offer', pxeDiscover, 'dhcp.offer', 4_000, false],
    ['firmware after a complete earlier boot', pxeDiscover, 'agent.hello', 60_000, true],
    ['firmware again after TFTP (the machine rebooted)', pxeDiscover, 'tftp.sent', 30_000, true],
    ['iPXE chain-loaded by the firmware', ipxeDiscover, 'tftp.sent', 3_000, false],
    ['iPXE right after the firmware DHCP', ipxeDiscover, 'dhcp.ack', 1_000, false],
    ['iPXE as the NIC ROM after the agent ran', ipxeDiscover, 'agent.hello', 60_000, true],
    ['anything after a long silence', ipxeDiscover, 'dhcp.ack', SAME_BOOT_WINDOW_MS + 1, true],
    ['the Linux in the image (no PXE vendor class)', osDiscover, 'http.initrd', 5_000, false],
    ['a REQUEST', req({ type: 'request', vendorClass: 'PXEClient' }), undefined, 0, false],
  ])('%s', (_w, packet, latest, ago, want) => {
    expect(startsNewBoot(packet, latest === undefined ? undefined : { stage: latest, ts: t - ago }, t)).toBe(want);
  });
});
