/**
 * Network lab for tests, benchmarks and `make demo`: network namespaces, veth pairs, bridges
 * and tap devices with unique names, commands and long-running processes inside a namespace,
 * and cleanup that happens whatever the test does. Needs root (CI has it).
 *
 *   const lab = await createLab('dhcp');                  // namespaces lc-dhcp-<pid>-<n>
 *   afterAll(() => lab.cleanup());
 *   const srv = await lab.namespace('srv');
 *   const cli = await lab.namespace('cli');
 *   const [s0, c0] = await lab.veth({ ns: srv, address: '10.50.0.1/24' }, { ns: cli });
 *   const dispatcher = srv.spawn('node', ['dist/bin/dispatcher.mjs', '--interface', s0.name, ...]);
 *   await dispatcher.waitForOutput(/DHCP serving/, 10_000);
 *   const r = await cli.exec('udhcpc', ['-i', c0.name, '-n', '-q']);
 *
 *   A QEMU machine on a tap bridged to the dispatcher's side:
 *     const br = await lab.bridge(srv, { address: '10.50.0.1/24' });
 *     const tap = await lab.tap(srv, { bridge: br });
 *     srv.spawn('qemu-system-x86_64', [..., '-netdev', `tap,id=n0,ifname=${tap.name},script=no,downscript=no`]);
 *
 * Cleanup: `lab.cleanup()` stops every process the lab started (SIGTERM, then SIGKILL) and
 * deletes its namespaces, which removes every interface in them (and the far end of their
 * veths). If the test process exits without calling it, an exit hook does the same
 * synchronously; SIGINT/SIGTERM run it too when nobody else handles them. Namespaces left by
 * a process that was SIGKILLed are removed by the next `createLab` of any area
 * (`sweepStaleNamespaces`): their names carry the creator's PID.
 *
 * Interface names are at most 15 bytes (IFNAMSIZ); names are generated per namespace, so two
 * labs never collide. Nothing is created in the root namespace.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';

export const NETNS_PREFIX = 'lc-';
const NETNS_DIR = '/var/run/netns';
/** SIGTERM, then SIGKILL after this long. */
const STOP_GRACE_MS = 3_000;
/** Output kept per process, for waitForOutput and failure messages. */
const MAX_OUTPUT_CHARS = 1_000_000;

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Kill the command after this long (default 30 s); the promise rejects. */
  timeoutMs?: number;
  /** Resolve with the result instead of rejecting on a non-zero exit. */
  allowFailure?: boolean;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** A long-running process started in a namespace; its stdout and stderr are captured. */
