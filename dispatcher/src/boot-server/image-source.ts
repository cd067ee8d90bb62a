/**
 * A boot server's image versions: `/image/<name>/<version>/<file>` asks the leader which hash
 * each file of that version has (its manifest, held a short while), then the cache for those
 * bytes. The boot routes (boot/http/boot-routes.ts) serve them as they serve the leader's own.
 */
import type { Logger } from '../log.js';
import { IMAGE_FILES, type BootFile, type BootFileName } from '../boot/boot-files.js';
import type { BootFileSource } from '../boot/http/boot-routes.js';
import type { ImageManifest } from '../api/boot-servers/schemas.js';
import { RateLimitedLog } from '../log.js';
import type { ImageCache } from './cache.js';

/**
 * How long a version's manifest is used before the leader is asked again. A version names its
 * bytes, so it rarely changes; asking again now and then means a leader whose files changed
 * under a version is followed (the cache then refuses what disagrees and fetches again).
 */
export const MANIFEST_TTL_MS = 60_000;

export class SegmentImages {
  readonly #manifests = new Map<string, { at: number; manifest: Promise<ImageManifest> }>();
  readonly #noisy: RateLimitedLog;
  readonly #now: () => number;

  constructor(
    private readonly opts: {
      cache: ImageCache;
      manifest: (image: string, version: string) => Promise<ImageManifest>;
      log: Logger;
      now?: () => number;
    },
  ) {
    this.#noisy = new RateLimitedLog(opts.log);
    this.#now = opts.now ?? Date.now;
  }

  /** The version's files as the boot routes read them. */
  async source(image: string, version: string): Promise<BootFileSource> {
    return {
      get: (name: BootFileName) => this.file(image, version, name),
      pathOf: (name: BootFileName) => `${this.opts.cache.dir} (${image}@${version}/${name})`,
      missingHint: 'the boot server could not get it from the leader, or its bytes disagreed with the leader’s sha256: see its log',
    };
  }

  /** Starts filling the cache with a version's files (a boot script for it was just served). */
  prefetch(image: string, version: string): void {
    for (const name of IMAGE_FILES) void this.file(image, version, name);
  }

  async file(image: string, version: string, name: BootFileName): Promise<BootFile | undefined> {
    let manifest: ImageManifest;
    try {
      manifest = await this.#manifest(image, version);
    } catch (err) {
      this.#noisy.warn(`manifest:${image}@${version}`, { image, version, err: (err as Error).message }, 'no manifest from the leader');
      return undefined;
    }
    const entry = manifest.files.find((f) => f.name === name);
    if (!entry) return undefined; // not a file of this version (root.cpio of an image without a root)
    const r = await this.opts.cache.get({ name, sha256: entry.sha256, size: entry.size, image, version });
    if (r.ok) return r.file;
    // The leader's manifest may have moved on: ask it again next time.
    this.#manifests.delete(`${image}@${version}`);
    return undefined;
  }

  #manifest(image: string, version: string): Promise<ImageManifest> {
    const key = `${image}@${version}`;
    const held = this.#manifests.get(key);
    if (held && this.#now() - held.at < MANIFEST_TTL_MS) return held.manifest;
    const manifest = this.opts.manifest(image, version);
    this.#manifests.set(key, { at: this.#now(), manifest });
    manifest.catch(() => {
      if (this.#manifests.get(key)?.manifest === manifest) this.#manifests.delete(key);
    });
    return manifest;
  }
}
