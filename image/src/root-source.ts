/**
 * What a node's root comes from (`FROM=` a container image, or `PACKAGES=` a Debian package
 * set) and the small text it carries beside its squashfs (root.env). Pure: parsing and
 * formatting only; fetching is oci.ts and debian-root.ts, packing root-image.ts.
 */
import { ImageBuildError } from './errors.js';

/** The transports of containers-transports(5) that `FROM=` accepts, as skopeo spells them. */
export const FROM_TRANSPORTS = ['docker', 'oci', 'oci-archive', 'docker-archive', 'containers-storage'] as const;
export type FromTransport = (typeof FROM_TRANSPORTS)[number];

export interface ContainerSource {
  kind: 'container';
  transport: FromTransport;
  /** The reference skopeo is given: `docker://host/name:tag`, `oci:/abs/dir:tag`, ... */
  ref: string;
  /** For docker://: the registry host (with its port), e.g. `127.0.0.1:5000` or `docker.io`. */
  registry: string | undefined;
  /** For oci:, oci-archive:, docker-archive:: the local path (absolute), checked to exist before skopeo runs. */
  localPath: string | undefined;
  /** A name for the image when IMAGE= is not given: the repository's last component or the file's. */
  defaultName: string;
}

export interface PackageSource {
  kind: 'packages';
  /** As given, order kept (apt resolves the same set in any order; the cache key sorts them). */
  packages: string[];
  defaultName: string;
}

export type RootSource = ContainerSource | PackageSource;

/** Debian policy 5.6.1: lower case letters, digits, + - . ; at least two characters, starting alphanumeric. */
const DEB_NAME = /^[a-z0-9][a-z0-9+.-]+$/;
/** An image name is a folder name (dist/images/<IMAGE>) and a word in the dispatcher's lists. */
const IMAGE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

const opt = (name: string, message: string, hint: string) => new ImageBuildError('IMG_ERR_OPTION', `${name}: ${message}`, { hint });

function sanitizeName(raw: string): string {
  const s = raw
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 63)
    .replace(/[._-]+$/, '');
  return s || 'root';
}

export function parseImageName(value: string): string {
  if (!IMAGE_NAME.test(value))
    throw opt(
      `IMAGE=${JSON.stringify(value)}`,
      'not an image name',
      'lower-case letters, digits, . _ - (up to 63, starting with a letter or digit)',
    );
  return value;
}

/** A registry on this machine: the only ones skopeo may reach over plain HTTP (`--tls-verify=false`). */
export function isLoopbackRegistry(host: string): boolean {
  const h = host.replace(/:\d+$/, '');
  return h === '127.0.0.1' || h === 'localhost' || h === '[::1]';
}

/**
 * Parses FROM=. `resolvePath` turns a local path into an absolute one (the caller's working
 * directory); the reference handed to skopeo then uses the absolute path.
 */
