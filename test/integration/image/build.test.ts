/**
 * Real builds of the image from the real inputs (Debian packages from the cache in
 * .cache/image, downloaded if missing; the pinned Node from node_modules; the agent bundle),
 * at a low zstd level to stay within CI's time: reproducibility, contents, the generated
 * modules.dep/modules.alias against kmod's depmod, and failures that must leave no image.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildImage, IMAGE_PATHS } from '../../../image/src/build.js';
import { ImageBuildError } from '../../../image/src/errors.js';
import { sha256, type ImageManifest } from '../../../image/src/manifest.js';
import { pinnedNode } from '../../../image/src/node-runtime.js';
import { DEFAULT_MODULES, type BuildOptions } from '../../../image/src/options.js';
import { findOnPath } from '../../../image/src/tools.js';

const BUILD_TIMEOUT = 300_000;
const work = mkdtempSync(join(tmpdir(), 'lc-image-build-'));
const lines: string[] = [];
const pinned = pinnedNode(process.cwd());

function options(outDir: string, extra: Partial<BuildOptions> = {}): BuildOptions {
  return {
    outDir,
    cacheDir: resolve('.cache/image'),
    kernelDeb: undefined,
    kernel: undefined,
    modulesDir: undefined,
    busyboxDeb: undefined,
    nodePath: pinned.binary,
    nodePackage: pinned,
    stripNode: true,
    agentPath: resolve('dist/bin/node-agent.mjs'),
    spawnAddonPath: resolve('dist/native/spawn.node'),
    packageJson: resolve('package.json'),
    dispatcherKey: undefined,
    modules: [...DEFAULT_MODULES],
    firmware: false,
    zstdLevel: 3,
    zstdThreads: undefined,
    mtime: 0,
    force: true,
    imageDir: resolve('image'),
    ...extra,
  };
}

const build = (outDir: string, extra: Partial<BuildOptions> = {}) =>
  buildImage(options(outDir, extra), (stage, detail) => lines.push(`${stage} ${detail}`));

function unpack(initrd: string, into: string): void {
  mkdirSync(into, { recursive: true });
  const cpio = execFileSync('zstd', ['-dc', initrd], { maxBuffer: 1 << 30 });
  execFileSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames'], { input: cpio, cwd: into, maxBuffer: 1 << 30 });
}

function listing(initrd: string): string[] {
  const cpio = execFileSync('zstd', ['-dc', initrd], { maxBuffer: 1 << 30 });
  return execFileSync('cpio', ['-tv', '--quiet'], { input: cpio, maxBuffer: 1 << 28, env: { ...process.env, TZ: 'UTC', LC_ALL: 'C' } })
    .toString()
    .split('\n')
    .filter(Boolean);
}

/** modules.dep as path → set of dependency paths. */
function depMap(text: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    if (!line.includes(':')) continue;
    const [k, v] = line.split(':') as [string, string];
    m.set(k.trim(), v.trim() ? v.trim().split(/\s+/).sort() : []);
  }
  return m;
}
const aliasLines = (text: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith('alias '))
    .sort();

