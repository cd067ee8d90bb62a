import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  decodePacket,
  DecodeError,
  encodePacket,
  EncodeError,
  type DhcpPacket,
  type ReceivedPacket,
} from '../../../dispatcher/src/dhcp/codec.js';
import { IPXE_NO_PXEDHCP, MESSAGE_TYPES, type MessageType } from '../../../dispatcher/src/dhcp/options.js';
import { formatWithDhcpPackage } from './dhcp-package.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const TESTDATA = join(import.meta.dirname, 'testdata');
/** Real packets captured by testdata/capture.sh: SeaBIOS+iPXE ROM, OVMF's PXE, iPXE EFI, udhcpc, and our replies. */
const golden = (name: string): Buffer => Buffer.from(readFileSync(join(TESTDATA, `${name}.hex`), 'utf8').trim(), 'hex');
const goldenNames = readdirSync(TESTDATA)
  .filter((f) => f.endsWith('.hex'))
  .map((f) => f.slice(0, -4));

function decoded(bytes: Uint8Array): ReceivedPacket {
  const p = decodePacket(bytes);
  if (p instanceof DecodeError) throw new Error(`unexpected DecodeError ${p.toString()}`);
  return p;
}

/** The model without what decode derives (isIPXE, size), for round-trip comparisons. */
function model(p: ReceivedPacket): DhcpPacket {
  const { isIPXE: _i, size: _s, ...rest } = p;
  return rest;
}

function bytesOf(...parts: (number | number[] | string)[]): Buffer {
  return Buffer.concat(
    parts.map((p) => (typeof p === 'number' ? Buffer.of(p) : typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))),
  );
}

/** A minimal DHCP client message with the given option bytes after the cookie. */
function rawRequest(options: number[], fill: (b: Buffer) => void = () => {}): Buffer {
  const b = Buffer.alloc(240 + options.length);
  b[0] = 1;
  b[1] = 1;
  b[2] = 6;
  b.writeUInt32BE(0x01020304, 4);
  Buffer.from([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]).copy(b, 28);
  b.writeUInt32BE(0x63825363, 236);
  Buffer.from(options).copy(b, 240);
  fill(b);
  return b;
}

