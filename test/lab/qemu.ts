/**
 * QEMU machines for tests, benchmarks and `make demo`: one x86-64 machine per instance,
 * booted either straight into a kernel + initrd (-kernel/-initrd) or from the network (PXE),
 * under BIOS (SeaBIOS, with QEMU's iPXE option ROM on the NIC) or UEFI (OVMF; by default
 * with the NIC's option ROM removed, so OVMF's own PXE client boots), on a user-mode
 * (slirp) or tap network. The serial console goes to a file, which the instance tails.
 *
 *   const vm = await QemuMachine.start({
 *     name: 'node1',
 *     boot: { kind: 'kernel', kernel: 'dist/image/vmlinuz', initrd: 'dist/image/initrd.img',
 *             append: 'console=ttyS0 lc.dispatcher=http://10.0.2.2:8080' },
 *     nics: [{ net: { kind: 'user' } }],            // or { kind: 'tap', ifname: 'lc-tap0' }
 *     consoleLog: 'test/artifacts/node1.console.log',
 *   });
 *   await vm.waitForConsole(/lc-init: starting node-agent/, 60_000);
 *   await vm.stop();
 *
 *   PXE under UEFI on a tap the test made (in a namespace of its own):
 *     { name, firmware: 'uefi', boot: { kind: 'pxe' }, nics: [{ net: { kind: 'tap', ifname }, mac }], consoleLog, netns }
 *
 * KVM is not available on our machines: the accelerator is TCG unless told otherwise.
 * Every started machine is killed when the Node process exits, and `killByPidFile`
 * stops one started by another process (the demo's `make demo-stop`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export type Firmware = 'bios' | 'uefi';

export type BootSource =
  /** Direct kernel boot through QEMU's fw_cfg: no boot loader, no network boot. */
  | { kind: 'kernel'; kernel: string; initrd: string; append?: string }
  /** Network boot from the first NIC (bootindex=1; there are no disks). */
  | { kind: 'pxe' };

export type NetBackend =
  /**
   * QEMU's user-mode network: the guest is 10.0.2.15, the host is reachable as 10.0.2.2
   * (connections to it arrive on the host's 127.0.0.1), QEMU answers DHCP itself.
   */
  | {
      kind: 'user';
      /** Hostname QEMU's DHCP server hands out (option 12). */
      hostname?: string;
      /** host 127.0.0.1:hostPort → guest:guestPort */
      hostForwards?: { hostPort: number; guestPort: number; proto?: 'tcp' | 'udp' }[];
      /** Serve this folder over QEMU's built-in TFTP, and name `bootfile` in DHCP answers. */
      tftp?: string;
      bootfile?: string;
    }
  /** An existing tap device (the caller creates it and bridges it, e.g. in a test namespace). */
  | { kind: 'tap'; ifname: string };

export type NicModel = 'virtio-net-pci' | 'e1000' | 'e1000e' | 'rtl8139' | 'vmxnet3';

export interface NicOptions {
  net: NetBackend;
  /** Default virtio-net-pci. */
  model?: NicModel;
  /** e.g. 52:54:00:12:34:56; default chosen by QEMU. */
  mac?: string;
  /**
   * The NIC's option ROM: 'default' (QEMU's iPXE ROM for the model), 'none' (romfile=, so
   * UEFI uses OVMF's own network stack), or a ROM file. Default: 'default' under BIOS,
   * 'none' under UEFI.
   */
  rom?: 'default' | 'none' | string;
}

