/**
 * PACKAGES=: a Debian root with the packages and everything they depend on, built by
 * mmdebstrap from the host's apt sources and the host's package lists (the ones `apt-get
 * update` fetched: the versions the cache key names are the versions installed).
 *
 *   apt-get -s (empty dpkg status) install ?essential PACKAGES → the resolved versions (the key)
 *   mmdebstrap --variant=essential --include=PACKAGES --skip=update SUITE DIR SOURCES...
 *
 * Variant `essential` (the Essential:yes set: a shell, coreutils, dpkg) rather than `minbase`
 * (that plus apt and the Priority:required packages): measured with python3-numpy, 238 MB
 * against 268 MB unpacked, and nothing on a diskless node installs packages.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { ImageBuildError } from './errors.js';
import { compareBytes } from './modules.js';
import type { PackageSource } from './root-source.js';
import { run } from './tools.js';

export const VARIANT = 'essential';
export const APT_SOURCES_LIST = '/etc/apt/sources.list';
export const APT_SOURCES_DIR = '/etc/apt/sources.list.d';
export const APT_LISTS = '/var/lib/apt/lists';

/**
 * What dpkg leaves out while installing (dpkg.cfg(5) path-exclude), as EXTRA_DEBS does: manual
 * pages, info, documentation (not the copyright files) and message translations. With
 * python3-numpy: 222 MiB unpacked, 67.7 MiB packed without these; see image/README.md.
 */
export const DPKG_EXCLUDES: readonly string[] = [
  'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/info/*',
  'path-exclude=/usr/share/doc/*',
  'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/locale/*',
  'path-exclude=/usr/share/lintian/*',
];

export interface PackageVersion {
  name: string;
  version: string;
}

// ---------------------------------------------------------------- pure

/** VERSION_CODENAME from os-release(5) text (values may be quoted). */
export function osCodename(text: string): string | undefined {
  const m = /^VERSION_CODENAME=["']?([a-z0-9-]+)["']?\s*$/m.exec(text);
  return m?.[1];
}

/** The apt source files apt itself reads: sources.list, then sources.list.d's *.list and *.sources in name order. */
export function aptSourceFiles(hasSourcesList: boolean, dirEntries: readonly string[]): string[] {
  const files = hasSourcesList ? [APT_SOURCES_LIST] : [];
  // apt(8) ignores other names (apt's own .disabled, .save, dpkg's .dpkg-old, ...).
  for (const name of [...dirEntries].sort(compareBytes))
    if (/^[A-Za-z0-9_.-]+\.(list|sources)$/.test(name)) files.push(`${APT_SOURCES_DIR}/${name}`);
  return files;
}

/** The packages `apt-get -s install` would install: its "Inst name (version ...)" lines, sorted by name. */
export function parseAptSimulation(text: string): PackageVersion[] {
  const out: PackageVersion[] = [];
  for (const line of text.split('\n')) {
    const m = /^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) /.exec(line);
    if (m) out.push({ name: m[1]!, version: m[2]! });
  }
  return out.sort((a, b) => compareBytes(a.name, b.name));
}

/** Installed packages in a dpkg status file, sorted by name. */
export function parseDpkgStatus(text: string): PackageVersion[] {
  const out: PackageVersion[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const field = (k: string) => new RegExp(`^${k}: *(.+)$`, 'm').exec(stanza)?.[1]?.trim();
    const name = field('Package');
    const version = field('Version');
    if (name && version && /\binstalled\b/.test(field('Status') ?? '') && !/not-installed|config-files/.test(field('Status') ?? ''))
      out.push({ name, version });
  }
  return out.sort((a, b) => compareBytes(a.name, b.name));
}

/** Package names apt says it cannot find or install ("Unable to locate package x", "Package 'x' has no installation candidate"). */
export function aptUnknownPackages(stderr: string): string[] {
  const names = new Set<string>();
  for (const m of stderr.matchAll(/Unable to locate package (\S+)/g)) names.add(m[1]!);
  for (const m of stderr.matchAll(/Package '?([^' ]+)'? has no installation candidate/g)) names.add(m[1]!);
  for (const m of stderr.matchAll(/Version '([^']+)' for '([^']+)' was not found/g)) names.add(`${m[2]}=${m[1]}`);
  return [...names];
}

// ---------------------------------------------------------------- I/O

export interface PackageSet {
  suite: string;
  sources: string[];
  /** Every package the root will hold, with the version apt picks. */
  resolved: PackageVersion[];
}

