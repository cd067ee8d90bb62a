import { describe, expect, it } from 'vitest';
import {
  chooseFirstStage,
  clientArchOf,
  wantsNetworkBoot,
  type BootClient,
  type FirstStageDecision,
} from '../../../dispatcher/src/boot/first-stage.js';
import type { FirstStage } from '../../../dispatcher/src/nodes/cluster-file.js';

const site = { address: '10.42.0.1', httpPort: 8080 };
const SCRIPT = 'http://10.42.0.1:8080/boot.ipxe?mac=${net0/mac}';
const pxe = (arch: number) => `PXEClient:Arch:${String(arch).padStart(5, '0')}:UNDI:003000`;
const http = (arch: number) => `HTTPClient:Arch:${String(arch).padStart(5, '0')}:UNDI:003000`;

describe('first stage by client', () => {
  it.each<[string, BootClient, FirstStage | null, FirstStageDecision['kind'], string | undefined]>([
    ['a BIOS PXE ROM gets undionly.kpxe by TFTP', { clientArch: 0, vendorClass: pxe(0), isIPXE: false }, null, 'tftp', 'undionly.kpxe'],
    ['x86-64 UEFI PXE (arch 7) gets ipxe.efi by TFTP', { clientArch: 7, vendorClass: pxe(7), isIPXE: false }, null, 'tftp', 'ipxe.efi'],
    [
      'x86-64 UEFI PXE sending arch 9 gets ipxe.efi by TFTP',
      { clientArch: 9, vendorClass: pxe(9), isIPXE: false },
      null,
      'tftp',
      'ipxe.efi',
    ],
    [
      'a UEFI node set to snponly.efi gets snponly.efi',
      { clientArch: 7, vendorClass: pxe(7), isIPXE: false },
      'snponly.efi',
      'tftp',
      'snponly.efi',
    ],
    [
      'a BIOS node set to snponly.efi still gets undionly.kpxe',
      { clientArch: 0, vendorClass: pxe(0), isIPXE: false },
      'snponly.efi',
      'tftp',
      'undionly.kpxe',
    ],
    [
      'UEFI HTTP boot (HTTPClient, arch 16) gets ipxe.efi as an http URL',
      { clientArch: 16, vendorClass: http(16), isIPXE: false },
      null,
      'http',
      'http://10.42.0.1:8080/pxe/ipxe.efi',
    ],
    [
      'UEFI HTTP boot of a snponly node gets snponly.efi as an http URL',
      { clientArch: 16, vendorClass: http(16), isIPXE: false },
      'snponly.efi',
      'http',
      'http://10.42.0.1:8080/pxe/snponly.efi',
    ],
    ['iPXE on BIOS gets the boot script', { clientArch: 0, vendorClass: pxe(0), isIPXE: true }, null, 'script', SCRIPT],
    ['iPXE on UEFI gets the boot script', { clientArch: 7, vendorClass: pxe(7), isIPXE: true }, 'snponly.efi', 'script', SCRIPT],
    ['iPXE without option 93 gets the boot script', { isIPXE: true }, null, 'script', SCRIPT],
    ['arm64 UEFI PXE is not answered', { clientArch: 11, vendorClass: pxe(11), isIPXE: false }, null, 'unsupported', undefined],
    ['arm64 UEFI HTTP boot is not answered', { clientArch: 19, vendorClass: http(19), isIPXE: false }, null, 'unsupported', undefined],
    ['arm64 iPXE is not answered', { clientArch: 11, vendorClass: pxe(11), isIPXE: true }, null, 'unsupported', undefined],
    [
      '32-bit UEFI (arch 6) is not answered: there is no ia32 iPXE here',
      { clientArch: 6, vendorClass: pxe(6), isIPXE: false },
      null,
      'unsupported',
      undefined,
    ],
    [
      '32-bit UEFI HTTP boot (arch 15) is not answered either',
      { clientArch: 15, vendorClass: http(15), isIPXE: false },
      null,
      'unsupported',
      undefined,
    ],
    ['a PXE ROM without option 93 is read from its vendor class', { vendorClass: pxe(7), isIPXE: false }, null, 'tftp', 'ipxe.efi'],
    [
      'a PXE client with no architecture at all is not answered',
      { vendorClass: 'PXEClient', isIPXE: false },
      null,
      'unsupported',
      undefined,
    ],
    ['an OS DHCP client (udhcpc) gets no boot information', { vendorClass: 'udhcp 1.35.0', isIPXE: false }, null, 'none', undefined],
    ['a client with no vendor class gets no boot information', { isIPXE: false }, null, 'none', undefined],
  ])('%s', (_what, client, firstStage, kind, fileOrUrl) => {
    const d = chooseFirstStage(client, { firstStage }, site);
    expect(d.kind).toBe(kind);
    if (d.kind === 'tftp') expect(d.file).toBe(fileOrUrl);
    if (d.kind === 'http' || d.kind === 'script') expect(d.url).toBe(fileOrUrl);
    if (d.kind === 'unsupported') expect(d.reason).toMatch(/architecture/);
  });

  it('names the architecture in the reason for an unsupported client', () => {
    const d = chooseFirstStage({ clientArch: 11, vendorClass: pxe(11), isIPXE: false }, undefined, site);
    expect(d).toMatchObject({ kind: 'unsupported', arch: 11, reason: expect.stringContaining('arm64 UEFI') });
  });

  it.each<[BootClient, boolean]>([
    [{ vendorClass: 'PXEClient:Arch:00000:UNDI:002001', isIPXE: false }, true],
    [{ vendorClass: 'HTTPClient:Arch:00016', isIPXE: false }, true],
    [{ vendorClass: 'udhcp 1.35.0', isIPXE: true }, true],
    [{ vendorClass: 'MSFT 5.0', isIPXE: false }, false],
    [{ isIPXE: false }, false],
  ])('wantsNetworkBoot(%o) is %s', (c, want) => {
    expect(wantsNetworkBoot(c)).toBe(want);
  });

  it('prefers option 93 over the vendor class architecture', () => {
    expect(clientArchOf({ clientArch: 0, vendorClass: pxe(7) })).toBe(0);
    expect(clientArchOf({ vendorClass: 'PXEClient:Arch:00009:UNDI:003016' })).toBe(9);
    expect(clientArchOf({ vendorClass: 'PXEClient:Arch:xyz' })).toBeUndefined();
  });
});
