import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageCatalog } from '../../../dispatcher/src/images/catalog.js';
import { createLogger } from '../../../dispatcher/src/log.js';

const OURS = 'a'.repeat(64);
const log = createLogger({ level: 'silent' });

/** A build folder as `make image` leaves it: manifest, kernel, initrd, and root.cpio when `root`. */
function build(dir: string, inputs: string, extra: Record<string, unknown> = {}, root = false): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'manifest.json'),
    JSON.stringify({
      inputs,
      agent: { version: '0.1.0' },
      files: { vmlinuz: { size: 10 }, 'initrd.img': { size: 20 } },
      ...(root ? { root: { source: 'packages:python3-numpy', size: 30, health: 'true' } } : {}),
      ...extra,
    }),
  );
  writeFileSync(join(dir, 'vmlinuz'), 'k');
  writeFileSync(join(dir, 'initrd.img'), 'i');
  if (root) writeFileSync(join(dir, 'root.cpio'), 'r');
  return dir;
}

const digest = (c: string) => c.repeat(64);
const tmp = () => mkdtempSync(join(tmpdir(), 'lc-catalog-'));

describe('image catalog', () => {
  it('reads a flat build as the one version of the default image, with its key status', () => {
    const dir = build(join(tmp(), 'image'), digest('1'), { dispatcherKey: { fingerprint: OURS } });
    const cat = new ImageCatalog({ defaultDir: dir, fingerprint: OURS, log });
    const img = cat.get('default')!;
    expect(img.versions.map((v) => v.version)).toEqual(['111111111111']);
    expect(img.versions[0]).toMatchObject({ hasRoot: false, bytes: 30, source: 'base', keyStatus: 'ours', agentVersion: '0.1.0' });
    expect(
      new ImageCatalog({ defaultDir: build(join(tmp(), 'i'), digest('2')), fingerprint: OURS, log }).newest('default')!.keyStatus,
    ).toBe('none');
    expect(
      new ImageCatalog({
        defaultDir: build(join(tmp(), 'i'), digest('2'), { dispatcherKey: { fingerprint: 'b'.repeat(64) } }),
        fingerprint: OURS,
        log,
      }).newest('default')!.keyStatus,
    ).toBe('other');
  });

  it('lists kept versions in their order, newest last, skipping lines that name no kept version', () => {
    const lib = tmp();
    const ml = join(lib, 'ml');
    build(join(ml, 'versions', '222222222222'), digest('2'), {}, true);
    build(join(ml, 'versions', '333333333333'), digest('3'), {}, true);
    // A folder whose manifest says another version is not that version.
    build(join(ml, 'versions', '444444444444'), digest('5'), {}, true);
    writeFileSync(join(ml, 'versions', 'order'), '333333333333\n\n../../etc\n222222222222\n333333333333\n444444444444\nffffffffffff\n');
    build(ml, digest('2'), {}, true);
    const cat = new ImageCatalog({ defaultDir: join(lib, 'none'), libraryDir: lib, fingerprint: OURS, log });
    const img = cat.get('ml')!;
    expect(img.versions.map((v) => v.version)).toEqual(['333333333333', '222222222222']);
    expect(cat.newest('ml')!.version).toBe('222222222222');
    expect(cat.newest('ml')).toMatchObject({ hasRoot: true, bytes: 60, source: 'packages:python3-numpy', health: 'true' });
    expect(cat.get('default')).toBeUndefined();
  });

  it('skips folders that are not images: bad names, no manifest, a manifest without inputs, no kernel', () => {
    const lib = tmp();
    build(join(lib, 'Bad Name'), digest('1'));
    build(join(lib, 'default'), digest('1'));
    mkdirSync(join(lib, 'empty'));
    build(join(lib, 'noinputs'), 'xyz');
    const nokernel = build(join(lib, 'nokernel'), digest('1'));
    rmSync(join(nokernel, 'vmlinuz'));
    mkdirSync(join(lib, 'garbage'));
    writeFileSync(join(lib, 'garbage', 'manifest.json'), '{not json');
    writeFileSync(join(lib, 'garbage', 'vmlinuz'), 'k');
    writeFileSync(join(lib, 'garbage', 'initrd.img'), 'i');
    build(join(lib, 'good'), digest('7'));
    const cat = new ImageCatalog({ defaultDir: join(lib, 'none'), libraryDir: lib, fingerprint: OURS, log });
    expect(cat.list().map((i) => i.name)).toEqual(['good']);
  });

  it('sees a new build within its rescan interval', () => {
    const lib = tmp();
    let t = 0;
    const cat = new ImageCatalog({ defaultDir: join(lib, 'none'), libraryDir: lib, fingerprint: OURS, log, now: () => t });
    expect(cat.list()).toEqual([]);
    build(join(lib, 'ml'), digest('9'));
    expect(cat.list()).toEqual([]);
    t += 1000;
    expect(cat.list().map((i) => i.name)).toEqual(['ml']);
  });

  it('never throws, whatever the order file holds', () => {
    const lib = tmp();
    const ml = join(lib, 'ml');
    build(join(ml, 'versions', '222222222222'), digest('2'));
    build(ml, digest('2'));
    let t = 0;
    const cat = new ImageCatalog({ defaultDir: join(lib, 'none'), libraryDir: lib, fingerprint: OURS, log, now: () => (t += 2000) });
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (text) => {
        writeFileSync(join(ml, 'versions', 'order'), text);
        const versions = cat.get('ml')!.versions.map((v) => v.version);
        // Either the one kept version named in the file, or the flat build when the file names none.
        expect(versions).toEqual(['222222222222']);
      }),
      { numRuns: 100 },
    );
  });
});
