/**
 * Test harness: the real dispatcher bundle (dist/bin/dispatcher.mjs, `make build`) as a
 * child process on loopback, with `--dhcp off`, ports chosen by the kernel (read back from
 * its log), a temp data dir, and boot files the test writes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DISPATCHER_BIN = resolve(fileURLToPath(import.meta.url), '../../../../dist/bin/dispatcher.mjs');

export interface BootTree {
  dir: string;
  pxeDir: string;
  imageDir: string;
  files: Record<string, Buffer>;
}

/** Writes random boot files (sizes like the real ones, smaller image) into a temp tree. */
export function makeBootTree(sizes: Partial<Record<string, number>> = {}): BootTree {
  const dir = mkdtempSync(join(tmpdir(), 'lc-boot-'));
  const pxeDir = join(dir, 'pxe');
  const imageDir = join(dir, 'image');
  mkdirSync(pxeDir);
  mkdirSync(imageDir);
  const want: Record<string, number> = { 'undionly.kpxe': 74_213, 'ipxe.efi': 1_048_576, 'snponly.efi': 173_792, vmlinuz: 3_000_000, 'initrd.img': 12_000_000 };
  for (const [k, v] of Object.entries(sizes)) if (v !== undefined) want[k] = v;
  const files: Record<string, Buffer> = {};
  for (const [name, size] of Object.entries(want)) {
    if (size < 0) continue; // negative size: leave the file out
    files[name] = randomBytes(size);
    writeFileSync(join(['vmlinuz', 'initrd.img'].includes(name) ? imageDir : pxeDir, name), files[name]);
  }
  return { dir, pxeDir, imageDir, files };
}

export interface DispatcherProcess {
  proc: ChildProcess;
  httpPort: number;
  tftpPort: number;
  /** Every JSON log line so far. */
  logs: Record<string, unknown>[];
  stderr: () => string;
  stop(): Promise<void>;
}

export async function spawnDispatcher(tree: BootTree, extraArgs: string[] = [], opts: { netns?: string } = {}): Promise<DispatcherProcess> {
  if (!existsSync(DISPATCHER_BIN)) throw new Error(`${DISPATCHER_BIN} missing: run make build`);
  const args = [
    DISPATCHER_BIN, '--dhcp', 'off', '--tftp-port', '0', '--http-port', '0', '--http-host', '127.0.0.1', '--advertise-address', '127.0.0.1',
    '--data-dir', join(tree.dir, 'data'), '--image', tree.imageDir, '--pxe-dir', tree.pxeDir, ...extraArgs,
  ];
  const proc = opts.netns ? spawn('ip', ['netns', 'exec', opts.netns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Record<string, unknown>[] = [];
  let err = '';
  let buf = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        /* not a log line */
      }
    }
  });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const deadline = Date.now() + 15_000;
  let tftpPort = 0;
  let httpPort = 0;
  while (Date.now() < deadline) {
    tftpPort ||= Number(logs.find((l) => l.msg === 'TFTP listening')?.port ?? 0);
    httpPort ||= Number(logs.find((l) => l.msg === 'dispatcher started')?.httpPort ?? 0);
    if (httpPort && (tftpPort || extraArgs.includes('--no-tftp'))) break;
    if (proc.exitCode !== null) throw new Error(`dispatcher exited ${proc.exitCode}: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!httpPort) {
    proc.kill('SIGKILL');
    throw new Error(`dispatcher did not start: ${err}`);
  }
  return {
    proc,
    httpPort,
    tftpPort,
    logs,
    stderr: () => err,
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}
