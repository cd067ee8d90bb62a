/**
 * The host programs the builder runs, checked up front so that a missing one stops the build
 * with its name and the Debian package that provides it, and a helper to run them.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { ImageBuildError } from './errors.js';

/** Each tool the builder may run, with how to get it on Debian 12. */
export const TOOL_HINTS = {
  'apt-get': 'the builder fetches Debian packages with apt: build on Debian 12 (or set KERNEL_DEB/KERNEL+MODULES and BUSYBOX_DEB)',
  'apt-cache': 'the builder resolves Debian packages with apt: build on Debian 12',
  'dpkg-deb': 'apt-get install dpkg',
  zstd: 'apt-get install zstd',
  strip: 'apt-get install binutils',
  ldd: 'apt-get install libc-bin',
  skopeo: 'apt-get install skopeo (FROM= fetches container images with it)',
  umoci: 'apt-get install umoci (FROM= unpacks OCI layers with it)',
  mmdebstrap: 'apt-get install mmdebstrap (PACKAGES= builds Debian roots with it)',
  mksquashfs: 'apt-get install squashfs-tools (FROM= and PACKAGES= pack the root with it)',
  flock: 'apt-get install util-linux (FROM= locks the shared OCI cache with it)',
} as const;
export type Tool = keyof typeof TOOL_HINTS;

/** The path of `name` on $PATH, or undefined. */
export function findOnPath(name: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/** Fails with IMG_ERR_MISSING_TOOL naming every missing tool at once. */
export function requireTools(tools: readonly Tool[]): void {
  const missing = tools.filter((t) => !findOnPath(t));
  if (missing.length === 0) return;
  throw new ImageBuildError('IMG_ERR_MISSING_TOOL', `missing ${missing.length > 1 ? 'programs' : 'program'}: ${missing.join(', ')}`, {
    hint: missing.map((t) => `${t}: ${TOOL_HINTS[t]}`).join('; '),
  });
}

export interface RunResult {
  stdout: Buffer;
  stderr: string;
}

/**
 * Runs a program to completion and collects its output. A non-zero exit becomes
 * IMG_ERR_TOOL_FAILED carrying the command and the tail of its stderr.
 */
export function run(
  cmd: string,
  args: readonly string[],
  opts: {
    cwd?: string;
    input?: Uint8Array;
    env?: NodeJS.ProcessEnv;
    hint?: string;
    /** Called with each complete line of stdout and stderr as it comes (progress of long steps). */
    onLine?: (line: string) => void;
  } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const lines = opts.onLine ? lineSplitter(opts.onLine) : undefined;
    child.stdout!.on('data', (c: Buffer) => {
      out.push(c);
      lines?.out(c);
    });
    child.stderr!.on('data', (c: Buffer) => {
      err.push(c);
      lines?.err(c);
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT')
        reject(
          new ImageBuildError('IMG_ERR_MISSING_TOOL', `missing program: ${cmd}`, { hint: TOOL_HINTS[cmd as Tool] ?? opts.hint, cause: e }),
        );
      else reject(new ImageBuildError('IMG_ERR_TOOL_FAILED', `could not run ${cmd}: ${e.message}`, { cause: e }));
    });
    if (opts.input) child.stdin!.end(opts.input);
    child.on('close', (code, signal) => {
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) resolve({ stdout: Buffer.concat(out), stderr });
      else reject(toolFailed(cmd, args, code, signal, stderr, opts.hint));
    });
  });
}

/** Splits two byte streams into lines (each stream keeps its own partial line). */
function lineSplitter(onLine: (line: string) => void): { out: (c: Buffer) => void; err: (c: Buffer) => void } {
  const feed = () => {
    let rest = '';
    return (c: Buffer) => {
      const parts = (rest + c.toString('utf8')).split(/\r?\n|\r/);
      rest = parts.pop() ?? '';
      for (const p of parts) if (p.trim()) onLine(p);
    };
  };
  return { out: feed(), err: feed() };
}

export function toolFailed(
  cmd: string,
  args: readonly string[],
  code: number | null,
  signal: NodeJS.Signals | null,
  stderr: string,
  hint?: string,
): ImageBuildError {
  const tail = stderr.trim().split('\n').slice(-6).join('\n    ');
  const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
  return new ImageBuildError('IMG_ERR_TOOL_FAILED', `${cmd} ${args.join(' ')} ${how}${tail ? `:\n    ${tail}` : ''}`, hint ? { hint } : {});
}
