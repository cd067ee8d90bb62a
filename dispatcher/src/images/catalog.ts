/**
 * The images the dispatcher serves, and their versions, read from disk as `make image` leaves
 * them (image/README.md):
 *
 *   <dir>/manifest.json, vmlinuz, initrd.img, root.cpio?      the newest build
 *   <dir>/versions/<version>/...                               the kept versions (IMAGE_KEEP)
 *   <dir>/versions/order                                       their order, newest last
 *
 * The image named `default` is the `--image` folder (dist/image); every sub-folder of the
 * `--images` library (dist/images) that holds a build is an image named by its folder. A
 * version is the first 12 hex of the manifest's `inputs` digest: the same inputs give the same
 * bytes, so a version names its bytes. A folder built before versions were kept is one version;
 * so is a folder with only a kernel and an initrd of someone's making (no manifest): its version
 * is then the digest of those files' bytes.
 *
 * Everything on disk is input: a manifest that does not parse, an order line that names no
 * kept version, a folder name that is not an image name are skipped and said once in the log.
 * The disk is re-read at most once per RESCAN_MS, so a new build is seen within a second.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { Logger } from '../log.js';
import { RateLimitedLog } from '../log.js';
import { IMAGE_NAME_PATTERN } from '../api/jobs/schemas.js';

export const DEFAULT_IMAGE = 'default';
/** Image names: what `make image IMAGE=` accepts, and what a URL path segment may safely carry. */
export const IMAGE_NAME_RE = new RegExp(IMAGE_NAME_PATTERN);
export const VERSION_RE = /^[0-9a-f]{12}$/;
const RESCAN_MS = 1000;

/** The part of manifest.json the dispatcher reads (the builder writes more). */
const ManifestFacts = Type.Object({
  inputs: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  agent: Type.Optional(Type.Object({ version: Type.Optional(Type.String({ maxLength: 64 })) })),
  dispatcherKey: Type.Optional(Type.Union([Type.Null(), Type.Object({ fingerprint: Type.Optional(Type.String({ maxLength: 256 })) })])),
  files: Type.Optional(
    Type.Record(Type.String(), Type.Object({ size: Type.Optional(Type.Number()), uncompressedSize: Type.Optional(Type.Number()) })),
  ),
  root: Type.Optional(
    Type.Union([
      Type.Null(),
      Type.Object({
        source: Type.Optional(Type.String({ maxLength: 4096 })),
        size: Type.Optional(Type.Number()),
        unpackedBytes: Type.Optional(Type.Number()),
        health: Type.Optional(Type.Union([Type.String({ maxLength: 4096 }), Type.Null()])),
      }),
    ]),
  ),
});
type ManifestFacts = Static<typeof ManifestFacts>;

export type ImageKeyStatus = 'ours' | 'none' | 'other';

export interface ImageVersion {
  image: string;
  version: string;
  /** The folder holding its vmlinuz, initrd.img, root.cpio? and manifest.json. */
  dir: string;
  /** The image has a root of its own (root.cpio, loaded before the base initrd). */
  hasRoot: boolean;
  /** Bytes a boot downloads (kernel, initrd, root). */
  bytes: number;
  /**
   * RAM a node needs at least to boot it, when the manifest says: the kernel, the base initrd
   * unpacked, the root as carried (compressed; `unpacked` when copied into tmpfs by
   * `lc.root=unpack`). Null when not known (a folder without a manifest).
   */
  memoryBytes: { compressed: number; unpacked: number } | null;
  /** Where its root came from (`docker://…`, `packages:…`), or `base` for the small default image. */
  source: string;
  /** The health check baked in at build time (HEALTH_CHECK=), or null. */
  health: string | null;
  agentVersion: string | null;
  keyStatus: ImageKeyStatus;
}

export interface CatalogImage {
  name: string;
  dir: string;
  /** Oldest first; the last is the newest build. Never empty. */
  versions: ImageVersion[];
}

export interface CatalogOptions {
  /** The `default` image's folder (`--image`). */
  defaultDir: string;
  /** The library of named images (`--images`); absent: only `default`. */
  libraryDir?: string;
  /** This dispatcher's key fingerprint (an image made for another dispatcher is reported). */
  fingerprint: string;
  log: Logger;
  now?: () => number;
}

