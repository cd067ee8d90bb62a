/**
 * FROM=: a container image fetched with skopeo into one content-addressed OCI layout, the
 * cache (<cache>/oci: blobs by sha256, shared by every image), and unpacked with umoci
 * (layers in order, OCI whiteouts and opaque directories, owners, modes, symlinks, hard links).
 *
 *   skopeo inspect --raw REF → the source's manifest digest (the cache key; nothing fetched)
 *   skopeo copy REF@digest oci:<cache>/oci:src-<hex>   (only when the cache lacks it; blobs it has are reused)
 *   umoci unpack --image <cache>/oci:src-<hex> BUNDLE  (BUNDLE/rootfs)
 *
 * skopeo finds registry credentials itself (containers-auth.json(5): $REGISTRY_AUTH_FILE,
 * $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json); the builder never sees or
 * prints them. TLS is verified except for a registry on loopback (a test registry is plain HTTP).
 * Writers of the shared layout hold an exclusive flock on <cache>/oci.lock, readers a shared one.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageBuildError, type ImageErrorCode } from './errors.js';
import { isLoopbackRegistry, type ContainerSource } from './root-source.js';
import { run } from './tools.js';

export const OCI_CACHE = 'oci';
const REF_ANNOTATION = 'org.opencontainers.image.ref.name';
const DIGEST = /^sha256:[0-9a-f]{64}$/;

// ---------------------------------------------------------------- pure: the layout's JSON

interface Descriptor {
  digest: string;
  mediaType: string | undefined;
  annotations: Record<string, string>;
}

function descriptor(x: unknown): Descriptor | undefined {
  if (typeof x !== 'object' || x === null) return undefined;
  const d = x as Record<string, unknown>;
  if (typeof d.digest !== 'string' || !DIGEST.test(d.digest)) return undefined;
  const ann = typeof d.annotations === 'object' && d.annotations !== null ? (d.annotations as Record<string, unknown>) : {};
  return {
    digest: d.digest,
    mediaType: typeof d.mediaType === 'string' ? d.mediaType : undefined,
    annotations: Object.fromEntries(Object.entries(ann).filter((e): e is [string, string] => typeof e[1] === 'string')),
  };
}

/** The digest of the manifest that an OCI index (index.json) names `ref`, if any. */
export function manifestForRef(index: unknown, ref: string): string | undefined {
  const list = (index as { manifests?: unknown } | null)?.manifests;
  if (!Array.isArray(list)) return undefined;
  return list.map(descriptor).find((d) => d?.annotations[REF_ANNOTATION] === ref)?.digest;
}

/** An image manifest's config and layer digests; undefined for anything else (an index, garbage). */
export function parseImageManifest(json: unknown): { config: string; layers: string[] } | undefined {
  const m = json as { config?: unknown; layers?: unknown } | null;
  const config = descriptor(m?.config);
  if (!config || !Array.isArray(m?.layers)) return undefined;
  const layers = m.layers.map(descriptor);
  if (layers.some((l) => !l)) return undefined;
  return { config: config.digest, layers: layers.map((l) => l!.digest) };
}

/** PATH from an OCI image config's `config.Env` ("PATH=/usr/bin:/bin"), if it sets one. */
export function configPath(json: unknown): string | undefined {
  const env = (json as { config?: { Env?: unknown } } | null)?.config?.Env;
  if (!Array.isArray(env)) return undefined;
  for (const e of env) if (typeof e === 'string' && e.startsWith('PATH=')) return e.slice(5);
  return undefined;
}

/** Redacts what could be a secret in a tool's message: user:password@ in URLs, token=/password= values. */
export function redact(text: string): string {
  return text.replace(/(\/\/)[^/@\s]+:[^/@\s]+@/g, '$1***@').replace(/((?:token|password|secret)=)[^&\s"]+/gi, '$1***');
}

/** skopeo's logrus lines (`time="…" level=fatal msg="…"`) as their message alone. */
function logMessage(line: string): string {
  const m = /\blevel=\w+ msg="((?:[^"\\]|\\.)*)"/.exec(line);
  return (m ? m[1]!.replace(/\\(.)/g, '$1') : line).trim();
}

