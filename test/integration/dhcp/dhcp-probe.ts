/**
 * A scriptable DHCP client for integration tests, run inside a client namespace
 * (`ip netns exec ... node dist/test/dhcp-probe.mjs '<spec json>'`; harness.ts bundles it).
 * It crafts packets with our codec, sends them from a UDP socket bound to one interface
 * (port 68 as a client, 67 as a relay), and prints every reply as a JSON line. With `dora`
 * it runs full DISCOVER/OFFER/REQUEST/ACK exchanges for many MACs at once, with PXE-style
 * retransmission (1 s, 2 s, 4 s...), and prints one JSON summary.
 *
 * Byte fields (clientId, clientUuid, vendorOptions, ipxeOptions, relayAgentInfo, clientNdi)
 * are hex strings in the JSON, both ways.
 */
import { createSocket, type RemoteInfo } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { decodePacket, DecodeError, encodePacket, type DhcpPacket } from '../../../dispatcher/src/dhcp/codec.js';

export type JsonPacket = Record<string, unknown>;

export interface ProbeSpec {
  iface: string;
  /** 68 (client, default) or 67 (relay agent). */
  bindPort?: number;
  to: { address: string; port: number };
  /** Collect replies this long after sending (default 1500 ms). */
  waitMs?: number;
  packets?: JsonPacket[];
  dora?: {
    count: number;
    /** Fields of every DISCOVER/REQUEST (vendorClass, clientArch, giaddr...). */
    template?: JsonPacket;
    /** MACs are `<macPrefix>:xx:xx` (4 bytes of prefix). */
    macPrefix?: string;
    /** Give up on a client after this long (default 20 s). */
    timeoutMs?: number;
  };
}

export interface DoraResult {
  mac: string;
  ip?: string;
  bootFile?: string;
  hostname?: string;
  ms?: number;
  retransmits: number;
  nak?: string;
}

const BYTE_FIELDS = ['clientId', 'clientUuid', 'clientNdi', 'vendorOptions', 'ipxeOptions', 'relayAgentInfo'] as const;

export function packetFromJson(j: JsonPacket): DhcpPacket {
  const p: Record<string, unknown> = {
    op: 'request',
    type: 'discover',
    xid: 1,
    secs: 0,
    hops: 0,
    broadcast: false,
    ciaddr: '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    giaddr: '0.0.0.0',
    serverName: '',
    ...j,
  };
  for (const f of BYTE_FIELDS) if (typeof p[f] === 'string') p[f] = Buffer.from(p[f] as string, 'hex');
  return p as unknown as DhcpPacket;
}

export function packetToJson(p: DhcpPacket): JsonPacket {
  const j: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) {
    if (v instanceof Uint8Array) j[k] = Buffer.from(v).toString('hex');
    else if (v instanceof Map) j[k] = Object.fromEntries([...v].map(([c, b]) => [c, Buffer.from(b as Uint8Array).toString('hex')]));
    else j[k] = v;
  }
  return j;
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? readFileSync(0, 'utf8')) as ProbeSpec;
  const sock = createSocket({ type: 'udp4', reuseAddr: true });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(spec.bindPort ?? 68, '0.0.0.0', () => resolve());
  });
  const ifindex = Number(readFileSync(`/sys/class/net/${spec.iface}/ifindex`, 'utf8'));
  const { setsockopt } = createRequire(import.meta.url)('sockopt') as { setsockopt(s: unknown, l: number, n: number, v: number): void };
  setsockopt(sock, 1 /* SOL_SOCKET */, 62 /* SO_BINDTOIFINDEX */, ifindex);
  sock.setBroadcast(true);
  const send = (p: DhcpPacket) =>
    new Promise<void>((resolve, reject) =>
      sock.send(encodePacket(p, { maxLength: 1500 }), spec.to.port, spec.to.address, (e) => (e ? reject(e) : resolve())),
    );

  if (spec.dora) {
    const results = await dora(spec, sock, send);
    process.stdout.write(`${JSON.stringify({ kind: 'dora', results })}\n`);
  } else {
    sock.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
      const d = decodePacket(msg);
      const out =
        d instanceof DecodeError
          ? { kind: 'malformed', from: rinfo.address, error: d.toString() }
          : { kind: 'reply', from: rinfo.address, port: rinfo.port, packet: packetToJson(d) };
      process.stdout.write(`${JSON.stringify(out)}\n`);
    });
    for (const j of spec.packets ?? []) await send(packetFromJson(j));
    await new Promise((r) => setTimeout(r, spec.waitMs ?? 1500));
  }
  sock.close();
}