export interface LabProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** stdout and stderr so far, interleaved (the last MAX_OUTPUT_CHARS). */
  output(): string;
  /** Resolves with the first match of `re` in the output (past or future); rejects on exit or timeout. */
  waitForOutput(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Settles when the process exits. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM (or `signal`), then SIGKILL after a grace period; resolves when it is gone. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface Netns {
  readonly name: string;
  /** Runs a command in the namespace and collects its output. */
  exec(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Starts a long-running process in the namespace; the lab stops it at cleanup. */
  spawn(cmd: string, args: string[], opts?: SpawnOptions): LabProcess;
  /** `['ip', 'netns', 'exec', name]`: prefix for commands started by other means. */
  commandPrefix(): string[];
  /** Index of an interface in this namespace (for SO_BINDTOIFINDEX, QEMU...). */
  ifindex(iface: string): Promise<number>;
  /** Adds an address (`10.0.0.1/24`) to an interface. */
  addAddress(iface: string, cidr: string): Promise<void>;
}

export interface Iface {
  ns: Netns;
  name: string;
  /** The address given at creation (CIDR), if any. */
  address?: string;
}

export interface Endpoint {
  ns: Netns;
  /** Default: `veth<n>`. */
  name?: string;
  /** CIDR, e.g. `10.50.0.1/24`. */
  address?: string;
  /** Default: random locally administered. */
  mac?: string;
}

export interface Lab {
  /** `lc-<area>-<pid>`: every namespace of the lab starts with it. */
  readonly id: string;
  /** A new namespace with loopback up, named `<id>-<n>-<role>`. */
  namespace(role: string): Promise<Netns>;
  /** A veth pair between two namespaces (or within one), both ends up. */
  veth(a: Endpoint, b: Endpoint): Promise<[Iface, Iface]>;
  /** A bridge in `ns`, up, with an optional address. */
  bridge(ns: Netns, opts?: { name?: string; address?: string }): Promise<Iface>;
  /** A tap device in `ns`, up, optionally enslaved to a bridge (for QEMU `-netdev tap`). */
  tap(ns: Netns, opts?: { name?: string; bridge?: Iface }): Promise<Iface>;
  /** Moves an existing interface under a bridge of the same namespace. */
  attach(iface: Iface, bridge: Iface): Promise<void>;
  /** Stops the lab's processes and deletes its namespaces. Safe to call twice. */
  cleanup(): Promise<void>;
}

interface LabState {
  namespaces: Set<string>;
  processes: Set<ChildProcess>;
}

const liveLabs = new Set<LabState>();
let hooksInstalled = false;
let labSeq = 0;

/** Creates a lab for one area of tests (`dhcp`, `tftp`, `e2e`...). Removes stale namespaces first. */
export async function createLab(area: string): Promise<Lab> {
  if (!/^[a-z0-9]{1,16}$/.test(area)) throw new Error(`lab area must be 1-16 characters a-z0-9, got "${area}"`);
  sweepStaleNamespaces();
  installHooks();
  const id = `${NETNS_PREFIX}${area}-${process.pid}-${++labSeq}`;
  const state: LabState = { namespaces: new Set(), processes: new Set() };
  liveLabs.add(state);
  let nsSeq = 0;
  const ifSeq = new Map<string, number>();
  const ifname = (ns: Netns, base: string) => {
    const n = (ifSeq.get(`${ns.name}/${base}`) ?? 0) + 1;
    ifSeq.set(`${ns.name}/${base}`, n);
    return `${base}${n - 1}`.slice(0, 15);
  };

  const lab: Lab = {
    id,
    async namespace(role) {
      if (!/^[a-z0-9]{1,12}$/.test(role)) throw new Error(`namespace role must be 1-12 characters a-z0-9, got "${role}"`);
      const name = `${id}-${++nsSeq}-${role}`;
      await run('ip', ['netns', 'add', name]);
      state.namespaces.add(name);
      await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
      return makeNetns(name, state);
    },
    async veth(a, b) {
      const an = a.name ?? ifname(a.ns, 'veth');
      const bn = b.name ?? ifname(b.ns, 'veth');
      checkIfname(an);
      checkIfname(bn);
      await run('ip', [
        '-n',
        a.ns.name,
        'link',
        'add',
        an,
        'address',
        a.mac ?? randomMac(),
        'type',
        'veth',
        'peer',
        'name',
        bn,
        'address',
        b.mac ?? randomMac(),
        'netns',
        b.ns.name,
      ]);
      for (const [e, n] of [
        [a, an],
        [b, bn],
      ] as const) {
        if (e.address) await run('ip', ['-n', e.ns.name, 'addr', 'add', e.address, 'dev', n]);
        await run('ip', ['-n', e.ns.name, 'link', 'set', n, 'up']);
      }
      // Carrier comes a moment after both ends are up (linkwatch, slower on a busy machine);
      // frames sent before it are dropped, so a test's first DHCP packet would vanish.
      await waitForCarrier(a.ns, an);
      await waitForCarrier(b.ns, bn);
      return [
        { ns: a.ns, name: an, ...(a.address ? { address: a.address } : {}) },
        { ns: b.ns, name: bn, ...(b.address ? { address: b.address } : {}) },
      ];
    },
    async bridge(ns, opts = {}) {
      const name = opts.name ?? ifname(ns, 'br');
      checkIfname(name);
      // forward_delay 0: ports forward at once (no 15 s STP listening/learning wait before DHCP works).
      await run('ip', ['-n', ns.name, 'link', 'add', 'name', name, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0']);
      if (opts.address) await run('ip', ['-n', ns.name, 'addr', 'add', opts.address, 'dev', name]);
      await run('ip', ['-n', ns.name, 'link', 'set', name, 'up']);
      return { ns, name, ...(opts.address ? { address: opts.address } : {}) };
    },
    async tap(ns, opts = {}) {
      const name = opts.name ?? ifname(ns, 'tap');
      checkIfname(name);
      await run('ip', ['-n', ns.name, 'tuntap', 'add', 'dev', name, 'mode', 'tap']);
      if (opts.bridge) await run('ip', ['-n', ns.name, 'link', 'set', name, 'master', opts.bridge.name]);
      await run('ip', ['-n', ns.name, 'link', 'set', name, 'up']);
      return { ns, name };
    },
    async attach(iface, bridge) {
      if (iface.ns !== bridge.ns) throw new Error(`${iface.name} and ${bridge.name} are in different namespaces`);
      await run('ip', ['-n', iface.ns.name, 'link', 'set', iface.name, 'master', bridge.name]);
    },
    async cleanup() {
      await Promise.all([...state.processes].map((c) => stopChild(c)));
      state.processes.clear();
      for (const ns of state.namespaces) await run('ip', ['netns', 'del', ns]).catch(() => undefined);
      state.namespaces.clear();
      liveLabs.delete(state);
    },
  };
  return lab;
}

/** Polls until the interface has carrier (operstate up), at most 10 s. */
async function waitForCarrier(ns: Netns, iface: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await run('ip', ['-n', ns.name, '-o', 'link', 'show', 'dev', iface]);
    if (/\bstate UP\b/.test(r.stdout) || (/LOWER_UP/.test(r.stdout) && !/NO-CARRIER/.test(r.stdout))) return;
    if (Date.now() > deadline) throw new Error(`${iface} in ${ns.name} has no carrier after 10 s: ${r.stdout.trim()}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

function makeNetns(name: string, state: LabState): Netns {
  const prefix = ['netns', 'exec', name];
  return {
    name,
    exec(cmd, args, opts = {}) {
      return run('ip', [...prefix, cmd, ...args], opts);
    },
    spawn(cmd, args, opts = {}) {
      // `ip netns exec` execs the command: the child's PID is the command's.
      const child = spawn('ip', [...prefix, cmd, ...args], {
        env: opts.env ?? process.env,
        cwd: opts.cwd,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      state.processes.add(child);
      child.once('exit', () => state.processes.delete(child));
      return labProcess(child, `${cmd} in ${name}`);
    },
    commandPrefix: () => ['ip', ...prefix],
    async ifindex(iface) {
      const r = await run('ip', [...prefix, 'cat', `/sys/class/net/${iface}/ifindex`]);
      return Number(r.stdout.trim());
    },
    async addAddress(iface, cidr) {
      await run('ip', ['-n', name, 'addr', 'add', cidr, 'dev', iface]);
    },
  };
}

function labProcess(child: ChildProcess, what: string): LabProcess {
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString('utf8');
    if (out.length > MAX_OUTPUT_CHARS) out = out.slice(-MAX_OUTPUT_CHARS);
    for (const w of waiters) w();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  let gone = false;
  void exited.then(() => {
    gone = true;
    for (const w of waiters) w();
  });
  return {
    child,
    pid: child.pid ?? -1,
    output: () => out,
    exited,
    waitForOutput(re, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(re);
          if (m) return finish(() => resolve(m));
          if (gone) return finish(() => reject(new Error(`${what} exited before printing ${re}; output:\n${out.slice(-4000)}`)));
        };
        const timer = setTimeout(
          () => finish(() => reject(new Error(`${what}: no ${re} within ${timeoutMs} ms; output:\n${out.slice(-4000)}`))),
          timeoutMs,
        );
        const finish = (f: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    },
    stop: (signal) => stopChild(child, signal),
  };
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

/** Runs a command without a shell; rejects with its output on failure. */
export function run(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 30_000, env: opts.env ?? process.env, cwd: opts.cwd, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = !err ? 0 : typeof err.code === 'number' ? err.code : 1;
        const result = { code, stdout: String(stdout), stderr: String(stderr) };
        if (err && !opts.allowFailure) {
          const killed = err.killed ? ` (killed after ${opts.timeoutMs ?? 30_000} ms)` : '';
          reject(new Error(`${cmd} ${args.join(' ')} failed${killed}: exit ${code}\n${result.stderr || result.stdout}`, { cause: err }));
        } else resolve(result);
      },
    );
  });
}

/**
 * Deletes `lc-*` namespaces whose creating process is gone (names are `lc-<area>-<pid>-...`).
 * Returns the names removed.
 */
export function sweepStaleNamespaces(): string[] {
  let names: string[];
  try {
    names = readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const ns of names) {
    const m = /^lc-[a-z0-9]+-(\d+)-/.exec(ns);
    if (!m || pidAlive(Number(m[1]))) continue;
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      removed.push(ns);
    } catch {
      /* someone else removed it */
    }
  }
  return removed;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Synchronous last resort: kill the labs' processes and delete their namespaces. */
function cleanupAllSync(): void {
  for (const state of liveLabs) {
    for (const c of state.processes) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const ns of state.namespaces) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
  }
  liveLabs.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once('exit', cleanupAllSync);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    if (process.listenerCount(sig) > 0) continue; // someone else owns the signal (vitest, a demo script): its exit runs our exit hook
    process.once(sig, () => {
      cleanupAllSync();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}

function checkIfname(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) throw new Error(`interface name "${name}" must be 1-15 characters (IFNAMSIZ)`);
}

/** A random locally administered unicast MAC (02:xx:...). */
export function randomMac(): string {
  const b = new Uint8Array(6);
  for (let i = 0; i < 6; i++) b[i] = Math.floor(Math.random() * 256);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}