beforeAll(() => {
  // The agent bundle and the builder's CLI bundle, as `make image` uses them.
  execFileSync('make', ['-s', 'dist/bin/node-agent.mjs', 'dist/native/spawn.node', 'dist/tools/build-image.mjs'], { stdio: 'inherit' });
}, BUILD_TIMEOUT);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('make image, built for real', () => {
  const a = join(work, 'a');
  const b = join(work, 'b');
  let manifest: ImageManifest;

  it(
    'gives a byte-identical image when built twice from the same inputs',
    async () => {
      const first = await build(a);
      const second = await build(b);
      expect(first.upToDate).toBe(false);
      manifest = first.manifest;
      const fileSum = (dir: string, f: string) => sha256(readFileSync(join(dir, f)));
      expect(fileSum(b, 'initrd.img')).toBe(fileSum(a, 'initrd.img'));
      expect(fileSum(b, 'vmlinuz')).toBe(fileSum(a, 'vmlinuz'));
      expect(second.manifest).toEqual(first.manifest);
      // No temporary folder left behind; the flat files are the newest of versions/.
      expect(readdirSync(a).sort()).toEqual(['initrd.img', 'manifest.json', 'versions', 'vmlinuz']);
      expect(readdirSync(join(a, 'versions')).sort()).toEqual([first.version, 'order']);
    },
    BUILD_TIMEOUT,
  );

  it('records versions, sizes, digests and modules in the manifest', () => {
    const onDisk = JSON.parse(readFileSync(join(a, 'manifest.json'), 'utf8')) as ImageManifest;
    expect(onDisk).toEqual(manifest);
    expect(manifest.kernel.version).toMatch(/^\d+\.\d+\.\d+-\d+-amd64$/);
    expect(manifest.kernel.package).toBe(`linux-image-${manifest.kernel.version}`);
    expect(manifest.node.version).toBe(`v${pinned.version}`);
    expect(manifest.node.package).toBe(pinned.label);
    expect(manifest.node.libraries).toContain(manifest.node.interpreter);
    expect(manifest.agent.sha256).toBe(sha256(readFileSync('dist/bin/node-agent.mjs')));
    const addon = readFileSync('dist/native/spawn.node');
    expect(manifest.agent.spawnAddon).toEqual({ path: IMAGE_PATHS.spawnAddon, size: addon.length, sha256: sha256(addon) });
    for (const f of ['vmlinuz', 'initrd.img'] as const) {
      const data = readFileSync(join(a, f));
      expect(manifest.files[f]).toMatchObject({ size: data.length, sha256: sha256(data) });
    }
    expect(manifest.compression).toEqual({ format: 'zstd', level: 3 });
    for (const m of DEFAULT_MODULES) expect([...manifest.modules.shipped, ...manifest.modules.builtin]).toContain(m);
    expect(manifest.dispatcherKey).toBeNull();
    expect(lines.some((l) => l.startsWith('initramfs '))).toBe(true);
  });

  it(
    'holds /init, busybox, Node with its libraries, the agent and every shipped module, all root:root at mtime 0',
    () => {
      const entries = listing(join(a, 'initrd.img'));
      for (const l of entries) expect(l).toMatch(/^\S+\s+\d+ root\s+root\s+.* Jan  1  1970 /);
      const names = entries.map(
        (l) =>
          l
            .replace(/ -> .*$/, '')
            .split(' ')
            .at(-1)!,
      );
      const kdir = `lib/modules/${manifest.kernel.version}`;
      for (const p of [
        'init',
        'bin/busybox',
        'bin/sh',
        'dev/console',
        'etc/lilcluster/udhcpc.script',
        'etc/lilcluster/image.env',
        `${kdir}/modules.dep`,
        `${kdir}/modules.alias`,
      ])
        expect(names).toContain(p);
      for (const p of [IMAGE_PATHS.node, IMAGE_PATHS.agent, IMAGE_PATHS.spawnAddon, ...manifest.node.libraries])
        expect(names).toContain(p.slice(1));
      expect(entries.find((l) => l.endsWith(' init'))).toMatch(/^-rwxr-xr-x /);
      expect(entries.find((l) => / dev\/console$/.test(l))).toMatch(/^crw------- .* 5,\s+1 /);
      // Sorted, parents first: what the kernel's unpacker needs.
      expect(names).toEqual([...names].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));
      const shipped = names.filter((n) => n.endsWith('.ko'));
      expect(shipped).toHaveLength(manifest.modules.shipped.length);
    },
    BUILD_TIMEOUT,
  );

  it(
    'writes modules.dep and modules.alias that agree with kmod depmod on the same modules',
    () => {
      const root = join(work, 'unpacked');
      unpack(join(a, 'initrd.img'), root);
      const kdir = join(root, 'lib/modules', manifest.kernel.version);
      const ours = { dep: readFileSync(join(kdir, 'modules.dep'), 'utf8'), alias: readFileSync(join(kdir, 'modules.alias'), 'utf8') };
      expect(lstatSync(join(root, 'bin/sh')).isSymbolicLink() && readlinkSync(join(root, 'bin/sh'))).toBe('busybox');

      const base = join(work, 'depmod');
      cpSync(join(root, 'lib/modules'), join(base, 'lib/modules'), { recursive: true });
      for (const f of ['modules.dep', 'modules.alias', 'modules.softdep']) rmSync(join(base, 'lib/modules', manifest.kernel.version, f));
      execFileSync(findOnPath('depmod') ?? '/usr/sbin/depmod', ['-b', base, manifest.kernel.version], { stdio: 'pipe' }); // warns about modules.order: harmless
      const theirs = join(base, 'lib/modules', manifest.kernel.version);
      expect(depMap(ours.dep)).toEqual(depMap(readFileSync(join(theirs, 'modules.dep'), 'utf8')));
      expect(aliasLines(ours.alias)).toEqual(aliasLines(readFileSync(join(theirs, 'modules.alias'), 'utf8')));
      expect(aliasLines(ours.alias).length).toBeGreaterThan(100);
    },
    BUILD_TIMEOUT,
  );

  it(
    'stops early when nothing changed, and rebuilds when the dispatcher key is added',
    async () => {
      const again = await build(a, { force: false });
      expect(again.upToDate).toBe(true);
      expect(again.manifest).toEqual(manifest);

      const raw = generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
      const keyFile = join(work, 'identity.pub');
      writeFileSync(keyFile, raw.toString('base64') + '\n');
      const withKey = await build(a, { force: false, dispatcherKey: keyFile });
      expect(withKey.upToDate).toBe(false);
      expect(withKey.manifest.dispatcherKey).toEqual({ path: IMAGE_PATHS.dispatcherKey, fingerprint: sha256(raw) });
      const root = join(work, 'with-key');
      unpack(join(a, 'initrd.img'), root);
      expect(readFileSync(join(root, IMAGE_PATHS.dispatcherKey.slice(1)), 'utf8')).toBe(raw.toString('base64') + '\n');
    },
    BUILD_TIMEOUT,
  );
});