/** `name@version`: how nodes, the CLI and the page show an image version. */
export function versionLabel(v: Pick<ImageVersion, 'image' | 'version'>): string {
  return `${v.image}@${v.version}`;
}

export class ImageCatalog {
  #images = new Map<string, CatalogImage>();
  #scannedAt = Number.NEGATIVE_INFINITY;
  readonly #noisy: RateLimitedLog;
  readonly #now: () => number;
  /** Parsed manifests by path and mtime: a rescan re-reads only what changed. */
  readonly #manifests = new Map<string, { mtimeMs: number; facts: ManifestFacts | null }>();
  /** Digests of folders without a manifest, by the files' identity (size, mtime, inode). */
  readonly #digests = new Map<string, { key: string; inputs: string }>();

  constructor(private readonly opts: CatalogOptions) {
    this.#noisy = new RateLimitedLog(opts.log);
    this.#now = opts.now ?? Date.now;
  }

  /** Every image with at least one intact version, by name. */
  list(): CatalogImage[] {
    this.#rescan();
    return [...this.#images.values()].sort((a, b) =>
      a.name === DEFAULT_IMAGE ? -1 : b.name === DEFAULT_IMAGE ? 1 : a.name.localeCompare(b.name),
    );
  }

  get(name: string): CatalogImage | undefined {
    this.#rescan();
    return this.#images.get(name);
  }

  newest(name: string): ImageVersion | undefined {
    return this.get(name)?.versions.at(-1);
  }

  version(name: string, version: string): ImageVersion | undefined {
    return this.get(name)?.versions.find((v) => v.version === version);
  }

  /** Re-reads the disk now (after a build in the same process, tests). */
  refresh(): void {
    this.#scannedAt = Number.NEGATIVE_INFINITY;
    this.#rescan();
  }

