/**
 * EXTRA_ROOTFS and EXTRA_DEBS in real builds. To stay fast, the kernel is a stand-in (KERNEL=
 * a few bytes, MODULES= a folder with one module-shaped ELF) and Node ships unstripped at zstd
 * -1; busybox and the EXTRA_DEBS packages (jq, libjq1, libonig5) come from apt into
 * .cache/image like the kernel in build.test.ts: the first run needs the Debian mirror.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildImage, PROTECTED_PATHS } from '../../../image/src/build.js';
import { ImageBuildError } from '../../../image/src/errors.js';
import { sha256 } from '../../../image/src/manifest.js';
import { readExtraRootfs } from '../../../image/src/overlay.js';
import type { BuildOptions } from '../../../image/src/options.js';
import { STAND_IN_KVER, standInBuildOptions, writeStandIns } from '../../lab/stand-in-build.js';
import { findOnPath } from '../../../image/src/tools.js';

const BUILD_TIMEOUT = 300_000;
const KVER = STAND_IN_KVER;
const work = mkdtempSync(join(tmpdir(), 'lc-image-extras-build-'));
let lines: string[] = [];

const options = (outDir: string, extra: Partial<BuildOptions> = {}) => standInBuildOptions(work, outDir, extra);

const build = (outDir: string, extra: Partial<BuildOptions> = {}) => {
  lines = [];
  return buildImage(options(outDir, extra), (stage, detail) => lines.push(`${stage} ${detail}`));
};

function cpioBytes(initrd: string): Buffer {
  return execFileSync('zstd', ['-dc', initrd], { maxBuffer: 1 << 30 });
}

/** GNU cpio's long listing, by path: "mode links owner group size date path[ -> target]". */
function listing(initrd: string): Map<string, string> {
  const text = execFileSync('cpio', ['-tv', '--quiet'], {
    input: cpioBytes(initrd),
    maxBuffer: 1 << 28,
    env: { ...process.env, TZ: 'UTC', LC_ALL: 'C' },
  }).toString();
  const m = new Map<string, string>();
  for (const l of text.split('\n').filter(Boolean))
    m.set(
      l
        .replace(/ -> .*$/, '')
        .split(' ')
        .at(-1)!,
      l,
    );
  return m;
}

function unpack(initrd: string, into: string): void {
  mkdirSync(into, { recursive: true });
  execFileSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames'], { input: cpioBytes(initrd), cwd: into, maxBuffer: 1 << 30 });
}

/** The site tree of the tests: a config file, a program, a symlink, a private folder, and a file replacing one of the image's. */
const tree = join(work, 'site-rootfs');
function writeTree(): void {
  mkdirSync(join(tree, 'usr/local/bin'), { recursive: true });
  mkdirSync(join(tree, 'etc/lilcluster'), { recursive: true });
  mkdirSync(join(tree, 'srv/data'), { recursive: true });
  mkdirSync(join(tree, 'tmp'), { recursive: true });
  writeFileSync(join(tree, 'usr/local/bin/hello'), '#!/bin/sh\necho hello from the site\n');
  chmodSync(join(tree, 'usr/local/bin/hello'), 0o755);
  symlinkSync('hello', join(tree, 'usr/local/bin/hi'));
  writeFileSync(join(tree, 'etc/site.conf'), 'answer=42\n');
  chmodSync(join(tree, 'etc/site.conf'), 0o640);
  chmodSync(join(tree, 'srv/data'), 0o700);
  chmodSync(join(tree, 'tmp'), 0o755);
  writeFileSync(join(tree, 'etc/lilcluster/udhcpc.script'), "#!/bin/sh\n# the site's own\n");
  chmodSync(join(tree, 'etc/lilcluster/udhcpc.script'), 0o755);
}

