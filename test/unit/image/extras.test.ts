/**
 * The pieces behind EXTRA_ROOTFS and EXTRA_DEBS, without a build: the dynamic-section reader
 * (against readelf, and fuzzed), the loader's search inside an assembled image, the layer rules
 * (what may add, replace or clash), the EXTRA_ROOTFS refusals, package names, and a package
 * built here with dpkg-deb read back as a layer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { chmodSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROTECTED_PATHS } from '../../../image/src/build.js';
import { ElfError, elfDynamic } from '../../../image/src/elf.js';
import { ImageBuildError } from '../../../image/src/errors.js';
import { isSkippedDebPath, parseDebNames, readDebLayer } from '../../../image/src/extra-debs.js';
import { DebTree } from '../../../image/src/file-tree.js';
import { addLayer, type LayerItem } from '../../../image/src/layers.js';
import { missingLibraries, resolveInImage } from '../../../image/src/needed-libs.js';
import { readExtraRootfs, readOverlay } from '../../../image/src/overlay.js';
import { Rootfs } from '../../../image/src/rootfs.js';

const work = mkdtempSync(join(tmpdir(), 'lc-image-extras-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** What readelf -d says a file needs, and its RUNPATH/RPATH. */
function readelfDynamic(path: string): { needed: string[]; runpath: string[]; rpath: string[] } {
  const text = execFileSync('readelf', ['-dW', path], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
  const field = (tag: string) =>
    [...text.matchAll(new RegExp(`\\(${tag}\\)\\s+\\S+ \\S+: \\[([^\\]]*)\\]`, 'g'))].flatMap((m) => m[1]!.split(':')).filter(Boolean);
  return { needed: field('NEEDED'), runpath: field('RUNPATH'), rpath: field('RPATH') };
}

const host = (p: string) => readFileSync(p);
const err = (f: () => unknown): ImageBuildError => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ImageBuildError);
    return e as ImageBuildError;
  }
  throw new Error('expected an ImageBuildError');
};

/**
 * jq's shape, compiled here (cc is a test dependency, jq is not): a program needing libfoo.so.1,
 * which needs libbar.so.2 and libm; a program finding libfoo through $ORIGIN, once as
 * DT_RUNPATH and once as DT_RPATH.
 */
const cdir = join(work, 'compiled');
const built = {} as Record<'prog' | 'libfoo' | 'libbar' | 'runpath' | 'rpath', string>;
beforeAll(() => {
  mkdirSync(cdir, { recursive: true });
  const cc = (...args: string[]) => execFileSync('cc', args, { cwd: cdir, stdio: 'pipe' });
  writeFileSync(join(cdir, 'bar.c'), 'int bar(int x) { return x + 1; }\n');
  writeFileSync(join(cdir, 'foo.c'), '#include <math.h>\nint bar(int);\nint foo(double x) { return bar((int)sqrt(x)); }\n');
  writeFileSync(
    join(cdir, 'prog.c'),
    'int foo(double);\nint main(int argc, char **argv) { (void)argv; return foo(argc * 41.0) == 7 ? 0 : 1; }\n',
  );
  cc('-shared', '-fPIC', '-Wl,-soname,libbar.so.2', '-o', 'libbar.so.2', 'bar.c');
  cc('-shared', '-fPIC', '-Wl,-soname,libfoo.so.1', '-o', 'libfoo.so.1', 'foo.c', './libbar.so.2', '-Wl,--no-as-needed', '-lm');
  const link = ['prog.c', './libfoo.so.1', '-Wl,-rpath-link,.'];
  cc('-o', 'prog', ...link);
  cc('-o', 'prog-runpath', ...link, '-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib/foo');
  cc('-o', 'prog-rpath', ...link, '-Wl,--disable-new-dtags,-rpath,$ORIGIN/../lib/foo');
  Object.assign(built, {
    prog: join(cdir, 'prog'),
    libfoo: join(cdir, 'libfoo.so.1'),
    libbar: join(cdir, 'libbar.so.2'),
    runpath: join(cdir, 'prog-runpath'),
    rpath: join(cdir, 'prog-rpath'),
  });
});

