/**
 * An image whose root brings its own kernel boots that kernel: a small OCI root (umoci) made of
 * Debian's kernel package the builder already caches (dpkg-deb -x: /boot/vmlinuz-<version> and
 * /lib/modules/<version>, pruned to the modules the base initrd needs, to stay small) and
 * busybox-static, with one module changed so that its bytes say where the initrd's copy came
 * from. Then KERNEL_FROM=debian, and the refusals: a kernel without its modules folder, modules
 * without squashfs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { aptCandidate, fetchPackage, newestCached, resolveKernelPackage } from '../../../image/src/apt.js';
import { buildImage } from '../../../image/src/build.js';
import { ImageBuildError } from '../../../image/src/errors.js';
import { sha256 } from '../../../image/src/manifest.js';
import { describeModule, selectModules, type KernelModule } from '../../../image/src/modules.js';
import { DEFAULT_MODULES, type BuildOptions } from '../../../image/src/options.js';
import { standInBuildOptions } from '../../lab/stand-in-build.js';
import { parseFrom } from '../../../image/src/root-source.js';

const BUILD_TIMEOUT = 300_000;
const work = mkdtempSync(join(tmpdir(), 'lc-root-kernel-'));
const layout = join(work, 'layout');
const cacheDir = resolve('.cache/image');
let kernelDeb: string;
let busyboxDeb: string;
let kver: string;
const CHANGED = 'kernel/fs/squashfs/squashfs.ko';
let lines: string[] = [];

async function cachedOrFetched(name: string, cached: RegExp): Promise<string> {
  const have = newestCached(cacheDir, cached);
  if (have) return have;
  const { pkg } = await aptCandidate(name);
  return (await fetchPackage(pkg, cacheDir)).path;
}

function options(outDir: string, tag: string, extra: Partial<BuildOptions> = {}): BuildOptions {
  const source = parseFrom(`oci:${layout}:${tag}`, (p) => resolve(p));
  // The kernel is the root's (or the Debian package's): no kernel stand-in, the default drivers.
  return standInBuildOptions(work, outDir, {
    cacheDir,
    kernelDeb,
    kernel: undefined,
    modulesDir: undefined,
    busyboxDeb,
    modules: [...DEFAULT_MODULES],
    root: { source, name: `k-${tag}`, health: '', squashfs: { compression: 'zstd', level: 3 } },
    ...extra,
  });
}

const build = (outDir: string, tag: string, extra: Partial<BuildOptions> = {}) => {
  lines = [];
  return buildImage(options(outDir, tag, extra), (stage, detail) => lines.push(`${stage} ${detail}`));
};

/** The base initrd's files, unpacked (zstd | GNU cpio) into a fresh folder. */
function unpackInitrd(initrd: string): string {
  const dir = mkdtempSync(join(work, 'initrd-'));
  const cpio = execFileSync('zstd', ['-dc', initrd], { maxBuffer: 1 << 30 });
  execFileSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames'], { input: cpio, cwd: dir, maxBuffer: 1 << 26 });
  return dir;
}

/** The paths in root.cpio's squashfs (unsquashfs -l, without the squashfs-root prefix). */
function rootPaths(out: string): string[] {
  const dir = mkdtempSync(join(work, 'rootcpio-'));
  execFileSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames'], { input: readFileSync(join(out, 'root.cpio')), cwd: dir });
  return execFileSync('unsquashfs', ['-l', '-d', '', join(dir, 'root.img')], { maxBuffer: 1 << 26 })
    .toString()
    .split('\n')
    .filter((l) => l.startsWith('/'));
}

/** A one-layer OCI image `tag` whose root is made by `fill`. */
function ociImage(tag: string, fill: (rootfs: string) => void): void {
  const umoci = (...args: string[]) => execFileSync('umoci', args, { stdio: 'pipe' });
  if (!existsSync(layout)) umoci('init', '--layout', layout);
  umoci('new', '--image', `${layout}:${tag}`);
  const bundle = join(work, `bundle-${tag}`);
  umoci('unpack', '--image', `${layout}:${tag}`, bundle);
  fill(join(bundle, 'rootfs'));
  umoci('repack', '--image', `${layout}:${tag}`, bundle);
  rmSync(bundle, { recursive: true, force: true });
}

