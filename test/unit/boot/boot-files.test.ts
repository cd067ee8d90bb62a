import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync, mkdirSync, rmSync, utimesSync, renameSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BootFiles } from '../../../dispatcher/src/boot/boot-files.js';
import { silentLogger } from '../../../dispatcher/src/log.js';

function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'lc-bootfiles-'));
  mkdirSync(join(dir, 'pxe'));
  mkdirSync(join(dir, 'image'));
  let t = 0;
  const clock = { advance: (ms: number) => (t += ms) };
  const files = new BootFiles({
    imageDir: join(dir, 'image'),
    pxeDir: join(dir, 'pxe'),
    log: silentLogger(),
    recheckMs: 1000,
    now: () => t,
  });
  return { dir, files, clock };
}
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const settle = () => new Promise((r) => setTimeout(r, 50));

describe('boot files in memory', () => {
  it('loads what exists, lists what is missing, and tags each file with its sha256', async () => {
    const { dir, files } = setup();
    writeFileSync(join(dir, 'pxe/undionly.kpxe'), 'kpxe');
    writeFileSync(join(dir, 'image/vmlinuz'), 'kernel');
    const { missing } = await files.loadAll();
    expect(missing.sort()).toEqual(['initrd.img', 'ipxe.efi', 'root.cpio', 'snponly.efi']);
    const k = await files.get('vmlinuz');
    expect(k?.bytes.toString()).toBe('kernel');
    expect(k?.etag).toBe(`"${sha('kernel')}"`);
    expect(k?.lastModified).toMatch(/GMT$/);
    expect(await files.get('initrd.img')).toBeUndefined();
  });

  it('serves the loaded bytes until the recheck interval passes, then the new file', async () => {
    const { dir, files, clock } = setup();
    const path = join(dir, 'image/initrd.img');
    writeFileSync(path, 'one');
    await files.loadAll();
    writeFileSync(join(dir, 'image/.new'), 'two, longer');
    renameSync(join(dir, 'image/.new'), path); // how `make image` replaces it
    expect((await files.get('initrd.img'))?.bytes.toString()).toBe('one');
    clock.advance(1500);
    expect((await files.get('initrd.img'))?.bytes.toString()).toBe('one'); // the reload runs beside this request
    await settle();
    expect((await files.get('initrd.img'))?.bytes.toString()).toBe('two, longer');
    expect(files.peek('initrd.img')?.etag).toBe(`"${sha('two, longer')}"`);
  });

  it('tells a load listener the files loaded so far, then each new version', async () => {
    const { dir, files, clock } = setup();
    const path = join(dir, 'image/initrd.img');
    writeFileSync(path, 'one');
    writeFileSync(join(dir, 'pxe/undionly.kpxe'), 'kpxe');
    await files.loadAll();
    const seen: string[] = [];
    files.onLoaded((f) => seen.push(`${f.name}=${f.bytes.toString()}`));
    expect(seen.sort()).toEqual(['initrd.img=one', 'undionly.kpxe=kpxe']);
    writeFileSync(join(dir, 'image/.new'), 'two, longer');
    renameSync(join(dir, 'image/.new'), path);
    clock.advance(1500);
    await files.get('initrd.img');
    await settle();
    expect(seen.at(-1)).toBe('initrd.img=two, longer');
    expect(seen).toHaveLength(3);
  });

  it('keeps loading and serving when a load listener throws, and tells the other listeners', async () => {
    const { dir, files, clock } = setup();
    const path = join(dir, 'image/initrd.img');
    writeFileSync(path, 'one');
    await files.loadAll();
    files.onLoaded(() => {
      throw new Error('memfd_create: out of memory');
    });
    const seen: string[] = [];
    files.onLoaded((f) => seen.push(f.bytes.toString()));
    writeFileSync(join(dir, 'image/.new'), 'two');
    renameSync(join(dir, 'image/.new'), path);
    clock.advance(1500);
    await files.get('initrd.img');
    await settle();
    expect((await files.get('initrd.img'))?.bytes.toString()).toBe('two');
    expect(seen).toEqual(['one', 'two']);
  });

  it('notices a rewrite in place (same size, new mtime)', async () => {
    const { dir, files, clock } = setup();
    const path = join(dir, 'image/vmlinuz');
    writeFileSync(path, 'aaaa');
    await files.loadAll();
    writeFileSync(path, 'bbbb');
    utimesSync(path, new Date(), new Date(Date.now() + 5000));
    clock.advance(2000);
    await files.get('vmlinuz');
    await settle();
    expect(files.peek('vmlinuz')?.bytes.toString()).toBe('bbbb');
  });

  it('picks up a file that appears after start, and drops one that disappears', async () => {
    const { dir, files, clock } = setup();
    await files.loadAll();
    writeFileSync(join(dir, 'pxe/ipxe.efi'), 'efi');
    clock.advance(1500);
    expect((await files.get('ipxe.efi'))?.bytes.toString()).toBe('efi');
    rmSync(join(dir, 'pxe/ipxe.efi'));
    clock.advance(1500);
    await files.get('ipxe.efi');
    await settle();
    expect(files.peek('ipxe.efi')).toBeUndefined();
  });

  it('reports missing files on disk, and knows which names are boot files', () => {
    const { dir, files } = setup();
    writeFileSync(join(dir, 'pxe/snponly.efi'), 'x');
    expect(files.missingOnDisk(['snponly.efi', 'ipxe.efi'])).toEqual(['ipxe.efi']);
    expect(BootFiles.isBootFile('vmlinuz')).toBe(true);
    expect(BootFiles.isBootFile('../vmlinuz')).toBe(false);
  });
});
