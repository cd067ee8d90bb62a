/**
 * What the dispatcher needs to know of the RAM image it serves, from dist/image/manifest.json:
 *
 * - Its version, shown per node (`<agent version>+<first 8 hex of the inputs digest>`, prefixed
 *   by `<image>/` when it has a root of its own), so an operator sees which nodes still run an
 *   older image after a rollout.
 * - Whether it carries this dispatcher's public key. `make image DISPATCHER_KEY=...` bakes it in
 *   (the strong way: the agent trusts only what came in its image). When the image carries no
 *   key, the boot script passes it as `lc.pubkey=` on the kernel command line: weaker, since the
 *   command line comes over the network with the boot script, but it lets one generic image
 *   serve any dispatcher. An image made for another dispatcher is reported.
 *
 * The manifest is re-read only when it changes (a new image rolled out).
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export type ImageKeyStatus = 'ours' | 'none' | 'other' | 'no-manifest';

/** The image's own root (manifest `root`, from `make image FROM=... | PACKAGES=...`). */
export interface ImageRoot {
  image: string;
  version: string;
  size: number;
}

interface ManifestFacts {
  keyStatus: ImageKeyStatus;
  version: string | null;
  root: ImageRoot | null;
}

export class ImageInfo {
  #cache: { mtimeMs: number; facts: ManifestFacts } | undefined;
  constructor(
    private readonly imageDir: string,
    private readonly ourFingerprint: string,
  ) {}

  keyStatus(): ImageKeyStatus {
    return this.#facts().keyStatus;
  }

  version(): string | null {
    return this.#facts().version;
  }

  /** The image's own root, or null for the base image alone. */
  root(): ImageRoot | null {
    return this.#facts().root;
  }

  #facts(): ManifestFacts {
    const path = join(this.imageDir, 'manifest.json');
    let mtimeMs: number;
    try {
      mtimeMs = statSync(path).mtimeMs;
    } catch {
      return { keyStatus: 'no-manifest', version: null, root: null };
    }
    if (this.#cache?.mtimeMs === mtimeMs) return this.#cache.facts;
    let facts: ManifestFacts = { keyStatus: 'no-manifest', version: null, root: null };
    try {
      const m = JSON.parse(readFileSync(path, 'utf8')) as {
        dispatcherKey?: { fingerprint?: string } | null;
        agent?: { version?: string };
        inputs?: string;
        root?: { image?: unknown; version?: unknown; size?: unknown } | null;
      };
      const fp = m.dispatcherKey?.fingerprint;
      const r = m.root;
      const root =
        r && typeof r.image === 'string' && typeof r.version === 'string' && typeof r.size === 'number'
          ? { image: r.image, version: r.version, size: r.size }
          : null;
      // An image with its own root is named by it: `numpy/0.1.0+5cbad04e` (the digest covers the root too).
      const base = m.agent?.version ? `${m.agent.version}${m.inputs ? `+${m.inputs.slice(0, 8)}` : ''}` : null;
      const version = base && root ? `${root.image}/${base}` : base;
      facts = { keyStatus: !fp ? 'none' : fp === this.ourFingerprint ? 'ours' : 'other', version, root };
    } catch {
      /* a manifest being rewritten: try again next time */
    }
    this.#cache = { mtimeMs, facts };
    return facts;
  }
}