async function rejection(p: Promise<unknown>): Promise<ImageBuildError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ImageBuildError);
  return err as ImageBuildError;
}

const kernelRoot = join(work, 'kernel-root');

beforeAll(async () => {
  kernelDeb = await cachedOrFetched(await resolveKernelPackage('linux-image-amd64'), /^linux-image-\d.*-amd64$/);
  busyboxDeb = await cachedOrFetched('busybox-static', /^busybox-static$/);
  execFileSync('dpkg-deb', ['-x', kernelDeb, kernelRoot]);
  execFileSync('dpkg-deb', ['-x', busyboxDeb, kernelRoot]);
  symlinkSync('busybox', join(kernelRoot, 'bin/sh'));
  kver = readdirSync(join(kernelRoot, 'lib/modules'))[0]!;
  // Only the modules the base initrd takes (and their dependencies): a root of ~25 MB packs in seconds.
  const modDir = join(kernelRoot, 'lib/modules', kver);
  const index = new Map<string, KernelModule>();
  const walk = (d: string): string[] =>
    readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : e.isFile() ? [join(d, e.name)] : []));
  const kos = walk(modDir).filter((p) => p.endsWith('.ko'));
  for (const p of kos) {
    const m = describeModule(relative(modDir, p), readFileSync(p));
    index.set(m.module, m);
  }
  const keep = new Set(selectModules(index, DEFAULT_MODULES, new Set()).modules.map((m) => m.path));
  for (const p of kos) if (!keep.has(relative(modDir, p))) rmSync(p);
  // The root's copy differs from the package's: the initrd must carry this one.
  appendFileSync(join(modDir, CHANGED), 'lilcluster root copy\n');
  execFileSync('sh', ['-c', `printf 'console.log(1)\\n' > ${join(work, 'node-agent.mjs')}`]);

  ociImage('kern', (r) => cpSync(kernelRoot, r, { recursive: true, verbatimSymlinks: true }));
  ociImage('nomods', (r) => {
    cpSync(kernelRoot, r, { recursive: true, verbatimSymlinks: true });
    rmSync(join(r, 'lib/modules'), { recursive: true });
  });
  // Modules as Fedora/RHEL (.ko.xz) and Ubuntu (.ko.zst) ship them.
  ociImage('compressed', (r) => {
    cpSync(kernelRoot, r, { recursive: true, verbatimSymlinks: true });
    const dir = join(r, 'lib/modules', kver);
    for (const p of walk(dir).filter((f) => f.endsWith('.ko')))
      if (p.endsWith('/virtio_net.ko')) execFileSync('zstd', ['-q', '--rm', p]);
      else execFileSync('xz', ['--check=crc32', p]);
  });
  ociImage('nosquashfs', (r) => {
    cpSync(kernelRoot, r, { recursive: true, verbatimSymlinks: true });
    rmSync(join(r, 'lib/modules', kver, CHANGED));
  });
}, BUILD_TIMEOUT);

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe('a root with a kernel boots its own kernel', () => {
  it(
    "vmlinuz is the root's, the initrd's modules come from the root's /lib/modules, the manifest says root:",
    async () => {
      const out = join(work, 'out-root');
      const { manifest } = await build(out, 'kern');
      expect(readFileSync(join(out, 'vmlinuz')).equals(readFileSync(join(kernelRoot, 'boot', `vmlinuz-${kver}`)))).toBe(true);
      expect(manifest.kernel).toMatchObject({ version: kver, source: `root:/boot/vmlinuz-${kver}`, package: null });
      expect(manifest.modules.shipped).toEqual(expect.arrayContaining(['squashfs', 'overlay', 'loop', 'virtio_net']));
      const initrd = unpackInitrd(join(out, 'initrd.img'));
      const shipped = readFileSync(join(initrd, 'lib/modules', kver, CHANGED));
      expect(shipped.equals(readFileSync(join(kernelRoot, 'lib/modules', kver, CHANGED)))).toBe(true);
      expect(shipped.toString('latin1').endsWith('lilcluster root copy\n')).toBe(true);
      expect(lines).toContain(`kernel root:/boot/vmlinuz-${kver} with its modules`);
      // The booted kernel's files are left out of the root (the node never reads them; they would cost RAM).
      const inRoot = rootPaths(out);
      expect(inRoot).toContain('/bin/busybox');
      expect(inRoot.filter((p) => /^\/(boot|lib)\//.test(p) && p.includes(kver))).toEqual([]);
      expect(lines.find((l) => l.startsWith('kernel left out of the root:'))).toContain(
        `/boot/config-${kver} /boot/vmlinuz-${kver} /lib/modules/${kver} (`,
      );

      // KERNEL_FROM=debian: the package's kernel and modules (its squashfs.ko lacks the root's change).
      const deb = join(work, 'out-debian');
      const d = await build(deb, 'kern', { kernelFrom: 'debian' });
      expect(d.manifest.kernel.source).toBe(kernelDeb);
      expect(d.manifest.kernel.package).toMatch(/^linux-image-/);
      expect(d.version).not.toBe(manifest.inputs.slice(0, 12));
      expect(rootPaths(deb)).toEqual(expect.arrayContaining([`/boot/vmlinuz-${kver}`, `/lib/modules/${kver}/${CHANGED}`]));
      const debInitrd = unpackInitrd(join(deb, 'initrd.img'));
      const debCopy = readFileSync(join(debInitrd, 'lib/modules', kver, CHANGED));
      expect(debCopy.toString('latin1').endsWith('lilcluster root copy\n')).toBe(false);
      expect(sha256(debCopy)).not.toBe(sha256(shipped));
    },
    BUILD_TIMEOUT,
  );

  it(
    'compressed modules (.ko.xz, .ko.zst) ship unpacked as .ko, with modules.dep naming them so',
    async () => {
      const out = join(work, 'out-compressed');
      const { manifest } = await build(out, 'compressed');
      expect(manifest.kernel.source).toBe(`root:/boot/vmlinuz-${kver}`);
      const initrd = unpackInitrd(join(out, 'initrd.img'));
      const modDir = join(initrd, 'lib/modules', kver);
      for (const rel of [CHANGED, 'kernel/drivers/net/virtio_net.ko', 'kernel/fs/overlayfs/overlay.ko'])
        expect(readFileSync(join(modDir, rel)).equals(readFileSync(join(kernelRoot, 'lib/modules', kver, rel)))).toBe(true);
      const dep = readFileSync(join(modDir, 'modules.dep'), 'utf8');
      expect(dep).toContain('kernel/drivers/net/virtio_net.ko: ');
      expect(dep).not.toMatch(/\.ko\.(xz|zst)/);
    },
    BUILD_TIMEOUT,
  );

  it(
    'a kernel without its /lib/modules folder, or without squashfs: a clear error, nothing written',
    async () => {
      const out = join(work, 'out-nomods');
      const e1 = await rejection(build(out, 'nomods'));
      expect(e1.code).toBe('IMG_ERR_MODULE');
      expect(e1.message).toContain(`/boot/vmlinuz-${kver} but no /lib/modules/${kver}`);
      expect(e1.hint).toContain('KERNEL_FROM=debian');
      const e2 = await rejection(build(out, 'nosquashfs'));
      expect(e2.code).toBe('IMG_ERR_MODULE');
      expect(e2.message).toMatch(/has no module squashfs$/);
      expect(e2.hint).toContain('KERNEL_FROM=debian');
      expect(readdirSync(out)).toEqual([]);
      // KERNEL_VERSION naming a kernel the root lacks.
      const e3 = await rejection(build(out, 'kern', { kernelVersion: '9.9.9' }));
      expect(e3.message).toContain(`it has /boot/vmlinuz-${kver}`);
      expect(readdirSync(out)).toEqual([]);
    },
    BUILD_TIMEOUT,
  );
});