beforeAll(() => {
  writeStandIns(work);
  writeTree();
  // The CLI bundle, for the tests of the make variables.
  execFileSync('make', ['-s', 'dist/tools/build-image.mjs'], { stdio: 'inherit' });
}, BUILD_TIMEOUT);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('EXTRA_ROOTFS', () => {
  const a = join(work, 'rootfs-a');

  it(
    'copies the tree into the image root: files with their modes, symlinks, folders, root:root at the fixed mtime',
    async () => {
      const r = await build(a, { extraRootfs: tree });
      expect(r.upToDate).toBe(false);
      const l = listing(join(a, 'initrd.img'));
      expect(l.get('usr/local/bin/hello')).toMatch(/^-rwxr-xr-x +1 root +root +35 Jan  1  1970 usr\/local\/bin\/hello$/);
      expect(l.get('usr/local/bin/hi')).toMatch(/^lrwxrwxrwx +1 root +root +5 Jan  1  1970 usr\/local\/bin\/hi -> hello$/);
      expect(l.get('etc/site.conf')).toMatch(/^-rw-r----- +1 root +root +10 Jan  1  1970 /);
      expect(l.get('srv/data')).toMatch(/^drwx------ +2 root +root +0 Jan  1  1970 /);
      // Folders the image has keep their modes: /tmp stays world-writable and sticky.
      expect(l.get('tmp')).toMatch(/^drwxrwxrwt /);
      // The image's own files are still there, and the tree's file replaced the image's.
      for (const p of [
        'init',
        'bin/busybox',
        'usr/bin/node',
        'usr/lib/lilcluster/node-agent.mjs',
        `lib/modules/${KVER}/kernel/drivers/net/lcfake.ko`,
      ])
        expect(l.has(p), p).toBe(true);
      const root = join(work, 'rootfs-a-unpacked');
      unpack(join(a, 'initrd.img'), root);
      expect(readFileSync(join(root, 'etc/lilcluster/udhcpc.script'), 'utf8')).toBe("#!/bin/sh\n# the site's own\n");
      expect(readFileSync(join(root, 'usr/local/bin/hello'), 'utf8')).toBe('#!/bin/sh\necho hello from the site\n');

      const t = readExtraRootfs(tree, PROTECTED_PATHS);
      expect(r.manifest.extra).toEqual({
        debs: [],
        rootfs: { path: tree, sha256: t.digest, files: 3, symlinks: 1, directories: 8 },
        missingLibraries: [],
      });
      expect(lines).toContain(`rootfs ${tree}: 3 files, 1 symlinks, 8 directories, 0 KiB`);
      expect(lines.find((x) => x.startsWith('rootfs ') && x.includes('added'))).toMatch(/replaced \/etc\/lilcluster\/udhcpc\.script$/);
    },
    BUILD_TIMEOUT,
  );

  it(
    'is part of the inputs: unchanged → up to date; a changed file, mode or symlink → rebuilt',
    async () => {
      expect((await build(a, { extraRootfs: tree })).upToDate).toBe(true);
      expect(lines.at(-1)).toMatch(/^done up to date/);

      writeFileSync(join(tree, 'etc/site.conf'), 'answer=43\n');
      expect((await build(a, { extraRootfs: tree })).upToDate).toBe(false);
      const root = join(work, 'rootfs-a-changed');
      unpack(join(a, 'initrd.img'), root);
      expect(readFileSync(join(root, 'etc/site.conf'), 'utf8')).toBe('answer=43\n');

      chmodSync(join(tree, 'usr/local/bin/hello'), 0o750);
      expect((await build(a, { extraRootfs: tree })).upToDate).toBe(false);
      expect(listing(join(a, 'initrd.img')).get('usr/local/bin/hello')).toMatch(/^-rwxr-x--- /);

      // Without the option, the image is the plain one again.
      const plain = await build(a);
      expect(plain.upToDate).toBe(false);
      expect(plain.manifest.extra).toEqual({ debs: [], rootfs: null, missingLibraries: [] });
      expect(listing(join(a, 'initrd.img')).has('etc/site.conf')).toBe(false);
    },
    BUILD_TIMEOUT,
  );

  it.each<[string, (root: string) => void, RegExp, RegExp]>([
    ['a path that does not exist', () => {}, /^EXTRA_ROOTFS=.*\/missing does not exist$/, /folder whose contents go into the image's root/],
    [
      '/init',
      (r) => {
        mkdirSync(r);
        writeFileSync(join(r, 'init'), '#!/bin/sh\nexec /bin/sh\n');
      },
      /: init would replace \/init$/,
      /image\/rootfs\/init/,
    ],
    [
      'the agent',
      (r) => {
        mkdirSync(join(r, 'usr/lib/lilcluster'), { recursive: true });
        writeFileSync(join(r, 'usr/lib/lilcluster/node-agent.mjs'), 'evil()');
      },
      /: usr\/lib\/lilcluster\/node-agent\.mjs would replace \/usr\/lib\/lilcluster\/node-agent\.mjs$/,
      /AGENT=/,
    ],
  ])('refuses %s with IMG_ERR_INPUT and a hint, before building anything', async (what, make, message, hint) => {
    const dir = join(work, what === 'a path that does not exist' ? 'missing' : `refused-${what.replace(/\W+/g, '')}`);
    make(dir);
    const out = join(work, `out-refused-${what.replace(/\W+/g, '')}`);
    const got = await build(out, { extraRootfs: dir }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(got).toBeInstanceOf(ImageBuildError);
    const e = got as ImageBuildError;
    expect(e.code).toBe('IMG_ERR_INPUT');
    expect(e.message).toMatch(message);
    expect(e.hint).toMatch(hint);
    expect(existsSync(out)).toBe(false);
    expect(lines).toEqual([expect.stringMatching(/^tools /)]);
  });

  it('is EXTRA_ROOTFS= for the CLI (make passes it in the environment), and a bad EXTRA_DEBS name is IMG_ERR_OPTION', () => {
    const out = join(work, 'cli-out');
    const cli = (env: Record<string, string>) =>
      spawnSync(process.execPath, ['dist/tools/build-image.mjs', '--out', out], { env: { ...process.env, ...env }, encoding: 'utf8' });
    const missing = cli({ EXTRA_ROOTFS: 'no/such/tree' });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain(`make image: IMG_ERR_INPUT: EXTRA_ROOTFS=${resolve('no/such/tree')} does not exist\n  hint: `);
    const bad = cli({ EXTRA_DEBS: 'jq,-oAPT::Get::Foo=1' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('make image: IMG_ERR_OPTION: EXTRA_DEBS: not a Debian package name: -oAPT::Get::Foo=1');
    expect(existsSync(out)).toBe(false);
  });
});

describe('EXTRA_DEBS', () => {
  const c = join(work, 'debs-c');
  const debs = ['jq', 'libjq1', 'libonig5'];

  it(
    'unpacks the named packages: jq runs in the image (chroot), no documentation, versions in the manifest',
    async () => {
      const r = await build(c, { extraDebs: debs, extraRootfs: tree });
      expect(r.upToDate).toBe(false);
      const extra = r.manifest.extra!;
      expect(extra.debs.map((d) => d.package)).toEqual(debs);
      for (const d of extra.debs) {
        const cached = join(
          '.cache/image',
          readdirSync('.cache/image').find(
            (f) => f.startsWith(`${d.package}_`) && f.endsWith('.deb') && sha256(readFileSync(join('.cache/image', f))) === d.sha256,
          )!,
        );
        expect(execFileSync('dpkg-deb', ['-f', cached, 'Version'], { encoding: 'utf8' }).trim()).toBe(d.version);
      }
      expect(extra.missingLibraries).toEqual([]);
      expect(lines.filter((l) => l.startsWith('warning'))).toEqual([]);
      expect(lines.find((l) => l.startsWith('debs jq '))).toMatch(
        /^debs jq \S+ \((downloaded|cached)\), libjq1 \S+ \((downloaded|cached)\), libonig5 \S+ \((downloaded|cached)\)$/,
      );
      expect(lines.find((l) => l.startsWith('debs unpacked'))).toMatch(
        /^debs unpacked 3 packages: \d+ files, \d+ symlinks, [\d.]+ MiB \(left out \d+ documentation\/locale entries\)$/,
      );

      const l = listing(join(c, 'initrd.img'));
      expect(l.get('usr/bin/jq')).toMatch(/^-rwxr-xr-x +1 root +root /);
      expect(l.get('usr/lib/x86_64-linux-gnu/libjq.so.1')).toMatch(/-> libjq\.so\.1\.0\.4$/);
      expect(l.get('usr/lib/x86_64-linux-gnu/libonig.so.5')).toMatch(/-> libonig\.so\.5\.\d+\.\d+$/);
      expect([...l.keys()].filter((p) => /^usr\/share\/(doc|man|lintian|locale)\b/.test(p))).toEqual([]);
      expect(l.has('usr/local/bin/hello')).toBe(true); // both options together

      const root = join(work, 'debs-c-unpacked');
      unpack(join(c, 'initrd.img'), root);
      // The image's loader, libraries and search path, nothing of the host's: no ld.so.cache in there.
      expect(existsSync(join(root, 'etc/ld.so.cache'))).toBe(false);
      const jq = execFileSync(
        findOnPath('chroot') ?? '/usr/sbin/chroot',
        [root, '/usr/bin/jq', '-nc', '{sum: (1 + 41), re: ("lilcluster" | test("^lil"))}'],
        { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } },
      );
      expect(jq.trim()).toBe('{"sum":42,"re":true}');
    },
    BUILD_TIMEOUT,
  );

  it(
    'gives the same bytes when built again with both options, and is up to date after',
    async () => {
      const d = join(work, 'debs-d');
      await build(d, { extraDebs: debs, extraRootfs: tree });
      for (const f of ['initrd.img', 'vmlinuz', 'manifest.json'])
        expect(sha256(readFileSync(join(d, f))), f).toBe(sha256(readFileSync(join(c, f))));
      expect((await build(d, { extraDebs: debs, extraRootfs: tree })).upToDate).toBe(true);
    },
    BUILD_TIMEOUT,
  );

  it(
    'warns, naming the missing sonames, when a package comes without its libraries (jq alone), also when up to date',
    async () => {
      // Over the image of the previous test: another package list is another image.
      const e = join(work, 'debs-d');
      const r = await build(e, { extraDebs: ['jq'] });
      expect(r.upToDate).toBe(false);
      expect(r.manifest.extra!.missingLibraries).toEqual([{ soname: 'libjq.so.1', neededBy: ['/usr/bin/jq'] }]);
      const warning = lines.filter((l) => l.startsWith('warning'));
      expect(warning).toEqual([
        'warning libraries not in the image: libjq.so.1 (needed by /usr/bin/jq); EXTRA_DEBS does not resolve dependencies: add the packages that hold them',
      ]);
      expect(listing(join(e, 'initrd.img')).has('usr/bin/jq')).toBe(true);
      const again = await build(e, { extraDebs: ['jq'] });
      expect(again.upToDate).toBe(true);
      expect(lines.filter((l) => l.startsWith('warning'))).toEqual(warning);
    },
    BUILD_TIMEOUT,
  );
});
