/**
 * Directory trees copied into the image as they are: the built-in image/rootfs/ (/init and
 * friends) and the user's EXTRA_ROOTFS. Files with their data and mode, symlinks with their
 * target (never followed), directories. Owner and mtime are not read: every entry in the image
 * is root:root with the build's fixed mtime.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ImageBuildError } from './errors.js';
import { protectedBy, type LayerItem, type ProtectedPaths } from './layers.js';
import { compareBytes } from './modules.js';

/**
 * How file modes are taken: `git` for the repository's own tree (0755 if executable, else 0644;
 * directories 0755: git keeps only the x bit, so the checkout's umask must not show), `as-is`
 * for the user's tree (the permission bits, setuid/setgid/sticky included).
 */
export type ModePolicy = 'git' | 'as-is';

export interface OverlayTree {
  root: string;
  /** Parents before children, in byte order of path. */
  items: LayerItem[];
  /** sha256 over every item's path, type, mode and content: the tree's identity for the up-to-date check. */
  digest: string;
  files: number;
  symlinks: number;
  directories: number;
  bytes: number;
}

function kindOf(st: import('node:fs').Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device node';
  return 'not a file, directory or symlink';
}

export function readOverlay(root: string, modes: ModePolicy): OverlayTree {
  const items: LayerItem[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(rel ? join(root, rel) : root).sort(compareBytes)) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = join(root, r);
      const st = lstatSync(abs);
      if (st.isDirectory()) {
        items.push({ type: 'directory', path: r, mode: modes === 'git' ? 0o755 : st.mode & 0o7777 });
        walk(r);
      } else if (st.isSymbolicLink()) {
        items.push({ type: 'symlink', path: r, target: readlinkSync(abs) });
      } else if (st.isFile()) {
        items.push({
          type: 'file',
          path: r,
          mode: modes === 'git' ? (st.mode & 0o111 ? 0o755 : 0o644) : st.mode & 0o7777,
          data: readFileSync(abs),
        });
      } else {
        throw new ImageBuildError('IMG_ERR_INPUT', `${abs} is ${kindOf(st)}, which the image cannot carry`, {
          hint: `remove it from ${root} (/init creates device nodes and sockets at boot)`,
        });
      }
    }
  };
  try {
    walk('');
  } catch (err) {
    if (err instanceof ImageBuildError) throw err;
    throw new ImageBuildError('IMG_ERR_INPUT', `cannot read ${root}: ${(err as Error).message}`, { cause: err });
  }
  const h = createHash('sha256');
  const tree: OverlayTree = { root, items, digest: '', files: 0, symlinks: 0, directories: 0, bytes: 0 };
  for (const it of items) {
    h.update(`${it.type}\0${it.path}\0`);
    if (it.type === 'file') {
      h.update(`${it.mode}\0${it.data.length}\0`).update(it.data);
      tree.files++;
      tree.bytes += it.data.length;
    } else if (it.type === 'symlink') {
      h.update(`${it.target}\0`);
      tree.symlinks++;
    } else {
      h.update(`${it.mode}\0`);
      tree.directories++;
    }
  }
  tree.digest = h.digest('hex');
  return tree;
}

/**
 * EXTRA_ROOTFS: the user's tree, refused up front (before anything is built) when it does not
 * exist, is not a directory, or holds an entry that would replace a protected path.
 */
export function readExtraRootfs(dir: string, protect: ProtectedPaths): OverlayTree {
  if (!existsSync(dir))
    throw new ImageBuildError('IMG_ERR_INPUT', `EXTRA_ROOTFS=${dir} does not exist`, {
      hint: "give the folder whose contents go into the image's root (e.g. EXTRA_ROOTFS=./site-rootfs holding etc/, usr/local/bin/...)",
    });
  if (!statSync(dir).isDirectory())
    throw new ImageBuildError('IMG_ERR_INPUT', `EXTRA_ROOTFS=${dir} is not a directory`, {
      hint: "give a folder: its contents are copied into the image's root",
    });
  const tree = readOverlay(dir, 'as-is');
  for (const item of tree.items) {
    const guarded = protectedBy(item, protect);
    if (guarded !== undefined) {
      throw new ImageBuildError('IMG_ERR_INPUT', `EXTRA_ROOTFS=${dir}: ${item.path} would replace /${guarded}`, {
        hint: `remove ${join(dir, item.path)}; ${protect.get(guarded) ?? ''}`.replace(/; $/, ''),
      });
    }
  }
  return tree;
}
