import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageBuildError } from '../../../image/src/errors.js';
import { chooseKernel, compareKernelVersions, findRootKernel, kernelCandidates, parseKernelFrom } from '../../../image/src/root-kernel.js';

const boot = (...versions: string[]) =>
  kernelCandidates(
    versions.map((v) => `vmlinuz-${v}`),
    [],
  );

describe('kernel version order', () => {
  it.each([
    ['6.1.0-10-amd64', '6.1.0-9-amd64'],
    ['6.10.0-1-amd64', '6.9.0-30-amd64'],
    ['6.1.0-9-amd64', '6.1.0-amd64'],
    ['5.14.0-427.40.1.el9_4.x86_64', '5.14.0-427.37.1.el9_4.x86_64'],
    ['5.14.0-503.el9.x86_64', '5.14.0-427.40.1.el9_4.x86_64'],
    ['6.1.0-10', '6.1.0-09'],
    ['6.1.0', '6.1'],
  ])('%s > %s', (hi, lo) => {
    expect(compareKernelVersions(hi, lo)).toBeGreaterThan(0);
    expect(compareKernelVersions(lo, hi)).toBeLessThan(0);
    expect(compareKernelVersions(hi, hi)).toBe(0);
  });

  it('is a consistent order that never throws, whatever the names', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string(), (a, b, c) => {
        const ab = Math.sign(compareKernelVersions(a, b));
        expect(ab + Math.sign(compareKernelVersions(b, a))).toBe(0);
        expect(compareKernelVersions(a, a)).toBe(0);
        if (ab <= 0 && compareKernelVersions(b, c) <= 0) expect(compareKernelVersions(a, c)).toBeLessThanOrEqual(0);
      }),
      { numRuns: 2000 },
    );
  });
});

describe("choosing among the root's kernels", () => {
  it('takes the highest version, as Warewulf does, skipping debug and rescue kernels', () => {
    expect(chooseKernel(boot('6.1.0-9-amd64', '6.1.0-10-amd64', '6.1.0-2-amd64'))?.path).toBe('/boot/vmlinuz-6.1.0-10-amd64');
    expect(chooseKernel(boot('5.14.0-427.el9.x86_64', '5.14.0-503.el9.x86_64+debug', '0-rescue-0123456789abcdef'))?.version).toBe(
      '5.14.0-427.el9.x86_64',
    );
    expect(chooseKernel(boot('6.1.0-1-amd64+debug'))).toBeUndefined();
    expect(chooseKernel([])).toBeUndefined();
  });

  it('KERNEL_VERSION picks one: exact, else the highest it starts', () => {
    const all = boot('6.1.0-9-amd64', '6.1.0-10-amd64', '6.1.0-10-cloud-amd64');
    expect(chooseKernel(all, '6.1.0-9-amd64')?.version).toBe('6.1.0-9-amd64');
    expect(chooseKernel(all, '6.1.0-10')?.version).toBe('6.1.0-10-cloud-amd64');
    expect(chooseKernel(all, '7')).toBeUndefined();
  });

  it('reads /boot/vmlinuz-<version> and /lib/modules/<version>/vmlinuz; odd names are no kernels', () => {
    const c = kernelCandidates(
      ['vmlinuz-6.1.0-1-amd64', 'vmlinuz-', 'vmlinuz', 'vmlinuz-../../etc', 'config-6.1.0-1-amd64', 'initrd.img-6.1.0-1-amd64'],
      ['6.1.0-1-amd64', '5.14.0-1.el9.x86_64', '..'],
    );
    expect(c).toEqual([
      { path: '/boot/vmlinuz-6.1.0-1-amd64', version: '6.1.0-1-amd64' },
      { path: '/lib/modules/5.14.0-1.el9.x86_64/vmlinuz', version: '5.14.0-1.el9.x86_64' },
    ]);
    fc.assert(
      fc.property(fc.array(fc.string()), fc.array(fc.string()), fc.option(fc.string(), { nil: undefined }), (b, m, want) => {
        const found = chooseKernel(kernelCandidates(b, m), want);
        if (found) expect(found.version).not.toMatch(/[/\0]|^\.\.?$/);
      }),
    );
  });

  it('finds the kernel in an unpacked root through its merged-/usr symlinks', () => {
    const root = mkdtempSync(join(tmpdir(), 'lc-root-kernel-unit-'));
    try {
      mkdirSync(join(root, 'usr/lib/modules/6.1.0-3-amd64'), { recursive: true });
      mkdirSync(join(root, 'usr/lib/modules/6.1.0-12-amd64'), { recursive: true });
      symlinkSync('usr/lib', join(root, 'lib'));
      mkdirSync(join(root, 'boot'));
      writeFileSync(join(root, 'boot/vmlinuz-6.1.0-3-amd64'), 'k3');
      writeFileSync(join(root, 'boot/vmlinuz-6.1.0-12-amd64'), 'k12');
      writeFileSync(join(root, 'boot/vmlinuz-7.0.0-1-amd64'), 'no modules');
      const k = findRootKernel(root, '6.1')!;
      expect(k).toMatchObject({
        path: '/boot/vmlinuz-6.1.0-12-amd64',
        version: '6.1.0-12-amd64',
        file: join(root, 'boot/vmlinuz-6.1.0-12-amd64'),
        modulesDir: join(root, 'usr/lib/modules/6.1.0-12-amd64'),
      });
      expect(findRootKernel(root)).toMatchObject({ version: '7.0.0-1-amd64', modulesDir: undefined });
      // /boot a symlink out of the root: followed inside it, never to the host's /boot.
      rmSync(join(root, 'boot'), { recursive: true });
      symlinkSync('/../../boot', join(root, 'boot'));
      expect(findRootKernel(root)).toBeUndefined();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('KERNEL_FROM takes auto, root or debian', () => {
    expect(parseKernelFrom(undefined)).toBe('auto');
    expect(parseKernelFrom('debian')).toBe('debian');
    expect(() => parseKernelFrom('host')).toThrow(ImageBuildError);
  });
});
