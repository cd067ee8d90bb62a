import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TftpErrorCode, type TftpRequest } from '../../../dispatcher/src/tftp/codec.js';
import { decideRequest, negotiate, treeName } from '../../../dispatcher/src/tftp/tree.js';

const SERVED = new Set(['undionly.kpxe', 'ipxe.efi', 'snponly.efi', 'vmlinuz', 'initrd.img']);
const read = (filename: string, options: Record<string, string> = {}): TftpRequest => ({ kind: 'read', filename, mode: 'octet', options });

describe('TFTP virtual tree', () => {
  it.each([
    ['a plain name', 'undionly.kpxe', 'undionly.kpxe'],
    ['a name with a leading slash (absolute, as some ROMs send)', '/ipxe.efi', 'ipxe.efi'],
    ['a DOS-style name', '\\snponly.efi', 'snponly.efi'],
  ])('serves %s', (_n, filename, name) => {
    expect(decideRequest(read(filename), SERVED)).toMatchObject({ kind: 'serve', name });
  });

  it.each([
    ['a parent-directory escape', '../../etc/passwd', TftpErrorCode.ACCESS_VIOLATION],
    ['an escape hidden behind a served name', 'undionly.kpxe/../../etc/passwd', TftpErrorCode.ACCESS_VIOLATION],
    ['a DOS-style escape', '..\\..\\etc\\passwd', TftpErrorCode.ACCESS_VIOLATION],
    ['an absolute path outside the tree', '/etc/passwd', TftpErrorCode.ACCESS_VIOLATION],
    ['a nested path', 'pxe/bin/ipxe.efi', TftpErrorCode.ACCESS_VIOLATION],
    ['a dot segment', './ipxe.efi', TftpErrorCode.ACCESS_VIOLATION],
    ['a name with a control character', 'ipxe.efi\x01', TftpErrorCode.ACCESS_VIOLATION],
    ['a name with non-ASCII bytes', 'ipxe\xe9.efi', TftpErrorCode.ACCESS_VIOLATION],
    ['a name with a space', 'ipxe .efi', TftpErrorCode.ACCESS_VIOLATION],
    ['an unknown file', 'pxelinux.0', TftpErrorCode.FILE_NOT_FOUND],
    ['a database file', 'dispatcher.db', TftpErrorCode.FILE_NOT_FOUND],
  ])('refuses %s', (_n, filename, code) => {
    expect(decideRequest(read(filename), SERVED)).toMatchObject({ kind: 'refuse', code });
  });

  it('refuses every write with an access violation', () => {
    expect(decideRequest({ kind: 'write', filename: 'ipxe.efi', mode: 'octet', options: {} }, SERVED)).toMatchObject({
      kind: 'refuse',
      code: TftpErrorCode.ACCESS_VIOLATION,
    });
  });

  it('refuses mail mode', () => {
    expect(decideRequest({ kind: 'read', filename: 'ipxe.efi', mode: 'mail', options: {} }, SERVED)).toMatchObject({
      kind: 'refuse',
      code: TftpErrorCode.ILLEGAL_OPERATION,
    });
  });

  it('never maps a name containing ".." or a nested path to a served file', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('..', '.', 'etc', 'ipxe.efi', '', 'a\\b', 'vmlinuz'), { minLength: 2, maxLength: 6 }),
        (segs) => {
          const name = segs.join('/');
          const r = treeName(name);
          if (r.kind === 'name') {
            expect(SERVED.has(r.name) || !r.name.includes('/')).toBe(true);
            expect(r.name).not.toMatch(/[/\\]|^\.\.?$/);
            expect(segs.filter((s) => s !== '').length).toBe(1);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('TFTP option negotiation (RFC 2347 §4: ignore what is invalid)', () => {
  it.each([
    [
      'valid blksize, windowsize and tsize',
      { blksize: '1468', windowsize: '8', tsize: '0' },
      { blksize: 1468, windowsize: 8, tsize: 0 },
      [],
    ],
    ['blksize above the RFC maximum (clamped)', { blksize: '99999' }, { blksize: 65464 }, []],
    ['blksize below 8 (ignored)', { blksize: '4' }, {}, ['blksize']],
    ['non-numeric values (ignored)', { blksize: '1e3', windowsize: '-1', tsize: 'x' }, {}, ['blksize', 'windowsize', 'tsize']],
    ['a non-zero tsize in a read (answered with the real size)', { tsize: '1234' }, { tsize: 0 }, []],
    ['timeout and unknown options (not negotiated)', { timeout: '3', multicast: '' }, {}, ['timeout', 'multicast']],
  ])('%s', (_n, requested, options, ignored) => {
    expect(negotiate(requested)).toEqual({ options, ignored });
  });
});