  #rescan(): void {
    const t = this.#now();
    if (t - this.#scannedAt < RESCAN_MS) return;
    this.#scannedAt = t;
    const images = new Map<string, CatalogImage>();
    const add = (name: string, dir: string) => {
      const versions = this.#versionsOf(name, dir);
      if (versions.length > 0) images.set(name, { name, dir, versions });
    };
    add(DEFAULT_IMAGE, this.opts.defaultDir);
    const lib = this.opts.libraryDir;
    if (lib && existsSync(lib)) {
      let entries: string[] = [];
      try {
        entries = readdirSync(lib);
      } catch (err) {
        this.#noisy.warn(`lib:${lib}`, { dir: lib, err: (err as Error).message }, 'cannot read the images folder');
      }
      for (const name of entries.sort()) {
        const dir = join(lib, name);
        if (!isDir(dir) || name.startsWith('.')) continue;
        if (!IMAGE_NAME_RE.test(name) || name === DEFAULT_IMAGE) {
          this.#noisy.warn(
            `name:${dir}`,
            { dir },
            `skipped: "${name.slice(0, 64)}" is not a usable image name (a-z, 0-9, . _ -; "${DEFAULT_IMAGE}" is the --image folder)`,
          );
          continue;
        }
        add(name, dir);
      }
    }
    this.#images = images;
  }

  #versionsOf(image: string, dir: string): ImageVersion[] {
    const kept = join(dir, 'versions');
    const orderFile = join(kept, 'order');
    const found: ImageVersion[] = [];
    if (existsSync(orderFile)) {
      let lines: string[] = [];
      try {
        lines = readFileSync(orderFile, 'utf8').split('\n');
      } catch (err) {
        this.#noisy.warn(`order:${orderFile}`, { file: orderFile, err: (err as Error).message }, 'cannot read the versions order');
      }
      const seen = new Set<string>();
      for (const raw of lines) {
        const line = raw.trim();
        if (!line) continue;
        if (!VERSION_RE.test(line) || seen.has(line)) {
          this.#noisy.warn(
            `orderline:${orderFile}`,
            { file: orderFile, line: line.slice(0, 64) },
            'versions order: line skipped (not a kept version)',
          );
          continue;
        }
        seen.add(line);
        const v = this.#read(image, join(kept, line), line);
        if (v) found.push(v);
      }
    }
    if (found.length === 0) {
      // A folder built before versions were kept: its flat build is its one version.
      const flat = this.#read(image, dir, null);
      if (flat) found.push(flat);
    }
    return found;
  }

  /** One version folder, or null (said in the log) when its manifest or kernel is not there. */
  #read(image: string, dir: string, expected: string | null): ImageVersion | null {
    const path = join(dir, 'manifest.json');
    let mtimeMs: number;
    try {
      mtimeMs = statSync(path).mtimeMs;
    } catch {
      if (expected) {
        this.#noisy.warn(`nomanifest:${dir}`, { dir }, 'image version skipped: no manifest.json');
        return null;
      }
      return this.#unbuilt(image, dir);
    }
    let cached = this.#manifests.get(path);
    if (cached?.mtimeMs !== mtimeMs) {
      let facts: ManifestFacts | null = null;
      try {
        const doc = JSON.parse(readFileSync(path, 'utf8')) as unknown;
        if (Value.Check(ManifestFacts, doc)) facts = doc;
        else this.#noisy.warn(`badmanifest:${path}`, { file: path }, 'image version skipped: manifest.json lacks a valid inputs digest');
      } catch (err) {
        this.#noisy.warn(
          `badmanifest:${path}`,
          { file: path, err: (err as Error).message },
          'image version skipped: manifest.json does not parse',
        );
      }
      cached = { mtimeMs, facts };
      this.#manifests.set(path, cached);
    }
    const m = cached.facts;
    if (!m) return null;
    const version = m.inputs.slice(0, 12);
    if (expected && version !== expected) {
      this.#noisy.warn(`mismatch:${dir}`, { dir, manifest: version }, 'image version skipped: its folder name is not its manifest version');
      return null;
    }
    const hasRoot = existsSync(join(dir, 'root.cpio'));
    if (!existsSync(join(dir, 'vmlinuz')) || !existsSync(join(dir, 'initrd.img'))) {
      this.#noisy.warn(`nofiles:${dir}`, { dir }, 'image version skipped: vmlinuz or initrd.img missing');
      return null;
    }
    const fp = m.dispatcherKey?.fingerprint;
    const fileSize = (name: string) => m.files?.[name]?.size ?? 0;
    const initrdUnpacked = m.files?.['initrd.img']?.uncompressedSize;
    const rootSize = hasRoot ? (m.root?.size ?? fileSize('root.cpio')) : 0;
    const base = initrdUnpacked === undefined ? null : fileSize('vmlinuz') + initrdUnpacked;
    return {
      image,
      version,
      dir,
      hasRoot,
      bytes: fileSize('vmlinuz') + fileSize('initrd.img') + rootSize,
      memoryBytes: base === null ? null : { compressed: base + rootSize, unpacked: base + rootSize + (m.root?.unpackedBytes ?? 0) },
      source: m.root?.source ?? 'base',
      health: m.root?.health || null,
      agentVersion: m.agent?.version ?? null,
      keyStatus: !fp ? 'none' : fp === this.opts.fingerprint ? 'ours' : 'other',
    };
  }

  /** A kernel and initrd with no manifest: versioned by their bytes (hashed once per change). */
  #unbuilt(image: string, dir: string): ImageVersion | null {
    const names = ['vmlinuz', 'initrd.img', 'root.cpio'];
    const stats = names.map((n) => {
      try {
        return statSync(join(dir, n));
      } catch {
        return null;
      }
    });
    if (!stats[0] || !stats[1]) return null;
    const key = stats.map((st) => (st ? `${st.size}:${st.mtimeMs}:${st.ino}` : '-')).join('|');
    let cached = this.#digests.get(dir);
    if (cached?.key !== key) {
      const h = createHash('sha256');
      try {
        for (const [i, n] of names.entries()) if (stats[i]) h.update(n).update(readFileSync(join(dir, n)));
      } catch (err) {
        this.#noisy.warn(`unreadable:${dir}`, { dir, err: (err as Error).message }, 'image skipped: its files cannot be read');
        return null;
      }
      cached = { key, inputs: h.digest('hex') };
      this.#digests.set(dir, cached);
    }
    const bytes = stats.reduce((sum, st) => sum + (st?.size ?? 0), 0);
    return {
      image,
      version: cached.inputs.slice(0, 12),
      dir,
      hasRoot: stats[2] !== null,
      bytes,
      memoryBytes: null,
      source: 'files',
      health: null,
      agentVersion: null,
      keyStatus: 'none',
    };
  }
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}
