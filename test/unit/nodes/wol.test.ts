import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createSocket } from 'node:dgram';
import { broadcastAddress, magicPacket, parseMagicPacket, sendWake, MAGIC_PACKET_BYTES } from '../../../dispatcher/src/nodes/wol.js';
import { macFromBytes, parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';

const mac = parseMac('52:54:00:ab:cd:ef') as Mac;

describe('Wake-on-LAN magic packet', () => {
  it('is 6 bytes of 0xFF then the MAC 16 times', () => {
    const p = magicPacket(mac);
    expect(p.length).toBe(MAGIC_PACKET_BYTES);
    expect([...p.subarray(0, 6)]).toEqual([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    for (let i = 0; i < 16; i++) expect(p.subarray(6 + i * 6, 12 + i * 6).toString('hex')).toBe('525400abcdef');
  });

  it('round-trips for any MAC, also inside a larger payload', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 6, maxLength: 6 }), fc.uint8Array({ maxLength: 40 }), (bytes, prefix) => {
        const m = macFromBytes(bytes);
        expect(parseMagicPacket(magicPacket(m))).toBe(m);
        // A prefix that ends in 0xFF bytes could start the sync stream early; NICs scan on, and so do we.
        expect(parseMagicPacket(Buffer.concat([prefix, magicPacket(m)]))).toBe(m);
      }),
    );
  });

  it('parsing arbitrary bytes gives a MAC or nothing, never an exception', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
        const r = parseMagicPacket(b);
        expect(r === undefined || typeof r === 'string').toBe(true);
      }),
    );
    const broken = magicPacket(mac);
    broken[50] = broken[50]! ^ 1;
    expect(parseMagicPacket(broken)).toBeUndefined();
  });

  it.each([
    ['10.42.0.1', '255.255.255.0', '10.42.0.255'],
    ['192.168.7.33', '255.255.255.240', '192.168.7.47'],
    ['172.16.5.4', '255.255.0.0', '172.16.255.255'],
    ['10.0.0.1', '255.0.0.0', '10.255.255.255'],
  ])('the directed broadcast of %s/%s is %s', (a, m, b) => {
    expect(broadcastAddress(a, m)).toBe(b);
  });

  it('sends the packet as UDP datagrams (repeated) to the chosen destination', async () => {
    const rx = createSocket('udp4');
    const got: Buffer[] = [];
    await new Promise<void>((r) => rx.bind(0, '127.0.0.1', () => r()));
    rx.on('message', (m) => got.push(m));
    const port = rx.address().port;
    const sent = await sendWake(
      mac,
      { ifindex: undefined, address: '127.0.0.1', netmask: '255.0.0.0' },
      { port, destination: '127.0.0.1', repeat: 3 },
    );
    expect(sent).toEqual({ destination: '127.0.0.1', port, packets: 3 });
    for (let i = 0; i < 50 && got.length < 3; i++) await new Promise((r) => setTimeout(r, 10));
    rx.close();
    expect(got).toHaveLength(3);
    expect(got.every((g) => parseMagicPacket(g) === mac)).toBe(true);
  });
});
