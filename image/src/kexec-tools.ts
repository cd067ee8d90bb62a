/**
 * kexec for the base image: the agent reboots a node into another image or version without
 * the firmware (node-agent/src/kexec.ts runs /usr/sbin/kexec). Taken from the build machine's
 * kexec-tools, as the Node runtime is, with exactly the shared libraries the host's loader
 * resolves for it (Debian's build links the libxen* libraries), then checked the way the
 * node's loader will look for them (needed-libs.ts).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ImageBuildError } from './errors.js';
import { missingLibraries } from './needed-libs.js';
import { parseLdd } from './node-runtime.js';
import type { Rootfs } from './rootfs.js';
import { run } from './tools.js';

/** Where Debian's kexec-tools puts it, on the build machine and in the image. */
export const KEXEC_PATH = '/usr/sbin/kexec';
const HINT = 'apt-get install kexec-tools (the agent reboots nodes into another image with it, skipping the firmware)';

export interface KexecTools {
  /** "kexec-tools 2.0.25", for the progress line and the manifest. */
  version: string;
  binary: Buffer;
  /** Its libraries and program interpreter, at the paths the host's loader found them. */
  files: { path: string; data: Buffer }[];
  /** sha256 over the program and its libraries, for the image's up-to-date check. */
  digest: string;
}

/** The build machine's kexec and its libraries; IMG_ERR_MISSING_TOOL when kexec-tools is not installed. */
export async function collectKexecTools(path = KEXEC_PATH): Promise<KexecTools> {
  let binary: Buffer;
  try {
    binary = readFileSync(path);
  } catch (err) {
    throw new ImageBuildError(
      'IMG_ERR_MISSING_TOOL',
      `kexec-tools is not installed on the build machine (${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      { hint: HINT, cause: err },
    );
  }
  const version = (await run(path, ['--version'], { hint: HINT })).stdout.toString('utf8').trim().split('\n')[0] ?? '';
  const ldd = parseLdd((await run('ldd', [path], { hint: 'apt-get install libc-bin' })).stdout.toString('utf8'));
  if (ldd.notFound.length)
    throw new ImageBuildError('IMG_ERR_INPUT', `${path} needs libraries the loader cannot find: ${ldd.notFound.join(', ')}`, {
      hint: 'apt-get install --reinstall kexec-tools (its dependencies are missing)',
    });
  const files = new Map<string, Buffer>();
  for (const lib of ldd.libraries) files.set(lib.path, readFileSync(lib.path)); // follows symlinks: the real file
  if (ldd.interpreter) files.set(ldd.interpreter, readFileSync(ldd.interpreter));
  const hash = createHash('sha256').update(binary);
  for (const [p, data] of [...files].sort(([a], [b]) => (a < b ? -1 : 1))) hash.update(`\0${p}\0`).update(data);
  return { version, binary, files: [...files].map(([p, data]) => ({ path: p, data })), digest: hash.digest('hex') };
}

/**
 * Puts kexec and its libraries into the image (a library the image already has, such as libc
 * beside Node, is the same host file and is added once), then checks that the node's loader
 * finds every library it needs.
 */
export function addKexecTools(fs: Rootfs, k: KexecTools, libraryPath: readonly string[] = []): void {
  fs.addFile(KEXEC_PATH, k.binary, 0o755);
  for (const f of k.files) fs.addFile(f.path, f.data, /\/ld-linux/.test(f.path) ? 0o755 : 0o644);
  const missing = missingLibraries(fs, [{ path: KEXEC_PATH, data: k.binary }], libraryPath);
  if (missing.length)
    throw new ImageBuildError('IMG_ERR_INPUT', `${KEXEC_PATH} in the image would not find ${missing.map((m) => m.soname).join(', ')}`, {
      hint: HINT,
    });
}

/** Bytes kexec adds to the image (the program and its libraries; shared ones counted too). */
export function kexecToolsSize(k: KexecTools): number {
  return k.binary.length + k.files.reduce((n, f) => n + f.data.length, 0);
}
