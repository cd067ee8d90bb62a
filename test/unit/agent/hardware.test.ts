import { describe, expect, it } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Value } from '@sinclair/typebox/value';
import fc from 'fast-check';
import { Inventory } from '../../../dispatcher/src/protocol/messages.js';
import { parseCpuinfo, parseOsRelease, readHardware, rootIsInRam } from '../../../node-agent/src/hardware.js';
import { tempDir } from './temp-dirs.js';

const CPUINFO_2x2 = [0, 1, 2, 3]
  .map(
    (i) => `processor\t: ${i}
vendor_id\t: GenuineIntel
model name\t: Intel(R)  Xeon(R) CPU E5-2680 v4 @ 2.40GHz
cpu MHz\t\t: 2394.454
physical id\t: ${i >> 1}
core id\t\t: ${i & 1}
`,
  )
  .join('\n');

function tree(files: Record<string, string>): string {
  const root = tempDir('lc-hw-');
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

describe('hardware facts from files', () => {
  it('reads a machine from /proc, /sys and /etc', () => {
    const root = tree({
      'proc/cpuinfo': CPUINFO_2x2,
      'proc/meminfo': 'MemTotal:        2048000 kB\nMemFree:          100 kB\n',
      'proc/mounts': 'rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\n',
      'proc/sys/kernel/hostname': 'node7\n',
      'proc/sys/kernel/osrelease': '6.1.0-57-amd64\n',
      'etc/os-release': 'NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
      'sys/class/net/lo/address': '00:00:00:00:00:00\n',
      'sys/class/net/ens3/address': '52:54:00:12:34:56\n',
      'sys/class/net/ens3/speed': '1000\n',
      'sys/class/net/ens3/device/uevent': 'DRIVER=virtio_net\n',
      'sys/class/net/br0/address': '52:54:00:aa:bb:cc\n',
      'sys/class/net/br0/speed': '-1\n',
      'sys/block/vda/size': '20971520\n',
      'sys/block/vda/queue/rotational': '1\n',
      'sys/block/nvme0n1/size': '2048\n',
      'sys/block/nvme0n1/device/model': 'Samsung SSD 980\n',
      'sys/block/loop0/size': '8\n',
      'sys/class/dmi/id/sys_vendor': 'QEMU\n',
      'sys/class/dmi/id/product_name': 'Standard PC (i440FX + PIIX, 1996)\n',
      'sys/class/dmi/id/product_uuid': 'ABCDEF01-0000-0000-0000-000000000000\n',
    });
    const hw = readHardware(root);
    expect(Value.Check(Inventory, hw)).toBe(true);
    expect(hw).toMatchObject({
      hostname: 'node7',
      cpu: { model: 'Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz', cores: 4, physicalCores: 4, speedGHz: 2.39 },
      memoryMiB: 2000,
      os: { kernel: '6.1.0-57-amd64', distro: 'Debian GNU/Linux 12 (bookworm)' },
      system: {
        manufacturer: 'QEMU',
        model: 'Standard PC (i440FX + PIIX, 1996)',
        uuid: 'abcdef01-0000-0000-0000-000000000000',
        serial: '',
      },
      ramRoot: true,
    });
    expect(hw.nics).toEqual([
      { name: 'br0', mac: '52:54:00:aa:bb:cc', ipv4: null, speedMbps: null, virtual: true },
      { name: 'ens3', mac: '52:54:00:12:34:56', ipv4: null, speedMbps: 1000, virtual: false },
    ]);
    expect(hw.disks).toEqual([
      { name: '/dev/nvme0n1', type: 'NVMe', sizeBytes: 2048 * 512, model: 'Samsung SSD 980' },
      { name: '/dev/vda', type: 'HD', sizeBytes: 20971520 * 512, model: '' },
    ]);
  });

  it('gives a valid inventory for an empty tree, and for this host', () => {
    expect(Value.Check(Inventory, readHardware(tempDir('lc-hw-empty-')))).toBe(true);
    const here = readHardware();
    expect(Value.Check(Inventory, here)).toBe(true);
    expect(here.cpu.cores).toBeGreaterThan(0);
    expect(here.memoryMiB).toBeGreaterThan(0);
  });

  it('counts physical cores per socket and core id', () => {
    const ht = [0, 1, 2, 3].map((i) => `processor : ${i}\nphysical id : 0\ncore id : ${i & 1}\n`).join('\n');
    expect(parseCpuinfo(ht)).toMatchObject({ cores: 4, physicalCores: 2, speedGHz: null });
    expect(parseCpuinfo('processor : 0\nCPU part : 0xd0c\n\nprocessor : 1\n')).toMatchObject({ cores: 2, physicalCores: 2, model: '' });
  });

  it('names the distribution from os-release', () => {
    expect(parseOsRelease('NAME=Alpine\nVERSION="3.20"\n')).toBe('Alpine 3.20');
    expect(parseOsRelease("PRETTY_NAME='Rocky Linux 9'\n")).toBe('Rocky Linux 9');
  });

  it('tells a RAM root from a disk root by the last mount on /', () => {
    expect(rootIsInRam('rootfs / rootfs rw 0 0\n')).toBe(true);
    expect(rootIsInRam('rootfs / rootfs rw 0 0\n/dev/sda1 / ext4 rw 0 0\n')).toBe(false);
  });

  it('never throws on arbitrary file contents', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (cpuinfo, release) => {
        parseCpuinfo(cpuinfo);
        parseOsRelease(release);
        rootIsInRam(release);
      }),
    );
  });
});