describe('golden packets from real clients', () => {
  it.each([
    [
      'seabios-ipxe-discover',
      {
        type: 'discover',
        mac: '52:54:00:99:00:01',
        clientArch: 0,
        vendorClass: 'PXEClient:Arch:00000:UNDI:002001',
        userClass: 'iPXE',
        isIPXE: true,
      },
    ],
    [
      'seabios-ipxe-request',
      { type: 'request', mac: '52:54:00:99:00:01', isIPXE: true, serverId: '10.99.0.1', requestedIp: '10.99.0.100' },
    ],
    [
      'ovmf-discover',
      { type: 'discover', mac: '52:54:00:99:00:02', clientArch: 7, vendorClass: 'PXEClient:Arch:00007:UNDI:003000', isIPXE: false },
    ],
    ['ovmf-request', { type: 'request', mac: '52:54:00:99:00:02', clientArch: 7, isIPXE: false, serverId: '10.99.0.1' }],
    [
      'ovmf-ipxe-discover',
      { type: 'discover', mac: '52:54:00:99:00:02', clientArch: 7, vendorClass: 'PXEClient:Arch:00007:UNDI:003010', isIPXE: true },
    ],
    ['udhcpc-discover', { type: 'discover', mac: '02:00:00:99:00:03', vendorClass: 'udhcp 1.35.0', isIPXE: false, clientArch: undefined }],
    ['udhcpc-renew', { type: 'request', ciaddr: '10.99.0.102', requestedIp: undefined, serverId: undefined }],
    ['udhcpc-release', { type: 'release', ciaddr: '10.99.0.102', serverId: '10.99.0.1' }],
  ] as const)('%s decodes to what the client meant', (name, want) => {
    const p = decoded(golden(name));
    expect(p.op).toBe('request');
    expect(p).toMatchObject(Object.fromEntries(Object.entries(want).filter(([, v]) => v !== undefined)));
    for (const [k, v] of Object.entries(want)) if (v === undefined) expect(p[k as keyof ReceivedPacket]).toBeUndefined();
  });

  it('reads the OVMF PXE client GUID (option 97: type 0 and 16 bytes) and its NDI (option 94)', () => {
    const p = decoded(golden('ovmf-discover'));
    expect(p.clientUuid?.length).toBe(17);
    expect(p.clientUuid?.[0]).toBe(0);
    expect(Array.from(p.clientNdi ?? [])).toEqual([1, 3, 0]);
  });

  it.each([
    ['seabios-ipxe-offer', 'offer'],
    ['seabios-ipxe-ack', 'ack'],
    ['ovmf-ipxe-ack', 'ack'],
  ] as const)('our %s tells iPXE the boot script URL and not to wait for ProxyDHCP', (name, type) => {
    const p = decoded(golden(name));
    expect(p).toMatchObject({
      op: 'reply',
      type,
      siaddr: '10.99.0.1',
      serverId: '10.99.0.1',
      bootFile: 'http://10.99.0.1:8080/boot.ipxe?mac=${net0/mac}',
    });
    // The same name in the BOOTP header, which some firmware reads instead of option 67.
    const url = 'http://10.99.0.1:8080/boot.ipxe?mac=${net0/mac}';
    expect(
      golden(name)
        .subarray(108, 108 + url.length + 1)
        .toString('latin1'),
    ).toBe(`${url}\0`);
    expect(Array.from(p.ipxeOptions ?? [])).toEqual([IPXE_NO_PXEDHCP, 1, 1]);
  });

  it('our reply to OVMF names ipxe.efi in option 67 and the file header, next-server in siaddr and option 66', () => {
    const b = golden('ovmf-ack');
    const p = decoded(b);
    expect(p).toMatchObject({
      type: 'ack',
      yiaddr: '10.99.0.101',
      siaddr: '10.99.0.1',
      tftpServer: '10.99.0.1',
      bootFile: 'ipxe.efi',
      hostname: 'node2',
    });
    expect(b.subarray(108, 117).toString('latin1')).toBe('ipxe.efi\0');
    expect(p.ipxeOptions).toBeUndefined();
  });

  it('our reply to udhcpc carries an address and no boot information', () => {
    const p = decoded(golden('udhcpc-ack'));
    expect(p).toMatchObject({ type: 'ack', leaseSeconds: 3600, renewalSeconds: 1800, rebindingSeconds: 3150, subnetMask: '255.255.255.0' });
    expect(p.bootFile).toBeUndefined();
    expect(p.yiaddr).not.toBe('0.0.0.0');
  });

  it.each(goldenNames)('%s survives decode → encode → decode unchanged', (name) => {
    const first = decoded(golden(name));
    const again = decoded(encodePacket(model(first), { maxLength: 1500 }));
    expect(model(again)).toEqual(model(first));
    expect(again.isIPXE).toBe(first.isIPXE);
  });
});

