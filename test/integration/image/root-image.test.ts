/**
 * Images with their own root (FROM=, PACKAGES=) built for real: a small Debian root from
 * mmdebstrap (busybox-static, extracted, from the host's apt lists), packed with umoci as an
 * OCI layout of two layers (the second deletes a file of the first), pushed with skopeo to a
 * registry on loopback (test/lab/registry.ts), and built through docker://, oci: and
 * oci-archive:; then the refusals (a missing tag, a registry that wants credentials, a damaged
 * layer, a root without /bin/sh, an unknown package) and PACKAGES=jq. The base initrd uses a
 * stand-in kernel, as in extras-build.test.ts, to stay fast; the Debian mirror is the only network.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildImage } from '../../../image/src/build.js';
import { ImageBuildError } from '../../../image/src/errors.js';
import { sha256, type ImageManifest } from '../../../image/src/manifest.js';
import { selectModules, type KernelModule } from '../../../image/src/modules.js';
import { DEFAULT_MODULES, type BuildOptions, type RootBuildOptions } from '../../../image/src/options.js';
import { standInBuildOptions, writeStandIns } from '../../lab/stand-in-build.js';
import { buildRoot, resolveRoot, ROOT_IMG } from '../../../image/src/root-image.js';
import { parseFrom, parsePackages, parseRootEnv } from '../../../image/src/root-source.js';
import { resolveInRoot } from '../../../image/src/root-tree.js';
import { pushImage, startRegistry, type Registry } from '../../lab/registry.js';

const BUILD_TIMEOUT = 240_000;
const work = mkdtempSync(join(tmpdir(), 'lc-root-image-'));
const layout = join(work, 'layout');
const cacheDir = resolve('.cache/image');
let lines: string[] = [];
let registry: Registry;
let locked: Registry;

const options = (outDir: string, root: RootBuildOptions | undefined, extra: Partial<BuildOptions> = {}) =>
  standInBuildOptions(work, outDir, { cacheDir, root, ...extra });

const from = (ref: string, extra: Partial<RootBuildOptions> = {}): RootBuildOptions => {
  const source = parseFrom(ref, (p) => resolve(p));
  return { source, name: source.defaultName, health: '', squashfs: { compression: 'zstd', level: 3 }, ...extra };
};

const build = (outDir: string, root: RootBuildOptions | undefined, extra: Partial<BuildOptions> = {}) => {
  lines = [];
  return buildImage(options(outDir, root, extra), (stage, detail) => lines.push(`${stage} ${detail}`));
};

/** root.cpio unpacked (GNU cpio) into a fresh folder: root.img and etc/lilcluster/root.env. */
function unpackCpio(cpio: string): string {
  const dir = mkdtempSync(join(work, 'cpio-'));
  execFileSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames'], { input: readFileSync(cpio), cwd: dir });
  return dir;
}

/** unsquashfs -lls by path (without the squashfs-root/ prefix): "mode owner/group size date time path[ -> target]". */
function squashListing(img: string): Map<string, string> {
  const text = execFileSync('unsquashfs', ['-lls', '-d', '', img], { env: { ...process.env, TZ: 'UTC' }, maxBuffer: 1 << 26 }).toString();
  const m = new Map<string, string>();
  for (const l of text.split('\n')) {
    const f = /^[-dlcbps][rwxsStT-]{9} .* \d\d:\d\d (\/.*?)(?: -> .*)?$/.exec(l);
    if (f) m.set(f[1]!, l);
  }
  return m;
}

async function rejection(p: Promise<unknown>): Promise<ImageBuildError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ImageBuildError);
  return err as ImageBuildError;
}

function umoci(...args: string[]): void {
  execFileSync('umoci', args, { stdio: 'pipe' });
}

