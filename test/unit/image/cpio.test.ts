import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
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
import { join } from 'node:path';
import { CpioFormatError, CpioWriter, cpioChunks, padLength, type CpioEntry } from '../../../image/src/cpio.js';
import { Rootfs } from '../../../image/src/rootfs.js';

const MTIME = 1_700_000_000;

function archive(entries: Iterable<CpioEntry>, mtime = MTIME): Buffer {
  return Buffer.concat([...cpioChunks(entries, { mtime })]);
}

/** GNU cpio as the oracle: list (-tv) and extract (-idm) what our writer produced. */
function gnuList(buf: Buffer): string[] {
  return execFileSync('cpio', ['-t', '--quiet'], { input: buf }).toString('utf8').split('\n').filter(Boolean);
}
function gnuListVerbose(buf: Buffer): string[] {
  return execFileSync('cpio', ['-tv', '--quiet'], { input: buf, env: { ...process.env, TZ: 'UTC', LC_ALL: 'C' } })
    .toString('utf8')
    .split('\n')
    .filter(Boolean);
}
function gnuExtract(buf: Buffer, into: string): void {
  execFileSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames'], { input: buf, cwd: into });
}

/** Reads a real directory tree into entries, the way a caller of the writer would. */
function entriesFromDisk(root: string): CpioEntry[] {
  const out: CpioEntry[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = join(root, r);
      const st = lstatSync(abs);
      if (st.isSymbolicLink()) out.push({ type: 'symlink', path: r, target: readlinkSync(abs) });
      else if (st.isDirectory()) {
        out.push({ type: 'directory', path: r, mode: st.mode & 0o7777 });
        walk(r);
      } else out.push({ type: 'file', path: r, mode: st.mode & 0o7777, data: readFileSync(abs) });
    }
  };
  walk('');
  return out;
}

interface Seen {
  type: string;
  mode: number;
  size: number;
  mtime: number;
  content?: string;
  target?: string;
}

function snapshot(root: string): Map<string, Seen> {
  const out = new Map<string, Seen>();
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = join(root, r);
      const st = lstatSync(abs);
      const base = { mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000) };
      if (st.isSymbolicLink()) out.set(r, { type: 'symlink', ...base, size: 0, mtime: 0, target: readlinkSync(abs) });
      else if (st.isDirectory()) {
        out.set(r, { type: 'directory', ...base, size: 0 });
        walk(r);
      } else out.set(r, { type: 'file', ...base, size: st.size, content: readFileSync(abs).toString('base64') });
    }
  };
  walk('');
  return out;
}

describe('cpio newc writer, checked by GNU cpio', () => {
  it('round-trips a real tree with files, an executable, an empty file, odd sizes, a directory and a symlink', () => {
    const src = mkdtempSync(join(tmpdir(), 'lc-image-cpio-src-'));
    const dst = mkdtempSync(join(tmpdir(), 'lc-image-cpio-dst-'));
    try {
      mkdirSync(join(src, 'bin'));
      mkdirSync(join(src, 'etc/deep/er'), { recursive: true });
      writeFileSync(join(src, 'bin/tool'), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2, 3, 255]));
      chmodSync(join(src, 'bin/tool'), 0o755);
      writeFileSync(join(src, 'etc/empty'), '');
      writeFileSync(join(src, 'etc/deep/er/three'), 'abc'); // 3 bytes: padded to 4
      writeFileSync(join(src, 'etc/deep/five'), 'abcde');
      writeFileSync(join(src, 'etc/secret'), 'x'.repeat(10_000));
      chmodSync(join(src, 'etc/secret'), 0o600);
      mkdirSync(join(src, 'tmp'));
      chmodSync(join(src, 'tmp'), 0o1777);
      symlinkSync('tool', join(src, 'bin/sh'));
      symlinkSync('../etc/deep/er/three', join(src, 'bin/abs-ish'));

      const entries = entriesFromDisk(src);
      const buf = archive(entries);
      expect(gnuList(buf)).toEqual(entries.map((e) => e.path));

      gnuExtract(buf, dst);
      const want = snapshot(src);
      const got = snapshot(dst);
      expect([...got.keys()]).toEqual([...want.keys()]);
      for (const [path, w] of want) {
        const g = got.get(path)!;
        // GNU cpio touches a directory again when it extracts into it, and symlinks get no times: files carry the mtime.
        const mtimeOf = (s: Seen, t: number) => (s.type === 'file' ? t : 0);
        expect({ path, ...g, mtime: mtimeOf(g, g.mtime) }).toEqual({ path, ...w, mtime: mtimeOf(w, MTIME) });
      }
    } finally {
      rmSync(src, { recursive: true, force: true });
      rmSync(dst, { recursive: true, force: true });
    }
  });

  it('lists every entry as root:root with the fixed mtime, and a character device with its numbers', () => {
    const buf = archive(
      [
        { type: 'directory', path: 'dev', mode: 0o755 },
        { type: 'char-device', path: 'dev/console', mode: 0o600, major: 5, minor: 1 },
        { type: 'file', path: 'init', mode: 0o755, data: Buffer.from('#!/bin/sh\n') },
        { type: 'symlink', path: 'sh', target: 'init' },
      ],
      0,
    );
    const lines = gnuListVerbose(buf);
    expect(lines).toHaveLength(4);
    for (const l of lines) expect(l).toMatch(/^\S+\s+\d+ root\s+root\s+/);
    expect(lines[0]).toMatch(/^drwxr-xr-x .* Jan  1  1970 dev$/);
    expect(lines[1]).toMatch(/^crw------- .* 5,\s+1 Jan  1  1970 dev\/console$/);
    expect(lines[2]).toMatch(/^-rwxr-xr-x .* 10 Jan  1  1970 init$/);
    expect(lines[3]).toMatch(/^lrwxrwxrwx .* sh -> init$/);
  });

  it('extracts any generated tree exactly (property, GNU cpio as oracle)', () => {
    const name = fc.stringMatching(/^[a-zA-Z0-9_][a-zA-Z0-9_.+-]{0,11}$/).filter((s) => s !== '.' && s !== '..');
    const file = fc.record({ name, mode: fc.constantFrom(0o644, 0o755, 0o600, 0o444, 0o4755), data: fc.uint8Array({ maxLength: 300 }) });
    const tree = fc.record({
      dirs: fc.uniqueArray(name, { maxLength: 3 }),
      files: fc.uniqueArray(file, { maxLength: 8, selector: (f) => f.name }),
    });
    fc.assert(
      fc.property(tree, ({ dirs, files }) => {
        const fs = new Rootfs();
        files.forEach((f, i) => {
          const dir = dirs.length ? dirs[i % dirs.length] : undefined;
          fs.addFile(dir ? `${dir}/${f.name}` : `top-${f.name}`, f.data, f.mode);
        });
        for (const d of dirs) fs.addDirectory(d, 0o750);
        const entries = fs.entries();
        const buf = archive(entries);
        const dst = mkdtempSync(join(tmpdir(), 'lc-image-cpio-prop-'));
        try {
          gnuExtract(buf, dst);
          const got = snapshot(dst);
          expect([...got.keys()].sort()).toEqual(entries.map((e) => e.path).sort());
          for (const e of entries) {
            const g = got.get(e.path)!;
            if (e.type === 'file')
              expect(g).toMatchObject({ type: 'file', mode: e.mode, size: e.data.length, content: Buffer.from(e.data).toString('base64') });
            if (e.type === 'directory') expect(g).toMatchObject({ type: 'directory', mode: e.mode });
          }
        } finally {
          rmSync(dst, { recursive: true, force: true });
        }
      }),
      { numRuns: 25 },
    );
  });
});