const LIBC = '/lib/x86_64-linux-gnu/libc.so.6';

describe('ELF dynamic section', () => {
  it.each(['prog', 'libfoo', 'runpath', 'rpath'] as const)('lists what readelf -d lists for the compiled %s', (which) => {
    expect(elfDynamic(host(built[which]))).toEqual(readelfDynamic(built[which]));
  });

  it.each(['/usr/bin/ls', LIBC, process.execPath])('lists what readelf -d lists for %s', (path) => {
    const ours = elfDynamic(host(path));
    expect(ours).toEqual(readelfDynamic(path));
    expect(ours!.needed.length).toBeGreaterThan(0);
  });

  it('reads the shapes it was built with', () => {
    expect(elfDynamic(host(built.prog))!.needed).toEqual(['libfoo.so.1', 'libc.so.6']);
    expect(elfDynamic(host(built.libfoo))!.needed).toEqual(expect.arrayContaining(['libbar.so.2', 'libm.so.6']));
    expect(elfDynamic(host(built.runpath))).toMatchObject({ runpath: ['$ORIGIN/../lib/foo'], rpath: [] });
    expect(elfDynamic(host(built.rpath))).toMatchObject({ runpath: [], rpath: ['$ORIGIN/../lib/foo'] });
  });

  it('has nothing to say about a static executable or a relocatable object', () => {
    expect(elfDynamic(host('/bin/busybox'))).toBeUndefined();
    const rel = Buffer.alloc(64);
    rel.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
    expect(elfDynamic(rel)).toBeUndefined();
  });

  it('gives a result or an ElfError for any mutation of a real executable, nothing else', () => {
    const valid = host(built.prog);
    // Mutations aimed at the headers, the program headers and the dynamic section, where the reader looks.
    const dynOff = parseInt(
      /Dynamic section at offset 0x([0-9a-f]+)/.exec(execFileSync('readelf', ['-d', built.prog], { encoding: 'utf8' }))![1]!,
      16,
    );
    const hot = fc.oneof(
      fc.integer({ min: 0, max: 0x400 }),
      fc.integer({ min: dynOff, max: Math.min(dynOff + 0x200, valid.length - 1) }),
      fc.nat(valid.length - 1),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(hot, fc.integer({ min: 0, max: 255 })), { maxLength: 16 }), fc.nat(valid.length), (edits, cut) => {
        const b = Buffer.from(valid);
        for (const [at, v] of edits) b[at] = v;
        const bytes = b.subarray(0, Math.max(cut, 1));
        try {
          const d = elfDynamic(bytes);
          if (d) for (const s of [...d.needed, ...d.rpath, ...d.runpath]) expect(typeof s).toBe('string');
        } catch (e) {
          expect(e).toBeInstanceOf(ElfError);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('finding libraries inside the image', () => {
  /** The image's Node runtime stand-in: libc (which needs the loader) and the loader, where ldd puts them. */
  function image(): Rootfs {
    const fs = new Rootfs();
    fs.addFile(LIBC.slice(1), host(LIBC), 0o644);
    fs.addFile('lib64/ld-linux-x86-64.so.2', Buffer.from('loader'), 0o755);
    fs.addFile('usr/bin/prog', host(built.prog), 0o755);
    return fs;
  }

  it('follows relative, absolute and chained symlinks, and refuses loops and folders', () => {
    const fs = image();
    fs.addFile('usr/lib/x86_64-linux-gnu/libfoo.so.1.0', host(built.libfoo));
    fs.addSymlink('usr/lib/x86_64-linux-gnu/libfoo.so.1', 'libfoo.so.1.0');
    fs.addSymlink('usr/lib/x86_64-linux-gnu/libfoo.so', '/usr/lib/x86_64-linux-gnu/libfoo.so.1');
    fs.addSymlink('opt/lib', '../usr/lib/x86_64-linux-gnu');
    fs.addSymlink('loop/a', 'b');
    fs.addSymlink('loop/b', 'a');
    expect(resolveInImage(fs, '/usr/lib/x86_64-linux-gnu/libfoo.so')).toBe('/usr/lib/x86_64-linux-gnu/libfoo.so.1.0');
    expect(resolveInImage(fs, '/opt/lib/libfoo.so.1')).toBe('/usr/lib/x86_64-linux-gnu/libfoo.so.1.0');
    // ".." after a symlink climbs from where the link points, as the kernel's path walk does.
    expect(resolveInImage(fs, '/opt/lib/../../../lib/x86_64-linux-gnu/libc.so.6')).toBe('/lib/x86_64-linux-gnu/libc.so.6');
    expect(resolveInImage(fs, '/opt/lib/../lib/x86_64-linux-gnu/libc.so.6')).toBeUndefined();
    expect(resolveInImage(fs, '/loop/a')).toBeUndefined();
    expect(resolveInImage(fs, '/usr/lib')).toBeUndefined();
    expect(resolveInImage(fs, '/usr/lib/x86_64-linux-gnu/libbar.so.2')).toBeUndefined();
  });

  it('names the sonames nobody provides, with who needs them, until the packages holding them are there', () => {
    const fs = image();
    const files = [
      { path: '/usr/bin/prog', data: host(built.prog) },
      { path: LIBC, data: host(LIBC) },
    ];
    // libc needs ld-linux-x86-64.so.2: the loader already running, found at PT_INTERP's path.
    expect(missingLibraries(fs, files)).toEqual([{ soname: 'libfoo.so.1', neededBy: ['/usr/bin/prog'] }]);

    fs.addFile('usr/lib/x86_64-linux-gnu/libfoo.so.1.0', host(built.libfoo));
    fs.addSymlink('usr/lib/x86_64-linux-gnu/libfoo.so.1', 'libfoo.so.1.0');
    const withLib = [...files, { path: '/usr/lib/x86_64-linux-gnu/libfoo.so.1.0', data: host(built.libfoo) }];
    expect(missingLibraries(fs, withLib)).toEqual([
      { soname: 'libbar.so.2', neededBy: ['/usr/lib/x86_64-linux-gnu/libfoo.so.1.0'] },
      { soname: 'libm.so.6', neededBy: ['/usr/lib/x86_64-linux-gnu/libfoo.so.1.0'] },
    ]);
    // libm in a folder only LD_LIBRARY_PATH names (as /init does for the Node runtime's), libbar in a system folder.
    fs.addFile('opt/node-libs/libm.so.6', host(LIBC));
    fs.addFile('lib/libbar.so.2', host(built.libbar));
    expect(missingLibraries(fs, withLib)).toEqual([{ soname: 'libm.so.6', neededBy: ['/usr/lib/x86_64-linux-gnu/libfoo.so.1.0'] }]);
    expect(missingLibraries(fs, withLib, ['/opt/node-libs'])).toEqual([]);
    // Not ELF, or an ELF this reader does not take: not checked.
    expect(
      missingLibraries(fs, [
        { path: '/usr/bin/script', data: Buffer.from('#!/bin/sh\n') },
        { path: '/x', data: Buffer.from([0x7f, 0x45, 0x4c, 0x46, 1]) },
      ]),
    ).toEqual([]);
  });

  it.each(['runpath', 'rpath'] as const)("searches the %s folder, $ORIGIN being the file's own folder", (which) => {
    const fs = image();
    const prog = host(built[which]);
    fs.addFile('opt/app/bin/prog', prog, 0o755);
    fs.addFile('opt/app/lib/bar/libbar.so.2', host(built.libbar));
    const files = [{ path: '/opt/app/bin/prog', data: prog }];
    expect(missingLibraries(fs, files)).toEqual([{ soname: 'libfoo.so.1', neededBy: ['/opt/app/bin/prog'] }]);
    fs.addFile('opt/app/lib/foo/libfoo.so.1', host(built.libfoo));
    expect(missingLibraries(fs, files)).toEqual([]);
  });

  it('names a missing program interpreter', () => {
    const fs = new Rootfs();
    fs.addFile('usr/bin/prog', host(built.prog), 0o755);
    const missing = missingLibraries(fs, [{ path: '/usr/bin/prog', data: host(built.prog) }]).map((m) => m.soname);
    expect(missing).toEqual(['/lib64/ld-linux-x86-64.so.2', 'libc.so.6', 'libfoo.so.1']);
  });
});

describe('extra layers over the image', () => {
  const protect = PROTECTED_PATHS;
  function base(): Rootfs {
    const fs = new Rootfs();
    fs.addDirectory('tmp', 0o1777);
    fs.addSymlink('var/run', '../run');
    fs.addFile('init', Buffer.from('#!/bin/sh\n'), 0o755);
    fs.addFile('etc/lilcluster/udhcpc.script', Buffer.from('original'), 0o755);
    fs.addFile('usr/lib/lilcluster/node-agent.mjs', Buffer.from('agent'), 0o644);
    return fs;
  }
  const file = (path: string, text: string, mode = 0o644): LayerItem => ({ type: 'file', path, mode, data: Buffer.from(text) });
  const layer = (items: LayerItem[], replace: boolean) => ({ source: 'TEST', items, replace, hint: 'fix it' });

  it('adds into existing folders without changing their modes, and EXTRA_ROOTFS replaces files', () => {
    const fs = base();
    const r = addLayer(
      fs,
      layer(
        [
          { type: 'directory', path: 'tmp', mode: 0o755 },
          file('tmp/x', 'x'),
          file('etc/lilcluster/udhcpc.script', 'mine', 0o700),
          { type: 'symlink', path: 'etc/localtime', target: '/usr/share/zoneinfo/UTC' },
        ],
        true,
      ),
      protect,
    );
    expect(r).toEqual({ added: 2, replaced: ['/etc/lilcluster/udhcpc.script'] });
    expect(fs.get('tmp')).toEqual({ type: 'directory', path: 'tmp', mode: 0o1777 });
    expect(fs.get('etc/lilcluster/udhcpc.script')).toMatchObject({ mode: 0o700, data: Buffer.from('mine') });
    expect(fs.entries().map((e) => e.path)).toContain('etc/localtime');
  });

  it('lets a package bring what the image has byte for byte, and nothing different', () => {
    const fs = base();
    expect(addLayer(fs, layer([file('etc/lilcluster/udhcpc.script', 'original', 0o755)], false), protect)).toEqual({
      added: 0,
      replaced: [],
    });
    const e = err(() => addLayer(fs, layer([file('etc/lilcluster/udhcpc.script', 'other', 0o755)], false), protect));
    expect(e.code).toBe('IMG_ERR_INPUT');
    expect(e.message).toBe('TEST: /etc/lilcluster/udhcpc.script is already in the image (a different file)');
    expect(e.hint).toBe('fix it');
  });

  it.each<[string, LayerItem, RegExp]>([
    ['a file over a folder', file('etc/lilcluster', 'x'), /\/etc\/lilcluster is a file here but a directory in the image/],
    [
      'a folder over a file',
      { type: 'directory', path: 'etc/lilcluster/udhcpc.script', mode: 0o755 },
      /is a directory here but a file in the image/,
    ],
    ['a file under a symlink', file('var/run/x.pid', '1'), /\/var\/run\/x\.pid lies under \/var\/run, which is a symlink in the image/],
    ['/init', file('init', 'mine', 0o755), /\/init would replace \/init/],
    ['the agent', file('usr/lib/lilcluster/node-agent.mjs', 'mine'), /would replace \/usr\/lib\/lilcluster\/node-agent\.mjs/],
    [
      "a symlink where the agent's folder is",
      { type: 'symlink', path: 'usr/lib', target: '/opt/lib' },
      /\/usr\/lib would replace \/usr\/lib\/lilcluster\/node-agent\.mjs/,
    ],
  ])('refuses %s, even where it may replace', (_what, item, message) => {
    const e = err(() => addLayer(base(), layer([item], true), protect));
    expect(e.code).toBe('IMG_ERR_INPUT');
    expect(e.message).toMatch(message);
    expect(e.hint).toBeTruthy();
  });
});

describe('EXTRA_ROOTFS', () => {
  function tree(name: string, build: (root: string) => void): string {
    const root = join(work, name);
    mkdirSync(root, { recursive: true });
    build(root);
    return root;
  }

  it('reads files with their modes, symlinks unfollowed and folders, parents first, and fingerprints them', () => {
    const root = tree('good', (r) => {
      mkdirSync(join(r, 'usr/local/bin'), { recursive: true });
      writeFileSync(join(r, 'usr/local/bin/hello'), '#!/bin/sh\necho hello\n');
      chmodSync(join(r, 'usr/local/bin/hello'), 0o4750);
      symlinkSync('/nonexistent/target', join(r, 'usr/local/bin/dangling'));
      mkdirSync(join(r, 'srv'), { mode: 0o700 });
      chmodSync(join(r, 'srv'), 0o700);
    });
    const t = readExtraRootfs(root, PROTECTED_PATHS);
    expect(t.items.map((i) => [i.type, i.path, 'mode' in i ? i.mode.toString(8) : i.type === 'symlink' ? i.target : ''])).toEqual([
      ['directory', 'srv', '700'],
      ['directory', 'usr', '755'],
      ['directory', 'usr/local', '755'],
      ['directory', 'usr/local/bin', '755'],
      ['symlink', 'usr/local/bin/dangling', '/nonexistent/target'],
      ['file', 'usr/local/bin/hello', '4750'],
    ]);
    expect([t.files, t.symlinks, t.directories]).toEqual([1, 1, 4]);
    const before = t.digest;
    expect(readExtraRootfs(root, PROTECTED_PATHS).digest).toBe(before);
    chmodSync(join(root, 'usr/local/bin/hello'), 0o755);
    expect(readExtraRootfs(root, PROTECTED_PATHS).digest).not.toBe(before);
  });

  it("reads the built-in overlay with git's modes only", () => {
    const t = readOverlay('image/rootfs', 'git');
    expect(t.items.find((i) => i.path === 'init')).toMatchObject({ type: 'file', mode: 0o755 });
    for (const i of t.items) if (i.type !== 'symlink') expect([0o644, 0o755]).toContain(i.mode);
  });

  it.each<[string, (r: string) => void, RegExp, RegExp]>([
    ['/init', (r) => writeFileSync(join(r, 'init'), '#!/bin/sh\n'), /: init would replace \/init$/, /image\/rootfs\/init/],
    [
      'the agent',
      (r) => {
        mkdirSync(join(r, 'usr/lib/lilcluster'), { recursive: true });
        writeFileSync(join(r, 'usr/lib/lilcluster/node-agent.mjs'), '');
      },
      /node-agent\.mjs would replace \/usr\/lib\/lilcluster\/node-agent\.mjs$/,
      /AGENT=/,
    ],
    [
      "a symlink over the agent's folder",
      (r) => {
        mkdirSync(join(r, 'usr/lib'), { recursive: true });
        symlinkSync('/srv/agent', join(r, 'usr/lib/lilcluster'));
      },
      /usr\/lib\/lilcluster would replace \/usr\/lib\/lilcluster\/node-agent\.mjs$/,
      /AGENT=/,
    ],
    [
      'Node',
      (r) => {
        mkdirSync(join(r, 'usr/bin'), { recursive: true });
        writeFileSync(join(r, 'usr/bin/node'), '');
      },
      /would replace \/usr\/bin\/node$/,
      /NODE_BINARY=/,
    ],
    ['a FIFO', (r) => execFileSync('mkfifo', [join(r, 'pipe')]), /pipe is a FIFO, which the image cannot carry/, /remove it/],
  ])('refuses a tree holding %s, naming the entry, with a hint', (what, build, message, hint) => {
    const root = tree(`bad-${what.replace(/\W+/g, '-')}`, build);
    const e = err(() => readExtraRootfs(root, PROTECTED_PATHS));
    expect(e.code).toBe('IMG_ERR_INPUT');
    expect(e.message).toMatch(message);
    expect(e.hint).toMatch(hint);
  });

  it('refuses a path that does not exist, or is a file', () => {
    const missing = err(() => readExtraRootfs(join(work, 'no-such-tree'), PROTECTED_PATHS));
    expect(missing.message).toBe(`EXTRA_ROOTFS=${join(work, 'no-such-tree')} does not exist`);
    expect(missing.hint).toMatch(/folder whose contents go into the image's root/);
    writeFileSync(join(work, 'a-file'), '');
    expect(err(() => readExtraRootfs(join(work, 'a-file'), PROTECTED_PATHS)).message).toMatch(/is not a directory$/);
  });
});

describe('EXTRA_DEBS', () => {
  it('takes package names, commas or spaces, once each, and refuses anything else', () => {
    expect(parseDebNames('jq,libjq1  libonig5,jq')).toEqual(['jq', 'libjq1', 'libonig5']);
    expect(parseDebNames(undefined)).toEqual([]);
    expect(parseDebNames('libstdc++6,g++-12')).toEqual(['libstdc++6', 'g++-12']);
    for (const bad of ['-oAPT::Foo=1', 'jq=1.6', 'jq:amd64', './x.deb', 'JQ', 'x']) {
      const e = err(() => parseDebNames(`jq,${bad}`));
      expect(e.code).toBe('IMG_ERR_OPTION');
      expect(e.message).toContain(bad);
    }
  });

  it.each([
    ['usr/share/doc/jq/copyright', true],
    ['usr/share/man/man1/jq.1.gz', true],
    ['usr/share/info/dir', true],
    ['usr/share/lintian/overrides/libjq1', true],
    ['usr/share/locale/fr/LC_MESSAGES/x.mo', true],
    ['usr/lib/locale/C.utf8/LC_CTYPE', true],
    ['usr/share/doc', true],
    ['usr/share/documents/x', false],
    ['usr/bin/jq', false],
    ['usr/share/zoneinfo/UTC', false],
  ])('leaves out %s: %s', (path, skipped) => {
    expect(isSkippedDebPath(path)).toBe(skipped);
  });

  it("reads a package's files, symlinks, folders and hard links, without its documentation", async () => {
    const src = join(work, 'pkg');
    mkdirSync(join(src, 'DEBIAN'), { recursive: true });
    writeFileSync(
      join(src, 'DEBIAN/control'),
      'Package: lc-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n',
    );
    mkdirSync(join(src, 'usr/bin'), { recursive: true });
    mkdirSync(join(src, 'usr/share/doc/lc-test'), { recursive: true });
    mkdirSync(join(src, 'usr/share/locale/fr'), { recursive: true });
    writeFileSync(join(src, 'usr/bin/tool'), '#!/bin/sh\necho tool\n');
    chmodSync(join(src, 'usr/bin/tool'), 0o755);
    linkSync(join(src, 'usr/bin/tool'), join(src, 'usr/bin/tool2'));
    symlinkSync('tool', join(src, 'usr/bin/tool-link'));
    writeFileSync(join(src, 'usr/share/doc/lc-test/copyright'), 'c');
    writeFileSync(join(src, 'usr/share/locale/fr/x.mo'), 'm');
    const deb = join(work, 'lc-test.deb');
    execFileSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', src, deb], { stdio: 'pipe' });

    const layer = await readDebLayer(new DebTree(deb));
    const byPath = new Map(layer.items.map((i) => [i.path, i]));
    expect(byPath.get('usr/bin/tool')).toEqual({
      type: 'file',
      path: 'usr/bin/tool',
      mode: 0o755,
      data: Buffer.from('#!/bin/sh\necho tool\n'),
    });
    expect(byPath.get('usr/bin/tool2')).toEqual({ ...byPath.get('usr/bin/tool'), path: 'usr/bin/tool2' });
    expect(byPath.get('usr/bin/tool-link')).toEqual({ type: 'symlink', path: 'usr/bin/tool-link', target: 'tool' });
    expect(byPath.get('usr/bin')).toMatchObject({ type: 'directory', mode: 0o755 });
    expect([...byPath.keys()].filter((p) => p.startsWith('usr/share/doc') || p.startsWith('usr/share/locale'))).toEqual([]);
    expect(layer).toMatchObject({ files: 2, symlinks: 1, skipped: 2, other: 0 });
  });
});
