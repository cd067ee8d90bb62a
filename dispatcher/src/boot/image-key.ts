/**
 * Does the RAM image carry this dispatcher's public key? `make image DISPATCHER_KEY=...`
 * bakes it in (the strong way: the agent trusts only what came in its image). When the image
 * carries no key, the boot script passes it as `lc.pubkey=` on the kernel command line: weaker,
 * since the command line comes over the network with the boot script, but it lets one
 * generic image serve any dispatcher. An image made for another dispatcher is reported.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export type ImageKeyStatus = 'ours' | 'none' | 'other' | 'no-manifest';

export class ImageKeyCheck {
  #cache: { mtimeMs: number; status: ImageKeyStatus } | undefined;
  constructor(
    private readonly imageDir: string,
    private readonly ourFingerprint: string,
  ) {}

  /** Re-read only when manifest.json changes (a new image rolled out). */
  status(): ImageKeyStatus {
    const path = join(this.imageDir, 'manifest.json');
    let mtimeMs: number;
    try {
      mtimeMs = statSync(path).mtimeMs;
    } catch {
      return 'no-manifest';
    }
    if (this.#cache?.mtimeMs === mtimeMs) return this.#cache.status;
    let status: ImageKeyStatus = 'no-manifest';
    try {
      const m = JSON.parse(readFileSync(path, 'utf8')) as { dispatcherKey?: { fingerprint?: string } | null };
      const fp = m.dispatcherKey?.fingerprint;
      status = !fp ? 'none' : fp === this.ourFingerprint ? 'ours' : 'other';
    } catch {
      status = 'no-manifest';
    }
    this.#cache = { mtimeMs, status };
    return status;
  }
}
