/**
 * Which image and version a node boots next, and whether what it runs is behind.
 *
 * The image: the node's own (`dispatcherctl set NODE --image`, cluster file `nodes[].image`),
 * else the first of its labels in the cluster file's `labelImages`, else the cluster file's
 * `image`, else `default`. The version: the node's pin (a rollout moved it), else the image's
 * release (releases.ts), else its newest build (then released at that version).
 */
import type { ClusterFile } from '../nodes/cluster-file.js';
import type { NodeRecord } from '../nodes/registry.js';
import { DEFAULT_IMAGE, versionLabel, type ImageCatalog, type ImageVersion } from './catalog.js';
import type { ImageReleases } from './releases.js';

export type NextBoot = { ok: true; version: ImageVersion } | { ok: false; image: string; reason: string; hint: string };

/** Where a node stands against its image, for `dispatcherctl nodes`, the page and rollouts. */
export interface NodeImageStatus {
  /** The image it boots next (by assignment). */
  image: string;
  /** `name@version` it boots next, or null when that image has no usable build. */
  next: string | null;
  /** `name@version` it runs now (its agent's hello), or null. */
  running: string | null;
  /** It runs an older version than its image's newest build. */
  stale: boolean;
}

export class ImageAssignments {
  constructor(
    private readonly catalog: ImageCatalog,
    private readonly releases: ImageReleases,
    private readonly cluster: Pick<ClusterFile, 'image' | 'labelImages'>,
  ) {}

  /** The image a node boots, by the rules above. */
  imageOf(node: Pick<NodeRecord, 'image' | 'labels'>): string {
    if (node.image) return node.image;
    const byLabel = this.cluster.labelImages;
    if (byLabel) for (const l of node.labels) if (byLabel[l]) return byLabel[l];
    return this.cluster.image ?? DEFAULT_IMAGE;
  }

  /** The version the node's next boot gets (boot script and kexec alike). */
  next(node: Pick<NodeRecord, 'mac' | 'image' | 'labels'>): NextBoot {
    const image = this.imageOf(node);
    return this.versionFor(image, this.releases.pinOf(node.mac));
  }

  /** The released (or pinned) version of an image that is on disk. */
  versionFor(image: string, pin?: { image: string; version: string }): NextBoot {
    const entry = this.catalog.get(image);
    if (!entry) {
      return {
        ok: false,
        image,
        reason: `image "${image}" is not built`,
        hint:
          image === DEFAULT_IMAGE
            ? 'run `make image` on the dispatcher'
            : `build it with \`make image IMAGE=${image} FROM=...\` (or PACKAGES=...), or give the node another image (dispatcherctl set NODE --image NAME)`,
      };
    }
    if (pin && pin.image === image) {
      const pinned = entry.versions.find((v) => v.version === pin.version);
      if (pinned) return { ok: true, version: pinned };
    }
    const newest = entry.versions.at(-1)!;
    const release = this.releases.release(image);
    if (!release) {
      this.releases.adopt(image, newest.version);
      return { ok: true, version: newest };
    }
    const released = entry.versions.find((v) => v.version === release.version);
    // A released version no longer kept on disk (IMAGE_KEEP): the newest is what is there.
    return { ok: true, version: released ?? newest };
  }

  status(node: Pick<NodeRecord, 'mac' | 'image' | 'labels' | 'imageVersion'>): NodeImageStatus {
    const image = this.imageOf(node);
    const next = this.next(node);
    const running = node.imageVersion;
    const newest = this.catalog.newest(runningImage(running) ?? image);
    return {
      image,
      next: next.ok ? versionLabel(next.version) : null,
      running,
      stale: running !== null && newest !== undefined && running.includes('@') && running !== versionLabel(newest),
    };
  }
}

/**
 * Images the cluster file names that are not built: said at start (the nodes placed on them
 * are refused a boot script, with the same message, until they are built).
 */
export function missingClusterImages(cluster: ClusterFile, catalog: ImageCatalog): string[] {
  const named = new Set<string>([
    ...(cluster.image ? [cluster.image] : []),
    ...Object.values(cluster.labelImages ?? {}),
    ...cluster.nodes.flatMap((n) => (n.image ? [n.image] : [])),
    ...(cluster.onDemand?.images ?? []),
  ]);
  return [...named].filter((name) => !catalog.get(name));
}

/** The image name of a `name@version` label. */
export function runningImage(label: string | null): string | null {
  if (!label) return null;
  const at = label.lastIndexOf('@');
  return at > 0 ? label.slice(0, at) : null;
}
