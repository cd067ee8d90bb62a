/**
 * The files a boot needs, held in memory: the iPXE first stages (pxe dir) and the RAM image
 * (image dir). A boot storm sends the same 50 MB to every machine, so the bytes are read
 * once and every transfer writes slices of one Buffer (no per-request read or copy). A file
 * is checked for change at most once a second (size, mtime, inode) and reloaded in the
 * background when it changed; transfers already running keep the bytes they started with.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.js';

/** iPXE first stages (`make pxe` copies them from Debian's ipxe package). */
export const PXE_FILES = ['undionly.kpxe', 'ipxe.efi', 'snponly.efi'] as const;
/**
 * The RAM image (`make image`): kernel, base initrd, and for an image with its own root
 * (`make image FROM=... | PACKAGES=...`) root.cpio, loaded as an initrd before the base one.
 */
export const IMAGE_FILES = ['vmlinuz', 'initrd.img', 'root.cpio'] as const;
/** Image files only some images have: their absence is not worth a warning. */
export const OPTIONAL_IMAGE_FILES: readonly ImageFileName[] = ['root.cpio'];
export type PxeFileName = (typeof PXE_FILES)[number];
export type ImageFileName = (typeof IMAGE_FILES)[number];
export type BootFileName = PxeFileName | ImageFileName;
export const BOOT_FILES: readonly BootFileName[] = [...PXE_FILES, ...IMAGE_FILES];

/** How often a served file is compared with the disk (override with BootFilesOptions.recheckMs). */
export const DEFAULT_RECHECK_MS = 1000;

export interface BootFile {
  name: BootFileName;
  bytes: Buffer;
  size: number;
  /** Strong entity tag: the quoted sha256 of the bytes (RFC 9110 §8.8.3). */
  etag: string;
  sha256: string;
  mtimeMs: number;
  /** Last-Modified value (RFC 9110 §8.8.2): HTTP date of mtime, whole seconds. */
  lastModified: string;
}

export interface BootFilesOptions {
  imageDir: string;
  pxeDir: string;
  /** The files this instance serves (default every boot file; an image version: IMAGE_FILES). */
  names?: readonly BootFileName[];
  log: Logger;
  recheckMs?: number;
  now?: () => number;
}

interface Slot {
  file: BootFile | undefined;
  /** Identity of what is loaded: size, mtime and inode; a change triggers a reload. */
  key: string | undefined;
  checkedAt: number;
  loading: Promise<void> | undefined;
}

export class BootFiles {
  readonly #slots = new Map<BootFileName, Slot>();
  readonly #loadListeners: ((file: BootFile) => void)[] = [];
  readonly #recheckMs: number;
  readonly #now: () => number;
  readonly #names: readonly BootFileName[];

  constructor(private readonly opts: BootFilesOptions) {
    this.#recheckMs = opts.recheckMs ?? DEFAULT_RECHECK_MS;
    this.#now = opts.now ?? Date.now;
    this.#names = opts.names ?? BOOT_FILES;
    for (const n of this.#names) this.#slots.set(n, { file: undefined, key: undefined, checkedAt: -Infinity, loading: undefined });
  }

  static isBootFile(name: string): name is BootFileName {
    return (BOOT_FILES as readonly string[]).includes(name);
  }

  pathOf(name: BootFileName): string {
    return join((PXE_FILES as readonly string[]).includes(name) ? this.opts.pxeDir : this.opts.imageDir, name);
  }

  /** Loads every file that exists; the missing ones are listed (and loaded when they appear). */
  async loadAll(): Promise<{ missing: BootFileName[] }> {
    await Promise.all(this.#names.map((n) => this.#refresh(n, true)));
    return { missing: this.#names.filter((n) => !this.#slots.get(n)!.file) };
  }

  /** Names present on disk right now (synchronous; for start-up warnings). */
  missingOnDisk(names: readonly BootFileName[]): BootFileName[] {
    return names.filter((n) => !existsSync(this.pathOf(n)));
  }

  /**
   * The file's bytes, from memory. A change check runs in the background at most once per
   * recheck interval, so a new image is served from the next request after it is loaded.
   * Undefined when the file does not exist (checked again at most once per interval).
   */
  async get(name: BootFileName): Promise<BootFile | undefined> {
    const slot = this.#slots.get(name);
    if (!slot) return undefined;
    if (slot.file) {
      // Serve what is loaded; a due change check (and reload) runs beside it.
      if (this.#now() - slot.checkedAt >= this.#recheckMs) void this.#refresh(name, false);
      return slot.file;
    }
    await this.#refresh(name, false);
    return slot.file;
  }

  /**
   * Calls `listener` with every file loaded now and every version loaded later (so a
   * consumer can prepare what it needs before the first request rather than during it).
   */
  onLoaded(listener: (file: BootFile) => void): void {
    this.#loadListeners.push(listener);
    for (const slot of this.#slots.values()) if (slot.file) this.#tell(listener, slot.file);
  }

  /** A listener that fails (say, no memory for a memfd) costs only what it prepares: logged, the file is served. */
  #tell(listener: (file: BootFile) => void, file: BootFile): void {
    try {
      listener(file);
    } catch (err) {
      this.opts.log.warn(
        { file: file.name, err: (err as Error)?.message },
        'boot file loaded, but preparing it failed; it is served without that',
      );
    }
  }

  /** The loaded version without touching the disk (tests, status). */
  peek(name: BootFileName): BootFile | undefined {
    return this.#slots.get(name)?.file;
  }

  #refresh(name: BootFileName, force: boolean): Promise<void> {
    const slot = this.#slots.get(name)!;
    if (slot.loading) return slot.loading;
    if (!force && this.#now() - slot.checkedAt < this.#recheckMs) return Promise.resolve();
    slot.loading = this.#check(name, slot).finally(() => {
      slot.loading = undefined;
    });
    return slot.loading;
  }

  async #check(name: BootFileName, slot: Slot): Promise<void> {
    const path = this.pathOf(name);
    slot.checkedAt = this.#now();
    let key: string;
    let mtimeMs: number;
    try {
      const st = await stat(path);
      if (!st.isFile()) throw Object.assign(new Error(`${path} is not a file`), { code: 'ENOTFILE' });
      key = `${st.size}:${st.mtimeMs}:${st.ino}`;
      mtimeMs = st.mtimeMs;
    } catch (err) {
      if (slot.file) this.opts.log.warn({ file: name, path, err: (err as Error).message }, 'boot file disappeared');
      slot.file = undefined;
      slot.key = undefined;
      return;
    }
    if (key === slot.key && slot.file) return;
    try {
      const bytes = await readFile(path);
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      slot.file = {
        name,
        bytes,
        size: bytes.length,
        etag: `"${sha256}"`,
        sha256,
        mtimeMs,
        lastModified: new Date(Math.floor(mtimeMs / 1000) * 1000).toUTCString(),
      };
      slot.key = key;
      this.opts.log.info({ file: name, bytes: bytes.length, sha256: sha256.slice(0, 16) }, 'boot file loaded');
      for (const listener of this.#loadListeners) this.#tell(listener, slot.file);
    } catch (err) {
      this.opts.log.warn({ file: name, path, err: (err as Error).message }, 'cannot read boot file');
    }
  }
}
