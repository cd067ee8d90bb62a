import { describe, expect, it } from 'vitest';
import { OVMF_CODE, QemuError, qemuArgs, type QemuOptions } from '../../lab/qemu.js';

const base: QemuOptions = {
  name: 'n1',
  boot: { kind: 'kernel', kernel: 'k', initrd: 'i', append: 'console=ttyS0 lc.token=t' },
  nics: [{ net: { kind: 'user' } }],
  consoleLog: '/tmp/n1.log',
};

/** The value following `flag` each time it appears. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

describe('QEMU command line', () => {
  it("direct kernel boot under BIOS: TCG, no default devices, console to a file, QEMU's NIC ROM kept", () => {
    const args = qemuArgs(base);
    expect(values(args, '-machine')).toEqual(['pc,accel=tcg']);
    expect(args).toContain('-nodefaults');
    expect(values(args, '-chardev')).toEqual(['file,id=lc-serial,path=/tmp/n1.log']);
    expect(values(args, '-kernel')).toEqual(['k']);
    expect(values(args, '-initrd')).toEqual(['i']);
    expect(values(args, '-append')).toEqual(['console=ttyS0 lc.token=t']);
    expect(values(args, '-device')).toEqual(['virtio-net-pci,netdev=lc-net0']);
    expect(args).not.toContain('-drive');
  });

  it("PXE under UEFI: OVMF flash, the NIC's option ROM removed, boot from the first NIC", () => {
    const args = qemuArgs(
      {
        ...base,
        firmware: 'uefi',
        boot: { kind: 'pxe' },
        nics: [
          { net: { kind: 'tap', ifname: 'lc-tap0' }, mac: '52:54:00:00:00:01' },
          { net: { kind: 'user' }, model: 'e1000' },
        ],
      },
      '/tmp/vars.fd',
    );
    expect(values(args, '-drive')).toEqual([
      `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`,
      'if=pflash,format=raw,unit=1,file=/tmp/vars.fd',
    ]);
    expect(values(args, '-netdev')).toEqual(['tap,id=lc-net0,ifname=lc-tap0,script=no,downscript=no', 'user,id=lc-net1']);
    expect(values(args, '-device')).toEqual([
      'virtio-net-pci,netdev=lc-net0,mac=52:54:00:00:00:01,romfile=,bootindex=1',
      'e1000,netdev=lc-net1,romfile=',
    ]);
    expect(args).not.toContain('-kernel');
  });

  it('user network extras, memory, pid file and QMP socket', () => {
    const args = qemuArgs({
      ...base,
      memoryMiB: 512,
      cpus: 2,
      pidFile: '/run/n1.pid',
      qmpSocket: '/run/n1.qmp',
      nics: [
        {
          net: {
            kind: 'user',
            hostname: 'node1',
            hostForwards: [{ hostPort: 2222, guestPort: 22 }],
            tftp: '/srv/tftp',
            bootfile: 'undionly.kpxe',
          },
          rom: '/usr/lib/ipxe/qemu/pxe-virtio.rom',
        },
      ],
    });
    expect(values(args, '-netdev')).toEqual([
      'user,id=lc-net0,hostname=node1,hostfwd=tcp:127.0.0.1:2222-:22,tftp=/srv/tftp,bootfile=undionly.kpxe',
    ]);
    expect(values(args, '-device')).toEqual(['virtio-net-pci,netdev=lc-net0,romfile=/usr/lib/ipxe/qemu/pxe-virtio.rom']);
    expect(values(args, '-m')).toEqual(['512']);
    expect(values(args, '-smp')).toEqual(['2']);
    expect(values(args, '-pidfile')).toEqual(['/run/n1.pid']);
    expect(values(args, '-qmp')).toEqual(['unix:/run/n1.qmp,server=on,wait=off']);
  });

  it('refuses UEFI without a variable store and PXE without a NIC', () => {
    expect(() => qemuArgs({ ...base, firmware: 'uefi' })).toThrow(QemuError);
    expect(() => qemuArgs({ ...base, boot: { kind: 'pxe' }, nics: [] })).toThrow(QemuError);
  });
});
