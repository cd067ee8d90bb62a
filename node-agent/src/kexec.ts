/**
 * Reboot without the firmware: fetch the kernel and initrds a KexecPlan names, check each
 * against its announced size and sha256, load them with kexec-tools, then jump.
 *
 * The initrds stream into one file in the plan's order (the image's root.cpio first, then the
 * base initrd), each hashed as it passes: a node holds one copy in RAM, not two. The kernel
 * reads concatenated archives; a cpio header must start on a 4-byte boundary and zeros between
 * archives are skipped (init/initramfs.c), so each part is padded to 4 bytes, as GRUB does.
 *
 * `kexec -c -i` first: kexec_load with no integrity checks in purgatory. The agent has just
 * checked every file's sha256; purgatory would hash the ~50 MB again between the old kernel
 * and the new, single-threaded with no SIMD (20-40 s under QEMU's TCG, measured by
 * bench/reboot.ts). Under UEFI Secure Boot's lockdown kexec_load is refused: then `kexec -s`
 * (kexec_file_load, which lockdown allows for Debian's signed kernel, and whose in-kernel
 * purgatory always checks).
 *
 * The program is a parameter: tests pass a stand-in, since a real kexec would replace the
 * host's kernel.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, open, rm, statfs, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileRef, KexecPlan } from '../../dispatcher/src/protocol/messages.js';

/** On the RAM image /run is a tmpfs: the files stay in RAM until the jump. */
export const KEXEC_DIR = '/run/lilcluster/kexec';
/** Debian's kexec-tools, shipped in the base image (image/src/kexec-tools.ts). */
export const KEXEC_PROGRAM = '/usr/sbin/kexec';
/** Per file: a stalled download fails and the node reboots by the firmware instead of hanging. */
export const KEXEC_FETCH_TIMEOUT_MS = 120_000;
/** kexec -l reads and checks the files; it has no reason to take long. */
const KEXEC_RUN_TIMEOUT_MS = 60_000;
export const KERNEL_NAME = 'vmlinuz';
export const INITRD_NAME = 'initrd.img';

export interface KexecOptions {
  dir: string;
  program: string;
  fetchTimeoutMs: number;
  userAgent: string;
}

export const DEFAULT_KEXEC: Omit<KexecOptions, 'userAgent'> = {
  dir: KEXEC_DIR,
  program: KEXEC_PROGRAM,
  fetchTimeoutMs: KEXEC_FETCH_TIMEOUT_MS,
};

/** A refusal naming the file and what was wrong. */
export class KexecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KexecError';
  }
}

export interface FetchedPlan {
  kernel: string;
  initrd: string;
  /** Bytes of the combined initrd (with the padding). */
  initrdBytes: number;
}

/** The argvs that load `files` with `cmdline` (after the program), in the order tried. */
export function loadArgs(files: Pick<FetchedPlan, 'kernel' | 'initrd'>, cmdline: string): string[][] {
  const rest = ['-l', files.kernel, `--initrd=${files.initrd}`, `--command-line=${cmdline}`];
  return [
    ['-c', '-i', ...rest],
    ['-s', ...rest],
  ];
}

/** Downloads and checks every file of the plan into opts.dir; on any refusal nothing is left there. */
export async function fetchPlan(plan: KexecPlan, opts: KexecOptions): Promise<FetchedPlan> {
  await rm(opts.dir, { recursive: true, force: true });
  await mkdir(opts.dir, { recursive: true, mode: 0o700 });
  const kernel = join(opts.dir, KERNEL_NAME);
  const initrd = join(opts.dir, INITRD_NAME);
  try {
    const need = plan.kernel.size + plan.initrds.reduce((n, f) => n + f.size + 3, 0);
    const fs = await statfs(opts.dir);
    const free = fs.bavail * fs.bsize;
    if (free < need) throw new KexecError(`${opts.dir} has ${mib(free)} free, the plan's files need ${mib(need)}`);
    await intoFile(kernel, (out) => download('the kernel', plan.kernel, out, opts));
    let initrdBytes = 0;
    await intoFile(initrd, async (out) => {
      for (const [i, ref] of plan.initrds.entries()) {
        const n = await download(`initrd ${i + 1} of ${plan.initrds.length}`, ref, out, opts);
        const pad = (4 - (n % 4)) % 4;
        if (pad && i < plan.initrds.length - 1) await out.write(Buffer.alloc(pad));
        initrdBytes += n + (i < plan.initrds.length - 1 ? pad : 0);
      }
    });
    return { kernel, initrd, initrdBytes };
  } catch (err) {
    await rm(opts.dir, { recursive: true, force: true });
    throw err;
  }
}

