/**
 * The agent's inputs unpacker against hostile tars (issue 11, point 4): chained symlinks,
 * writes through links, hard links out, absolute and `..` names, devices, set-id bits — by
 * hand for the known attacks, then fast-check sequences of random entries. Whatever the tar
 * holds, the unpacker either refuses it with a TarError naming the entry or writes only
 * inside its root; a walk of the sandbox (lstat, never following) with realpath checks
 * finds nothing anywhere else.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, sep } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { TarError, unpackTar } from '../../../node-agent/src/tarball.js';
import { tempDir } from '../agent/temp-dirs.js';

type Entry =
  | { type: 'file'; name: string; body: string; mode?: number }
  | { type: 'directory'; name: string; mode?: number }
  | { type: 'symlink' | 'link'; name: string; linkname: string }
  | { type: 'character-device' | 'block-device' | 'fifo'; name: string };

async function tarOf(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const done = new Promise<void>((r) => pack.on('end', () => r()));
  for (const e of entries) {
    if (e.type === 'file') pack.entry({ name: e.name, size: Buffer.byteLength(e.body), mode: e.mode ?? 0o644 }, e.body);
    else if (e.type === 'directory') pack.entry({ name: e.name, type: 'directory', mode: e.mode ?? 0o755 });
    else if (e.type === 'symlink' || e.type === 'link') pack.entry({ name: e.name, type: e.type, linkname: e.linkname });
    else pack.entry({ name: e.name, type: e.type, devmajor: 1, devminor: 3 });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/**
 * A sandbox: `base/secret` (a file a hard link must not reach), `base/outside/`, and the
 * unpack root DEPTH levels below base, so a chain of `..` links lands inside base, where
 * the walk sees it, long before it could reach anything else on the machine.
 */
const DEPTH = 16;
function sandbox(fuzz = false): { base: string; root: string; scaffold: Set<string> } {
  const base = realpathSync(fuzz ? mkdtempSync(join(tmpdir(), 'lc-tar-fuzz-')) : tempDir('lc-tar-fuzz-'));
  const scaffold = new Set<string>([base]);
  let d = base;
  for (let i = 0; i < DEPTH; i++) {
    d = join(d, `d${i}`);
    scaffold.add(d);
  }
  const root = join(d, 'root');
  mkdirSync(root, { recursive: true });
  mkdirSync(join(base, 'outside'));
  writeFileSync(join(base, 'secret'), 'secret');
  for (const p of [join(base, 'outside'), join(base, 'secret'), root]) scaffold.add(p);
  return { base, root, scaffold };
}

/** Every path under base (never following links) that is neither scaffolding nor physically inside root. */
function escapes(base: string, root: string, scaffold: Set<string>): string[] {
  const found: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      const st = lstatSync(p);
      const inside = realpathSync(dirname(p)) + sep + name;
      if (!scaffold.has(p) && !inside.startsWith(root + sep)) found.push(p);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(base);
  if (readFileSync(join(base, 'secret'), 'utf8') !== 'secret' || statSync(join(base, 'secret')).nlink !== 1)
    found.push(`${base}/secret (changed or linked)`);
  return found;
}

async function unpack(root: string, entries: Entry[]): Promise<'ok' | TarError> {
  try {
    await unpackTar(Readable.from([await tarOf(entries)]), root, 1 << 20);
    return 'ok';
  } catch (err) {
    if (err instanceof TarError) return err;
    throw err; // anything else fails the test
  }
}