beforeAll(async () => {
  writeStandIns(work);

  // Layer 1: busybox-static extracted by mmdebstrap from the host's package lists, a shell, and
  // test files: an owned file with its mode, a hard link and a symlink to it, one to delete.
  const base = join(work, 'base-root');
  execFileSync(
    'mmdebstrap',
    [
      '--variant=extract',
      '--include=busybox-static',
      '--skip=update',
      `--setup-hook=mkdir -p "$1/var/lib/apt/lists" && cp /var/lib/apt/lists/*_InRelease /var/lib/apt/lists/*_Packages* "$1/var/lib/apt/lists/"`,
      '--quiet',
      'bookworm',
      base,
      '/etc/apt/sources.list.d/debian.sources',
    ],
    { stdio: 'pipe', env: { ...process.env, SOURCE_DATE_EPOCH: '0' } },
  );
  umoci('init', '--layout', layout);
  umoci('new', '--image', `${layout}:base`);
  const b1 = join(work, 'bundle1');
  umoci('unpack', '--image', `${layout}:base`, b1);
  const r1 = join(b1, 'rootfs');
  cpSync(base, r1, { recursive: true, verbatimSymlinks: true });
  symlinkSync('busybox', join(r1, 'bin/sh'));
  writeFileSync(join(r1, 'marker'), 'owned\n');
  chownSync(join(r1, 'marker'), 1234, 5678);
  chmodSync(join(r1, 'marker'), 0o640);
  linkSync(join(r1, 'marker'), join(r1, 'marker-hard'));
  symlinkSync('/marker', join(r1, 'marker-link'));
  writeFileSync(join(r1, 'deleteme'), 'from layer 1\n');
  umoci('repack', '--image', `${layout}:base`, b1);
  umoci('config', '--image', `${layout}:base`, '--config.env', 'PATH=/bin:/usr/bin:/opt/lc', '--tag', 'v1');
  // Layer 2: deletes a file of layer 1 (an OCI whiteout, .wh.deleteme).
  const b2 = join(work, 'bundle2');
  umoci('unpack', '--image', `${layout}:v1`, b2);
  rmSync(join(b2, 'rootfs/deleteme'));
  umoci('repack', '--image', `${layout}:v1`, b2);

  // An image with files but no shell.
  umoci('new', '--image', `${layout}:nosh`);
  const b3 = join(work, 'bundle3');
  umoci('unpack', '--image', `${layout}:nosh`, b3);
  writeFileSync(join(b3, 'rootfs/hello.txt'), 'no shell here\n');
  umoci('repack', '--image', `${layout}:nosh`, b3);
  umoci('gc', '--layout', layout);

  execFileSync('skopeo', ['copy', '--quiet', `oci:${layout}:v1`, `oci-archive:${join(work, 'root.tar')}:v1`]);
  execFileSync('skopeo', ['copy', '--quiet', `oci:${layout}:v1`, `docker-archive:${join(work, 'root-docker.tar')}:lc/root:1`]);
  registry = await startRegistry();
  locked = await startRegistry({ auth: true });
  await pushImage(registry, `oci:${layout}:v1`, 'lc/root:1');
  await pushImage(registry, `oci:${layout}:nosh`, 'lc/nosh:1');
  await pushImage(locked, `oci:${layout}:v1`, 'lc/root:1');
}, BUILD_TIMEOUT);

afterAll(async () => {
  await registry?.stop();
  await locked?.stop();
  rmSync(work, { recursive: true, force: true });
});

