/**
 * Debian packages as build inputs: resolve a name to apt's candidate version (apt-cache),
 * download it once with `apt-get download` into the cache folder, check its SHA256 against
 * the archive index, and reuse it afterwards. Works without root; needs `apt-get update` once.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ImageBuildError } from './errors.js';
import { run } from './tools.js';

export type ControlStanza = Record<string, string>;

/** Parses deb822 control text (apt-cache show output): stanzas split by blank lines, continuation lines folded. */
export function parseControl(text: string): ControlStanza[] {
  const stanzas: ControlStanza[] = [];
  let cur: ControlStanza = {};
  let last: string | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      if (Object.keys(cur).length) stanzas.push(cur);
      cur = {};
      last = undefined;
    } else if (/^\s/.test(line)) {
      if (last) cur[last] += '\n' + line.trim();
    } else {
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      last = line.slice(0, colon);
      cur[last] = line.slice(colon + 1).trim();
    }
  }
  if (Object.keys(cur).length) stanzas.push(cur);
  return stanzas;
}

/** Package names in a Depends field, alternatives included, version constraints dropped. */
export function dependsNames(field: string): string[] {
  return field
    .split(/[,|]/)
    .map((s) =>
      s
        .trim()
        .replace(/\s*\(.*\)$/, '')
        .replace(/:any$/, ''),
    )
    .filter(Boolean);
}

export interface AptPackage {
  name: string;
  version: string;
  arch: string;
  sha256: string;
  size: number;
}

/** The file name `apt-get download` gives a package (the epoch colon is URL-encoded). */
export function debFileName(p: Pick<AptPackage, 'name' | 'version' | 'arch'>): string {
  return `${p.name}_${p.version.replace(/:/g, '%3a')}_${p.arch}.deb`;
}

function aptHint(): string {
  return 'run `apt-get update` (the package lists may be missing or stale) and check the network to the Debian mirror';
}

/** apt's candidate for `name` (what `apt-get download name` would fetch). */
export async function aptCandidate(name: string): Promise<{ pkg: AptPackage; stanza: ControlStanza }> {
  let text: string;
  try {
    text = (await run('apt-cache', ['show', '--no-all-versions', name])).stdout.toString('utf8');
  } catch (err) {
    throw new ImageBuildError('IMG_ERR_PACKAGE', `apt does not know the package ${name}`, { hint: aptHint(), cause: err });
  }
  const stanza = parseControl(text).find((s) => s.Package === name);
  if (!stanza?.Version || !stanza.SHA256)
    throw new ImageBuildError('IMG_ERR_PACKAGE', `apt has no downloadable version of ${name}`, { hint: aptHint() });
  return {
    pkg: { name, version: stanza.Version, arch: stanza.Architecture ?? 'amd64', sha256: stanza.SHA256, size: Number(stanza.Size ?? 0) },
    stanza,
  };
}

/** The real kernel package the metapackage (linux-image-amd64) depends on, e.g. linux-image-6.1.0-56-amd64. */
export async function resolveKernelPackage(metapackage: string): Promise<string> {
  const { stanza } = await aptCandidate(metapackage);
  const real = dependsNames(stanza.Depends ?? '').find((n) => /^linux-image-\d/.test(n));
  if (!real)
    throw new ImageBuildError('IMG_ERR_PACKAGE', `${metapackage} does not name a kernel package (Depends: ${stanza.Depends ?? 'none'})`, {
      hint: aptHint(),
    });
  return real;
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/**
 * The cached .deb for `pkg`, downloading it first if it is missing or does not match the
 * archive's SHA256. Returns the file's path.
 */
export async function fetchPackage(pkg: AptPackage, cacheDir: string): Promise<{ path: string; downloaded: boolean }> {
  mkdirSync(cacheDir, { recursive: true });
  const final = join(cacheDir, debFileName(pkg));
  if (existsSync(final) && sha256File(final) === pkg.sha256) return { path: final, downloaded: false };
  const partial = join(cacheDir, `.partial-${process.pid}-${pkg.name}`);
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  try {
    // As root apt would drop to the _apt user, which cannot write our cache; downloading as root is what it falls back to anyway.
    const sandbox = process.getuid?.() === 0 ? ['-o', 'APT::Sandbox::User=root'] : [];
    try {
      await run('apt-get', [...sandbox, '-q', 'download', `${pkg.name}=${pkg.version}`], { cwd: partial });
    } catch (err) {
      throw new ImageBuildError('IMG_ERR_PACKAGE', `could not download ${pkg.name} ${pkg.version}: ${(err as Error).message}`, {
        hint: aptHint(),
        cause: err,
      });
    }
    const got = join(partial, debFileName(pkg));
    if (!existsSync(got))
      throw new ImageBuildError('IMG_ERR_PACKAGE', `apt-get download did not write ${debFileName(pkg)}`, { hint: aptHint() });
    const sum = sha256File(got);
    if (sum !== pkg.sha256)
      throw new ImageBuildError('IMG_ERR_PACKAGE', `${debFileName(pkg)}: sha256 ${sum} does not match the archive's ${pkg.sha256}`, {
        hint: aptHint(),
      });
    renameSync(got, final);
    return { path: final, downloaded: true };
  } finally {
    rmSync(partial, { recursive: true, force: true });
  }
}

/** The newest cached .deb whose package name matches, for building offline when apt cannot answer. */
export function newestCached(cacheDir: string, namePattern: RegExp): string | undefined {
  if (!existsSync(cacheDir)) return undefined;
  const hits = readdirSync(cacheDir)
    .filter((f) => f.endsWith('.deb') && namePattern.test(f.slice(0, f.indexOf('_'))))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const last = hits.at(-1);
  return last ? join(cacheDir, last) : undefined;
}
