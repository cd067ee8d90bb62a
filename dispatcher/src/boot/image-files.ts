/**
 * The files of every image version served at `/image/<name>/<version>/<file>`: one BootFiles
 * per version folder, made on the first request for it, so only versions nodes boot are held
 * in memory. A version folder gone from the catalog (IMAGE_KEEP removed it) is dropped.
 */
import type { Logger } from '../log.js';
import type { ImageVersion } from '../images/catalog.js';
import { BootFiles, IMAGE_FILES, type BootFile } from './boot-files.js';

export class ImageFiles {
  readonly #byDir = new Map<string, BootFiles>();
  readonly #listeners: ((file: BootFile) => void)[] = [];

  constructor(private readonly opts: { pxeDir: string; log: Logger; recheckMs?: number }) {}

  of(v: ImageVersion): BootFiles {
    let files = this.#byDir.get(v.dir);
    if (!files) {
      files = new BootFiles({
        imageDir: v.dir,
        pxeDir: this.opts.pxeDir,
        names: IMAGE_FILES,
        log: this.opts.log.child({ image: v.image, version: v.version }),
        ...(this.opts.recheckMs !== undefined ? { recheckMs: this.opts.recheckMs } : {}),
      });
      for (const l of this.#listeners) files.onLoaded(l);
      this.#byDir.set(v.dir, files);
    }
    return files;
  }

  /** Like BootFiles.onLoaded, for every version's files. */
  onLoaded(listener: (file: BootFile) => void): void {
    this.#listeners.push(listener);
    for (const f of this.#byDir.values()) f.onLoaded(listener);
  }

  /** Drops the versions not in `keep` (their bytes go with the next GC). */
  retain(keep: readonly ImageVersion[]): void {
    const dirs = new Set(keep.map((v) => v.dir));
    for (const dir of this.#byDir.keys()) if (!dirs.has(dir)) this.#byDir.delete(dir);
  }
}