export interface SourceFailure {
  code: ImageErrorCode;
  message: string;
  hint: string;
}

/** What skopeo's (or umoci's) stderr says went wrong with FROM=, in our words; undefined if we do not recognise it. */
export function classifyFetchFailure(
  stderr: string,
  src: Pick<ContainerSource, 'ref' | 'registry' | 'localPath'>,
): SourceFailure | undefined {
  const said = redact(
    stderr
      .trim()
      .split('\n')
      .map(logMessage)
      .filter((l) => l)
      .slice(-3)
      .join(' / '),
  );
  const where = src.registry ? `registry ${src.registry}` : 'the source';
  if (/digest did not match|digest mismatch|verified reader/i.test(stderr))
    return {
      code: 'IMG_ERR_DIGEST',
      message: `${src.ref}: a blob does not match its digest (${said})`,
      hint: src.registry
        ? 'the registry served damaged or altered content: push the image again, or check what sits between you and the registry'
        : `the image at ${src.localPath ?? src.ref} is damaged: export it again`,
    };
  if (/unauthorized|authentication required|denied|403 forbidden|invalid username\/password/i.test(stderr))
    return {
      code: 'IMG_ERR_REGISTRY_AUTH',
      message: `${where} refuses ${src.ref}: it wants credentials, or other ones (${said})`,
      hint: `log in with \`skopeo login ${src.registry ?? 'REGISTRY'}\`, or point REGISTRY_AUTH_FILE at an auth.json that holds them (containers-auth.json(5))`,
    };
  if (/manifest unknown|name unknown|not found|does not exist|no such image|no such file or directory|no descriptor found/i.test(stderr))
    return {
      code: 'IMG_ERR_FROM',
      message: `no image ${src.ref} (${said})`,
      hint: src.registry
        ? `check the name and tag (skopeo list-tags docker://${src.registry}/NAME lists the tags)`
        : 'check the path and the tag (an oci: layout lists its tags in index.json)',
    };
  if (/connection refused|no such host|i\/o timeout|network is unreachable|dial tcp|server gave http response|tls: /i.test(stderr))
    return {
      code: 'IMG_ERR_FROM',
      message: `cannot reach ${where} for ${src.ref} (${said})`,
      hint: 'check the registry address and that it is running; only a registry on 127.0.0.1/localhost is reached over plain HTTP',
    };
  return undefined;
}

// ---------------------------------------------------------------- I/O

function tlsArgs(src: ContainerSource, flag: string): string[] {
  return src.registry && isLoopbackRegistry(src.registry) ? [`${flag}=false`] : [];
}

/** skopeo/umoci failure as our error: recognised ones by kind, others as the tool's failure (stderr redacted). */
async function fetchStep<T>(src: ContainerSource, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (err instanceof ImageBuildError && err.code === 'IMG_ERR_TOOL_FAILED') {
      // The tool's stderr tail follows the command line (toolFailed); the command names nothing wrong.
      const f = classifyFetchFailure(err.message.slice(err.message.indexOf(':\n') + 1), src);
      if (f) throw new ImageBuildError(f.code, f.message, { hint: f.hint, cause: err });
      throw new ImageBuildError('IMG_ERR_TOOL_FAILED', redact(err.message), { cause: err });
    }
    throw err;
  }
}

/**
 * The digest of the source's manifest (an image manifest, or a list/index of them) without
 * fetching the image: `skopeo inspect --raw`. A FROM that does not exist, a registry that
 * refuses, an unreachable one all fail here, before anything is built.
 */
export async function sourceDigest(src: ContainerSource): Promise<string> {
  if (src.localPath && !existsSync(src.localPath))
    throw new ImageBuildError('IMG_ERR_FROM', `no image ${src.ref}: ${src.localPath} does not exist`, {
      hint: `check the path (relative paths are taken from where make runs)`,
    });
  const { stdout } = await fetchStep(src, () => run('skopeo', ['inspect', '--raw', ...tlsArgs(src, '--tls-verify'), src.ref]));
  return `sha256:${createHash('sha256').update(stdout).digest('hex')}`;
}

