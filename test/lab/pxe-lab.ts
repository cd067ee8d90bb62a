/**
 * A rack in a namespace, for end-to-end tests and benchmarks under QEMU: the built dispatcher
 * (dist/) in full DHCP mode on a bridge, SeaBIOS machines PXE-booting from it on taps, each
 * optionally behind an IPMI BMC (OpenIPMI's ipmi_sim in the same namespace, with Serial-over-LAN
 * to the machine's serial port), and `dispatcherctl` run against it.
 *
 *   const rack = await PxeLab.create({ area: 'ops', subnet: 69 });
 *   const node1 = await rack.machine({ name: 'node1', bmc: true, cpus: 2 });   // powered off
 *   await rack.startDispatcher({ cluster: rack.clusterNodes() });
 *   await node1.powerOn();
 *   await rack.until('node1 ready', async () => (await rack.node('node1'))?.state === 'ready' || undefined);
 *   await rack.cleanup();
 *
 * Serial-over-LAN: the dispatcher holds each BMC's one SOL session (`dispatcherctl console
 * --serial`); the machine's console log has the same bytes.
 *
 * Everything stays inside the lab's namespace: the BMCs listen on its loopback, the machines'
 * taps are on its bridge, and nothing touches the host's interfaces.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { IpmiBmc } from './bmc.js';
import { createLab, type ExecResult, type Iface, type Lab, type LabProcess, type Netns } from './netns.js';
import { QemuMachine } from './qemu.js';
import { qmp } from './redfish.js';

export const ARTIFACTS = 'test/artifacts';

/**
 * The image the QEMU e2e tests share (E2E_IMAGE, default dist/e2e-ops-image): built once by
 * the first test that asks, incremental after (it returns at once when its inputs are unchanged).
 */
export const E2E_IMAGE = process.env.E2E_IMAGE ?? 'dist/e2e-ops-image';

/** Builds the bundles, the PXE binaries and the shared e2e image (each a no-op when up to date). */
export function buildForE2e(): void {
  execFileSync('make', ['-s', 'build', 'pxe'], { stdio: 'inherit' });
  execFileSync('make', ['-s', 'image', `IMAGE_OUT=${E2E_IMAGE}`, 'ZSTD_LEVEL=3'], { stdio: 'inherit' });
}

export interface PxeLabOptions {
  /** Names the lab's namespaces (a-z0-9, at most 16). */
  area: string;
  /** The rack's subnet is 10.<subnet>.0.0/24; the dispatcher is 10.<subnet>.0.1. */
  subnet: number;
  /**
   * The rack namespace's own address on the bridge (CIDR; default 10.<subnet>.0.1/24, the
   * dispatcher's). ha-lab.ts gives it another: its dispatchers run in namespaces of their own.
   */
  bridgeAddress?: string;
}

export interface MachineOptions {
  name: string;
  /** Default 52:54:00:<subnet>:00:<n>, n counting machines from 1. */
  mac?: string;
  /** Default 1024. */
  memoryMiB?: number;
  /** Default 1. */
  cpus?: number;
  /** Put the machine behind an IPMI BMC (ipmi_sim) with Serial-over-LAN; it starts powered off. */
  bmc?: boolean;
  /** Another segment: a bridge in another namespace (a boot server's), instead of the rack's bridge. No BMC there. */
  segment?: { ns: Netns; bridge: Iface };
}

export interface DispatcherOptions {
  /** The default image's folder (`--image`; default E2E_IMAGE). */
  image?: string;
  /** The cluster file's text (written to the data dir); none when absent. */
  cluster?: string;
  /** More dispatcher arguments. */
  args?: string[];
  /** Output that says the dispatcher is up (default: the netconsole receiver's line, one of the last). */
  ready?: RegExp;
}

/** A node's view as `dispatcherctl --json nodes` gives it (the fields tests read most). */
export interface LabNodeView {
  name: string;
  mac: string;
  state: string;
  [field: string]: unknown;
}

/** One machine of the rack. */
export class LabMachine {
  #vm: QemuMachine | undefined;

  constructor(
    readonly rack: PxeLab,
    readonly name: string,
    readonly mac: string,
    readonly opts: MachineOptions,
    readonly tap: Iface,
    readonly consoleLog: string,
    readonly qmpSocket: string,
    /** Present when the machine is behind a BMC. */
    readonly bmc: IpmiBmc | undefined,
    /** The BMC password's file (mode 0600), for the cluster file. */
    readonly passwordFile: string | undefined,
  ) {}

  /** The `bmc:` line of this machine's cluster-file entry (empty without a BMC). */
  clusterBmc(): string {
    if (!this.bmc) return '';
    return `    bmc: {type: ipmi, address: "127.0.0.1:${this.bmc.opts.lanPort}", user: admin, passwordFile: ${this.passwordFile}}\n`;
  }