describe('FROM= a container image', () => {
  const a = join(work, 'out-a');
  const b = join(work, 'out-b');
  let first: ImageManifest;

  it(
    'from a registry twice: the same root.cpio, fetched once, with the layers applied',
    async () => {
      const ref = `docker://${registry.host}/lc/root:1`;
      first = (await build(a, from(ref, { name: 'lcroot', health: 'test -x /bin/sh' }))).manifest;
      const second = await build(b, from(ref, { name: 'lcroot', health: 'test -x /bin/sh' }), { force: true });
      expect(lines.some((l) => /^from already in .*oci as src-/.test(l))).toBe(true);
      expect(lines.some((l) => /^from Copying blob/.test(l))).toBe(false);
      expect(sha256(readFileSync(join(b, 'root.cpio')))).toBe(sha256(readFileSync(join(a, 'root.cpio'))));
      expect(second.manifest.root).toEqual(first.root);
      expect(readdirSync(a).sort()).toEqual(['initrd.img', 'manifest.json', 'root.cpio', 'versions', 'vmlinuz']);

      const r = first.root!;
      const digest = execFileSync('skopeo', ['inspect', '--tls-verify=false', '--format', '{{.Digest}}', ref]).toString().trim();
      expect(r).toMatchObject({
        image: 'lcroot',
        source: ref,
        digest,
        path: 'root.cpio',
        health: 'test -x /bin/sh',
        taskPath: '/bin:/usr/bin:/opt/lc',
      });
      expect(r.version).toMatch(/^[0-9a-f]{12}$/);
      expect(r.squashfs).toMatchObject({ compression: 'zstd', level: 3 });
      expect(r.sha256).toBe(sha256(readFileSync(join(a, 'root.cpio'))));

      const listing = execFileSync('cpio', ['-tv', '--quiet'], {
        input: readFileSync(join(a, 'root.cpio')),
        env: { ...process.env, TZ: 'UTC', LC_ALL: 'C' },
      })
        .toString()
        .trim()
        .split('\n');
      expect(listing).toHaveLength(4);
      expect(listing[0]).toMatch(/^drwxr-xr-x +\d+ root +root +0 Jan  1  1970 etc$/);
      expect(listing[1]).toMatch(/^drwxr-xr-x +\d+ root +root +0 Jan  1  1970 etc\/lilcluster$/);
      expect(listing[2]).toMatch(/^-r-------- +1 root +root +\d+ Jan  1  1970 root\.img$/);
      expect(listing[3]).toMatch(/^-rw-r--r-- +1 root +root +\d+ Jan  1  1970 etc\/lilcluster\/root\.env$/);
      // Loaded before the compressed base initrd: the kernel finds the next archive only at a 4-byte boundary.
      expect(statSync(join(a, 'root.cpio')).size % 4).toBe(0);

      const dir = unpackCpio(join(a, 'root.cpio'));
      expect(parseRootEnv(readFileSync(join(dir, 'etc/lilcluster/root.env'), 'utf8'))).toEqual({
        LC_ROOT_IMAGE: 'lcroot',
        LC_ROOT_VERSION: r.version,
        LC_ROOT_SOURCE: ref,
        LC_ROOT_PATH: '/bin:/usr/bin:/opt/lc',
        LC_ROOT_HEALTH: 'test -x /bin/sh',
        LC_ROOT_BYTES: String(r.unpackedBytes),
      });
      const sq = squashListing(join(dir, ROOT_IMG));
      expect(sq.has('/deleteme')).toBe(false);
      expect(sq.has('/.wh.deleteme')).toBe(false);
      expect(sq.get('/marker')).toMatch(/^-rw-r----- 1234\/5678 +6 /);
      expect(sq.get('/marker-link')).toMatch(/^lrwxrwxrwx root\/root .* \/marker-link -> \/marker$/);
      expect(sq.get('/bin/sh')).toMatch(/-> busybox$/);
      expect(sq.get('/bin/busybox')).toMatch(/^-rwxr-xr-x root\/root /);
      // A hard link stays one inode: unsquashfs -lls shows no link count, so read it from the mounted image.
      const mnt = join(work, 'mnt');
      mkdirSync(mnt);
      execFileSync('mount', ['-t', 'squashfs', '-o', 'loop,ro', join(dir, ROOT_IMG), mnt]);
      try {
        const ino = (p: string) =>
          execFileSync('stat', ['-c', '%i %h', join(mnt, p)])
            .toString()
            .trim();
        expect(ino('marker')).toBe(ino('marker-hard'));
        expect(ino('marker')).toMatch(/ 2$/);
        expect(readFileSync(join(mnt, 'marker'), 'utf8')).toBe('owned\n');
      } finally {
        execFileSync('umount', [mnt]);
      }
    },
    BUILD_TIMEOUT,
  );

  it(
    'is part of the up-to-date check: unchanged → up to date; without FROM the root.cpio goes',
    async () => {
      expect((await build(a, from(`docker://${registry.host}/lc/root:1`, { name: 'lcroot', health: 'test -x /bin/sh' }))).upToDate).toBe(
        true,
      );
      expect(lines.at(-1)).toMatch(/^done up to date: .* root\.cpio /);
      expect((await build(a, from(`docker://${registry.host}/lc/root:1`, { name: 'lcroot', health: 'true' }))).upToDate).toBe(false);
      const plain = await build(a, undefined);
      expect(plain.manifest.root).toBeNull();
      expect(readdirSync(a).sort()).toEqual(['initrd.img', 'manifest.json', 'versions', 'vmlinuz']);
      expect(readdirSync(join(a, 'versions', plain.version)).sort()).toEqual(['initrd.img', 'manifest.json', 'vmlinuz']);
    },
    BUILD_TIMEOUT,
  );

  it(
    'takes oci:, oci-archive: and docker-archive: as well, giving the same squashfs',
    async () => {
      const want = sha256(readFileSync(join(unpackCpio(join(b, 'root.cpio')), ROOT_IMG)));
      for (const ref of [
        `oci:${layout}:v1`,
        `oci-archive:${join(work, 'root.tar')}:v1`,
        `docker-archive:${join(work, 'root-docker.tar')}`,
      ]) {
        const dir = mkdtempSync(join(work, 'root-'));
        const r = await resolveRoot({ ...from(ref), mtime: 0, cacheDir, force: false }, () => {});
        const m = await buildRoot(r, dir, () => {});
        expect(m.source).toBe(ref);
        expect(sha256(readFileSync(join(unpackCpio(join(dir, 'root.cpio')), ROOT_IMG))), ref).toBe(want);
      }
    },
    BUILD_TIMEOUT,
  );
});