export interface QemuOptions {
  /** Names the machine in QEMU's window title, process list and errors. */
  name: string;
  /** Default 'bios'. */
  firmware?: Firmware;
  boot: BootSource;
  nics: NicOptions[];
  /** Default 1024. */
  memoryMiB?: number;
  /** Default 1. */
  cpus?: number;
  /** File the serial console (ttyS0) is written to; created or truncated. */
  consoleLog: string;
  /**
   * Also serve the serial port as a TCP server on 127.0.0.1:port (for a BMC's Serial-over-LAN:
   * ipmi_sim's `sol "tcp:…"` connects to it); consoleLog still records everything.
   */
  serialTcpPort?: number;
  /** Write QEMU's PID here (for `killByPidFile` from another process). */
  pidFile?: string;
  /** Open a QMP socket here (power control: system_reset, quit...). */
  qmpSocket?: string;
  /** Default 'tcg'. */
  accel?: 'tcg' | 'kvm';
  /** Default 'pc' (i440fx). */
  machine?: 'pc' | 'q35';
  /** CPU model (-cpu); QEMU's default when absent. */
  cpu?: string;
  /** Give the machine a VGA card (tty0 then exists); default true. Never a window: -display none. */
  vga?: boolean;
  /** Exit QEMU when the guest reboots (-no-reboot) instead of resetting it; default false. */
  exitOnReboot?: boolean;
  /** Appended to the command line as they are. */
  extraArgs?: string[];
  /** Default qemu-system-x86_64 on $PATH. */
  qemuBinary?: string;
  /**
   * Run QEMU inside this network namespace (`ip netns exec`; needs root). Its user-mode
   * network then reaches the namespace's loopback as 10.0.2.2, and tap devices are looked
   * up there.
   */
  netns?: string;
}

/** Where Debian's ovmf package puts the firmware (4 MiB flash layout). */
export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

export class QemuError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QemuError';
  }
}

/** One line the guest printed on its serial console, with the host time it was seen (ms, Date.now()). */
export interface ConsoleLine {
  text: string;
  at: number;
}

function netdevArg(id: string, net: NetBackend): string {
  if (net.kind === 'tap') return `tap,id=${id},ifname=${net.ifname},script=no,downscript=no`;
  const parts = [`user,id=${id}`];
  if (net.hostname) parts.push(`hostname=${net.hostname}`);
  for (const f of net.hostForwards ?? []) parts.push(`hostfwd=${f.proto ?? 'tcp'}:127.0.0.1:${f.hostPort}-:${f.guestPort}`);
  if (net.tftp) parts.push(`tftp=${net.tftp}`);
  if (net.bootfile) parts.push(`bootfile=${net.bootfile}`);
  return parts.join(',');
}

/**
 * The QEMU command line (without the binary) for `opts`. Pure, except that UEFI needs a
 * writable copy of the OVMF variable store: pass its path as `ovmfVars`.
 */
export function qemuArgs(opts: QemuOptions, ovmfVars?: string): string[] {
  if (opts.nics.length === 0 && opts.boot.kind === 'pxe') throw new QemuError(`${opts.name}: PXE boot needs a NIC`);
  const firmware = opts.firmware ?? 'bios';
  const args = [
    '-name',
    opts.name,
    '-machine',
    `${opts.machine ?? 'pc'},accel=${opts.accel ?? 'tcg'}`,
    '-m',
    String(opts.memoryMiB ?? 1024),
    '-smp',
    String(opts.cpus ?? 1),
    // No default floppy, CD-ROM, NIC or monitor: nothing to try booting from but what we ask.
    '-nodefaults',
    '-display',
    'none',
    '-chardev',
    opts.serialTcpPort === undefined
      ? `file,id=lc-serial,path=${opts.consoleLog}`
      : `socket,id=lc-serial,host=127.0.0.1,port=${opts.serialTcpPort},server=on,wait=off,logfile=${opts.consoleLog}`,
    '-serial',
    'chardev:lc-serial',
  ];
  // A node that reboots must come back through its firmware (PXE again), as real hardware does;
  // tests that want a reboot to end the run (a kernel panic, say) ask for -no-reboot.
  if (opts.exitOnReboot) args.push('-no-reboot');
  if (opts.cpu) args.push('-cpu', opts.cpu);
  if (opts.vga ?? true) args.push('-vga', 'std');
  if (firmware === 'uefi') {
    if (!ovmfVars) throw new QemuError(`${opts.name}: UEFI needs a writable OVMF variable store`);
    args.push(
      '-drive',
      `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`,
      '-drive',
      `if=pflash,format=raw,unit=1,file=${ovmfVars}`,
    );
  }
  opts.nics.forEach((nic, i) => {
    const id = `lc-net${i}`;
    args.push('-netdev', netdevArg(id, nic.net));
    const dev = [nic.model ?? 'virtio-net-pci', `netdev=${id}`];
    if (nic.mac) dev.push(`mac=${nic.mac}`);
    const rom = nic.rom ?? (firmware === 'uefi' ? 'none' : 'default');
    if (rom === 'none') dev.push('romfile=');
    else if (rom !== 'default') dev.push(`romfile=${rom}`);
    if (i === 0 && opts.boot.kind === 'pxe') dev.push('bootindex=1');
    args.push('-device', dev.join(','));
  });
  if (opts.boot.kind === 'kernel') {
    args.push('-kernel', opts.boot.kernel, '-initrd', opts.boot.initrd);
    if (opts.boot.append) args.push('-append', opts.boot.append);
  }
  if (opts.pidFile) args.push('-pidfile', opts.pidFile);
  if (opts.qmpSocket) args.push('-qmp', `unix:${opts.qmpSocket},server=on,wait=off`);
  args.push(...(opts.extraArgs ?? []));
  return args;
}

