/**
 * EXTRA_DEBS: Debian packages the user names, unpacked into the image from their filesystem
 * tar (`dpkg-deb --fsys-tarfile` into tar-stream: nothing extracted to disk, no root, no
 * maintainer scripts). No dependency resolution: the user names every package, and the build
 * warns about libraries the packages' programs need but the image lacks (needed-libs.ts).
 */
import { ImageBuildError } from './errors.js';
import type { FileTree } from './file-tree.js';
import type { LayerItem } from './layers.js';

/** Debian policy 5.6.1: lower-case letters, digits, + - . ; at least two characters, starting alphanumeric. */
const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;

/** EXTRA_DEBS="jq,libjq1 libonig5" → names, each checked (a name is passed to apt, never an option). */
export function parseDebNames(value: string | undefined): string[] {
  const names = (value ?? '').split(/[\s,]+/).filter(Boolean);
  const bad = names.filter((n) => !PACKAGE_NAME.test(n));
  if (bad.length) {
    throw new ImageBuildError('IMG_ERR_OPTION', `EXTRA_DEBS: not a Debian package name: ${bad.join(', ')}`, {
      hint: 'give package names only, comma-separated (EXTRA_DEBS=jq,libjq1,libonig5): no versions, architectures or file names',
    });
  }
  return [...new Set(names)];
}

/**
 * What a node has no use for: documentation, manual pages, info, lintian overrides, and locale
 * data (translations; the image runs in the C locale). Directories named here are left out
 * with everything under them.
 */
export const SKIPPED_DEB_PATHS: readonly string[] = [
  'usr/share/doc',
  'usr/share/doc-base',
  'usr/share/man',
  'usr/share/info',
  'usr/share/lintian',
  'usr/share/locale',
  'usr/lib/locale',
  'usr/share/i18n',
];

export function isSkippedDebPath(path: string): boolean {
  return SKIPPED_DEB_PATHS.some((p) => path === p || path.startsWith(`${p}/`));
}

export interface DebLayer {
  items: LayerItem[];
  files: number;
  symlinks: number;
  bytes: number;
  /** Entries left out: documentation and locale data. */
  skipped: number;
  /** Entries of a kind the image does not take from packages (device nodes, FIFOs), left out. */
  other: number;
}

/** A package's files, symlinks and directories in its tar's order; hard links become copies of their target. */
export async function readDebLayer(tree: FileTree): Promise<DebLayer> {
  const out: DebLayer = { items: [], files: 0, symlinks: 0, bytes: 0, skipped: 0, other: 0 };
  const hardlinks: { path: string; target: string }[] = [];
  await tree.scan(
    (e) => {
      if (isSkippedDebPath(e.path)) {
        if (e.type !== 'directory') out.skipped++;
        return false;
      }
      switch (e.type) {
        case 'file':
          return true;
        case 'directory':
          out.items.push({ type: 'directory', path: e.path, mode: e.mode & 0o7777 });
          return false;
        case 'symlink':
          if (!e.linkTarget) throw new ImageBuildError('IMG_ERR_INPUT', `${tree.description}: symlink ${e.path} has no target`);
          out.items.push({ type: 'symlink', path: e.path, target: e.linkTarget });
          out.symlinks++;
          return false;
        case 'hardlink':
          if (e.linkTarget) hardlinks.push({ path: e.path, target: e.linkTarget });
          return false;
        default:
          out.other++;
          return false;
      }
    },
    (e, data) => {
      out.items.push({ type: 'file', path: e.path, mode: e.mode & 0o7777, data });
      out.files++;
      out.bytes += data.length;
    },
  );
  // tar stores a hard link after the file it links to; the initramfs gets a second copy (cpio newc could share, the kernel's unpacker would too, but it is rare in packages).
  const files = new Map(out.items.flatMap((i) => (i.type === 'file' ? [[i.path, i] as const] : [])));
  for (const l of hardlinks) {
    const target = files.get(l.target);
    if (!target) {
      out.skipped++; // its target was left out (documentation)
      continue;
    }
    out.items.push({ type: 'file', path: l.path, mode: target.mode, data: target.data });
    out.files++;
    out.bytes += target.data.length;
  }
  return out;
}
