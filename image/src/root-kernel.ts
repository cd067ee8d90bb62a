/**
 * The kernel an image's own root brings (FROM=, PACKAGES= with a linux-image package): found
 * as Warewulf 4 finds it (internal/pkg/kernel: /boot/vmlinuz-<version> or
 * /lib/modules/<version>/vmlinuz, debug and rescue kernels skipped, the highest version unless
 * one is named), with its modules in /lib/modules/<version>. The choice is pure; finding the
 * files reads the unpacked root, following its symlinks inside it (merged /usr: /lib → usr/lib).
 */
import { existsSync, lstatSync, readdirSync, rmSync, statSync } from 'node:fs';
import { relative } from 'node:path';
import { ImageBuildError } from './errors.js';
import { resolveInRoot } from './root-tree.js';

/** KERNEL_FROM: the root's kernel when it has one (auto), always (root), or never (debian: the builder's kernel). */
export const KERNEL_FROM_VALUES = ['auto', 'root', 'debian'] as const;
export type KernelFrom = (typeof KERNEL_FROM_VALUES)[number];

export function parseKernelFrom(value: string | undefined): KernelFrom {
  const v = (value ?? 'auto').trim();
  if ((KERNEL_FROM_VALUES as readonly string[]).includes(v)) return v as KernelFrom;
  throw new ImageBuildError('IMG_ERR_OPTION', `KERNEL_FROM=${value}: expected ${KERNEL_FROM_VALUES.join(', ')}`, {
    hint: "auto: the root's kernel when it has one; root: require it; debian: always the builder's Debian kernel",
  });
}

export interface KernelCandidate {
  /** Path inside the root: /boot/vmlinuz-6.1.0-10-amd64 or /lib/modules/6.1.0-10-amd64/vmlinuz. */
  path: string;
  /** The kernel release (uname -r), the name of its /lib/modules folder. */
  version: string;
}

/** A release string we accept as a folder name: no separators, no dot-only names, printable. */
const RELEASE = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$/;

/** /boot/vmlinuz-<version> names and /lib/modules/<version>/vmlinuz folders, as candidates; odd names dropped. */
export function kernelCandidates(bootNames: readonly string[], moduleDirsWithVmlinuz: readonly string[]): KernelCandidate[] {
  const out = new Map<string, KernelCandidate>();
  for (const name of bootNames) {
    const m = /^vmlinuz-(.+)$/.exec(name);
    if (m && RELEASE.test(m[1]!)) out.set(m[1]!, { path: `/boot/${name}`, version: m[1]! });
  }
  // Fedora/RHEL put the image beside the modules; /boot's copy, when both exist, is preferred (as Warewulf lists it).
  for (const v of moduleDirsWithVmlinuz) if (RELEASE.test(v) && !out.has(v)) out.set(v, { path: `/lib/modules/${v}/vmlinuz`, version: v });
  return [...out.values()];
}

/** Warewulf leaves these out of its default choice. */
export const isDebugOrRescue = (version: string) => version.includes('+debug') || version.includes('-rescue');

/**
 * Kernel release order, as rpm compares versions: the runs of digits and of letters, in turn
 * (other characters only separate them); numbers compare as numbers and sort after letters, a
 * release with more runs is higher (6.1.0-10-amd64 > 6.1.0-9-amd64 > 6.1.0-amd64; 6.10 > 6.9).
 * Ties are broken byte-wise, so the order is total; it never throws.
 */
