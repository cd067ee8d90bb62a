import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  TftpDecodeError,
  TftpErrorCode,
  TftpOpcode,
  ackBlockOf,
  decodeError,
  decodeRequest,
  encodeError,
  encodeRequest,
  opcodeOf,
} from '../../../dispatcher/src/tftp/codec.js';

const bytes = (s: string) => Buffer.from(s, 'latin1');

// Requests as the clients we meet send them (byte layouts from RFC 1350/2347 captures).
const GOLDEN: [string, Buffer, ReturnType<typeof decodeRequest>][] = [
  [
    'tftp-hpa, plain octet read',
    bytes('\x00\x01undionly.kpxe\x00octet\x00'),
    { kind: 'read', filename: 'undionly.kpxe', mode: 'octet', options: {} },
  ],
  [
    'atftp with blksize, windowsize and tsize',
    bytes('\x00\x01initrd.img\x00octet\x00blksize\x001468\x00windowsize\x008\x00tsize\x000\x00'),
    { kind: 'read', filename: 'initrd.img', mode: 'octet', options: { blksize: '1468', windowsize: '8', tsize: '0' } },
  ],
  [
    'EDK2 PXE size probe (upper-case option names)',
    bytes('\x00\x01ipxe.efi\x00octet\x00TSIZE\x000\x00BLKSIZE\x001468\x00'),
    { kind: 'read', filename: 'ipxe.efi', mode: 'octet', options: { tsize: '0', blksize: '1468' } },
  ],
  ['a write request', bytes('\x00\x02x\x00NETASCII\x00'), { kind: 'write', filename: 'x', mode: 'netascii', options: {} }],
];

describe('TFTP request codec', () => {
  it.each(GOLDEN)('decodes %s', (_name, packet, want) => {
    expect(decodeRequest(packet)).toEqual(want);
  });

  it.each(GOLDEN)('round-trips %s', (_name, packet) => {
    const req = decodeRequest(packet);
    expect(decodeRequest(encodeRequest(req))).toEqual(req);
  });

  it.each([
    ['a packet shorter than an opcode', bytes('\x00'), 'opcode'],
    ['a DATA packet', bytes('\x00\x03\x00\x01abc'), 'opcode'],
    ['a file name without NUL', bytes('\x00\x01undionly.kpxe'), 'filename'],
    ['an empty file name', bytes('\x00\x01\x00octet\x00'), 'filename'],
    ['an unknown mode', bytes('\x00\x01a\x00binary\x00'), 'mode'],
    ['a NUL inside the file name (the rest becomes the mode)', bytes('\x00\x01../../etc/passwd\x00.kpxe\x00octet\x00'), 'mode'],
    ['an option without a value', bytes('\x00\x01a\x00octet\x00blksize\x00'), 'option blksize'],
    ['a request over 512 bytes', Buffer.concat([bytes('\x00\x01'), Buffer.alloc(600, 0x61), bytes('\x00octet\x00')]), 'packet'],
  ])('refuses %s with a TftpDecodeError naming the field', (_n, packet, field) => {
    let err: unknown;
    try {
      decodeRequest(packet);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TftpDecodeError);
    expect((err as TftpDecodeError).field).toBe(field);
    expect((err as TftpDecodeError).message).toMatch(/at byte \d+ of \d+/);
  });

  it('returns a request or a TftpDecodeError for any bytes, nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (arr) => {
        try {
          const r = decodeRequest(arr);
          expect(['read', 'write']).toContain(r.kind);
        } catch (e) {
          expect(e).toBeInstanceOf(TftpDecodeError);
        }
      }),
      // 500 runs: random bytes almost never start with a request opcode (1 or 2), so more runs
      // repeat the same refusal; mutated real requests (below) explore the decoder.
      { numRuns: 500 },
    );
  });

  it('returns a request or a TftpDecodeError for mutated real requests', () => {
    const seeds = GOLDEN.map((g) => g[1]);
    fc.assert(
      fc.property(
        fc.constantFrom(...seeds),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.nat({ max: 40 }),
        (seed, flips, cut) => {
          const p = Buffer.from(seed);
          for (const [i, v] of flips) p[i % p.length] = v;
          const packet = p.subarray(0, Math.max(0, p.length - cut));
          try {
            decodeRequest(packet);
          } catch (e) {
            expect(e).toBeInstanceOf(TftpDecodeError);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('encodes an ERROR packet with code and printable message (RFC 1350 §5)', () => {
    const p = encodeError(TftpErrorCode.ACCESS_VIOLATION, 'no\nway');
    expect([...p.subarray(0, 4)]).toEqual([0, TftpOpcode.ERROR, 0, 2]);
    expect(p.subarray(4).toString('latin1')).toBe('no?way\x00');
    expect(decodeError(p)).toEqual({ code: 2, message: 'no?way' });
  });

  it('reads the opcode and the ACK block of transfer packets', () => {
    expect(opcodeOf(Buffer.from([0]))).toBeUndefined();
    expect(ackBlockOf(Buffer.from([0, 4, 1, 2]))).toBe(258);
    expect(ackBlockOf(Buffer.from([0, 4, 1]))).toBeUndefined();
    expect(ackBlockOf(Buffer.from([0, 3, 0, 1]))).toBeUndefined();
    expect(decodeError(Buffer.from([0, 4, 0, 1]))).toBeUndefined();
  });
});
