/**
 * An IPMI BMC for a QEMU machine: OpenIPMI's `ipmi_sim` (Debian `openipmi`) serves IPMI over
 * LAN on 127.0.0.1:lanPort and starts or kills QEMU (its `startcmd`) on chassis power on/off;
 * QEMU's `ipmi-bmc-extern` device talks back to it on vmPort. The machine boots nothing (no
 * disk, a NIC without boot ROM): powered on, it is a QEMU process; powered off, there is none.
 *
 *   const bmc = await IpmiBmc.start({ name: 'node1', lanPort: 19623, vmPort: 19624, password: 'S3cret' });
 *   // ipmitool -I lanplus -C 3 -H 127.0.0.1 -p 19623 -U admin -f <file> chassis power on
 *   await bmc.waitPower('on');
 *   await bmc.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { qemuArgs, type QemuOptions } from './qemu.js';
import type { Netns } from './netns.js';
import { waitUntil } from './run-ctl.js';

export interface IpmiBmcOptions {
  /** Names the QEMU machine (its -name, which is how we find its process). */
  name: string;
  /** IPMI over LAN (UDP) on 127.0.0.1. */
  lanPort: number;
  /** ipmi_sim ↔ QEMU's ipmi-bmc-extern (TCP) on 127.0.0.1. */
  vmPort: number;
  user?: string;
  password: string;
  /**
   * The machine behind the BMC (merged over the default: no boot ROM, 64 MiB): a PXE node on
   * a tap, say. Its consoleLog defaults to `<dir>/console.log`.
   */
  machine?: Partial<Omit<QemuOptions, 'name'>>;
  /** Serial-over-LAN: the machine's serial port served on 127.0.0.1:solPort, which ipmi_sim's `sol` connects to. */
  solPort?: number;
  /** Run ipmi_sim (and so the machine it starts) inside this namespace; its ports are on the namespace's loopback. */
  netns?: Netns;
}

export class IpmiBmc {
  private constructor(
    readonly opts: IpmiBmcOptions,
    readonly dir: string,
    private readonly child: ChildProcess,
    private readonly log: () => string,
  ) {}

  /** The QEMU process's -name: unique per test run. */
  get machineName(): string {
    return `${this.opts.name}-bmc${this.opts.lanPort}`;
  }

  static async start(opts: IpmiBmcOptions): Promise<IpmiBmc> {
    const dir = mkdtempSync(join(tmpdir(), `lc-bmc-${opts.name}-`));
    const machineName = `${opts.name}-bmc${opts.lanPort}`;
    const qemu = [
      'qemu-system-x86_64',
      ...qemuArgs({
        // PXE from a NIC without a boot ROM: the firmware finds nothing to boot and waits.
        boot: { kind: 'pxe' },
        nics: [{ net: { kind: 'user' }, rom: 'none' }],
        memoryMiB: 64,
        vga: false,
        consoleLog: join(dir, 'console.log'),
        ...opts.machine,
        name: machineName,
        serialTcpPort: opts.solPort,
        extraArgs: [
          ...(opts.machine?.extraArgs ?? []),
          '-chardev',
          `socket,id=ipmi0,host=127.0.0.1,port=${opts.vmPort},reconnect=10`,
          '-device',
          'ipmi-bmc-extern,id=bmc0,chardev=ipmi0',
          '-device',
          'isa-ipmi-kcs,bmc=bmc0',
        ],
      }),
    ];
    const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
    const esc = (s: string) => s.replaceAll('\\', '\\\\').replaceAll('"', '\\"');
    writeFileSync(
      join(dir, 'lan.conf'),
      [
        `name "${opts.name}"`,
        'set_working_mc 0x20',
        '  startlan 1',
        `    addr 127.0.0.1 ${opts.lanPort}`,
        '    priv_limit admin',
        '    allowed_auths_callback none md2 md5 straight',
        '    allowed_auths_user none md2 md5 straight',
        '    allowed_auths_operator none md2 md5 straight',
        '    allowed_auths_admin none md2 md5 straight',
        '    guid a123456789abcdefa123456789abcdef',
        '  endlan',
        `  serial 15 127.0.0.1 ${opts.vmPort} codec VM`,
        ...(opts.solPort === undefined ? [] : [`  sol "tcp:127.0.0.1:${opts.solPort}" 115200`]),
        `  startcmd "${esc(qemu.map(quote).join(' '))}"`,
        '  startnow false',
        `  user 2 true "${opts.user ?? 'admin'}" "${esc(opts.password)}" admin 10 none md2 md5 straight`,
        '',
      ].join('\n'),
    );
    writeFileSync(
      join(dir, 'bmc.emu'),
      'mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n',
    );
    const simArgs = ['-c', join(dir, 'lan.conf'), '-f', join(dir, 'bmc.emu'), '-n', '-s', join(dir, 'state')];
    let child: ChildProcess;
    let log: () => string;
    if (opts.netns) {
      const proc = opts.netns.spawn('ipmi_sim', simArgs);
      child = proc.child;
      log = () => proc.output();
    } else {
      child = spawn('ipmi_sim', simArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
      log = () => out;
    }
    const bmc = new IpmiBmc(opts, dir, child, log);
    process.once('exit', () => bmc.killNow());
    // ipmi_sim binds its LAN port and then says nothing; a UDP probe would need a session, so wait for the socket.
    await waitUntil(`ipmi_sim on udp ${opts.lanPort}`, () => udpBound(child.pid!, opts.lanPort) || child.exitCode !== null, 10_000);
    if (child.exitCode !== null) throw new Error(`ipmi_sim exited at once: ${log()}`);
    return bmc;
  }

  /** The file the machine's serial console is written to. */
  get consoleLog(): string {
    return this.opts.machine?.consoleLog ?? join(this.dir, 'console.log');
  }

  /** The PID of the machine's QEMU process, or null when it is powered off. */
  qemuPid(): number | null {
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        if (argv[0]?.endsWith('qemu-system-x86_64') && argv.includes(this.machineName)) return Number(pid);
      } catch {
        /* gone meanwhile */
      }
    }
    return null;
  }

  async waitPower(state: 'on' | 'off', timeoutMs = 15_000): Promise<number | null> {
    await waitUntil(
      `${this.machineName} powered ${state}`,
      () => (state === 'on' ? this.qemuPid() !== null : this.qemuPid() === null),
      timeoutMs,
      50,
    );
    return this.qemuPid();
  }

  killNow(): void {
    const pid = this.qemuPid();
    if (pid) process.kill(pid, 'SIGKILL');
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }

  async stop(): Promise<void> {
    const exited = this.child.exitCode === null ? new Promise((r) => this.child.once('exit', r)) : Promise.resolve();
    this.killNow();
    await exited;
    rmSync(this.dir, { recursive: true, force: true });
  }

  get output(): string {
    return this.log();
  }
}

/** Whether something listens on udp port in the network namespace of `pid` (from its /proc/PID/net/udp). */
function udpBound(pid: number, port: number): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let table: string;
  try {
    table = readFileSync(`/proc/${pid}/net/udp`, 'utf8');
  } catch {
    return false; // not started yet, or gone (the caller checks the exit)
  }
  return table.split('\n').some((l) => l.trim().split(/\s+/)[1]?.endsWith(hex));
}