  /** Powers the machine on: through its BMC (ipmitool, as an operator would), else by starting QEMU. */
  async powerOn(): Promise<void> {
    if (this.bmc) {
      const r = await this.ipmitool('chassis', 'power', 'on');
      if (r.code !== 0) throw new Error(`${this.name}: ipmitool power on failed: ${r.stderr}`);
      await this.bmc.waitPower('on');
      return;
    }
    this.#vm = await QemuMachine.start({
      name: `${this.rack.lab.id}-${this.name}`,
      boot: { kind: 'pxe' },
      nics: [{ net: { kind: 'tap', ifname: this.tap.name }, mac: this.mac }],
      memoryMiB: this.opts.memoryMiB ?? 1024,
      cpus: this.opts.cpus ?? 1,
      consoleLog: this.consoleLog,
      qmpSocket: this.qmpSocket,
      netns: (this.opts.segment?.ns ?? this.rack.ns).name,
    });
  }

  /** ipmitool against this machine's BMC, from inside the namespace. */
  ipmitool(...args: string[]): Promise<ExecResult> {
    if (!this.bmc || !this.passwordFile) throw new Error(`${this.name} has no BMC`);
    return this.rack.ns.exec(
      'ipmitool',
      ['-I', 'lanplus', '-C', '3', '-H', '127.0.0.1', '-p', String(this.bmc.opts.lanPort), '-U', 'admin', '-f', this.passwordFile, ...args],
      { allowFailure: true, timeoutMs: 30_000 },
    );
  }

  /** Whether the machine's QEMU process runs (powered on). */
  get poweredOn(): boolean {
    return this.bmc ? this.bmc.qemuPid() !== null : (this.#vm?.running ?? false);
  }

  /** One QMP command (`stop` freezes the machine, `cont` thaws it). */
  qmp(execute: string): Promise<Record<string, unknown>> {
    return qmp(this.qmpSocket, execute);
  }

  /** What the machine printed on its serial console so far (this power-on's, for a BMC machine). */
  console(): string {
    try {
      return readFileSync(this.consoleLog, 'utf8');
    } catch {
      return '';
    }
  }

  async waitForConsole(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    return this.rack.until(`${this.name} console ${pattern}`, async () => this.console().match(pattern) ?? undefined, timeoutMs, 250);
  }

  async stop(): Promise<void> {
    if (this.bmc) await this.bmc.stop();
    await this.#vm?.stop().catch(() => undefined);
  }
}

export class PxeLab {
  readonly machines: LabMachine[] = [];
  dispatcher: LabProcess | undefined;

  private constructor(
    readonly lab: Lab,
    readonly ns: Netns,
    readonly bridge: Iface,
    readonly subnet: number,
    readonly dataDir: string,
    readonly area: string,
  ) {}

  static async create(opts: PxeLabOptions): Promise<PxeLab> {
    mkdirSync(ARTIFACTS, { recursive: true });
    const lab = await createLab(opts.area);
    const ns = await lab.namespace(opts.area);
    const bridge = await lab.bridge(ns, { address: opts.bridgeAddress ?? `10.${opts.subnet}.0.1/24` });
    const dataDir = mkdtempSync(join(tmpdir(), `lc-${opts.area}-lab-`));
    return new PxeLab(lab, ns, bridge, opts.subnet, dataDir, opts.area);
  }

  /** The dispatcher's address on the rack. */
  get server(): string {
    return `10.${this.subnet}.0.1`;
  }

  get url(): string {
    return `http://${this.server}:8080`;
  }

  /** Adds a machine on a tap of the rack's bridge; powered off until `powerOn`. */
  async machine(opts: MachineOptions): Promise<LabMachine> {
    const n = this.machines.length + 1;
    const mac = opts.mac ?? `52:54:00:${this.subnet.toString(16).padStart(2, '0')}:00:${n.toString(16).padStart(2, '0')}`;
    if (opts.segment && opts.bmc) throw new Error(`${opts.name}: a machine on another segment has no BMC here`);
    const tap = await this.lab.tap(opts.segment?.ns ?? this.ns, { bridge: opts.segment?.bridge ?? this.bridge });
    const consoleLog = join(ARTIFACTS, `${this.area}-${opts.name}.console.log`);
    const qmpSocket = join(this.dataDir, `${opts.name}.qmp`);
    let bmc: IpmiBmc | undefined;
    let passwordFile: string | undefined;
    if (opts.bmc) {
      const password = `pw${n}${Math.random().toString(36).slice(2, 10)}`;
      passwordFile = join(this.dataDir, `${opts.name}.bmc-password`);
      writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
      // Ports on the namespace's own loopback: nothing else binds there.
      const base = 9600 + 10 * n;
      bmc = await IpmiBmc.start({
        name: `${this.area}-${opts.name}`,
        lanPort: base,
        vmPort: base + 1,
        solPort: base + 2,
        password,
        netns: this.ns,
        machine: {
          boot: { kind: 'pxe' },
          nics: [{ net: { kind: 'tap', ifname: tap.name }, mac }],
          memoryMiB: opts.memoryMiB ?? 1024,
          cpus: opts.cpus ?? 1,
          vga: true,
          consoleLog,
          qmpSocket,
        },
      });
    }
    const m = new LabMachine(this, opts.name, mac, opts, tap, consoleLog, qmpSocket, bmc, passwordFile);
    this.machines.push(m);
    return m;
  }