function hostSuite(): string {
  let text = '';
  try {
    text = readFileSync('/etc/os-release', 'utf8');
  } catch {
    /* below */
  }
  const suite = osCodename(text);
  if (!suite)
    throw new ImageBuildError('IMG_ERR_PACKAGE', 'PACKAGES=: /etc/os-release names no VERSION_CODENAME', {
      hint: "build on Debian (the root is built from the host's apt sources and suite)",
    });
  return suite;
}

/** What PACKAGES= resolves to with the host's apt lists, without installing anything (a few seconds). */
export async function resolvePackageSet(src: PackageSource): Promise<PackageSet> {
  const suite = hostSuite();
  const sources = aptSourceFiles(existsSync(APT_SOURCES_LIST), existsSync(APT_SOURCES_DIR) ? readdirSync(APT_SOURCES_DIR) : []);
  if (sources.length === 0)
    throw new ImageBuildError('IMG_ERR_PACKAGE', `PACKAGES=: no apt sources (${APT_SOURCES_LIST}, ${APT_SOURCES_DIR}/*.sources)`, {
      hint: 'configure a Debian mirror for apt, then apt-get update',
    });
  let stdout: Buffer;
  try {
    ({ stdout } = await run('apt-get', [
      '-s',
      // An empty dpkg status: the whole set as on an empty root, not the difference to this host.
      '-o',
      'Dir::State::status=/dev/null',
      '-o',
      'Dir::Cache::pkgcache=',
      '-o',
      'Dir::Cache::srcpkgcache=',
      // apt counts itself essential; mmdebstrap's essential variant does not install it.
      '-o',
      'pkgCacheGen::ForceEssential=,',
      '-o',
      'APT::Install-Recommends=false',
      'install',
      '?essential',
      ...src.packages,
    ]));
  } catch (err) {
    const text = err instanceof Error ? err.message : String(err);
    const unknown = aptUnknownPackages(text);
    if (unknown.length)
      throw new ImageBuildError('IMG_ERR_PACKAGE', `PACKAGES=: apt knows no package ${unknown.join(', ')}`, {
        hint: 'check the name (apt-cache search WORD); if it is right, run apt-get update',
        cause: err,
      });
    throw new ImageBuildError('IMG_ERR_PACKAGE', `PACKAGES=${src.packages.join(' ')}: apt cannot resolve them: ${text}`, {
      hint: 'apt-get update, then try apt-get install --simulate with the same names to see why',
      cause: err,
    });
  }
  const resolved = parseAptSimulation(stdout.toString('utf8'));
  if (resolved.length === 0)
    throw new ImageBuildError('IMG_ERR_PACKAGE', 'PACKAGES=: apt resolves them to nothing', { hint: 'run apt-get update' });
  return { suite, sources, resolved };
}

/** mmdebstrap into `target` (a folder that must not exist or be empty); its "I:" lines go to progress. */
export async function buildDebianRoot(
  src: PackageSource,
  set: PackageSet,
  target: string,
  epoch: number,
  progress: (line: string) => void,
): Promise<void> {
  const { SOURCE_DATE_EPOCH: _, ...env } = process.env;
  // The host's lists, so that what is installed is what resolvePackageSet saw (and no download of them).
  const copyLists = `mkdir -p "$1${APT_LISTS}" && for f in ${APT_LISTS}/*_InRelease ${APT_LISTS}/*_Release ${APT_LISTS}/*_Release.gpg ${APT_LISTS}/*_Packages*; do if [ -f "$f" ]; then cp "$f" "$1${APT_LISTS}/"; fi; done`;
  try {
    await run(
      'mmdebstrap',
      [
        `--variant=${VARIANT}`,
        `--include=${src.packages.join(',')}`,
        '--mode=root',
        '--format=directory',
        '--skip=update',
        ...DPKG_EXCLUDES.map((o) => `--dpkgopt=${o}`),
        `--setup-hook=${copyLists}`,
        // The node writes its own (/init); the build host's would only make the root differ between hosts.
        '--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"',
        set.suite,
        target,
        ...set.sources,
      ],
      {
        env: { ...env, SOURCE_DATE_EPOCH: String(epoch) },
        // Its own progress lines, without the hooks' shell text.
        onLine: (l) => /^[IWE]: /.test(l) && !/-hook in shell:/.test(l) && progress(l),
      },
    );
  } catch (err) {
    if (!(err instanceof ImageBuildError) || err.code !== 'IMG_ERR_TOOL_FAILED') throw err;
    const unknown = aptUnknownPackages(err.message);
    throw new ImageBuildError(
      'IMG_ERR_PACKAGE',
      unknown.length ? `PACKAGES=: apt knows no package ${unknown.join(', ')}` : `PACKAGES=${src.packages.join(' ')}: ${err.message}`,
      { hint: 'apt-get update, then check the names (apt-cache policy NAME)', cause: err },
    );
  }
}