describe('make image, when something is wrong', () => {
  /** A PATH with every tool the build needs, except those in `without`, plus fakes. */
  function toolPath(name: string, without: string[], fakes: Record<string, string> = {}): string {
    const dir = join(work, `path-${name}`);
    mkdirSync(dir, { recursive: true });
    for (const t of [
      'apt-get',
      'apt-cache',
      'dpkg-deb',
      'dpkg',
      'zstd',
      'strip',
      'ldd',
      'tar',
      'sh',
      'bash',
      'cat',
      'sed',
      'uname',
      'gzip',
      'xz',
      'rm',
      'sort',
      'head',
      'tr',
    ]) {
      const real = findOnPath(t);
      if (real && !without.includes(t) && !fakes[t]) symlinkSync(real, join(dir, t));
    }
    for (const [t, script] of Object.entries(fakes)) {
      writeFileSync(join(dir, t), script);
      chmodSync(join(dir, t), 0o755);
    }
    return dir;
  }

  it('names a missing zstd and how to get it, exits 1, and writes nothing (the real CLI)', () => {
    const out = join(work, 'no-zstd');
    const r = spawnSync(process.execPath, ['dist/tools/build-image.mjs', '--out', out, '--zstd-level', '3'], {
      env: { ...process.env, PATH: toolPath('no-zstd', ['zstd']) },
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('IMG_ERR_MISSING_TOOL: missing program: zstd');
    expect(r.stderr).toContain('apt-get install zstd');
    expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
  });

  it(
    'keeps the previous image whole when compression fails midway, and leaves no temporary files',
    async () => {
      const out = join(work, 'failing-zstd');
      cpSync(join(work, 'b'), out, { recursive: true });
      const files = () => readdirSync(out, { recursive: true, encoding: 'utf8' }).filter((f) => lstatSync(join(out, f)).isFile());
      const before = Object.fromEntries(files().map((f) => [f, sha256(readFileSync(join(out, f)))]));
      // A zstd that reads a little, writes garbage and dies, like a full disk or a crash.
      const fake =
        '#!/bin/sh\nhead -c 100000 >/dev/null\necho "zstd: error 70 : Write error : cannot write block : No space left on device" >&2\nexit 1\n';
      const saved = process.env.PATH;
      process.env.PATH = toolPath('failing-zstd', [], { zstd: fake });
      try {
        await expect(build(out, { agentPath: resolve('dist/bin/node-agent.mjs') })).rejects.toSatisfy(
          (e: unknown) => e instanceof ImageBuildError && e.code === 'IMG_ERR_TOOL_FAILED' && e.message.includes('No space left on device'),
        );
      } finally {
        process.env.PATH = saved;
      }
      const after = Object.fromEntries(files().map((f) => [f, sha256(readFileSync(join(out, f)))]));
      expect(after).toEqual(before);
    },
    BUILD_TIMEOUT,
  );

  it('names the pinned Node package and version when npm ci has not installed it, exits 1, and writes nothing (the real CLI)', () => {
    const project = join(work, 'no-node-modules');
    mkdirSync(project, { recursive: true });
    writeFileSync(join(project, 'package.json'), readFileSync('package.json'));
    const out = join(work, 'no-node-out');
    const r = spawnSync(process.execPath, [resolve('dist/tools/build-image.mjs'), '--out', out, '--zstd-level', '3'], {
      cwd: project,
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`IMG_ERR_INPUT: ${pinned.label} is not installed`);
    expect(r.stderr).toContain('run npm ci');
    expect(existsSync(out)).toBe(false);
  });

  it.each([
    ['truncated', (real: Buffer) => real.subarray(0, 1 << 20), 'does not run'],
    ['not an executable at all', () => Buffer.from('<html>502 Bad Gateway</html>\n'), 'is not an ELF executable'],
  ])(
    'names the pinned Node package and version when its binary is %s, and writes no image',
    async (_, damage, why) => {
      const bad = join(work, `node-${why.replace(/\W+/g, '-')}`);
      writeFileSync(bad, damage(readFileSync(pinned.binary)), { mode: 0o755 });
      const out = join(work, `bad-node-${why.replace(/\W+/g, '-')}`);
      await expect(build(out, { nodePath: bad })).rejects.toSatisfy(
        (e: unknown) =>
          e instanceof ImageBuildError &&
          e.code === 'IMG_ERR_INPUT' &&
          e.message.startsWith(`${pinned.label} (${bad}) ${why}`) &&
          /npm ci/.test(e.hint ?? ''),
      );
      expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
    },
    BUILD_TIMEOUT,
  );

  it(
    'stops with IMG_ERR_MODULE for a driver the kernel does not have',
    async () => {
      const out = join(work, 'bad-module');
      await expect(build(out, { modules: [...DEFAULT_MODULES, 'no_such_nic'] })).rejects.toSatisfy(
        (e: unknown) => e instanceof ImageBuildError && e.code === 'IMG_ERR_MODULE' && e.message.includes('no_such_nic'),
      );
      expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
    },
    BUILD_TIMEOUT,
  );
});