  /** The cluster file's `nodes:` list for every machine so far (names, MACs, BMCs). */
  clusterNodes(): string {
    return `nodes:\n${this.machines.map((m) => `  - name: ${m.name}\n    mac: ${m.mac}\n${m.clusterBmc()}`).join('')}`;
  }

  /** Starts the dispatcher in the namespace: full DHCP on the bridge, PXE from pxe/bin. */
  async startDispatcher(opts: DispatcherOptions): Promise<LabProcess> {
    const args = [
      'dist/bin/dispatcher.mjs',
      '--interface',
      this.bridge.name,
      '--dhcp',
      'full',
      '--range',
      `10.${this.subnet}.0.100-10.${this.subnet}.0.199`,
      '--data-dir',
      this.dataDir,
      '--image',
      opts.image ?? E2E_IMAGE,
      '--pxe-dir',
      'pxe/bin',
      '--heartbeat',
      '2',
    ];
    if (!opts.args?.includes('--images')) args.push('--images', mkdtempSync(join(tmpdir(), `lc-${this.area}-images-`)));
    if (opts.cluster !== undefined) {
      writeFileSync(join(this.dataDir, 'cluster.yaml'), opts.cluster);
      args.push('--cluster', join(this.dataDir, 'cluster.yaml'));
    }
    args.push(...(opts.args ?? []));
    this.dispatcher = this.ns.spawn(process.execPath, args);
    await this.dispatcher.waitForOutput(opts.ready ?? /netconsole listening/, 60_000);
    return this.dispatcher;
  }

  /**
   * Runs dispatcherctl against the rack's dispatcher (admin through the data dir's token). The
   * long limit is for commands that wait (a rollout of several TCG machines under load).
   */
  ctl(...args: string[]): Promise<ExecResult> {
    return this.ns.exec(process.execPath, ['dist/bin/dispatcherctl.mjs', '--url', this.url, '--data-dir', this.dataDir, ...args], {
      timeoutMs: 1_800_000,
      allowFailure: true,
    });
  }

  /** dispatcherctl that must succeed: its stdout, or an error with everything it said. */
  async ok(...args: string[]): Promise<string> {
    const r = await this.ctl(...args);
    if (r.code !== 0) throw new Error(`dispatcherctl ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  }

  /** A long-running dispatcherctl (`console --follow`, an `exec` that never answers). */
  spawnCtl(...args: string[]): LabProcess {
    return this.ns.spawn(process.execPath, ['dist/bin/dispatcherctl.mjs', '--url', this.url, '--data-dir', this.dataDir, ...args]);
  }

  /** `dispatcherctl --json …`, parsed. */
  async json<T>(...args: string[]): Promise<T> {
    return JSON.parse(await this.ok('--json', ...args)) as T;
  }

  async nodes(): Promise<LabNodeView[]> {
    return (await this.json<{ nodes: LabNodeView[] }>('nodes')).nodes;
  }

  async node(name: string): Promise<LabNodeView | undefined> {
    return (await this.nodes()).find((n) => n.name === name);
  }

  /** Waits until `name` is ready or busy (its agent said hello). */
  async nodeUp(name: string, timeoutMs = 300_000): Promise<LabNodeView> {
    return this.until(
      `${name} ready`,
      async () => {
        const n = await this.node(name);
        return n && (n.state === 'ready' || n.state === 'busy') ? n : undefined;
      },
      timeoutMs,
    );
  }

  /** Polls `probe` until it gives a value; on timeout, the error carries the machines' consoles and the dispatcher's log. */
  async until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 300_000, everyMs = 500): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${this.diagnostics()}`);
      await sleep(everyMs);
    }
  }

  diagnostics(): string {
    const consoles = this.machines.map((m) => `--- ${m.name} console\n${m.console().slice(-2000)}`).join('\n');
    return `${consoles}\n--- dispatcher\n${this.dispatcher?.output().slice(-4000) ?? '(not started)'}`;
  }

  /** Stops machines, BMCs and the dispatcher (its log kept in test/artifacts) and deletes the namespace. */
  async cleanup(): Promise<void> {
    for (const m of this.machines) await m.stop().catch(() => undefined);
    if (this.dispatcher) writeFileSync(join(ARTIFACTS, `${this.area}-dispatcher.log`), this.dispatcher.output());
    await this.lab.cleanup();
  }
}