describe('cpio newc writer, format details', () => {
  it('aligns every header+name and every data block to 4 bytes, and ends with TRAILER!!!', () => {
    const w = new CpioWriter({ mtime: 0 });
    for (const len of [0, 1, 2, 3, 4, 5]) {
      const chunks = w.entry({ type: 'file', path: 'f'.repeat(len + 1), mode: 0o644, data: new Uint8Array(len) });
      expect(chunks[0]!.length % 4).toBe(0);
      expect(chunks.reduce((n, c) => n + c.length, 0) % 4).toBe(0);
      expect(padLength(len)).toBe((4 - (len % 4)) % 4);
    }
    const t = Buffer.from(w.trailer());
    expect(t.subarray(0, 6).toString()).toBe('070701');
    expect(t.includes(Buffer.from('TRAILER!!!\0'))).toBe(true);
    expect(() => w.entry({ type: 'directory', path: 'late', mode: 0o755 })).toThrow(CpioFormatError);
  });

  it('gives identical bytes for identical entries (no clock, no host ids)', () => {
    const entries: CpioEntry[] = [
      { type: 'directory', path: 'a', mode: 0o755 },
      { type: 'file', path: 'a/b', mode: 0o644, data: Buffer.from('hello') },
    ];
    expect(archive(entries).equals(archive(entries))).toBe(true);
  });

  it.each([
    ['an absolute path', '/etc/passwd'],
    ['a parent reference', 'a/../../etc'],
    ['an empty component', 'a//b'],
    ['a trailing slash', 'dir/'],
    ['a NUL byte', 'a\0b'],
    ['nothing', ''],
  ])('refuses %s', (_what, path) => {
    const w = new CpioWriter({ mtime: 0 });
    expect(() => w.entry({ type: 'file', path, mode: 0o644, data: new Uint8Array(0) })).toThrow(CpioFormatError);
  });

  it('refuses mode bits beyond permissions and mtimes that do not fit 8 hex digits', () => {
    expect(() => new CpioWriter({ mtime: 0 }).entry({ type: 'file', path: 'x', mode: 0o100644, data: new Uint8Array(0) })).toThrow(
      CpioFormatError,
    );
    expect(() => new CpioWriter({ mtime: 2 ** 32 })).toThrow(CpioFormatError);
  });
});

describe('rootfs ordering', () => {
  it('emits parents before children in byte order, creating missing parents as 0755 directories', () => {
    const fs = new Rootfs();
    fs.addFile('usr/lib/x/y.so', Buffer.from('y'));
    fs.addFile('usr/lib-old/z', Buffer.from('z'));
    fs.addSymlink('bin/sh', 'busybox');
    fs.addDirectory('tmp', 0o1777);
    const paths = fs.entries().map((e) => e.path);
    expect(paths).toEqual(['bin', 'bin/sh', 'tmp', 'usr', 'usr/lib', 'usr/lib-old', 'usr/lib-old/z', 'usr/lib/x', 'usr/lib/x/y.so']);
    for (const [i, p] of paths.entries()) {
      const parent = p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : undefined;
      if (parent) expect(paths.indexOf(parent)).toBeLessThan(i);
    }
    expect(fs.entries().find((e) => e.path === 'usr')).toEqual({ type: 'directory', path: 'usr', mode: 0o755 });
  });

  it('refuses two different contents for one path and a file where a directory must be', () => {
    const fs = new Rootfs();
    fs.addFile('a', Buffer.from('1'));
    fs.addFile('a', Buffer.from('1')); // the same twice is fine
    expect(() => fs.addFile('a', Buffer.from('2'))).toThrow(/two different entries/);
    fs.addFile('a/b', Buffer.from('x'));
    expect(() => fs.entries()).toThrow(/lies under it/);
  });
});