describe('FROM= refusals: a clear error, nothing written', () => {
  const nothingWritten = (out: string) => expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);

  it('a tag the registry does not have', async () => {
    const out = join(work, 'out-missing');
    const err = await rejection(build(out, from(`docker://${registry.host}/lc/root:nosuchtag`)));
    expect(err.code).toBe('IMG_ERR_FROM');
    expect(err.message).toContain(`no image docker://${registry.host}/lc/root:nosuchtag`);
    expect(err.hint).toMatch(/skopeo list-tags/);
    nothingWritten(out);
  });

  it('a local layout that does not exist', async () => {
    const err = await rejection(build(join(work, 'out-nodir'), from(`oci:${join(work, 'nosuchdir')}:v1`)));
    expect(err.code).toBe('IMG_ERR_FROM');
    expect(err.message).toContain('nosuchdir does not exist');
  });

  it('a registry that wants credentials; with REGISTRY_AUTH_FILE it works, and the password is never shown', async () => {
    const ref = `docker://${locked.host}/lc/root:1`;
    const err = await rejection(build(join(work, 'out-auth'), from(ref)));
    expect(err.code).toBe('IMG_ERR_REGISTRY_AUTH');
    expect(err.message).toContain(`registry ${locked.host} refuses ${ref}`);
    expect(err.hint).toMatch(/skopeo login .*REGISTRY_AUTH_FILE/);
    nothingWritten(join(work, 'out-auth'));

    const saved = process.env.REGISTRY_AUTH_FILE;
    process.env.REGISTRY_AUTH_FILE = locked.authFile;
    try {
      lines = [];
      const r = await resolveRoot({ ...from(ref), mtime: 0, cacheDir, force: false }, (s, d) => lines.push(`${s} ${d}`));
      const dir = mkdtempSync(join(work, 'root-auth-'));
      await buildRoot(r, dir, (s, d) => lines.push(`${s} ${d}`));
      expect(existsSync(join(dir, 'root.cpio'))).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.REGISTRY_AUTH_FILE;
      else process.env.REGISTRY_AUTH_FILE = saved;
    }
    expect([...lines, err.message, err.hint ?? ''].join('\n')).not.toContain(locked.password!);
  });

  it('a layer whose bytes do not match its digest', async () => {
    const damaged = join(work, 'damaged');
    cpSync(layout, damaged, { recursive: true });
    // The largest blob is busybox's layer: flip bytes in the middle of it.
    const blobs = join(damaged, 'blobs/sha256');
    const biggest = readdirSync(blobs)
      .map((n) => ({ n, size: readFileSync(join(blobs, n)).length }))
      .sort((x, y) => y.size - x.size)[0]!.n;
    const data = readFileSync(join(blobs, biggest));
    const mid = data.length >> 1;
    data.writeUInt16LE(data.readUInt16LE(mid) ^ 0xffff, mid);
    writeFileSync(join(blobs, biggest), data);
    const fresh = mkdtempSync(join(work, 'cache-')); // the real cache already holds this image
    const r = await resolveRoot({ ...from(`oci:${damaged}:v1`), mtime: 0, cacheDir: fresh, force: false }, () => {});
    const err = await rejection(buildRoot(r, mkdtempSync(join(work, 'root-dmg-')), () => {}));
    expect(err.code).toBe('IMG_ERR_DIGEST');
    expect(err.message).toMatch(/does not match its digest/);
    expect(err.hint).toMatch(/damaged: export it again/);
  });

  it('a root without /bin/sh', async () => {
    const out = join(work, 'out-nosh');
    const err = await rejection(build(out, from(`docker://${registry.host}/lc/nosh:1`)));
    expect(err.code).toBe('IMG_ERR_ROOT');
    expect(err.message).toContain(`nosh (docker://${registry.host}/lc/nosh:1) has no /bin/sh: a root with no /bin/sh cannot run tasks`);
    // The build got as far as its temporary folder, which is gone; no image files.
    nothingWritten(out);
  });
});

