/**
 * root.cpio: the image's own root (FROM= a container, or PACKAGES= a Debian package set) as an
 * uncompressed cpio "newc" holding `root.img` (a squashfs of the root tree) and
 * `etc/lilcluster/root.env`. The kernel unpacks it with the base initrd (loaded before it);
 * /init mounts root.img read-only under a tmpfs overlay and the agent runs tasks inside it.
 *
 *   resolve: FROM → the source manifest's digest (skopeo inspect) | PACKAGES → the versions apt picks
 *   (the image's up-to-date check runs here)
 *   fetch (cache) → unpack (umoci) | mmdebstrap (or the cached squashfs) → check → mksquashfs → cpio
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { CpioWriter, padLength } from './cpio.js';
import { buildDebianRoot, parseDpkgStatus, resolvePackageSet, type PackageSet } from './debian-root.js';
import { ImageBuildError } from './errors.js';
import { ROOT_FILE, type RootManifest } from './manifest.js';
import { configPath, fetchToCache, sourceDigest, unpackImage } from './oci.js';
import { DEBIAN_PATH, formatRootEnv, type RootSource } from './root-source.js';
import type { KernelFrom } from './root-kernel.js';
import { checkRoot, scanRoot, type RootStats } from './root-tree.js';
import { packSquashfs, type SquashfsOptions } from './squashfs.js';
import { requireTools, type Tool } from './tools.js';

/** Paths inside root.cpio (the contract with /init). */
export const ROOT_IMG = 'root.img';
export const ROOT_ENV = 'etc/lilcluster/root.env';
/** Bump when the way a root is packed changes (the bytes change for the same inputs). */
const ROOT_FORMAT = 3;
/** Where PACKAGES= roots are kept once packed, by their inputs: mmdebstrap takes a minute, the cache a second. */
const ROOTS_CACHE = 'roots';

export interface RootOptions {
  source: RootSource;
  /** IMAGE=, or a name derived from FROM/PACKAGES. */
  name: string;
  /** HEALTH_CHECK=: a command line run on the node to see that the image works; may be empty. */
  health: string;
  squashfs: SquashfsOptions;
  /** The fixed time of the build (SOURCE_DATE_EPOCH, default 0). */
  mtime: number;
  cacheDir: string;
  /** Ignore the packed-root cache (FORCE=1). */
  force: boolean;
  /** KERNEL_FROM and KERNEL_VERSION: a kernel the image boots is left out of the root (see buildRoot's onTree). */
  kernel?: { from: KernelFrom; version: string | undefined } | undefined;
}

export interface ResolvedRoot {
  opts: RootOptions;
  /** LC_ROOT_SOURCE: the FROM reference, or "packages: a b c". */
  sourceText: string;
  /** sha256:… of the source's manifest (FROM), or of the resolved package list (PACKAGES). */
  digest: string;
  packageSet: PackageSet | undefined;
  rootless: boolean;
  /** sha256 (hex) of everything root.cpio is made from; its first 12 characters are the version. */
  inputs: string;
  version: string;
}

type Progress = (stage: string, detail: string) => void;
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
const isRoot = () => process.getuid?.() === 0;

const hashJson = (x: unknown) => createHash('sha256').update(JSON.stringify(x)).digest('hex');

/** Everything that decides root.cpio's bytes, before anything is fetched or built. */
export async function resolveRoot(opts: RootOptions, progress: Progress): Promise<ResolvedRoot> {
  const src = opts.source;
  let digest: string;
  let packageSet: PackageSet | undefined;
  let sourceText: string;
  const rootless = !isRoot();
  if (src.kind === 'container') {
    const tools: Tool[] = ['skopeo', 'umoci', 'mksquashfs', 'flock'];
    requireTools(tools);
    progress('tools', tools.join(' '));
    digest = await sourceDigest(src);
    sourceText = src.ref;
    progress('from', `${src.ref} ${digest}`);
  } else {
    const tools: Tool[] = ['apt-get', 'mmdebstrap', 'mksquashfs'];
    requireTools(tools);
    progress('tools', tools.join(' '));
    if (rootless)
      throw new ImageBuildError('IMG_ERR_OPTION', 'PACKAGES= needs root: mmdebstrap installs the packages in a chroot', {
        hint: 'run make image as root, or build the root elsewhere and use FROM=',
      });
    packageSet = await resolvePackageSet(src);
    digest = `sha256:${hashJson(packageSet.resolved)}`;
    sourceText = `packages: ${src.packages.join(' ')}`;
    const named = new Set(src.packages.map((p) => p.replace(/=.*$/, '')));
    const shown = packageSet.resolved.filter((p) => named.has(p.name)).map((p) => `${p.name} ${p.version}`);
    progress(
      'packages',
      `${shown.join(', ')} + ${packageSet.resolved.length - shown.length} packages they and the essential set need (${packageSet.suite})`,
    );
  }
  const inputs = hashJson({
    format: ROOT_FORMAT,
    source: sourceText,
    digest,
    name: opts.name,
    health: opts.health,
    squashfs: opts.squashfs,
    mtime: opts.mtime,
    rootless,
    kernel: opts.kernel ?? null,
  });
  return { opts, sourceText, digest, packageSet, rootless, inputs, version: inputs.slice(0, 12) };
}