export function parseFrom(value: string, resolvePath: (p: string) => string): ContainerSource {
  const v = value.trim();
  // eslint-disable-next-line no-control-regex
  if (v === '' || /[\s\x00-\x1f\x7f]/.test(v))
    throw opt(`FROM=${JSON.stringify(value)}`, 'empty or has spaces or control characters', 'e.g. FROM=docker://debian:bookworm-slim');
  const colon = v.indexOf(':');
  const transport = colon > 0 ? v.slice(0, colon) : '';
  if (!(FROM_TRANSPORTS as readonly string[]).includes(transport))
    throw opt(
      `FROM=${v}`,
      `unknown transport "${transport || v}"`,
      `start it with one of ${FROM_TRANSPORTS.map((t) => (t === 'docker' ? 'docker://' : `${t}:`)).join(', ')}`,
    );
  const rest = v.slice(colon + 1);
  switch (transport as FromTransport) {
    case 'docker': {
      if (!rest.startsWith('//') || rest.length <= 2)
        throw opt(`FROM=${v}`, 'a docker reference is docker://[registry/]name[:tag|@digest]', 'e.g. FROM=docker://127.0.0.1:5000/ml:1');
      const name = rest.slice(2);
      const slash = name.indexOf('/');
      const first = slash > 0 ? name.slice(0, slash) : '';
      // docker's rule (distribution/reference): a first component with a dot, a colon or "localhost" is a registry.
      const registry = first && (first.includes('.') || first.includes(':') || first === 'localhost') ? first : 'docker.io';
      const repo = (registry === 'docker.io' ? name : name.slice(slash + 1)).replace(/@.*$/, '').replace(/:[^/]*$/, '');
      if (!repo || /\/\/|^\/|\/$/.test(repo)) throw opt(`FROM=${v}`, 'no repository name', 'e.g. FROM=docker://127.0.0.1:5000/ml:1');
      return {
        kind: 'container',
        transport: 'docker',
        ref: v,
        registry,
        localPath: undefined,
        defaultName: sanitizeName(repo.split('/').pop()!),
      };
    }
    case 'oci':
    case 'oci-archive':
    case 'docker-archive': {
      // PATH[:reference]: skopeo splits at the first colon, so a path with a colon cannot be named.
      const c = rest.indexOf(':');
      const path = c >= 0 ? rest.slice(0, c) : rest;
      const tag = c >= 0 ? rest.slice(c + 1) : '';
      // The folder or file names the image; a tag is a version of it.
      if (!path)
        throw opt(`FROM=${v}`, `no path after ${transport}:`, `e.g. FROM=${transport}:./my-image${transport === 'oci' ? ':latest' : ''}`);
      const abs = resolvePath(path);
      const base = abs.split('/').filter(Boolean).pop() ?? 'root';
      return {
        kind: 'container',
        transport: transport as FromTransport,
        ref: `${transport}:${abs}${tag ? `:${tag}` : ''}`,
        registry: undefined,
        localPath: abs,
        defaultName: sanitizeName(base.replace(/\.(tar|tgz|tar\.gz)$/, '')),
      };
    }
    case 'containers-storage': {
      if (!rest) throw opt(`FROM=${v}`, 'no image name after containers-storage:', 'e.g. FROM=containers-storage:localhost/ml:latest');
      const repo = rest
        .replace(/^\[[^\]]*\]/, '')
        .replace(/@.*$/, '')
        .replace(/:[^/]*$/, '');
      return {
        kind: 'container',
        transport: 'containers-storage',
        ref: v,
        registry: undefined,
        localPath: undefined,
        defaultName: sanitizeName(repo.split('/').pop() ?? rest),
      };
    }
  }
}

/**
 * Parses PACKAGES= ("python3-numpy r-base-core", spaces or commas): Debian package names, each
 * optionally pinned (`name=version`), at least one, no duplicates.
 */
export function parsePackages(value: string): PackageSource {
  const words = value.split(/[\s,]+/).filter(Boolean);
  if (words.length === 0) throw opt('PACKAGES', 'names no package', 'e.g. PACKAGES="python3-numpy"');
  const seen = new Set<string>();
  for (const w of words) {
    const eq = w.indexOf('=');
    const name = eq >= 0 ? w.slice(0, eq) : w;
    const version = eq >= 0 ? w.slice(eq + 1) : undefined;
    if (!DEB_NAME.test(name) || (version !== undefined && !/^[A-Za-z0-9.+~:-]+$/.test(version)))
      throw opt(
        `PACKAGES entry ${JSON.stringify(w)}`,
        'not a Debian package name (or name=version)',
        'names are lower-case letters, digits and + - . (apt-cache search WORD finds them)',
      );
    if (seen.has(name)) throw opt(`PACKAGES entry ${w}`, `${name} is named twice`, 'name each package once');
    seen.add(name);
  }
  return { kind: 'packages', packages: words, defaultName: sanitizeName(words.map((w) => w.replace(/=.*$/, '')).join('-')) };
}

/** The PATH of a Debian root (Debian's /etc/profile for root; also what an OCI image without one gets). */
export const DEBIAN_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface RootEnv {
  image: string;
  version: string;
  source: string;
  path: string;
  health: string;
  bytes: number;
}

/**
 * etc/lilcluster/root.env: KEY=VALUE lines that /init reads (never sources). A value is one
 * line: NUL, CR and LF are refused (they would forge or cut a line).
 */
export function formatRootEnv(e: RootEnv): string {
  const lines: [string, string][] = [
    ['LC_ROOT_IMAGE', e.image],
    ['LC_ROOT_VERSION', e.version],
    ['LC_ROOT_SOURCE', e.source],
    ['LC_ROOT_PATH', e.path],
    ['LC_ROOT_HEALTH', e.health],
    ['LC_ROOT_BYTES', String(e.bytes)],
  ];
  for (const [k, v] of lines)
    if (/[\0\r\n]/.test(v))
      throw new ImageBuildError('IMG_ERR_OPTION', `${k} would hold a NUL or line break: ${JSON.stringify(v)}`, {
        hint:
          k === 'LC_ROOT_HEALTH'
            ? 'HEALTH_CHECK is one command line'
            : `the value comes from ${k === 'LC_ROOT_PATH' ? "the image's PATH" : 'the options'}`,
      });
  return lines.map(([k, v]) => `${k}=${v}\n`).join('');
}

/** Reads the text formatRootEnv writes (tests, and the dispatcher may use it too). */
export function parseRootEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}