describe('missing programs', () => {
  it.each([
    ['FROM=', () => from(`oci:${layout}:v1`), /skopeo: apt-get install skopeo/],
    [
      'PACKAGES=',
      () => ({ source: parsePackages('jq'), name: 'jq', health: '', squashfs: { compression: 'zstd' as const, level: 3 } }),
      /mmdebstrap: apt-get install mmdebstrap/,
    ],
  ])('%s names what to install', async (_what, root, hint) => {
    const saved = process.env.PATH;
    process.env.PATH = join(work, 'no-programs-here');
    try {
      const err = await rejection(resolveRoot({ ...root(), mtime: 0, cacheDir, force: false }, () => {}));
      expect(err.code).toBe('IMG_ERR_MISSING_TOOL');
      expect(err.hint).toMatch(hint);
      expect(err.hint).toMatch(/mksquashfs: apt-get install squashfs-tools/);
    } finally {
      process.env.PATH = saved;
    }
  });
});

describe('PACKAGES= a Debian package set', () => {
  const out = join(work, 'out-jq');
  const pkgs = (v: string): RootBuildOptions => {
    const source = parsePackages(v);
    return { source, name: source.defaultName, health: 'jq --version', squashfs: { compression: 'zstd', level: 3 } };
  };

  it(
    'jq: a root with /usr/bin/jq and its libraries, resolved by apt; built again, from the cache, the same bytes',
    async () => {
      const r = await build(out, pkgs('jq'), { force: true });
      expect(lines.some((l) => /^packages jq \S+ \+ \d+ packages/.test(l))).toBe(true);
      const m = r.manifest.root!;
      expect(m).toMatchObject({
        image: 'jq',
        source: 'packages: jq',
        health: 'jq --version',
        taskPath: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      });
      expect(m.packages).toEqual(
        expect.arrayContaining([expect.stringMatching(/^jq=/), expect.stringMatching(/^libjq1=/), expect.stringMatching(/^dash=/)]),
      );
      expect(m.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
      const sq = squashListing(join(unpackCpio(join(out, 'root.cpio')), ROOT_IMG));
      expect(sq.get('/usr/bin/jq')).toMatch(/^-rwxr-xr-x root\/root /);
      expect([...sq.keys()].some((p) => /^\/usr\/lib\/x86_64-linux-gnu\/libjq\.so\.1/.test(p))).toBe(true);
      expect(sq.has('/etc/resolv.conf')).toBe(false);

      const again = join(work, 'out-jq-2');
      const r2 = await build(again, pkgs('jq'));
      expect(lines).toContain(`packages packed root from the cache (${join(cacheDir, 'roots')})`);
      expect(r2.manifest.root).toEqual(m);
      expect(sha256(readFileSync(join(again, 'root.cpio')))).toBe(m.sha256);
    },
    BUILD_TIMEOUT,
  );

  it('a package apt does not know', async () => {
    const err = await rejection(build(join(work, 'out-nopkg'), pkgs('jq nosuchpkg-lc')));
    expect(err.code).toBe('IMG_ERR_PACKAGE');
    expect(err.message).toBe('PACKAGES=: apt knows no package nosuchpkg-lc');
    expect(err.hint).toMatch(/apt-cache search/);
  });
});

describe('the base initrd carries what mounts a root', () => {
  it("ships loop, squashfs and overlay from Debian's kernel (squashfs's decompressors are built in)", () => {
    const idx = readdirSync(cacheDir).filter((n) => /^linux-image-.*\.deb\.modules\.json$/.test(n));
    expect(idx.length, 'build.test.ts caches the kernel index').toBeGreaterThan(0);
    const kernel = JSON.parse(readFileSync(join(cacheDir, idx.sort().at(-1)!), 'utf8')) as { modules: KernelModule[]; builtin: string };
    const builtin = new Set(kernel.builtin.split('\n').map((p) => p.replace(/^.*\//, '').replace(/\.ko$/, '').replaceAll('-', '_')));
    const sel = selectModules(new Map(kernel.modules.map((m) => [m.module, m])), DEFAULT_MODULES, builtin);
    expect(sel.missing).toEqual([]);
    expect(sel.unresolved).toEqual([]);
    const shipped = new Set(sel.modules.map((m) => m.module));
    for (const m of ['loop', 'squashfs', 'overlay']) expect(shipped.has(m), m).toBe(true);
    for (const m of ['zstd_decompress', 'xz_dec']) expect(builtin.has(m), m).toBe(true);
  });
});

describe('symlinks inside the root', () => {
  it('resolve within the root, never out of it', () => {
    const r = join(work, 'links');
    mkdirSync(join(r, 'usr/bin'), { recursive: true });
    mkdirSync(join(r, 'etc'));
    writeFileSync(join(r, 'etc/passwd'), '');
    writeFileSync(join(r, 'usr/bin/dash'), '');
    symlinkSync('usr/bin', join(r, 'bin'));
    symlinkSync('dash', join(r, 'usr/bin/sh'));
    symlinkSync('/../../../../etc/passwd', join(r, 'usr/bin/escape'));
    symlinkSync('loop2', join(r, 'usr/bin/loop1'));
    symlinkSync('loop1', join(r, 'usr/bin/loop2'));
    expect(resolveInRoot(r, '/bin/sh')).toBe(join(r, 'usr/bin/dash'));
    expect(resolveInRoot(r, '/bin/escape')).toBe(join(r, 'etc/passwd'));
    expect(resolveInRoot(r, '/bin/loop1')).toBeUndefined();
    expect(resolveInRoot(r, '/bin/dash/x')).toBeUndefined();
  });
});