/** Key of a packed squashfs: what its bytes depend on (not the name or health check, which live in root.env). */
function squashKey(r: ResolvedRoot): string {
  const o = r.opts;
  return hashJson({
    format: ROOT_FORMAT,
    digest: r.digest,
    squashfs: o.squashfs,
    mtime: o.mtime,
    rootless: r.rootless,
    kernel: o.kernel ?? null,
  });
}

interface PackedRoot {
  stats: RootStats;
  taskPath: string;
  packages: string[] | undefined;
  /** Whether `onTree` found a kernel in the root (unknown for roots packed without asking). */
  hasKernel?: boolean | undefined;
}

/**
 * Fetches or builds the root, packs it, and writes `work`/root.cpio. `onTree` sees the unpacked
 * root before it is scanned and packed (the root's own kernel is read there, and its files
 * removed) and says whether it took something from it; a cached packed root is used only when
 * its tree gave nothing to `onTree`.
 */
export async function buildRoot(
  r: ResolvedRoot,
  work: string,
  progress: Progress,
  onTree?: (rootfs: string) => Promise<boolean>,
): Promise<RootManifest> {
  const o = r.opts;
  const img = join(work, ROOT_IMG);
  const tree = join(work, 'root-tree');
  let packed: PackedRoot;
  let cached = r.packageSet && !o.force ? readCachedRoot(o.cacheDir, squashKey(r), img) : undefined;
  if (cached && onTree && cached.hasKernel !== false) {
    progress('packages', 'the packed root in the cache may hold a kernel: building it again to read it');
    rmSync(img, { force: true });
    cached = undefined;
  }
  if (cached) {
    packed = cached;
    progress('packages', `packed root from the cache (${join(o.cacheDir, ROOTS_CACHE)})`);
  } else {
    const since = Math.floor(Date.now() / 1000);
    let rootfs: string;
    let taskPath = DEBIAN_PATH;
    let packages: string[] | undefined;
    if (o.source.kind === 'container') {
      const src = o.source;
      const got = await fetchToCache(src, r.digest, o.cacheDir, (line) => progress('from', line));
      progress(
        'from',
        `${got.fetched ? 'fetched into' : 'already in'} ${got.layout} as ${got.refName} (OCI manifest ${got.manifestDigest})`,
      );
      if (r.rootless)
        progress(
          'warning',
          'not root: umoci unpacks --rootless, so every file of the root becomes root-owned (owners flattened) and device nodes are skipped',
        );
      rootfs = await unpackImage(src, got, o.cacheDir, tree, r.rootless);
      taskPath = configPath(got.config) ?? DEBIAN_PATH;
    } else {
      rootfs = tree;
      await buildDebianRoot(o.source, r.packageSet!, rootfs, o.mtime, (line) => progress('packages', line));
      packages = parseDpkgStatus(readFileSync(join(rootfs, 'var/lib/dpkg/status'), 'utf8')).map((p) => `${p.name}=${p.version}`);
    }
    const hasKernel = onTree ? await onTree(rootfs) : undefined;
    const stats = scanRoot(rootfs, since, o.mtime);
    checkRoot(rootfs, `${o.name} (${r.sourceText})`, stats);
    progress(
      'root',
      `${stats.files} files, ${stats.symlinks} symlinks, ${stats.directories} directories${stats.other ? `, ${stats.other} devices/fifos` : ''}: ${mib(stats.bytes)}`,
    );
    const started = Date.now();
    await packSquashfs(rootfs, img, o.squashfs, o.mtime, r.rootless);
    rmSync(tree, { recursive: true, force: true });
    progress(
      'squashfs',
      `${o.squashfs.compression}${o.squashfs.level === null ? '' : ` ${o.squashfs.level}`}: ${mib(statSync(img).size)} (${((Date.now() - started) / 1000).toFixed(1)} s)`,
    );
    packed = { stats, taskPath, packages, hasKernel };
    if (r.packageSet) writeCachedRoot(o.cacheDir, squashKey(r), img, packed);
  }

  const env = formatRootEnv({
    image: o.name,
    version: r.version,
    source: r.sourceText,
    path: packed.taskPath,
    health: o.health,
    bytes: packed.stats.bytes,
  });
  const cpio = writeRootCpio(join(work, ROOT_FILE), img, Buffer.from(env), o.mtime);
  const squashSize = statSync(img).size;
  rmSync(img, { force: true });
  progress('root', `${ROOT_FILE} ${mib(cpio.size)}: ${o.name} version ${r.version}, ${mib(packed.stats.bytes)} unpacked`);
  return {
    image: o.name,
    version: r.version,
    source: r.sourceText,
    digest: r.digest,
    ...(packed.packages ? { packages: packed.packages } : {}),
    path: ROOT_FILE,
    size: cpio.size,
    sha256: cpio.sha256,
    squashfs: { compression: o.squashfs.compression, level: o.squashfs.level, size: squashSize },
    unpackedBytes: packed.stats.bytes,
    health: o.health,
    taskPath: packed.taskPath,
    rootless: r.rootless,
  };
}

