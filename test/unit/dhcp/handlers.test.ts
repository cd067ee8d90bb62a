/**
 * The full- and proxy-mode handlers on a real core (SQLite in a temp dir, node registry,
 * boot timeline), with a hand-driven clock. Packets go through the real codec both ways.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCore, closeCore, type Core } from '../../../dispatcher/src/core.js';
import { resolveConfig, type ConfigOverrides } from '../../../dispatcher/src/config.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import { decodePacket, DecodeError, encodePacket, type DhcpPacket, type ReceivedPacket } from '../../../dispatcher/src/dhcp/codec.js';
import { createDhcpContext, createFullMode } from '../../../dispatcher/src/dhcp/server.js';
import { newCounters, type Answer } from '../../../dispatcher/src/dhcp/context.js';
import { ProxyModeHandler } from '../../../dispatcher/src/dhcp/proxy-mode.js';
import { DECLINE_HOLD_MS } from '../../../dispatcher/src/dhcp/full-mode.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const cores: Core[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const c of cores.splice(0)) closeCore(c);
  // Retried: the checkpointer's worker thread may still be closing its WAL files (closeCore does not wait for it).
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true, maxRetries: 5 });
});

function setup(opts: { cluster?: string; config?: ConfigOverrides } = {}) {
  let t = 1_700_000_000_000;
  const clock = { now: () => t, advance: (ms: number) => (t += ms) };
  const dataDir = opts.config?.dataDir ?? mkdtempSync(join(tmpdir(), 'lc-dhcp-handlers-'));
  dirs.push(dataDir);
  const config = resolveConfig({
    interface: 'lab0',
    dataDir,
    ...opts.config,
    dhcp: { mode: 'full', rangeStart: '10.42.0.100', rangeEnd: '10.42.0.102', ...opts.config?.dhcp },
  });
  const core = createCore({
    config,
    log: silentLogger(),
    network: { name: 'lab0', ifindex: 7, address: '10.42.0.1', netmask: '255.255.255.0', mac: undefined },
    cluster: parseClusterFile(opts.cluster ?? 'nodes: []'),
    now: clock.now,
  });
  cores.push(core);
  const counters = newCounters();
  const ctx = createDhcpContext(core, silentLogger(), counters, 8080);
  const full = createFullMode(core, ctx);
  const proxy = new ProxyModeHandler(ctx, '10.42.0.1');
  return { core, clock, counters, full, proxy };
}

/** A client packet as it comes off the wire (encoded, then decoded). */
function wire(p: Partial<DhcpPacket> & { type: DhcpPacket['type'] }): ReceivedPacket {
  const full: DhcpPacket = {
    op: 'request',
    xid: 7,
    secs: 0,
    hops: 0,
    broadcast: false,
    ciaddr: '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    giaddr: '0.0.0.0',
    mac: '52:54:00:00:00:01' as Mac,
    serverName: '',
    ...p,
  };
  const d = decodePacket(encodePacket(full, { maxLength: 1500 }));
  if (d instanceof DecodeError) throw new Error(d.toString());
  return d;
}
const BIOS = { vendorClass: 'PXEClient:Arch:00000:UNDI:002001', clientArch: 0 };
const UEFI = { vendorClass: 'PXEClient:Arch:00007:UNDI:003000', clientArch: 7, clientUuid: Uint8Array.of(0, ...Array(16).fill(3)) };
const IPXE = { vendorClass: 'PXEClient:Arch:00000:UNDI:002001', clientArch: 0, userClass: 'iPXE', ipxeOptions: Uint8Array.of(19, 1, 1) };
const OS = { vendorClass: 'udhcp 1.35.0' };
const A = '52:54:00:00:00:0a' as Mac;
const B = '52:54:00:00:00:0b' as Mac;

/** The reply, checked to survive encoding. */
function replyOf(a: Answer): DhcpPacket {
  expect(a).not.toBeNull();
  const d = decodePacket(encodePacket(a!.reply));
  expect(d).not.toBeInstanceOf(DecodeError);
  return a!.reply;
}

