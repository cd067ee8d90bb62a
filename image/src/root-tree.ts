/**
 * The unpacked root tree between fetching and packing: what a node needs of it (/bin/sh, not
 * empty), its size, and mtimes made reproducible. Symlinks inside the tree are followed as the
 * node will see them (an absolute target means the root's own /), never out of it.
 */
import { lstatSync, lutimesSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ImageBuildError } from './errors.js';

/** Linux's limit on symlinks followed in one lookup (MAXSYMLINKS / ELOOP). */
const MAX_LINKS = 40;

/**
 * The host path that `path` (absolute, as seen inside the root) names after following
 * symlinks within `root`, or undefined when a component is missing or the links loop.
 */
export function resolveInRoot(root: string, path: string): string | undefined {
  const todo = path.split('/').filter(Boolean);
  const cur: string[] = [];
  let links = 0;
  while (todo.length) {
    const name = todo.shift()!;
    if (name === '.') continue;
    if (name === '..') {
      cur.pop(); // ".." of the root is the root
      continue;
    }
    const host = join(root, ...cur, name);
    let st;
    try {
      st = lstatSync(host);
    } catch {
      return undefined;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) return undefined;
      const target = readlinkSync(host);
      if (target.startsWith('/')) cur.length = 0;
      todo.unshift(...target.split('/').filter(Boolean));
    } else {
      if (todo.length && !st.isDirectory()) return undefined;
      cur.push(name);
    }
  }
  return join(root, ...cur);
}

export interface RootStats {
  /** Regular files (each hard-linked inode once), symlinks, directories, other (devices, FIFOs, sockets). */
  files: number;
  symlinks: number;
  directories: number;
  other: number;
  /** Bytes of the regular files (each inode once) and symlink targets: what the unpacked root holds. */
  bytes: number;
  /** Entries whose mtime was set to the build's fixed time (written while the build ran). */
  clamped: number;
}

/**
 * Walks the tree once: counts it, and gives every entry whose mtime is at or after `since`
 * (files the unpacking or the package scripts wrote, directories they changed) the fixed
 * `mtime`, so that two builds of the same inputs give the same squashfs. mtimes that came
 * from the image's layers or packages are kept (Python checks its .pyc files against them).
 */
export function scanRoot(root: string, since: number, mtime: number): RootStats {
  const stats: RootStats = { files: 0, symlinks: 0, directories: 0, other: 0, bytes: 0, clamped: 0 };
  const inodes = new Set<bigint>();
  const sinceMs = since * 1000;
  const visit = (path: string) => {
    const st = lstatSync(path, { bigint: true });
    if (st.isDirectory()) {
      stats.directories++;
      for (const name of readdirSync(path).sort()) visit(join(path, name));
    } else if (st.isSymbolicLink()) {
      stats.symlinks++;
      stats.bytes += Number(st.size);
    } else if (st.isFile()) {
      if (!inodes.has(st.ino)) {
        inodes.add(st.ino);
        stats.files++;
        stats.bytes += Number(st.size);
      }
    } else stats.other++;
    if (Number(st.mtimeMs) >= sinceMs) {
      lutimesSync(path, mtime, mtime);
      stats.clamped++;
    }
  };
  visit(root);
  return stats;
}

/** Refuses a root no task can run in, naming the image. */
export function checkRoot(root: string, image: string, stats: RootStats): void {
  if (stats.files === 0)
    throw new ImageBuildError('IMG_ERR_ROOT', `the root of ${image} is empty (no regular file)`, {
      hint: 'check FROM= (a scratch image with nothing in it?) or PACKAGES=',
    });
  const sh = resolveInRoot(root, '/bin/sh');
  let ok = false;
  if (sh) {
    try {
      const st = statSync(sh);
      ok = st.isFile() && (st.mode & 0o111) !== 0;
    } catch {
      ok = false;
    }
  }
  if (!ok)
    throw new ImageBuildError('IMG_ERR_ROOT', `${image} has no /bin/sh: a root with no /bin/sh cannot run tasks`, {
      hint: 'build FROM an image with a shell (e.g. a Debian or busybox based one), or add dash/busybox to it',
    });
}