/** newc's file size field is 8 hex digits. */
const MAX_CPIO_FILE = 0xffff_ffff;

/**
 * root.cpio: the directories etc and etc/lilcluster (0755), root.img (0400), then
 * etc/lilcluster/root.env (0644), through the image's cpio
 * writer (fixed mtime, inode numbers in order: the same inputs give the same bytes), the
 * squashfs streamed from disk. Returns its size and sha256.
 */
export function writeRootCpio(out: string, img: string, env: Uint8Array, mtime: number): { size: number; sha256: string } {
  const size = statSync(img).size;
  if (size > MAX_CPIO_FILE)
    throw new ImageBuildError('IMG_ERR_ROOT', `the packed root is ${mib(size)}: a cpio "newc" archive carries files up to 4 GiB`, {
      hint: 'make the image smaller (fewer packages), or a stronger compression (SQUASHFS_COMPRESSION=xz)',
    });
  const w = new CpioWriter({ mtime });
  const hash = createHash('sha256');
  const fd = openSync(out, 'w', 0o644);
  let total = 0;
  const put = (b: Uint8Array) => {
    hash.update(b);
    let off = 0;
    while (off < b.length) off += writeSync(fd, b, off, b.length - off);
    total += b.length;
  };
  try {
    // Loaded before the base initrd (the kernel finds a following archive only at a 4-byte
    // boundary, which root.cpio's length is and a compressed base's is not): it makes its own folders.
    for (const path of ['etc', 'etc/lilcluster']) for (const chunk of w.entry({ type: 'directory', path, mode: 0o755 })) put(chunk);
    put(w.fileHeader(ROOT_IMG, 0o400, size));
    const inFd = openSync(img, 'r');
    try {
      const buf = Buffer.alloc(1 << 20);
      let copied = 0;
      for (;;) {
        const n = readSync(inFd, buf, 0, buf.length, null);
        if (n === 0) break;
        put(buf.subarray(0, n));
        copied += n;
      }
      if (copied !== size) throw new ImageBuildError('IMG_ERR_ROOT', `${img} changed while it was copied (${copied} of ${size} bytes)`);
    } finally {
      closeSync(inFd);
    }
    put(new Uint8Array(padLength(size)));
    for (const chunk of w.entry({ type: 'file', path: ROOT_ENV, mode: 0o644, data: env })) put(chunk);
    put(w.trailer());
  } finally {
    closeSync(fd);
  }
  return { size: total, sha256: hash.digest('hex') };
}

// ---------------------------------------------------------------- the packed-root cache (PACKAGES=)

function readCachedRoot(cacheDir: string, key: string, img: string): PackedRoot | undefined {
  const base = join(cacheDir, ROOTS_CACHE, key);
  try {
    if (!existsSync(`${base}.json`) || !existsSync(`${base}.squashfs`)) return undefined;
    const meta = JSON.parse(readFileSync(`${base}.json`, 'utf8')) as PackedRoot & { size: number };
    if (statSync(`${base}.squashfs`).size !== meta.size) return undefined;
    copyFileSync(`${base}.squashfs`, img);
    return { stats: meta.stats, taskPath: meta.taskPath, packages: meta.packages, hasKernel: meta.hasKernel };
  } catch {
    return undefined;
  }
}

function writeCachedRoot(cacheDir: string, key: string, img: string, packed: PackedRoot): void {
  const dir = join(cacheDir, ROOTS_CACHE);
  mkdirSync(dir, { recursive: true });
  const base = join(dir, key);
  const tmp = `${base}.${process.pid}.tmp`;
  copyFileSync(img, tmp);
  renameSync(tmp, `${base}.squashfs`);
  writeFileSync(tmp, JSON.stringify({ ...packed, size: statSync(img).size }));
  renameSync(tmp, `${base}.json`);
}