describe('full mode', () => {
  it('takes a BIOS PXE ROM through DISCOVER → OFFER → REQUEST → ACK, registers and names it, and records the boot', async () => {
    const { core, full, counters } = setup();
    const offer = replyOf(await full.handler.handle(wire({ type: 'discover', mac: A, ...BIOS })));
    expect(offer).toMatchObject({
      type: 'offer',
      yiaddr: '10.42.0.100',
      bootFile: 'undionly.kpxe',
      siaddr: '10.42.0.1',
      tftpServer: '10.42.0.1',
      hostname: 'node1',
    });
    const ackAnswer = await full.handler.handle(
      wire({ type: 'request', mac: A, serverId: '10.42.0.1', requestedIp: offer.yiaddr, ...BIOS }),
    );
    expect(replyOf(ackAnswer)).toMatchObject({ type: 'ack', yiaddr: '10.42.0.100', bootFile: 'undionly.kpxe', leaseSeconds: 3600 });
    expect(ackAnswer!.to).toEqual({ address: '255.255.255.255', port: 68 });
    expect(core.nodes.byMac(A)).toMatchObject({ name: 'node1', ip: '10.42.0.100', bootCount: 1, state: 'booting' });
    expect(core.timeline.list(A).map((s) => s.stage)).toEqual(['dhcp.discover', 'dhcp.offer', 'dhcp.request', 'dhcp.ack']);
    expect(core.db.prepare('SELECT ip, mac, state FROM dhcp_leases').all()).toEqual([{ ip: '10.42.0.100', mac: A, state: 'bound' }]);
    expect(counters).toMatchObject({ discover: 1, offer: 1, request: 1, ack: 1, nak: 0, dropped: 0 });
  });

  it('counts one boot when the firmware chain-loads iPXE, which gets the boot script and no-pxedhcp', async () => {
    const { core, full, clock } = setup();
    await full.handler.handle(wire({ type: 'discover', mac: A, ...BIOS }));
    clock.advance(500);
    await full.handler.handle(wire({ type: 'discover', mac: A, ...BIOS })); // firmware retransmission
    await full.handler.handle(wire({ type: 'request', mac: A, serverId: '10.42.0.1', requestedIp: '10.42.0.100', ...BIOS }));
    clock.advance(3_000);
    const offer = replyOf(await full.handler.handle(wire({ type: 'discover', mac: A, ...IPXE })));
    expect(offer).toMatchObject({ yiaddr: '10.42.0.100', bootFile: 'http://10.42.0.1:8080/boot.ipxe?mac=${net0/mac}' });
    expect(Array.from(offer.ipxeOptions ?? [])).toEqual([176, 1, 1]);
    expect(core.nodes.byMac(A)?.bootCount).toBe(1);
    expect(new Set(core.timeline.list(A).map((s) => s.boot)).size).toBe(1);
  });

  it('gives UEFI ipxe.efi, or snponly.efi to a node whose cluster entry asks, and its fixed address', async () => {
    const { full } = setup({ cluster: `nodes:\n  - {name: gpu1, mac: "${B}", ip: 10.42.0.20, firstStage: snponly.efi}\n` });
    expect(replyOf(await full.handler.handle(wire({ type: 'discover', mac: A, ...UEFI })))).toMatchObject({
      bootFile: 'ipxe.efi',
      yiaddr: '10.42.0.100',
    });
    expect(replyOf(await full.handler.handle(wire({ type: 'discover', mac: B, ...UEFI })))).toMatchObject({
      bootFile: 'snponly.efi',
      yiaddr: '10.42.0.20',
      hostname: 'gpu1',
    });
  });

  it('serves an OS DHCP client an address without registering it as a node', async () => {
    const { core, full } = setup();
    const offer = replyOf(await full.handler.handle(wire({ type: 'discover', mac: A, ...OS })));
    expect(offer.bootFile).toBeUndefined();
    expect(offer.hostname).toBeUndefined();
    expect(core.nodes.byMac(A)).toBeUndefined();
  });

  it('gives a known node its name and keeps the address through the Linux DHCP of the image, recording it on the timeline', async () => {
    const { core, full, clock } = setup();
    await full.handler.handle(wire({ type: 'discover', mac: A, ...BIOS }));
    await full.handler.handle(wire({ type: 'request', mac: A, serverId: '10.42.0.1', requestedIp: '10.42.0.100', ...BIOS }));
    clock.advance(20_000);
    const offer = replyOf(await full.handler.handle(wire({ type: 'discover', mac: A, ...OS })));
    expect(offer).toMatchObject({ yiaddr: '10.42.0.100', hostname: 'node1' });
    expect(core.nodes.byMac(A)?.bootCount).toBe(1);
    expect(core.timeline.list(A).filter((s) => s.stage === 'dhcp.discover')).toHaveLength(2);
  });

  it('does not answer an unknown MAC under enrollment: deny, nor an arm64 client', async () => {
    const { core, full, counters } = setup({ cluster: 'enrollment: deny\nnodes: []\n' });
    expect(await full.handler.handle(wire({ type: 'discover', mac: A, ...BIOS }))).toBeNull();
    expect(await full.handler.handle(wire({ type: 'discover', mac: A, ...OS }))).toBeNull();
    expect(core.nodes.denied().map((d) => d.mac)).toEqual([A]);
    const open = setup();
    expect(
      await open.full.handler.handle(wire({ type: 'discover', mac: B, vendorClass: 'PXEClient:Arch:00011:UNDI:003000', clientArch: 11 })),
    ).toBeNull();
    expect(open.core.nodes.byMac(B)).toBeUndefined();
    expect(counters.dropped).toBe(2);
    expect(open.counters.dropped).toBe(1);
  });

  it('shows on a known machine’s timeline why its boot request was ignored', async () => {
    const { core, full } = setup({ cluster: `nodes:\n  - {name: arm1, mac: "${B}"}\n` });
    expect(
      await full.handler.handle(wire({ type: 'discover', mac: B, vendorClass: 'PXEClient:Arch:00011:UNDI:003000', clientArch: 11 })),
    ).toBeNull();
    expect(core.timeline.list(B)).toMatchObject([
      { stage: 'dhcp.ignored', detail: { arch: 11, reason: expect.stringContaining('arm64') } },
    ]);
  });

  it('boots a pending machine (enrollment: approve): its agent waits for approval', async () => {
    const { core, full } = setup({ cluster: 'enrollment: approve\nnodes: []\n' });
    expect(replyOf(await full.handler.handle(wire({ type: 'discover', mac: A, ...BIOS })))).toMatchObject({ bootFile: 'undionly.kpxe' });
    expect(core.nodes.byMac(A)?.enrollment).toBe('pending');
  });

  it('stays silent when the client selected another server, and frees its offer', async () => {
    const { full } = setup({ config: { dhcp: { rangeEnd: '10.42.0.100' } } });
    await full.handler.handle(wire({ type: 'discover', mac: A, ...OS }));
    expect(full.pool.offeredTo(A)).toBeDefined();
    expect(
      await full.handler.handle(wire({ type: 'request', mac: A, serverId: '10.42.0.254', requestedIp: '10.42.0.77', ...OS })),
    ).toBeNull();
    expect(full.pool.offeredTo(A)).toBeUndefined();
    expect(replyOf(await full.handler.handle(wire({ type: 'discover', mac: B, ...OS })))).toMatchObject({ yiaddr: '10.42.0.100' });
  });

  it('NAKs an INIT-REBOOT for an address on another network or held by another client, broadcast', async () => {
    const { full, counters } = setup();
    await full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.100', ...OS }));
    const other = await full.handler.handle(wire({ type: 'request', mac: B, requestedIp: '10.42.0.100', ...OS }));
    expect(replyOf(other)).toMatchObject({ type: 'nak', message: 'requested address is not available to this client' });
    expect(other!.to).toEqual({ address: '255.255.255.255', port: 68 });
    expect(replyOf(await full.handler.handle(wire({ type: 'request', mac: B, requestedIp: '192.168.1.9', ...OS })))).toMatchObject({
      type: 'nak',
      message: 'requested address is not on this network',
    });
    expect(counters.nak).toBe(2);
  });

  it('ACKs an INIT-REBOOT for a free address of the range: the dispatcher is authoritative on the node network', async () => {
    const { full } = setup();
    expect(replyOf(await full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.101', ...OS })))).toMatchObject({
      type: 'ack',
      yiaddr: '10.42.0.101',
    });
  });

  it('renews by unicast to ciaddr, extends the lease in the store, and NAKs a renewal of an address that is not the client’s', async () => {
    const { core, full, clock } = setup();
    await full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.100', ...OS }));
    clock.advance(1_800_000);
    const renew = await full.handler.handle(wire({ type: 'request', mac: A, ciaddr: '10.42.0.100', ...OS }));
    expect(replyOf(renew)).toMatchObject({ type: 'ack', yiaddr: '10.42.0.100', ciaddr: '10.42.0.100' });
    expect(renew!.to).toEqual({ address: '10.42.0.100', port: 68 });
    const row = core.db.prepare('SELECT expires_at FROM dhcp_leases WHERE mac = ?').get(A) as { expires_at: number };
    expect(row.expires_at).toBe(clock.now() + 3600_000);
    expect(replyOf(await full.handler.handle(wire({ type: 'request', mac: B, ciaddr: '10.42.0.100', ...OS })))).toMatchObject({
      type: 'nak',
    });
  });

  it('confirms a young lease as stored (lease caching): no write, its remaining lifetime, T1/T2 from it', async () => {
    const { core, full, clock, counters } = setup();
    const updatedAt = () => core.db.prepare('SELECT updated_at FROM dhcp_leases WHERE mac = ?').pluck().get(A);
    await full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.100', ...BIOS }));
    const written = updatedAt();
    clock.advance(600_000); // 10 of 60 minutes: under the default threshold (a quarter)
    const again = replyOf(await full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.100', ...IPXE })));
    expect(again).toMatchObject({ type: 'ack', yiaddr: '10.42.0.100', leaseSeconds: 3000, renewalSeconds: 1500, rebindingSeconds: 2625 });
    expect(updatedAt()).toBe(written);
    expect(counters).toMatchObject({ ack: 2, ackCached: 1 });
    clock.advance(600_000); // 20 minutes: past the threshold, written anew with a full lifetime
    expect(replyOf(await full.handler.handle(wire({ type: 'request', mac: A, ciaddr: '10.42.0.100', ...OS })))).toMatchObject({
      type: 'ack',
      leaseSeconds: 3600,
    });
    expect(updatedAt()).toBe(clock.now());
    expect(counters).toMatchObject({ ack: 3, ackCached: 1 });
  });

  it('never confirms a cached lease before its own write is durable, and writes every lease with caching off', async () => {
    const failing = setup();
    failing.core.db.exec("CREATE TRIGGER no_inserts BEFORE INSERT ON dhcp_leases BEGIN SELECT RAISE(ABORT, 'disk full'); END;");
    const both = await Promise.all(
      [0, 1].map(() => failing.full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.100', ...BIOS }))),
    );
    expect(both).toEqual([null, null]);
    expect(failing.counters).toMatchObject({ ack: 0, ackCached: 0, storeErrors: 2 });

    const off = setup({ config: { dhcp: { leaseCacheThreshold: 0 } } });
    await off.full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.100', ...BIOS }));
    off.clock.advance(1000);
    expect(replyOf(await off.full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.100', ...IPXE })))).toMatchObject({
      type: 'ack',
      leaseSeconds: 3600,
    });
    expect(off.core.db.prepare('SELECT updated_at FROM dhcp_leases WHERE mac = ?').pluck().get(A)).toBe(off.clock.now());
    expect(off.counters.ackCached).toBe(0);
  });

  it('releases: the address is free for others, and the client gets it back first', async () => {
    const { core, full } = setup({ config: { dhcp: { rangeEnd: '10.42.0.101' } } });
    await full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.101', ...OS }));
    expect(await full.handler.handle(wire({ type: 'release', mac: A, ciaddr: '10.42.0.101', serverId: '10.42.0.1', ...OS }))).toBeNull();
    expect(core.db.prepare('SELECT state FROM dhcp_leases WHERE mac = ?').pluck().get(A)).toBe('released');
    expect(replyOf(await full.handler.handle(wire({ type: 'discover', mac: A, ...OS })))).toMatchObject({ yiaddr: '10.42.0.101' });
    expect(full.pool.acceptable(B, 0x0a2a0065, core.now())).toBe(false); // offered to A again meanwhile
  });

  it('ignores a RELEASE of somebody else’s address', async () => {
    const { core, full, counters } = setup();
    await full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.100', ...OS }));
    await full.handler.handle(wire({ type: 'release', mac: B, ciaddr: '10.42.0.100', ...OS }));
    expect(core.db.prepare('SELECT state FROM dhcp_leases WHERE mac = ?').pluck().get(A)).toBe('bound');
    expect(counters.dropped).toBe(1);
  });

  it('sets a declined address aside for everyone, and offers the client another', async () => {
    const { core, full, clock } = setup({ config: { dhcp: { rangeEnd: '10.42.0.101' } } });
    await full.handler.handle(wire({ type: 'discover', mac: A, ...OS }));
    await full.handler.handle(wire({ type: 'request', mac: A, serverId: '10.42.0.1', requestedIp: '10.42.0.100', ...OS }));
    await full.handler.handle(wire({ type: 'decline', mac: A, serverId: '10.42.0.1', requestedIp: '10.42.0.100', ...OS }));
    expect(core.db.prepare("SELECT mac, state FROM dhcp_leases WHERE ip = '10.42.0.100'").get()).toEqual({ mac: null, state: 'declined' });
    expect(replyOf(await full.handler.handle(wire({ type: 'discover', mac: A, ...OS })))).toMatchObject({ yiaddr: '10.42.0.101' });
    expect(await full.handler.handle(wire({ type: 'discover', mac: B, ...OS }))).toBeNull(); // .101 offered to A, .100 declined
    await full.handler.handle(wire({ type: 'request', mac: A, serverId: '10.42.0.1', requestedIp: '10.42.0.101', ...OS }));
    clock.advance(DECLINE_HOLD_MS + 1);
    expect(replyOf(await full.handler.handle(wire({ type: 'discover', mac: B, ...OS })))).toMatchObject({ yiaddr: '10.42.0.100' });
  });

  it('leaves an exhausted pool unanswered and counts it, never reusing a live lease', async () => {
    const { full, counters } = setup({ config: { dhcp: { rangeEnd: '10.42.0.100' } } });
    await full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.100', ...OS }));
    expect(await full.handler.handle(wire({ type: 'discover', mac: B, ...OS }))).toBeNull();
    expect(replyOf(await full.handler.handle(wire({ type: 'request', mac: B, requestedIp: '10.42.0.100', ...OS })))).toMatchObject({
      type: 'nak',
    });
    expect(counters.dropped).toBe(1);
  });

  it('answers an INFORM with configuration and no address, unicast to ciaddr', async () => {
    const { full } = setup({ config: { dhcp: { dns: ['10.42.0.53'] } } });
    const a = await full.handler.handle(wire({ type: 'inform', mac: A, ciaddr: '10.42.0.77', ...OS }));
    expect(replyOf(a)).toMatchObject({ type: 'ack', yiaddr: '0.0.0.0', ciaddr: '10.42.0.77', dns: ['10.42.0.53'] });
    expect(a!.reply.leaseSeconds).toBeUndefined();
    expect(a!.to).toEqual({ address: '10.42.0.77', port: 68 });
  });

  it('answers through a relay: unicast to giaddr:67, the relay as router, option 82 echoed', async () => {
    const { full } = setup();
    const a = await full.handler.handle(
      wire({ type: 'discover', mac: A, giaddr: '10.42.0.254', hops: 1, relayAgentInfo: Uint8Array.of(1, 3, 0x65, 0x74, 0x68), ...OS }),
    );
    expect(a!.to).toEqual({ address: '10.42.0.254', port: 67 });
    expect(replyOf(a)).toMatchObject({ giaddr: '10.42.0.254', routers: ['10.42.0.254'] });
    expect(Array.from(a!.reply.relayAgentInfo ?? [])).toEqual([1, 3, 0x65, 0x74, 0x68]);
  });

  it('drops requests relayed from a subnet it has no range for, and server messages', async () => {
    const { full, counters } = setup();
    expect(await full.handler.handle(wire({ type: 'discover', mac: A, giaddr: '192.168.7.1', ...OS }))).toBeNull();
    expect(await full.handler.handle(wire({ type: 'offer', mac: A, ...OS }))).toBeNull();
    expect(await full.handler.handle(wire({ type: 'discover', mac: A, op: 'reply', ...OS }))).toBeNull();
    expect(counters.dropped).toBe(3);
  });

  it('keeps leases across a restart of the dispatcher: same address for the client, never for another', async () => {
    const first = setup();
    await first.full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.102', ...OS }));
    const dataDir = first.core.config.dataDir;
    closeCore(cores.splice(cores.indexOf(first.core), 1)[0]!);
    const again = setup({ config: { dataDir } });
    expect(replyOf(await again.full.handler.handle(wire({ type: 'discover', mac: A, ...OS })))).toMatchObject({ yiaddr: '10.42.0.102' });
    expect(replyOf(await again.full.handler.handle(wire({ type: 'request', mac: B, requestedIp: '10.42.0.102', ...OS })))).toMatchObject({
      type: 'nak',
    });
  });

  it('does not ACK when the lease cannot be stored', async () => {
    const { core, full, counters } = setup();
    core.db.exec("CREATE TRIGGER no_inserts BEFORE INSERT ON dhcp_leases BEGIN SELECT RAISE(ABORT, 'disk full'); END;");
    expect(await full.handler.handle(wire({ type: 'request', mac: A, requestedIp: '10.42.0.100', ...OS }))).toBeNull();
    expect(counters).toMatchObject({ storeErrors: 1, ack: 0 });
    expect(full.leases.byMac(A)).toBeUndefined();
  });

  it('replies in golden-packet shape to a real SeaBIOS iPXE DISCOVER', async () => {
    const { full } = setup();
    const req = decodePacket(
      Buffer.from(readFileSync(join(import.meta.dirname, 'testdata/seabios-ipxe-discover.hex'), 'utf8').trim(), 'hex'),
    ) as ReceivedPacket;
    const offer = replyOf(await full.handler.handle(req));
    expect(offer).toMatchObject({ xid: req.xid, mac: req.mac, bootFile: 'http://10.42.0.1:8080/boot.ipxe?mac=${net0/mac}' });
  });
});

describe('proxy mode', () => {
  it('offers a BIOS PXE ROM boot information only, broadcast, and records it', () => {
    const { core, proxy, counters } = setup();
    const a = proxy.handleDhcpPort(wire({ type: 'discover', mac: A, ...BIOS }));
    expect(replyOf(a)).toMatchObject({
      type: 'offer',
      yiaddr: '0.0.0.0',
      vendorClass: 'PXEClient',
      bootFile: 'undionly.kpxe',
      serverId: '10.42.0.1',
    });
    expect(a!.to).toEqual({ address: '255.255.255.255', port: 68 });
    expect(core.timeline.list(A).map((s) => s.stage)).toEqual(['dhcp.discover', 'proxy.offer']);
    expect(core.nodes.byMac(A)?.bootCount).toBe(1);
    expect(counters.proxyOffer).toBe(1);
  });

  it('answers the UEFI boot-server REQUEST on port 4011 back to where it came from', () => {
    const { core, proxy } = setup();
    const a = proxy.handlePxePort(wire({ type: 'request', mac: A, ciaddr: '192.168.1.50', ...UEFI }), {
      address: '192.168.1.50',
      port: 4011,
    });
    expect(replyOf(a)).toMatchObject({ type: 'ack', bootFile: 'ipxe.efi', ciaddr: '192.168.1.50' });
    expect(a!.to).toEqual({ address: '192.168.1.50', port: 4011 });
    expect(core.timeline.list(A).map((s) => s.stage)).toEqual(['proxy.ack']);
  });

  it('sends iPXE to the boot script, whatever the address server said', () => {
    const { proxy } = setup();
    expect(replyOf(proxy.handleDhcpPort(wire({ type: 'discover', mac: A, ...IPXE })))).toMatchObject({
      bootFile: 'http://10.42.0.1:8080/boot.ipxe?mac=${net0/mac}',
      vendorClass: 'PXEClient',
    });
  });

  it('ignores OS DHCP clients, REQUESTs on port 67 (the address server’s business) and unsupported architectures', () => {
    const { core, proxy } = setup();
    expect(proxy.handleDhcpPort(wire({ type: 'discover', mac: A, ...OS }))).toBeNull();
    expect(proxy.handleDhcpPort(wire({ type: 'request', mac: A, serverId: '10.42.0.254', requestedIp: '10.42.0.9', ...BIOS }))).toBeNull();
    expect(
      proxy.handleDhcpPort(wire({ type: 'discover', mac: B, vendorClass: 'PXEClient:Arch:00011:UNDI:003000', clientArch: 11 })),
    ).toBeNull();
    expect(
      proxy.handlePxePort(wire({ type: 'request', mac: A, ciaddr: '10.42.0.9', ...OS }), { address: '10.42.0.9', port: 68 }),
    ).toBeNull();
    expect(core.nodes.size).toBe(0);
  });

  it('refuses denied MACs', () => {
    const { proxy } = setup({ cluster: 'enrollment: deny\nnodes: []\n' });
    expect(proxy.handleDhcpPort(wire({ type: 'discover', mac: A, ...BIOS }))).toBeNull();
  });
});
