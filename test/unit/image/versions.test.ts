/**
 * The versions folder of an image output (image/src/versions.ts): the order file read as
 * hostile text (fuzzed), and the folder operations on small stand-in versions.
 */
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ImageManifest } from '../../../image/src/manifest.js';
import {
  MAX_ORDER_BYTES,
  VERSION_PATTERN,
  adoptFlat,
  parseOrder,
  readVersions,
  removeStaleWork,
  selectVersion,
  versionOf,
} from '../../../image/src/versions.js';

const scratch = mkdtempSync(join(tmpdir(), 'lc-versions-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
const folder = (what: string) => mkdtempSync(join(scratch, `${what}-`));

const A = 'aaaaaaaaaaaa';
const B = 'bbbbbbbbbbbb';
const C = 'cccccccccccc';
const present = new Set([A, B, C]);

describe('the order file, parsed', () => {
  it.each([
    ['lists versions oldest first', `${A}\n${B}\n${C}\n`, [A, B, C], 0],
    ['skips blank lines and surrounding blanks quietly', `\n  ${A}  \n\n\t${B}\r\n\n`, [A, B], 0],
    ['ignores a version whose folder is gone', `${A}\n0123456789ab\n${B}\n`, [A, B], 1],
    ['ignores names that are not versions', `../x\n${A}\n/etc/passwd\nAAAAAAAAAAAA\n${A}x\n.\n`, [A], 5],
    ['counts a version listed twice where it was listed last', `${A}\n${B}\n${A}\n`, [B, A], 1],
    ['reads an empty file as no versions', '', [], 0],
  ])('%s', (_, text, order, warnings) => {
    const r = parseOrder(text, present);
    expect(r.order).toEqual(order);
    expect(r.warnings).toHaveLength(warnings);
  });

  it('names what it ignored and why, quoted and shortened', () => {
    const r = parseOrder(`${A}\n../x\n${'z'.repeat(100)}\n${A}\n`, present);
    expect(r.warnings).toEqual([
      'versions/order: ignored line 2 "../x" is not a version name',
      `versions/order: ignored line 3 "${'z'.repeat(40)}…" is not a version name`,
      `versions/order: ignored line 4 "${A}" is listed twice`,
    ]);
  });

  it('caps its warnings, so a hostile file cannot flood the output', () => {
    const r = parseOrder('x\n'.repeat(1000), present);
    expect(r.order).toEqual([]);
    expect(r.warnings).toHaveLength(6);
    expect(r.warnings.at(-1)).toBe('versions/order: and 995 more');
  });

  it('gives, for any text, only present versions, each once, and never throws (fuzzed)', () => {
    const line = fc.oneof(
      fc.constantFrom(A, B, C, '', '../x', '..', '/', `${A}/../..`, ' ', '\r', '\0'),
      fc.string({ maxLength: 20 }),
      fc.stringMatching(/^[0-9a-f]{12}$/),
    );
    fc.assert(
      fc.property(fc.array(line, { maxLength: 30 }), fc.string({ maxLength: 50 }), (lines, noise) => {
        for (const text of [lines.join('\n'), noise, lines.join('\n') + noise]) {
          const r = parseOrder(text, present);
          expect(new Set(r.order).size).toBe(r.order.length);
          for (const v of r.order) {
            expect(present.has(v)).toBe(true);
            expect(v).toMatch(VERSION_PATTERN);
          }
          expect(r.warnings.length).toBeLessThanOrEqual(6);
        }
      }),
      { numRuns: 500 },
    );
  });
});

/** A stand-in version: its files and a manifest naming them (only what versions.ts reads). */
function manifestFor(seed: string, root = false): ImageManifest {
  const inputs = createHash('sha256').update(seed).digest('hex');
  const info = (f: string) => {
    const data = Buffer.from(`${f} of ${seed}\n`);
    return { size: data.length, sha256: createHash('sha256').update(data).digest('hex') };
  };
  return {
    format: 1,
    files: { vmlinuz: info('vmlinuz'), 'initrd.img': { ...info('initrd.img'), uncompressedSize: 0 } },
    root: root ? ({ ...info('root.cpio'), path: 'root.cpio' } as ImageManifest['root']) : null,
    inputs,
  } as ImageManifest;
}

function writeFiles(dir: string, seed: string, m: ImageManifest): void {
  mkdirSync(dir, { recursive: true });
  for (const f of ['vmlinuz', 'initrd.img', ...(m.root ? ['root.cpio'] : [])]) writeFileSync(join(dir, f), `${f} of ${seed}\n`);
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
}

/** An output folder holding the given versions (oldest first) as a build leaves it. */
function outputWith(seeds: string[], opts: { root?: string[] } = {}): { out: string; versions: string[] } {
  const out = folder('out');
  const versions: string[] = [];
  for (const seed of seeds) {
    const m = manifestFor(seed, opts.root?.includes(seed));
    const v = versionOf(m.inputs);
    writeFiles(join(out, 'versions', v), seed, m);
    versions.push(v);
    selectVersion(out, v, m, versions.slice(0, -1), 10);
  }
  return { out, versions };
}

describe('the versions folder', () => {
  it('keeps the newest N, points the flat files at the newest by hard link, and lists them in the order file', () => {
    const { out, versions } = outputWith(['a', 'b', 'c', 'd']);
    const m = manifestFor('e');
    const e = versionOf(m.inputs);
    writeFiles(join(out, 'versions', e), 'e', m);
    const r = selectVersion(out, e, m, versions, 3);
    expect(r).toEqual({ order: [versions[2], versions[3], e], removed: [versions[0], versions[1]] });
    expect(readdirSync(join(out, 'versions')).sort()).toEqual([versions[2], versions[3], e, 'order'].sort());
    expect(readFileSync(join(out, 'versions/order'), 'utf8')).toBe(`${versions[2]}\n${versions[3]}\n${e}\n`);
    for (const f of ['vmlinuz', 'initrd.img', 'manifest.json'])
      expect(statSync(join(out, f)).ino).toBe(statSync(join(out, 'versions', e, f)).ino);
    expect(readVersions(out)).toEqual({ order: r.order, warnings: [] });

    // Selected again: nothing moves, nothing is left beside the flat files.
    expect(selectVersion(out, e, m, r.order, 3)).toEqual({ order: r.order, removed: [] });
    expect(readdirSync(out).sort()).toEqual(['initrd.img', 'manifest.json', 'versions', 'vmlinuz']);
  });

  it('removes the flat root.cpio when the newest has none, and links it when it has', () => {
    const { out, versions } = outputWith(['plain', 'rooted'], { root: ['rooted'] });
    expect(readFileSync(join(out, 'root.cpio'), 'utf8')).toBe('root.cpio of rooted\n');
    selectVersion(out, versions[0]!, manifestFor('plain'), versions, 3);
    expect(existsSync(join(out, 'root.cpio'))).toBe(false);
    expect(readFileSync(join(out, 'vmlinuz'), 'utf8')).toBe('vmlinuz of plain\n');
  });

  it('counts version folders the order file does not list as the oldest, and the flat files as the newest', () => {
    const { out, versions } = outputWith(['a', 'b', 'c']);
    writeFileSync(join(out, 'versions/order'), `${versions[2]}\n${versions[1]}\n`); // a build stopped before writing it
    const r = readVersions(out);
    expect(r.order).toEqual([versions[0], versions[1], versions[2]]);
    expect(r.warnings.join('\n')).toMatch(/does not list .*counted as the oldest/);
    expect(r.warnings.join('\n')).toMatch(/the flat files are version/);
  });

  it('ignores what is not a version: a symlinked folder, a damaged manifest, an order file too big or not a file', () => {
    const { out, versions } = outputWith(['a']);
    const elsewhere = folder('elsewhere');
    const m = manifestFor('evil');
    writeFiles(elsewhere, 'evil', m);
    symlinkSync(elsewhere, join(out, 'versions', versionOf(m.inputs)));
    mkdirSync(join(out, 'versions', '0123456789ab'));
    writeFileSync(join(out, 'versions', '0123456789ab', 'manifest.json'), '{"format":1,"inputs":"ffff');
    writeFileSync(join(out, 'versions/order'), `${versionOf(m.inputs)}\n0123456789ab\n${versions[0]}\n`);
    const r = readVersions(out);
    expect(r.order).toEqual(versions);
    expect(r.warnings.filter((w) => /left alone/.test(w))).toHaveLength(2);

    writeFileSync(join(out, 'versions/order'), `${versions[0]}\n`.repeat(MAX_ORDER_BYTES / 13 + 1));
    expect(readVersions(out).warnings.join('\n')).toMatch(/bytes \(at most 65536\); not read/);
    expect(readVersions(out).order).toEqual(versions); // still found, as an unlisted folder
  });

  it('adopts flat files from before versions/ when their manifest describes them, and not otherwise', () => {
    const out = folder('flat');
    const m = manifestFor('old');
    writeFiles(out, 'old', m);
    const adopted = adoptFlat(out, join(out, '.build-1/adopt'), []);
    expect(adopted).toEqual({ version: versionOf(m.inputs) });
    expect(statSync(join(out, 'versions', adopted.version!, 'initrd.img')).ino).toBe(statSync(join(out, 'initrd.img')).ino);

    const damaged = folder('damaged');
    writeFiles(damaged, 'old', m);
    writeFileSync(join(damaged, 'initrd.img'), 'truncated');
    expect(adoptFlat(damaged, join(damaged, '.build-1/adopt'), [])).toEqual({ warning: expect.stringMatching(/do not match/) });
    expect(existsSync(join(damaged, 'versions'))).toBe(false);
  });

  it("removes stopped builds' work folders, and not a running build's", () => {
    const out = folder('stale');
    const dead = 2 ** 22 + 1; // above Linux's pid_max limit: no process has it
    for (const d of [`.build-${dead}`, `.build-${process.pid}`, `.build-${process.ppid}`, 'versions/.old-aaaaaaaaaaaa-' + dead])
      mkdirSync(join(out, d), { recursive: true });
    writeFileSync(join(out, `.initrd.img-${dead}.tmp`), '');
    expect(removeStaleWork(out).sort()).toEqual([`.build-${dead}`, `.initrd.img-${dead}.tmp`, `.old-aaaaaaaaaaaa-${dead}`].sort());
    expect(readdirSync(out).sort()).toEqual([`.build-${process.pid}`, `.build-${process.ppid}`, 'versions'].sort());
  });
});