async function dora(spec: ProbeSpec, sock: ReturnType<typeof createSocket>, send: (p: DhcpPacket) => Promise<void>): Promise<DoraResult[]> {
  const d = spec.dora!;
  const prefix = d.macPrefix ?? '02:dd:00:00';
  const timeoutMs = d.timeoutMs ?? 20_000;
  type Client = {
    mac: string;
    xid: number;
    state: 'discover' | 'request' | 'done';
    packet: DhcpPacket;
    t0: number;
    nextAt: number;
    backoff: number;
    result: DoraResult;
  };
  const clients = new Map<number, Client>();
  const base = (Math.random() * 0x7fffffff) >>> 0;
  for (let i = 0; i < d.count; i++) {
    const mac = `${prefix}:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;
    const xid = (base + i) >>> 0;
    const packet = packetFromJson({ ...d.template, type: 'discover', xid, mac, broadcast: true });
    clients.set(xid, { mac, xid, state: 'discover', packet, t0: Date.now(), nextAt: 0, backoff: 1000, result: { mac, retransmits: 0 } });
  }
  sock.on('message', (msg: Buffer) => {
    const r = decodePacket(msg);
    if (r instanceof DecodeError || r.op !== 'reply') return;
    const c = clients.get(r.xid);
    if (!c || r.mac !== c.mac) return;
    if (c.state === 'discover' && r.type === 'offer' && r.yiaddr !== '0.0.0.0') {
      c.state = 'request';
      c.packet = packetFromJson({
        ...d.template,
        type: 'request',
        xid: c.xid,
        mac: c.mac,
        broadcast: true,
        serverId: r.serverId,
        requestedIp: r.yiaddr,
      });
      c.backoff = 1000;
      c.nextAt = Date.now() + c.backoff;
      void send(c.packet);
    } else if (c.state === 'request' && r.type === 'ack') {
      c.state = 'done';
      c.result = {
        ...c.result,
        ip: r.yiaddr,
        ms: Date.now() - c.t0,
        ...(r.bootFile ? { bootFile: r.bootFile } : {}),
        ...(r.hostname ? { hostname: r.hostname } : {}),
      };
    } else if (c.state === 'request' && r.type === 'nak') {
      c.state = 'done';
      c.result.nak = r.message ?? 'nak';
    }
  });
  const deadline = Date.now() + timeoutMs;
  await Promise.all([...clients.values()].map((c) => send(c.packet).then(() => (c.nextAt = Date.now() + c.backoff))));
  while (Date.now() < deadline && [...clients.values()].some((c) => c.state !== 'done')) {
    await new Promise((r) => setTimeout(r, 50));
    const now = Date.now();
    for (const c of clients.values()) {
      if (c.state === 'done' || now < c.nextAt) continue;
      c.result.retransmits++;
      c.backoff = Math.min(c.backoff * 2, 8000);
      c.nextAt = now + c.backoff;
      void send(c.packet);
    }
  }
  return [...clients.values()].map((c) => c.result);
}

if (process.argv[1] && /dhcp-probe\.m?[jt]s$/.test(process.argv[1])) {
  main().catch((err: unknown) => {
    process.stderr.write(`dhcp-probe: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  });
}