describe('decoding is total', () => {
  const check = (bytes: Uint8Array) => {
    const r = decodePacket(bytes);
    if (r instanceof DecodeError) {
      // Precise failures only: the catch-all for decoder bugs must never fire.
      expect(r.field).not.toBe('packet');
      expect(typeof r.message).toBe('string');
    } else {
      expect(r.mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    }
  };

  it('gives a packet or a DecodeError for any byte string', () => {
    // 500 runs: random bytes almost never get past the fixed header and magic cookie, so more
    // runs repeat the same early refusal; the two properties below explore the options.
    fc.assert(fc.property(fc.uint8Array({ maxLength: 1600 }), check), { numRuns: 500 });
  });

  it('gives a packet or a DecodeError for any options after a valid header', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (opts) => check(rawRequest(Array.from(opts)))),
      { numRuns: 3000 },
    );
  });

  it('gives a packet or a DecodeError for mutated real packets (flipped, truncated, extended)', () => {
    const seeds = goldenNames.map(golden);
    const mutated = fc
      .tuple(
        fc.constantFrom(...seeds),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 12 }),
        fc.option(fc.nat(), { nil: undefined }),
        fc.uint8Array({ maxLength: 64 }),
      )
      .map(([seed, flips, cut, tail]) => {
        const b = Buffer.from(seed);
        for (const [at, v] of flips) b[at % b.length] = v;
        const kept = cut === undefined ? b : b.subarray(0, cut % (b.length + 1));
        return Buffer.concat([kept, tail]);
      });
    fc.assert(fc.property(mutated, check), { numRuns: 5000 });
  });

  it('mutated option bytes of real packets still decode, or fail naming an option', () => {
    const seeds = goldenNames.map(golden);
    fc.assert(
      fc.property(fc.constantFrom(...seeds), fc.nat(), fc.integer({ min: 0, max: 255 }), (seed, at, v) => {
        const b = Buffer.from(seed);
        b[240 + (at % (b.length - 240))] = v;
        const r = decodePacket(b);
        if (r instanceof DecodeError) expect(r.field).toMatch(/^option \d+/);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('decode errors name the field and the byte counts', () => {
  it.each([
    ['a short packet', Buffer.alloc(100), 'header', /100 bytes/],
    ['a bad op', rawRequest([53, 1, 1, 255], (b) => (b[0] = 7)), 'op', /got 7/],
    ['a non-Ethernet hardware type', rawRequest([53, 1, 1, 255], (b) => (b[1] = 32)), 'chaddr', /htype 32/],
    ['a wrong magic cookie', rawRequest([53, 1, 1, 255], (b) => b.writeUInt32BE(0x01020304, 236)), 'magic cookie', /1\.2\.3\.4/],
    [
      'an option longer than the packet',
      rawRequest([53, 1, 1, 50, 9, 10, 0]),
      'option 50 (requested IP address)',
      /9 bytes but only 2 remain/,
    ],
    ['a length byte cut off', rawRequest([53, 1, 1, 50]), 'option 50 (requested IP address)', /length byte missing/],
    ['a 3-byte address', rawRequest([53, 1, 1, 50, 3, 10, 0, 0, 255]), 'option 50 (requested IP address)', /4 bytes, got 3/],
    ['a 2-byte message type', rawRequest([53, 2, 1, 1, 255]), 'option 53 (DHCP message type)', /1 byte, got 2/],
    ['an unknown message type', rawRequest([53, 1, 42, 255]), 'option 53 (DHCP message type)', /unknown message type 42/],
    [
      'an odd-length architecture list',
      rawRequest([53, 1, 1, 93, 3, 0, 7, 0, 255]),
      'option 93 (client system architecture)',
      /multiple of 2/,
    ],
    ['a bad overload value', rawRequest([53, 1, 1, 52, 1, 9, 255]), 'option 52 (option overload)', /value 1-3/],
  ])('%s', (_what, bytes, field, message) => {
    const r = decodePacket(bytes);
    expect(r).toBeInstanceOf(DecodeError);
    expect((r as DecodeError).field).toBe(field);
    expect((r as DecodeError).message).toMatch(message);
  });
});

describe('wire details the codec handles', () => {
  it('skips PAD options, which the dhcp package mishandles (it skips the byte after a PAD)', () => {
    const p = decoded(rawRequest([0, 0, 53, 1, 1, 0, 50, 4, 10, 0, 0, 7, 255]));
    expect(p).toMatchObject({ type: 'discover', requestedIp: '10.0.0.7' });
  });

  it('tolerates a missing END option', () => {
    const p = decoded(rawRequest([53, 1, 3, 61, 2, 1, 2]));
    expect(p.type).toBe('request');
    expect(Array.from(p.clientId ?? [])).toEqual([1, 2]);
  });

  it('concatenates an option split in several parts (RFC 3396)', () => {
    const p = decoded(rawRequest([53, 1, 1, 60, 3, ...Buffer.from('PXE'), 60, 6, ...Buffer.from('Client'), 255]));
    expect(p.vendorClass).toBe('PXEClient');
  });

  it('reads options overloaded into the file and sname fields (option 52), and then has no header file', () => {
    const b = rawRequest([53, 1, 1, 52, 1, 3, 255], (buf) => {
      bytesOf(67, 4, 'boot', 255).copy(buf, 108);
      bytesOf(12, 5, 'node7', 255).copy(buf, 44);
    });
    expect(decoded(b)).toMatchObject({ bootFile: 'boot', hostname: 'node7', serverName: '' });
  });

  it('takes option 67 over the file header, and the header when there is no option 67', () => {
    const header = (buf: Buffer) => Buffer.from('from-header\0', 'latin1').copy(buf, 108);
    expect(decoded(rawRequest([53, 1, 2, 255], header)).bootFile).toBe('from-header');
    expect(decoded(rawRequest([53, 1, 2, 67, 8, ...Buffer.from('from-opt'), 255], header)).bootFile).toBe('from-opt');
  });

  it('recognises iPXE by option 175 alone, and by an RFC 3004 user class', () => {
    expect(decoded(rawRequest([53, 1, 1, 175, 3, 177, 1, 1, 255])).isIPXE).toBe(true);
    expect(decoded(rawRequest([53, 1, 1, 77, 5, 4, ...Buffer.from('iPXE'), 255])).isIPXE).toBe(true);
    expect(decoded(rawRequest([53, 1, 1, 77, 4, ...Buffer.from('gPXE'), 255])).isIPXE).toBe(false);
  });

  it('keeps options it does not interpret, raw', () => {
    const p = decoded(rawRequest([53, 1, 1, 150, 2, 9, 8, 255]));
    expect(Array.from(p.otherOptions?.get(150) ?? [])).toEqual([9, 8]);
  });

  it('decodes a BOOTP message (no option 53) with type null', () => {
    expect(decoded(rawRequest([255])).type).toBeNull();
  });
});

const reply = (over: Partial<DhcpPacket> = {}): DhcpPacket => ({
  op: 'reply',
  type: 'offer',
  xid: 0xcafe,
  secs: 0,
  hops: 0,
  broadcast: true,
  ciaddr: '0.0.0.0',
  yiaddr: '10.42.0.100',
  siaddr: '10.42.0.1',
  giaddr: '0.0.0.0',
  mac: '52:54:00:12:34:56' as Mac,
  serverName: '',
  serverId: '10.42.0.1',
  ...over,
});

describe('encoding', () => {
  it('writes option 53 first, pads to the 300-byte BOOTP minimum and ends with END', () => {
    const b = encodePacket(reply({ subnetMask: '255.255.255.0', leaseSeconds: 60 }));
    expect(b.length).toBe(300);
    expect([b[240], b[241], b[242]]).toEqual([53, 1, MESSAGE_TYPES.offer]);
    const p = decoded(b);
    expect(p).toMatchObject({ type: 'offer', subnetMask: '255.255.255.0', leaseSeconds: 60, broadcast: true });
  });

  it('puts the boot file in option 67 and in the file header, or only in option 67 when too long for the header', () => {
    const short = encodePacket(reply({ bootFile: 'undionly.kpxe' }));
    expect(short.subarray(108, 122).toString('latin1')).toBe('undionly.kpxe\0');
    const long = 'http://10.42.0.1:8080/' + 'x'.repeat(150);
    const b = encodePacket(reply({ bootFile: long }), { maxLength: 1500 });
    expect(b[108]).toBe(0);
    expect(decoded(b).bootFile).toBe(long);
  });

  it.each([
    ['an address that is not IPv4', { yiaddr: '10.0.0.300' }, 'yiaddr'],
    ['a host name longer than an option', { hostname: 'h'.repeat(256) }, 'hostname'],
    ['a string outside latin1', { message: 'noeud ✓' }, 'message'],
    ['an xid beyond 32 bits', { xid: 2 ** 32 }, 'xid'],
    ['an opaque option with a code we interpret', { otherOptions: new Map([[53, Uint8Array.of(1)]]) }, 'otherOptions'],
  ] as const)('refuses %s with an EncodeError naming the field', (_w, over, field) => {
    const err = (() => {
      try {
        encodePacket(reply(over as Partial<DhcpPacket>));
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(EncodeError);
    expect((err as EncodeError).field).toBe(field);
  });

  it('refuses a packet beyond the peer maximum message size', () => {
    const big = reply({ dns: Array(60).fill('10.0.0.53'), routers: Array(60).fill('10.0.0.1') });
    expect(() => encodePacket(big)).toThrow(/exceed the 548-byte limit/);
    expect(encodePacket(big, { maxLength: 1500 }).length).toBeGreaterThan(548);
  });

  const ip = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => a.join('.'));
  const text = fc.string({ minLength: 1, maxLength: 60, unit: fc.integer({ min: 0x20, max: 0xff }).map((c) => String.fromCharCode(c)) });
  const ascii = fc.string({ minLength: 1, maxLength: 100, unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)) });
  const bytes = (max: number) => fc.uint8Array({ minLength: 0, maxLength: max });
  const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });
  const packet: fc.Arbitrary<DhcpPacket> = fc
    .record({
      op: fc.constantFrom('request' as const, 'reply' as const),
      type: fc.constantFrom<MessageType | null>(null, ...(Object.keys(MESSAGE_TYPES) as MessageType[])),
      xid: fc.nat({ max: 0xffffffff }),
      secs: fc.nat({ max: 0xffff }),
      hops: fc.nat({ max: 255 }),
      broadcast: fc.boolean(),
      ciaddr: ip,
      yiaddr: ip,
      siaddr: ip,
      giaddr: ip,
      mac: fc.uint8Array({ minLength: 6, maxLength: 6 }).map((b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':') as Mac),
      serverName: fc.option(
        ascii.map((s) => s.slice(0, 63)),
        { nil: '' },
      ),
      bootFile: opt(ascii),
      subnetMask: opt(ip),
      routers: opt(fc.array(ip, { minLength: 1, maxLength: 3 })),
      dns: opt(fc.array(ip, { minLength: 1, maxLength: 3 })),
      hostname: opt(text),
      requestedIp: opt(ip),
      leaseSeconds: opt(fc.nat({ max: 0xffffffff })),
      serverId: opt(ip),
      parameterRequestList: opt(fc.array(fc.nat(255), { minLength: 1, maxLength: 20 })),
      maxMessageSize: opt(fc.nat({ max: 0xffff })),
      vendorClass: opt(text),
      clientId: opt(bytes(20)),
      userClass: opt(text),
      clientArch: opt(fc.nat({ max: 0xffff })),
      clientUuid: opt(bytes(17)),
      vendorOptions: opt(bytes(30)),
      ipxeOptions: opt(bytes(10)),
      otherOptions: opt(fc.array(fc.tuple(fc.integer({ min: 200, max: 254 }), bytes(8)), { maxLength: 3 }).map((kv) => new Map(kv))),
    })
    .map((p) => {
      // Absent and empty mean the same on the wire: normalise so the comparison is fair.
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(p)) {
        if (v === undefined) continue;
        if (k === 'otherOptions' && (v as Map<number, Uint8Array>).size === 0) continue;
        out[k] = v;
      }
      return out as unknown as DhcpPacket;
    });

  it('writes exactly the bytes of the dhcp package’s Protocol.format, for any packet of the model', () => {
    fc.assert(
      fc.property(packet, (p) => {
        expect(encodePacket(p, { maxLength: 1500 }).toString('hex')).toBe(formatWithDhcpPackage(p).toString('hex'));
      }),
      { numRuns: 1500 },
    );
  });

  it.each(goldenNames)('writes %s as the dhcp package does', (name) => {
    const p = model(decoded(golden(name)));
    expect(encodePacket(p, { maxLength: 1500 }).toString('hex')).toBe(formatWithDhcpPackage(p).toString('hex'));
  });

  it('round-trips any packet of the model: decode(encode(p)) = p', () => {
    fc.assert(
      fc.property(packet, (p) => {
        const again = model(decoded(encodePacket(p, { maxLength: 1500 })));
        const want = { ...p, serverName: p.serverName ?? '' };
        // A Uint8Array and a Buffer with the same bytes are the same value here.
        expect(normalise(again)).toEqual(normalise(want));
      }),
      { numRuns: 1500 },
    );
  });
});

function normalise(p: DhcpPacket): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) {
    if (v instanceof Uint8Array) out[k] = Array.from(v);
    else if (v instanceof Map)
      out[k] = [...v].map(([c, b]) => [c, Array.from(b as Uint8Array)]).sort((a, b) => (a[0] as number) - (b[0] as number));
    else out[k] = v;
  }
  return out;
}
