/**
 * Boot files for a dispatcher under test (its `--image` and `--pxe-dir`): random bytes of
 * about the real sizes (a smaller initrd), in a temp tree the test removes.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface BootTree {
  dir: string;
  pxeDir: string;
  imageDir: string;
  files: Record<string, Buffer>;
}

/** Writes random boot files into a temp tree; a negative size leaves the file out. */
export function makeBootTree(sizes: Partial<Record<string, number>> = {}): BootTree {
  const dir = mkdtempSync(join(tmpdir(), 'lc-boot-'));
  const pxeDir = join(dir, 'pxe');
  const imageDir = join(dir, 'image');
  mkdirSync(pxeDir);
  mkdirSync(imageDir);
  const want: Record<string, number> = {
    'undionly.kpxe': 74_213,
    'ipxe.efi': 1_048_576,
    'snponly.efi': 173_792,
    vmlinuz: 3_000_000,
    'initrd.img': 12_000_000,
  };
  for (const [k, v] of Object.entries(sizes)) if (v !== undefined) want[k] = v;
  const files: Record<string, Buffer> = {};
  for (const [name, size] of Object.entries(want)) {
    if (size < 0) continue;
    files[name] = randomBytes(size);
    writeFileSync(join(['vmlinuz', 'initrd.img'].includes(name) ? imageDir : pxeDir, name), files[name]);
  }
  return { dir, pxeDir, imageDir, files };
}
