/**
 * dist/image/manifest.json: what the image is made of. Written last, after vmlinuz and
 * initrd.img are in place, so a manifest always describes complete files; `inputs` (a digest
 * of every input) lets the next build see that nothing changed and stop early, and names the
 * version (its first 12 hex characters: versions/<version>/, see versions.ts).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const MANIFEST_FILE = 'manifest.json';
export const KERNEL_FILE = 'vmlinuz';
export const INITRD_FILE = 'initrd.img';
/** The image's own root (FROM=/PACKAGES=), a second initrd: see root-image.ts. */
export const ROOT_FILE = 'root.cpio';

export interface FileInfo {
  size: number;
  sha256: string;
}

export interface RootManifest {
  image: string;
  version: string;
  source: string;
  digest: string;
  /** PACKAGES=: every package in the root as "name=version". */
  packages?: string[];
  path: 'root.cpio';
  size: number;
  sha256: string;
  squashfs: { compression: string; level: number | null; size: number };
  unpackedBytes: number;
  health: string;
  /** LC_ROOT_PATH: PATH for tasks (the OCI config's, else Debian's). */
  taskPath: string;
  rootless: boolean;
}

export interface ImageManifest {
  format: 1;
  /** The image's name: IMAGE=, or 'default' (dist/image). Absent from manifests written before names existed. */
  name?: string;
  kernel: { version: string; package: string | null; packageVersion: string | null; source: string };
  node: {
    version: string;
    package: string | null;
    source: string;
    stripped: boolean;
    size: number;
    libraries: string[];
    interpreter: string | null;
  };
  /** spawnAddon: the native task spawner shipped beside the agent, null when the image has none. */
  agent: { version: string; path: string; size: number; sha256: string; spawnAddon: { path: string; size: number; sha256: string } | null };
  busybox: { package: string | null; version: string | null };
  files: { vmlinuz: FileInfo; 'initrd.img': FileInfo & { uncompressedSize: number } };
  compression: { format: 'zstd'; level: number };
  modules: { requested: string[]; builtin: string[]; shipped: string[] };
  firmware: string[];
  dispatcherKey: { path: string; fingerprint: string } | null;
  /**
   * EXTRA_DEBS packages (in the order given) and the EXTRA_ROOTFS tree (sha256 over its paths,
   * modes, symlink targets and contents), and the sonames their programs need but the image
   * lacks. Absent from manifests written before these options existed.
   */
  extra?: {
    debs: { package: string; version: string | null; sha256: string }[];
    rootfs: { path: string; sha256: string; files: number; symlinks: number; directories: number } | null;
    missingLibraries: { soname: string; neededBy: string[] }[];
  };
  /**
   * The image's own root (FROM= or PACKAGES=): root.cpio beside initrd.img, its source and
   * digest, version, size and sha256, squashfs compression, unpacked size, health check.
   * null (or absent, in older manifests) for the default image.
   */
  root?: RootManifest | null;
  /** sha256 over every input (packages, Node, agent, rootfs files, options): unchanged inputs, unchanged image. */
  inputs: string;
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function readManifest(outDir: string): ImageManifest | undefined {
  const path = join(outDir, MANIFEST_FILE);
  if (!existsSync(path)) return undefined;
  try {
    const m = JSON.parse(readFileSync(path, 'utf8')) as ImageManifest;
    return m.format === 1 ? m : undefined;
  } catch {
    return undefined;
  }
}

/** True when the image files (and root.cpio, when the manifest has a root) exist and match the manifest's sizes and digests. */
export function imageMatchesManifest(outDir: string, m: ImageManifest): boolean {
  const check = (name: string, info: FileInfo) => {
    const path = join(outDir, name);
    if (!existsSync(path)) return false;
    const data = readFileSync(path);
    return data.length === info.size && sha256(data) === info.sha256;
  };
  return check(KERNEL_FILE, m.files.vmlinuz) && check(INITRD_FILE, m.files['initrd.img']) && (!m.root || check(ROOT_FILE, m.root));
}
