/**
 * Streams chunks through `zstd` into a file. The Debian kernel unpacks zstd initramfs
 * (CONFIG_RD_ZSTD=y). zstd's multi-threaded mode gives the same bytes for any worker count
 * (-T1 and -T8 agree), so builds stay reproducible across machines; we never use its
 * single-thread mode (--single-thread), which encodes differently.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { ImageBuildError } from './errors.js';
import { toolFailed } from './tools.js';

/** zstd's normal maximum; 20-22 need --ultra and a window the kernel must allocate while unpacking. */
const ZSTD_MAX_NORMAL_LEVEL = 19;

export interface ZstdOptions {
  level: number;
  /** Worker threads (default: every core). Does not change the output. */
  threads?: number;
}

export function zstdArgs(opts: ZstdOptions): string[] {
  if (!Number.isInteger(opts.level) || opts.level < 1 || opts.level > 22)
    throw new ImageBuildError('IMG_ERR_OPTION', `zstd level ${opts.level} is not 1..22`);
  const threads = Math.max(1, opts.threads ?? availableParallelism());
  return [...(opts.level > ZSTD_MAX_NORMAL_LEVEL ? ['--ultra'] : []), `-${opts.level}`, `-T${threads}`, '-q', '-c', '--no-progress'];
}

/** Compresses everything `chunks` yields into `outPath`; returns the number of input bytes. */
export async function zstdToFile(chunks: Iterable<Uint8Array>, outPath: string, opts: ZstdOptions): Promise<number> {
  const args = zstdArgs(opts);
  const fd = openSync(outPath, 'w', 0o644);
  try {
    const child = spawn('zstd', args, { stdio: ['pipe', fd, 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const done = new Promise<void>((resolve, reject) => {
      child.on('error', (e: NodeJS.ErrnoException) =>
        reject(
          e.code === 'ENOENT'
            ? new ImageBuildError('IMG_ERR_MISSING_TOOL', 'missing program: zstd', { hint: 'apt-get install zstd', cause: e })
            : e,
        ),
      );
      child.on('close', (code, signal) => (code === 0 ? resolve() : reject(toolFailed('zstd', args, code, signal, stderr))));
    });
    done.catch(() => {});
    const stdin = child.stdin!;
    let broken: Error | undefined;
    stdin.on('error', (e) => (broken = e)); // EPIPE if zstd died; reported through `done`
    let total = 0;
    for (const chunk of chunks) {
      if (broken) break;
      total += chunk.length;
      if (!stdin.write(chunk)) {
        await new Promise<void>((resume) => {
          const go = () => {
            stdin.off('drain', go);
            stdin.off('close', go);
            resume();
          };
          stdin.on('drain', go);
          stdin.on('close', go);
        });
      }
    }
    stdin.end();
    await done;
    return total;
  } finally {
    closeSync(fd);
  }
}
