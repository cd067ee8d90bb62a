/**
 * Extra layers over the image the builder assembles: the EXTRA_DEBS packages' files, then the
 * EXTRA_ROOTFS tree. Each layer is a list of files, symlinks and directories; adding one
 * checks it against what the image already holds and says exactly what clashes. Pure (no file
 * system): the caller reads the layer, this decides.
 *
 * - A directory that exists keeps its mode (the layer adds into it: /tmp stays 1777).
 * - A file or symlink over an existing one: the same bytes are fine; different ones replace it
 *   only where the layer may replace (EXTRA_ROOTFS: yours wins; EXTRA_DEBS: a clash is an error).
 * - Never a file over a directory or under a file/symlink, and never over a protected path.
 */
import { ImageBuildError } from './errors.js';
import { type Rootfs, sameEntry } from './rootfs.js';

export type LayerItem =
  | { type: 'file'; path: string; mode: number; data: Buffer }
  | { type: 'directory'; path: string; mode: number }
  | { type: 'symlink'; path: string; target: string };

export interface Layer {
  /** What the user named, for messages: "EXTRA_ROOTFS=/srv/tree", "EXTRA_DEBS package jq". */
  source: string;
  items: readonly LayerItem[];
  /** May replace files and symlinks the image already has. */
  replace: boolean;
  /** What to do about a clash, for the error's hint. */
  hint: string;
}

/** Paths a layer may not replace (relative, as in the archive), each with a word on how to change it instead. */
export type ProtectedPaths = ReadonlyMap<string, string>;

export interface LayerResult {
  added: number;
  /** Image paths (absolute) this layer replaced. */
  replaced: string[];
}

/** The protected path an item would replace (itself, or a directory above it turned into a file/symlink). */
export function protectedBy(item: LayerItem, protect: ProtectedPaths): string | undefined {
  for (const p of protect.keys()) {
    if (item.path === p) return p;
    if (item.type !== 'directory' && p.startsWith(`${item.path}/`)) return p;
  }
  return undefined;
}

export function addLayer(fs: Rootfs, layer: Layer, protect: ProtectedPaths): LayerResult {
  const result: LayerResult = { added: 0, replaced: [] };
  const clash = (item: LayerItem, why: string, hint = layer.hint) =>
    new ImageBuildError('IMG_ERR_INPUT', `${layer.source}: /${item.path} ${why}`, { hint });
  for (const item of layer.items) {
    const guarded = protectedBy(item, protect);
    if (guarded !== undefined) throw clash(item, `would replace /${guarded}`, protect.get(guarded));
    for (let i = item.path.indexOf('/'); i > 0; i = item.path.indexOf('/', i + 1)) {
      const above = fs.get(item.path.slice(0, i));
      if (above && above.type !== 'directory') throw clash(item, `lies under /${above.path}, which is a ${above.type} in the image`);
    }
    const prev = fs.get(item.path);
    if (item.type === 'directory') {
      if (prev && prev.type !== 'directory') throw clash(item, `is a directory here but a ${prev.type} in the image`);
      if (!fs.isDirectory(item.path)) {
        fs.addDirectory(item.path, item.mode);
        result.added++;
      }
      continue;
    }
    if (fs.isDirectory(item.path)) throw clash(item, `is a ${item.type} here but a directory in the image`);
    if (prev && sameEntry(prev, item)) continue;
    if (prev && !layer.replace) throw clash(item, `is already in the image (a different ${prev.type})`);
    if (prev) result.replaced.push(`/${item.path}`);
    else result.added++;
    fs.replace(item);
  }
  return result;
}