const running = new Set<QemuMachine>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A test runner that dies must not leave emulators eating the CI machine's two cores.
  process.once('exit', () => {
    for (const m of running) m.killNow();
  });
}

export class QemuMachine {
  readonly name: string;
  readonly args: readonly string[];
  readonly consoleLog: string;
  /** Host time (Date.now()) when QEMU was started. */
  readonly startedAt: number;
  /** Resolves when QEMU exits, with its status. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  readonly #child: ChildProcess;
  readonly #tempDir: string | undefined;
  #stderr = '';
  #exitedNow = false;
  #consoleText = '';
  #partial = '';
  readonly #lines: ConsoleLine[] = [];
  #offset = 0;
  #poller: NodeJS.Timeout | undefined;

  private constructor(opts: QemuOptions, child: ChildProcess, args: string[], tempDir: string | undefined) {
    this.name = opts.name;
    this.args = args;
    this.consoleLog = opts.consoleLog;
    this.startedAt = Date.now();
    this.#child = child;
    this.#tempDir = tempDir;
    child.stderr?.on('data', (c: Buffer) => (this.#stderr = (this.#stderr + c.toString('utf8')).slice(-8192)));
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.#exitedNow = true;
        running.delete(this);
        this.#poll();
        if (this.#poller) clearInterval(this.#poller);
        if (this.#tempDir) rmSync(this.#tempDir, { recursive: true, force: true });
        resolve({ code, signal });
      });
    });
    this.#poller = setInterval(() => this.#poll(), 50);
    this.#poller.unref();
  }

  /**
   * Starts QEMU and resolves once it is running (its console file exists); rejects with
   * QEMU's own error message if it exits at once (bad option, missing firmware...).
   */
  static async start(opts: QemuOptions): Promise<QemuMachine> {
    let tempDir: string | undefined;
    let vars: string | undefined;
    if ((opts.firmware ?? 'bios') === 'uefi') {
      tempDir = mkdtempSync(join(tmpdir(), `lc-qemu-${opts.name}-`));
      vars = join(tempDir, 'OVMF_VARS.fd');
      copyFileSync(OVMF_VARS, vars);
    }
    if (opts.boot.kind === 'kernel') {
      for (const f of [opts.boot.kernel, opts.boot.initrd]) if (!existsSync(f)) throw new QemuError(`${opts.name}: no such file ${f}`);
    }
    rmSync(opts.consoleLog, { force: true });
    const args = qemuArgs(opts, vars);
    const qemu = opts.qemuBinary ?? 'qemu-system-x86_64';
    // `ip netns exec` execs QEMU in place: the PID we hold is QEMU's.
    const [cmd, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, qemu, ...args]] : [qemu, args];
    const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    const m = new QemuMachine(opts, child, args, tempDir);
    running.add(m);
    installExitHook();
    const spawnError = new Promise<never>((_, reject) =>
      child.once('error', (e) => reject(new QemuError(`${opts.name}: cannot run QEMU: ${e.message}`))),
    );
    spawnError.catch(() => {});
    const deadline = Date.now() + 10_000;
    while (!existsSync(opts.consoleLog)) {
      if (m.#exitedNow) {
        await m.exited;
        throw new QemuError(
          `${opts.name}: QEMU exited at once: ${m.#stderr.trim() || 'no message'}\n  qemu-system-x86_64 ${args.join(' ')}`,
        );
      }
      if (Date.now() > deadline) {
        await m.stop();
        throw new QemuError(`${opts.name}: QEMU did not start within 10 s`);
      }
      await Promise.race([sleep(20), spawnError]);
    }
    return m;
  }

  get pid(): number {
    return this.#child.pid ?? -1;
  }

  get running(): boolean {
    return !this.#exitedNow;
  }

  /** QEMU's stderr (last 8 KiB). */
  get stderr(): string {
    return this.#stderr;
  }

  /** Everything the guest printed on the serial console so far. */
  console(): string {
    this.#poll();
    return this.#consoleText;
  }

  /** Complete console lines so far, each with the host time it was first seen (50 ms resolution). */
  consoleLines(): readonly ConsoleLine[] {
    this.#poll();
    return this.#lines;
  }

  /**
   * Waits until the console shows `pattern` (searched in the whole text so far). Rejects on
   * timeout or if QEMU exits first, quoting the console's last lines.
   */
  async waitForConsole(pattern: RegExp | string, timeoutMs: number): Promise<RegExpMatchArray> {
    const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.console());
      if (m) return m;
      if (this.#exitedNow) throw new QemuError(`${this.name}: QEMU exited before the console showed ${re}; console ends:\n${this.tail()}`);
      if (Date.now() > deadline)
        throw new QemuError(`${this.name}: console did not show ${re} within ${timeoutMs} ms; console ends:\n${this.tail()}`);
      await sleep(50);
    }
  }

  /** The console's last `n` lines, for error messages. */
  tail(n = 25): string {
    return this.console().split('\n').slice(-n).join('\n');
  }

  /** Stops QEMU: SIGTERM, then SIGKILL after `graceMs`. Safe to call twice. */
  async stop(graceMs = 3000): Promise<void> {
    if (this.#exitedNow) {
      await this.exited;
      return;
    }
    this.#child.kill('SIGTERM');
    const t = setTimeout(() => this.#child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }

  /** Synchronous SIGKILL, for exit hooks. */
  killNow(): void {
    if (!this.#exitedNow) this.#child.kill('SIGKILL');
  }

  #poll(): void {
    let fd: number;
    try {
      if (statSync(this.consoleLog).size <= this.#offset) return;
      fd = openSync(this.consoleLog, 'r');
    } catch {
      return;
    }
    try {
      const buf = Buffer.alloc(65536);
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, this.#offset);
        if (n <= 0) break;
        this.#offset += n;
        const text = buf.subarray(0, n).toString('latin1'); // byte-exact; consoles print ASCII
        this.#consoleText += text;
        const now = Date.now();
        const parts = (this.#partial + text).split('\n');
        this.#partial = parts.pop() ?? '';
        for (const line of parts) this.#lines.push({ text: line.replace(/\r$/, ''), at: now });
      }
    } finally {
      closeSync(fd);
    }
  }
}

/**
 * Stops the QEMU whose PID `pidFile` holds (written with the `pidFile` option), if it is
 * still a QEMU process. Returns whether one was running.
 */
export async function killByPidFile(pidFile: string, graceMs = 3000): Promise<boolean> {
  if (!existsSync(pidFile)) return false;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  rmSync(pidFile, { force: true });
  const isQemu = () => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('qemu-system');
    } catch {
      return false;
    }
  };
  if (!Number.isInteger(pid) || pid <= 1 || !isQemu()) return false; // gone, or the PID now belongs to someone else
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (isQemu()) {
    if (Date.now() > deadline) {
      process.kill(pid, 'SIGKILL');
      break;
    }
    await sleep(50);
  }
  return true;
}