export function compareKernelVersions(a: string, b: string): number {
  const runs = (s: string) => s.match(/\d+|[A-Za-z]+/g) ?? [];
  const ra = runs(a);
  const rb = runs(b);
  for (let i = 0; i < Math.min(ra.length, rb.length); i++) {
    const c = compareRuns(ra[i]!, rb[i]!);
    if (c !== 0) return c;
  }
  if (ra.length !== rb.length) return ra.length - rb.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareRuns(x: string, y: string): number {
  const xd = x.charCodeAt(0) <= 57;
  const yd = y.charCodeAt(0) <= 57;
  if (xd !== yd) return xd ? 1 : -1;
  if (xd) {
    const nx = x.replace(/^0+(?=\d)/, '');
    const ny = y.replace(/^0+(?=\d)/, '');
    if (nx.length !== ny.length) return nx.length - ny.length;
    return nx < ny ? -1 : nx > ny ? 1 : 0;
  }
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * The kernel to boot: `wanted` (KERNEL_VERSION=, exact, else the highest that starts with it,
 * as Warewulf's --kernelversion), else the highest version that is neither debug nor rescue.
 * Undefined when there is none.
 */
export function chooseKernel(candidates: readonly KernelCandidate[], wanted?: string): KernelCandidate | undefined {
  const sorted = [...candidates].sort((a, b) => compareKernelVersions(b.version, a.version));
  if (wanted) return sorted.find((c) => c.version === wanted) ?? sorted.find((c) => c.version.startsWith(wanted));
  return sorted.find((c) => !isDebugOrRescue(c.version));
}

export interface RootKernel extends KernelCandidate {
  /** Host paths of the kernel image and of its /lib/modules/<version> folder (undefined when the root has none). */
  file: string;
  modulesDir: string | undefined;
  /** Every candidate found, for the progress line. */
  all: KernelCandidate[];
}

const listDir = (p: string | undefined): string[] => {
  if (!p) return [];
  try {
    return readdirSync(p).sort();
  } catch {
    return [];
  }
};

const isFile = (p: string | undefined) => {
  try {
    return !!p && statSync(p).isFile();
  } catch {
    return false;
  }
};

/** Every kernel image in the unpacked root at `root` (a host folder). */
export function rootKernelCandidates(root: string): KernelCandidate[] {
  const bootNames = listDir(resolveInRoot(root, '/boot')).filter((n) => isFile(resolveInRoot(root, `/boot/${n}`)));
  const withVmlinuz = listDir(resolveInRoot(root, '/lib/modules')).filter((v) => isFile(resolveInRoot(root, `/lib/modules/${v}/vmlinuz`)));
  return kernelCandidates(bootNames, withVmlinuz);
}

/** The kernel of the unpacked root at `root` (a host folder), or undefined when it has none. */
export function findRootKernel(root: string, wanted?: string): RootKernel | undefined {
  const all = rootKernelCandidates(root);
  const chosen = chooseKernel(all, wanted);
  if (!chosen) return undefined;
  const file = resolveInRoot(root, chosen.path)!;
  const dir = resolveInRoot(root, `/lib/modules/${chosen.version}`);
  return { ...chosen, file, modulesDir: dir && existsSync(dir) && statSync(dir).isDirectory() ? dir : undefined, all };
}

/** What Debian's and Fedora's kernel packages and their hooks put in /boot for one version. */
const BOOT_FILES = ['vmlinuz', 'initrd.img', 'initramfs', 'System.map', 'config'];

/**
 * Removes the booted kernel's files from the unpacked root (its /boot files and
 * /lib/modules/<version>); returns their paths in the root and their size.
 */
export function dropKernelFiles(root: string, k: RootKernel): { paths: string[]; bytes: number } {
  const hostPaths = new Set<string>([k.file]);
  for (const name of BOOT_FILES)
    for (const p of [`/boot/${name}-${k.version}`, `/boot/${name}-${k.version}.img`]) {
      const host = resolveInRoot(root, p);
      if (host && existsSync(host)) hostPaths.add(host);
    }
  if (k.modulesDir) hostPaths.add(k.modulesDir);
  let bytes = 0;
  const size = (p: string): number => {
    const st = lstatSync(p);
    return st.isDirectory() ? readdirSync(p).reduce((n, c) => n + size(`${p}/${c}`), 0) : st.isFile() ? st.size : 0;
  };
  const paths: string[] = [];
  for (const p of [...hostPaths].sort()) {
    bytes += size(p);
    rmSync(p, { recursive: true, force: true });
    paths.push(`/${relative(root, p)}`);
  }
  return { paths, bytes };
}