describe('inputs unpacker: known attacks', () => {
  it.each<[string, (base: string) => Entry[], RegExp]>([
    [
      'a symlink chain (a -> .., a/b -> ..) then a write through a/b/c',
      () => [
        { type: 'directory', name: 'a' },
        { type: 'symlink', name: 'a/b', linkname: '..' },
        { type: 'symlink', name: 'a/b/c', linkname: '..' },
        { type: 'file', name: 'a/b/c/pwned', body: 'x' },
      ],
      /"a\/b\/c".*symlink|symlink.*"a\/b"/,
    ],
    [
      'a symlink to a parent, written through',
      () => [
        { type: 'symlink', name: 'up', linkname: '.' },
        { type: 'file', name: 'up/../../escape', body: 'x' },
      ],
      /\.\./,
    ],
    [
      'a symlink then a file of the same name',
      () => [
        { type: 'symlink', name: 'f', linkname: '../'.repeat(DEPTH + 1) + 'secret' },
        { type: 'file', name: 'f', body: 'overwritten' },
      ],
      /"f"/,
    ],
    [
      'a symlink inside, then a file of the same name',
      () => [
        { type: 'file', name: 'inner', body: 'x' },
        { type: 'symlink', name: 'f', linkname: 'inner' },
        { type: 'file', name: 'f', body: 'through the link' },
      ],
      /"f".*symlink/,
    ],
    [
      'a hard link to a file outside',
      (base) => [
        { type: 'link', name: 'h', linkname: `${base}/secret` },
        { type: 'file', name: 'h', body: 'overwritten' },
      ],
      /hard link "h"/,
    ],
    [
      'a hard link through .. to a file outside',
      () => [{ type: 'link', name: 'h', linkname: '../'.repeat(DEPTH + 1) + 'secret' }],
      /hard link "h"/,
    ],
    [
      'a hard link through a symlinked dir',
      () => [
        { type: 'symlink', name: 'top', linkname: '.' },
        { type: 'link', name: 'h', linkname: 'top/x' },
      ],
      /symlink/,
    ],
    ['an absolute name', (base) => [{ type: 'file', name: `${base}/outside/abs`, body: 'x' }], /absolute/],
    ['a .. name', () => [{ type: 'file', name: '../escape', body: 'x' }], /\.\./],
  ])('refuses %s, naming the entry, and writes nothing outside', async (_what, make, re) => {
    const { base, root, scaffold } = sandbox();
    const r = await unpack(root, make(base));
    expect(r).toBeInstanceOf(TarError);
    expect((r as TarError).message).toMatch(re);
    expect(escapes(base, root, scaffold)).toEqual([]);
  });

  it('drops devices and fifos, and set-id and sticky bits, and unpacks the rest', async () => {
    const { base, root, scaffold } = sandbox();
    const r = await unpack(root, [
      { type: 'character-device', name: 'null' },
      { type: 'block-device', name: 'sda' },
      { type: 'fifo', name: 'pipe' },
      { type: 'file', name: 'bin/tool', body: '#!/bin/sh\n', mode: 0o6755 },
      { type: 'directory', name: 'shared', mode: 0o1777 },
    ]);
    expect(r).toBe('ok');
    expect(readdirSync(root).sort()).toEqual(['bin', 'shared']);
    expect(lstatSync(join(root, 'bin/tool')).mode & 0o7000).toBe(0);
    expect(lstatSync(join(root, 'shared')).mode & 0o7000).toBe(0);
    expect(escapes(base, root, scaffold)).toEqual([]);
  });

  it('still unpacks a legitimate tar: links inside, hard links inside, a file replaced by a later one', async () => {
    const { root } = sandbox();
    const r = await unpack(root, [
      { type: 'directory', name: 'lib' },
      { type: 'file', name: 'lib/data.txt', body: 'v1' },
      { type: 'file', name: 'lib/data.txt', body: 'v2' },
      { type: 'symlink', name: 'current', linkname: 'lib' },
      { type: 'symlink', name: 'lib/self', linkname: '../lib/data.txt' },
      { type: 'link', name: 'copy.txt', linkname: 'lib/data.txt' },
    ]);
    expect(r).toBe('ok');
    expect(readFileSync(join(root, 'current/data.txt'), 'utf8')).toBe('v2');
    expect(readFileSync(join(root, 'copy.txt'), 'utf8')).toBe('v2');
    expect(statSync(join(root, 'copy.txt')).nlink).toBe(2);
  });
});

describe('inputs unpacker: random entry sequences (fast-check)', () => {
  it('either refuses with a TarError or writes only inside its root', async () => {
    const component = fc.constantFrom('a', 'b', 'c', '..', '.', '', 'x'.repeat(300));
    const rel = fc.array(component, { minLength: 1, maxLength: 4 }).map((cs) => cs.join('/'));
    // Absolute names and targets point into the sandbox (base is filled in per run), so a
    // broken unpacker writes where the walk sees it, not somewhere on the machine.
    const path = fc.oneof(
      { weight: 5, arbitrary: rel.map((p) => ({ abs: false, p })) },
      { weight: 1, arbitrary: fc.constantFrom('outside/x', 'secret').map((p) => ({ abs: true, p })) },
    );
    const entry = fc.record({ type: fc.constantFrom('file', 'directory', 'symlink', 'link', 'fifo'), name: path, target: path });
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 8 }), async (spec) => {
        const { base, root, scaffold } = sandbox(true);
        try {
          const at = (x: { abs: boolean; p: string }) => (x.abs ? `${base}/${x.p}` : x.p);
          const entries: Entry[] = spec.map((e) =>
            e.type === 'file'
              ? { type: 'file', name: at(e.name), body: 'data' }
              : e.type === 'directory'
                ? { type: 'directory', name: at(e.name) }
                : e.type === 'fifo'
                  ? { type: 'fifo', name: at(e.name) }
                  : { type: e.type as 'symlink' | 'link', name: at(e.name), linkname: at(e.target) },
          );
          await unpack(root, entries);
          expect(escapes(base, root, scaffold)).toEqual([]);
          expect(existsSync(join(base, 'outside/x'))).toBe(false);
        } finally {
          rmSync(base, { recursive: true, force: true });
        }
      }),
      { numRuns: 60 },
    );
  });
});