/** fetchPlan, then `kexec -l` (the ways loadArgs gives): after this, execKexec jumps into the plan's kernel. */
export async function loadPlan(plan: KexecPlan, opts: KexecOptions): Promise<FetchedPlan> {
  const files = await fetchPlan(plan, opts);
  const errors: string[] = [];
  for (const args of loadArgs(files, plan.cmdline)) {
    const r = await runKexec(opts.program, args, '-l');
    if (!r.error) return files;
    errors.push(`kexec ${args[0]}: ${r.error}`);
  }
  await rm(opts.dir, { recursive: true, force: true });
  throw new KexecError(`kexec could not load ${files.kernel}: ${errors.join('; ')}`);
}

/** `kexec -e`: on success it does not return. When it does, the reason. */
export async function execLoaded(opts: Pick<KexecOptions, 'program'>): Promise<string> {
  const r = await runKexec(opts.program, ['-e'], '-e');
  return `kexec -e returned: ${r.error ?? 'exit status 0, yet this kernel still runs'}`;
}

/** `kexec -u`: a loaded kernel that failed to start must not be picked up by a later reboot. */
export async function unloadKexec(opts: Pick<KexecOptions, 'program'>): Promise<void> {
  await runKexec(opts.program, ['-u'], '-u');
}

async function intoFile(path: string, fill: (out: FileHandle) => Promise<unknown>): Promise<void> {
  const out = await open(path, 'w', 0o600);
  try {
    await fill(out);
  } finally {
    await out.close();
  }
}

/** Streams `ref` into `out`, hashing as it goes; returns the bytes written (= ref.size). */
async function download(what: string, ref: FileRef, out: FileHandle, opts: KexecOptions): Promise<number> {
  const name = `${what} (${ref.url})`;
  const signal = AbortSignal.timeout(opts.fetchTimeoutMs);
  const timedOut = () => new KexecError(`${name}: not received within ${opts.fetchTimeoutMs / 1000} s`);
  let res: Response;
  try {
    res = await fetch(ref.url, { headers: { 'user-agent': opts.userAgent }, signal });
  } catch (err) {
    if (signal.aborted) throw timedOut();
    throw new KexecError(`${name}: ${fetchFailure(err)}`);
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel().catch(() => {});
    throw new KexecError(`${name}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`);
  }
  const announced = Number(res.headers.get('content-length') ?? Number.NaN);
  if (Number.isFinite(announced) && announced > ref.size) {
    await res.body.cancel().catch(() => {});
    throw new KexecError(`${name}: the server sends ${announced} bytes, the plan announced ${ref.size}`);
  }
  const hash = createHash('sha256');
  let n = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      n += chunk.length;
      if (n > ref.size) throw new KexecError(`${name}: more than the ${ref.size} bytes the plan announced`);
      hash.update(chunk);
      await out.write(chunk);
    }
  } catch (err) {
    await res.body.cancel().catch(() => {});
    if (err instanceof KexecError) throw err;
    if (signal.aborted) throw timedOut();
    throw new KexecError(`${name}: the download broke off after ${n} bytes (${fetchFailure(err)})`);
  }
  if (n !== ref.size) throw new KexecError(`${name}: ${n} bytes, the plan announced ${ref.size}`);
  const got = hash.digest('hex');
  if (got !== ref.sha256) throw new KexecError(`${name}: sha256 ${got.slice(0, 12)}… is not the announced ${ref.sha256.slice(0, 12)}…`);
  return n;
}

function fetchFailure(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message;
}

/** Runs kexec; `error` says how it failed (with the tail of its stderr), absent on exit status 0. */
function runKexec(program: string, args: string[], label: string): Promise<{ error?: string }> {
  return new Promise((resolve) => {
    const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: KEXEC_RUN_TIMEOUT_MS, killSignal: 'SIGKILL' });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (c: string) => {
      if (stderr.length < 8192) stderr += c;
    });
    child.once('error', (err: NodeJS.ErrnoException) =>
      resolve({ error: err.code === 'ENOENT' ? `${program} is not installed (the image lacks kexec-tools)` : err.message }),
    );
    child.once('close', (code, signal) => {
      if (code === 0) return resolve({});
      const said = stderr.trim().split('\n').slice(-3).join(' / ');
      const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
      resolve({ error: `${program} ${label} ${how}${said ? `: ${said}` : ''}` });
    });
  });
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
