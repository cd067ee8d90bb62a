/**
 * The versions an image output keeps (image/src/versions.ts), in real builds: four versions
 * with IMAGE_KEEP=3, a kept version made the newest again without building, a build killed
 * midway, an output built before versions/ adopted, and the make variables through the real
 * CLI. To stay fast the builds are those of extras-build.test.ts: a stand-in kernel, Node
 * unstripped at zstd -1, busybox from apt's cache; versions differ by an EXTRA_ROOTFS file.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage, type BuildResult } from '../../../image/src/build.js';
import { sha256, type ImageManifest } from '../../../image/src/manifest.js';
import { DEFAULT_MODULES, type BuildOptions } from '../../../image/src/options.js';
import { STAND_IN_KVER, standInBuildOptions, writeStandIns } from '../../lab/stand-in-build.js';

const BUILD_TIMEOUT = 300_000;
const KVER = STAND_IN_KVER;
const work = mkdtempSync(join(tmpdir(), 'lc-image-versions-'));
const tree = join(work, 'site-rootfs');
let lines: string[] = [];

const options = (outDir: string, extra: Partial<BuildOptions> = {}) =>
  standInBuildOptions(work, outDir, { extraRootfs: tree, keep: 3, ...extra });

/** A build whose EXTRA_ROOTFS holds etc/site-version with `label`: each label is its own version. */
const build = (outDir: string, label: string, extra: Partial<BuildOptions> = {}): Promise<BuildResult> => {
  writeFileSync(join(tree, 'etc/site-version'), `${label}\n`);
  lines = [];
  return buildImage(options(outDir, extra), (stage, detail) => lines.push(`${stage} ${detail}`));
};

const FILES = ['vmlinuz', 'initrd.img', 'manifest.json'];
/** Each flat file and its version's: same inode, or same bytes where links were not possible. */
function expectFlatIs(out: string, version: string): void {
  for (const f of FILES) {
    const [flat, kept] = [join(out, f), join(out, 'versions', version, f)];
    expect(statSync(flat).ino, f).toBe(statSync(kept).ino);
  }
  const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as ImageManifest;
  expect(m.inputs.slice(0, 12)).toBe(version);
  expect(sha256(readFileSync(join(out, 'initrd.img')))).toBe(m.files['initrd.img'].sha256);
}

/** Every file of the output folder with its sha256 and inode, recursively. */
function snapshot(dir: string): Record<string, string> {
  const r: Record<string, string> = {};
  for (const e of readdirSync(dir, { recursive: true, withFileTypes: true }))
    if (e.isFile()) {
      const p = join(e.parentPath, e.name);
      r[p.slice(dir.length + 1)] = `${sha256(readFileSync(p))} ${statSync(p).ino}`;
    }
  return r;
}

const order = (out: string) => readFileSync(join(out, 'versions/order'), 'utf8');

beforeAll(() => {
  // The CLI ships the default drivers: stand-ins of them too.
  writeStandIns(work, DEFAULT_MODULES);
  mkdirSync(join(tree, 'etc'), { recursive: true });
  execFileSync('make', ['-s', 'dist/tools/build-image.mjs'], { stdio: 'inherit' });
}, BUILD_TIMEOUT);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('image versions, built for real', () => {
  const out = join(work, 'out');
  const v: Record<string, string> = {};

  it(
    'keeps the last IMAGE_KEEP versions in versions/, listed oldest first, the flat files linked to the newest',
    async () => {
      for (const label of ['A', 'B', 'C', 'D']) {
        const r = await build(out, label);
        expect(r.upToDate).toBe(false);
        v[label] = r.version;
        expect(r.version).toBe(r.manifest.inputs.slice(0, 12));
        expect(r.manifest.name).toBe('default');
      }
      expect(new Set(Object.values(v)).size).toBe(4);
      expect(readdirSync(join(out, 'versions')).sort()).toEqual([v.B, v.C, v.D, 'order'].sort());
      expect(order(out)).toBe(`${v.B}\n${v.C}\n${v.D}\n`);
      expect(lines).toContain(`versions made ${v.D}; kept ${v.B} ${v.C} ${v.D} (newest last, IMAGE_KEEP=3); removed ${v.A}`);
      expect(readdirSync(join(out, 'versions', v.D!)).sort()).toEqual(['initrd.img', 'manifest.json', 'vmlinuz']);
      expect(readdirSync(out).sort()).toEqual(['initrd.img', 'manifest.json', 'versions', 'vmlinuz']); // no work folder left
      expectFlatIs(out, v.D!);
    },
    BUILD_TIMEOUT,
  );

  it(
    'makes a kept version the newest again, without building, when its inputs come back',
    async () => {
      const before = sha256(readFileSync(join(out, 'versions', v.C!, 'initrd.img')));
      const r = await build(out, 'C');
      expect(r).toMatchObject({ upToDate: true, version: v.C, kept: [v.B, v.D, v.C], removed: [] });
      expect(lines.some((l) => l.startsWith('initramfs '))).toBe(false);
      expect(lines).toContain(`versions reused ${v.C}; kept ${v.B} ${v.D} ${v.C} (newest last, IMAGE_KEEP=3)`);
      expect(order(out)).toBe(`${v.B}\n${v.D}\n${v.C}\n`);
      expectFlatIs(out, v.C!);
      expect(sha256(readFileSync(join(out, 'initrd.img')))).toBe(before);

      const again = await build(out, 'C');
      expect(again.upToDate).toBe(true);
      expect(lines).toContain(`versions ${v.C} is still the newest; kept ${v.B} ${v.D} ${v.C} (newest last, IMAGE_KEEP=3)`);
      expect(readdirSync(out).sort()).toEqual(['initrd.img', 'manifest.json', 'versions', 'vmlinuz']);
      expectFlatIs(out, v.C!);
    },
    BUILD_TIMEOUT,
  );

  it(
    'adopts an output built before versions/ as a version, when its manifest describes its files',
    async () => {
      const old = join(work, 'old-layout');
      mkdirSync(old);
      for (const f of FILES) cpSync(join(out, f), join(old, f));
      const r = await build(old, 'C');
      expect(r).toMatchObject({ upToDate: true, version: v.C, kept: [v.C] });
      expect(lines).toContain(`versions kept the image already in ${old} as version ${v.C}`);
      expect(order(old)).toBe(`${v.C}\n`);
      expectFlatIs(old, v.C!);

      const damaged = join(work, 'old-damaged');
      mkdirSync(damaged);
      for (const f of FILES) cpSync(join(out, f), join(damaged, f));
      writeFileSync(join(damaged, 'initrd.img'), 'truncated');
      const rebuilt = await build(damaged, 'C');
      expect(rebuilt.upToDate).toBe(false);
      expect(lines).toContain('warning the flat files do not match manifest.json: they are not kept as a version');
      expect(order(damaged)).toBe(`${v.C}\n`);
      expectFlatIs(damaged, v.C!);
    },
    BUILD_TIMEOUT,
  );

  it(
    'names the image in its manifest, and the name is one of the inputs',
    async () => {
      const named = join(work, 'named');
      const r = await build(named, 'C', { name: 'ml' });
      expect(r.manifest.name).toBe('ml');
      expect(r.version).not.toBe(v.C);
      // The name is in the manifest only: the image files are C's.
      expect(readFileSync(join(named, 'initrd.img')).equals(readFileSync(join(out, 'initrd.img')))).toBe(true);
    },
    BUILD_TIMEOUT,
  );
});

