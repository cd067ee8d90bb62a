/**
 * The root tree packed as a read-only squashfs image (mksquashfs, squashfs-tools 4.5.1 on
 * Debian 12). The node mounts it from RAM (loop) under a tmpfs overlay, so it pays the
 * compressed size plus what it writes. Compression by measurement: image/README.md.
 */
import { ImageBuildError } from './errors.js';
import { run } from './tools.js';

export const SQUASHFS_COMPRESSIONS = ['zstd', 'xz', 'gzip', 'lz4'] as const;
export type SquashfsCompression = (typeof SQUASHFS_COMPRESSIONS)[number];

export interface SquashfsOptions {
  compression: SquashfsCompression;
  /** zstd 1..22, gzip 1..9; none for xz (always -Xbcj x86 here) and lz4 (always -Xhc). */
  level: number | null;
}

/** The default, chosen by measurement on the python3-numpy root (image/README.md). */
export const DEFAULT_SQUASHFS: SquashfsOptions = { compression: 'zstd', level: 15 };

const LEVELS: Record<SquashfsCompression, [number, number] | null> = { zstd: [1, 22], gzip: [1, 9], xz: null, lz4: null };

/** SQUASHFS_COMPRESSION / SQUASHFS_LEVEL, checked. */
export function parseSquashfsOptions(compression: string | undefined, level: string | undefined): SquashfsOptions {
  const c = (compression ?? DEFAULT_SQUASHFS.compression) as SquashfsCompression;
  if (!SQUASHFS_COMPRESSIONS.includes(c))
    throw new ImageBuildError('IMG_ERR_OPTION', `SQUASHFS_COMPRESSION=${compression}: not one of ${SQUASHFS_COMPRESSIONS.join(', ')}`);
  const range = LEVELS[c];
  if (!range) {
    if (level !== undefined)
      throw new ImageBuildError('IMG_ERR_OPTION', `SQUASHFS_LEVEL=${level}: ${c} has no level here`, { hint: 'drop SQUASHFS_LEVEL' });
    return { compression: c, level: null };
  }
  if (level === undefined) return { compression: c, level: c === DEFAULT_SQUASHFS.compression ? DEFAULT_SQUASHFS.level : range[1] };
  const n = Number(level);
  if (!/^\d+$/.test(level.trim()) || n < range[0] || n > range[1])
    throw new ImageBuildError('IMG_ERR_OPTION', `SQUASHFS_LEVEL=${level}: ${c} takes ${range[0]} to ${range[1]}`);
  return { compression: c, level: n };
}

export function compressionArgs(o: SquashfsOptions): string[] {
  switch (o.compression) {
    case 'zstd':
      return ['-comp', 'zstd', '-Xcompression-level', String(o.level)];
    case 'gzip':
      return ['-comp', 'gzip', '-Xcompression-level', String(o.level)];
    case 'xz':
      return ['-comp', 'xz', '-Xbcj', 'x86'];
    case 'lz4':
      return ['-comp', 'lz4', '-Xhc'];
  }
}

/**
 * mksquashfs `root` → `image`. Reproducible: the superblock time is `mtime`, file times are
 * the tree's own (the caller fixed those written during the build); mksquashfs 4.5 is
 * reproducible across thread counts. SOURCE_DATE_EPOCH is kept from it, since 4.5 would then
 * stamp every file with it. `allRoot` (a rootless build) makes every file root's.
 */
export async function packSquashfs(root: string, image: string, o: SquashfsOptions, mtime: number, allRoot: boolean): Promise<void> {
  const { SOURCE_DATE_EPOCH: _, ...env } = process.env;
  await run(
    'mksquashfs',
    [
      root,
      image,
      '-noappend',
      '-no-progress',
      '-quiet',
      ...compressionArgs(o),
      '-mkfs-time',
      String(mtime),
      ...(allRoot ? ['-all-root'] : []),
    ],
    { env },
  );
}