/** The reference that pins what was inspected: docker://host/name@sha256:... (a tag may move between inspect and copy). */
export function pinnedRef(src: ContainerSource, digest: string): string {
  if (src.transport !== 'docker') return src.ref;
  const name = src.ref.replace(/@sha256:[0-9a-f]{64}$/, '');
  const lastSlash = name.lastIndexOf('/');
  const colon = name.indexOf(':', lastSlash + 1);
  return `${colon > lastSlash ? name.slice(0, colon) : name}@${digest}`;
}

export interface CachedImage {
  layout: string;
  /** The image's name inside the layout (src-<hex of the source digest>). */
  refName: string;
  /** The OCI manifest digest of the stored image (after skopeo's conversion to OCI media types). */
  manifestDigest: string;
  config: unknown;
  fetched: boolean;
}

function readJson(path: string): unknown {
  return JSON.parse(readFileSync(path, 'utf8'));
}

const blobPath = (layout: string, digest: string) => join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));

/** The stored image named refName, when the layout has it and every blob it names. */
function lookup(layout: string, refName: string): Omit<CachedImage, 'fetched'> | undefined {
  try {
    const manifestDigest = manifestForRef(readJson(join(layout, 'index.json')), refName);
    if (!manifestDigest || !existsSync(blobPath(layout, manifestDigest))) return undefined;
    const m = parseImageManifest(readJson(blobPath(layout, manifestDigest)));
    if (!m || ![m.config, ...m.layers].every((d) => existsSync(blobPath(layout, d)))) return undefined;
    return { layout, refName, manifestDigest, config: readJson(blobPath(layout, m.config)) };
  } catch {
    return undefined;
  }
}

/** The image in the cache, copied there first unless a previous build did (same source digest). */
export async function fetchToCache(
  src: ContainerSource,
  digest: string,
  cacheDir: string,
  progress: (detail: string) => void,
): Promise<CachedImage> {
  const layout = join(cacheDir, OCI_CACHE);
  const lock = join(cacheDir, `${OCI_CACHE}.lock`);
  mkdirSync(cacheDir, { recursive: true });
  const refName = `src-${digest.slice('sha256:'.length)}`;
  const have = lookup(layout, refName);
  if (have) return { ...have, fetched: false };
  await fetchStep(src, () =>
    run(
      'flock',
      [
        lock,
        'skopeo',
        'copy',
        '--remove-signatures',
        ...tlsArgs(src, '--src-tls-verify'),
        pinnedRef(src, digest),
        `oci:${layout}:${refName}`,
      ],
      { onLine: (l) => /^Copying (blob|config)/.test(l) && progress(l.trim()) },
    ),
  );
  const got = lookup(layout, refName);
  if (!got)
    throw new ImageBuildError('IMG_ERR_FROM', `${src.ref}: skopeo copied it, but the cache ${layout} does not hold it as ${refName}`, {
      hint: `an image with more than one platform and none for linux/amd64? (skopeo inspect ${src.ref})`,
    });
  return { ...got, fetched: true };
}

/**
 * umoci unpack into bundle/rootfs. As root owners are kept; otherwise --rootless (owners
 * become the building user, device nodes are skipped: the caller warns).
 */
export async function unpackImage(
  src: ContainerSource,
  img: CachedImage,
  cacheDir: string,
  bundle: string,
  rootless: boolean,
): Promise<string> {
  await fetchStep(src, () =>
    run('flock', [
      '--shared',
      join(cacheDir, `${OCI_CACHE}.lock`),
      'umoci',
      'unpack',
      ...(rootless ? ['--rootless'] : []),
      '--image',
      `${img.layout}:${img.refName}`,
      bundle,
    ]),
  );
  return join(bundle, 'rootfs');
}