describe('image versions, through make image (the real CLI)', () => {
  const out = join(work, 'out');
  const fakes = join(work, 'fake-bin');
  const cliEnv = (extra: Record<string, string>) => ({
    ...process.env,
    IMAGE_OUT: out,
    KERNEL: join(work, 'vmlinuz'),
    MODULES: join(work, 'modules', KVER),
    NODE_BINARY: process.execPath,
    NO_STRIP: '1',
    AGENT: join(work, 'node-agent.mjs'),
    EXTRA_ROOTFS: tree,
    ZSTD_LEVEL: '1',
    ...extra,
  });

  it(
    'leaves the kept versions and the flat files as they were when a build is killed midway; the next clears its work folder',
    async () => {
      const before = snapshot(out);
      const kept = order(out);
      // A zstd that says it started and then hangs: the build is killed while compressing.
      mkdirSync(fakes);
      const started = join(work, 'zstd-started');
      writeFileSync(join(fakes, 'zstd'), `#!/bin/sh\ntouch '${started}'\nexec sleep 600\n`);
      chmodSync(join(fakes, 'zstd'), 0o755);
      writeFileSync(join(tree, 'etc/site-version'), 'killed\n');
      const child = spawn(process.execPath, ['dist/tools/build-image.mjs'], {
        env: cliEnv({ PATH: `${fakes}:${process.env.PATH}` }),
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      let output = '';
      child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
      child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
      const exited = new Promise((r) => child.once('exit', r));
      await vi.waitFor(
        () => {
          if (child.exitCode !== null) throw new Error(`the build ended before compressing:\n${output}`);
          expect(existsSync(started)).toBe(true);
        },
        { timeout: 120_000, interval: 50 },
      );
      process.kill(-child.pid!, 'SIGKILL'); // the build and its zstd
      await exited;
      const left = `.build-${child.pid}`;
      expect(existsSync(join(out, left))).toBe(true);
      expect(Object.fromEntries(Object.entries(snapshot(out)).filter(([p]) => !p.startsWith(`${left}/`)))).toEqual(before);
      expect(order(out)).toBe(kept);

      writeFileSync(join(tree, 'etc/site-version'), 'E\n');
      const r = spawnSync(process.execPath, ['dist/tools/build-image.mjs'], { env: cliEnv({ IMAGE_KEEP: '1' }), encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(`image: versions  removed .build-${child.pid}, left by a build that was stopped`);
      const made = /^image: versions  made ([0-9a-f]{12}); kept \1 \(newest last, IMAGE_KEEP=1\); removed (.*)$/m.exec(r.stdout);
      expect(made?.[2]?.split(' ')).toEqual(kept.trim().split('\n'));
      expect(readdirSync(out).sort()).toEqual(['initrd.img', 'manifest.json', 'versions', 'vmlinuz']);
      expect(readdirSync(join(out, 'versions')).sort()).toEqual([made![1], 'order'].sort());
      expectFlatIs(out, made![1]!);
    },
    BUILD_TIMEOUT,
  );

  it('refuses IMAGE_KEEP below 1, naming it', () => {
    const r = spawnSync(process.execPath, ['dist/tools/build-image.mjs'], { env: cliEnv({ IMAGE_KEEP: '0' }), encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('IMG_ERR_OPTION: IMAGE_KEEP=0: expected an integer from 1 to 1000');
  });
});
