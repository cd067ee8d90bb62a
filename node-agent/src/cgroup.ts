/**
 * Tasks held to their requests by cgroup v2. The agent makes, under the cgroup it was
 * started in (the root on the RAM image), a tree of its own:
 *
 *   <base>/                 memory and cpu enabled for the two below (no process of its own)
 *     agent/                the agent itself: memory.min = the reserve, so tasks cannot reclaim it
 *     tasks/                memory.max = what the agent hands out to tasks, all of them together
 *       <taskId>-<attempt>/ one per task: memory.max (--mem), cpu.max (--cores), memory.oom.group
 *
 * A task starts inside its cgroup, so nothing of it ever runs outside (no race with an early
 * fork): the native launcher starts it there directly (clone3's CLONE_INTO_CGROUP with the
 * directory `openDir` gives); the child_process launcher through a shell that writes its own
 * pid into the cgroup's cgroup.procs and then execs the task (`wrap`). When it ends, memory.events says whether the kernel killed it for memory (oom_kill) and
 * memory.peak how much it used at most.
 *
 * Where cgroup v2 with the memory controller is not there (a cgroup v1 or hybrid host, a
 * cgroup we may not split), tasks run as before and the agent says so once: never a crash.
 */
import { closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Resources } from '../../dispatcher/src/protocol/messages.js';

/** cpu.max's period, µs (the kernel's default). */
export const CPU_PERIOD_US = 100_000;
/** What the agent keeps for itself by default (its own memory.min; not handed to tasks). */
export const DEFAULT_RESERVE_MIB = 128;
const MiB = 1024 * 1024;

/** memory.events: how often each event happened. */
export interface MemoryEvents {
  low: number;
  high: number;
  max: number;
  oom: number;
  oomKill: number;
  oomGroupKill: number;
}

/** Parses memory.events ("oom_kill 1" lines); unknown keys are ignored, missing ones are 0. */
export function parseMemoryEvents(text: string): MemoryEvents {
  const e: MemoryEvents = { low: 0, high: 0, max: 0, oom: 0, oomKill: 0, oomGroupKill: 0 };
  for (const line of text.split('\n')) {
    const m = /^(\w+) (\d+)$/.exec(line.trim());
    if (!m) continue;
    const n = Number(m[2]);
    if (!Number.isSafeInteger(n)) continue;
    switch (m[1]) {
      case 'low':
        e.low = n;
        break;
      case 'high':
        e.high = n;
        break;
      case 'max':
        e.max = n;
        break;
      case 'oom':
        e.oom = n;
        break;
      case 'oom_kill':
        e.oomKill = n;
        break;
      case 'oom_group_kill':
        e.oomGroupKill = n;
        break;
    }
  }
  return e;
}

/** memory.peak (bytes, one number) → KiB, or null when it is not a number (older kernels have no such file). */
export function parseMemoryPeakKiB(text: string | undefined): number | null {
  if (text === undefined) return null;
  const t = text.trim();
  if (!/^\d+$/.test(t)) return null;
  const n = Number(t);
  return Number.isSafeInteger(n) ? Math.ceil(n / 1024) : null;
}

/** cpu.max for a request of `cores` (quota and period, µs). */
export function cpuMax(cores: number): string {
  return `${cores * CPU_PERIOD_US} ${CPU_PERIOD_US}`;
}

/** Where cgroup v2 is mounted (/proc/mounts), preferring /sys/fs/cgroup; null if nowhere. */
export function cgroup2Mount(mounts: string): string | null {
  let found: string | null = null;
  for (const line of mounts.split('\n')) {
    const [, mp, type] = line.split(' ');
    if (type !== 'cgroup2' || !mp) continue;
    if (mp === '/sys/fs/cgroup') return mp;
    found ??= mp;
  }
  return found;
}

/** The process's cgroup v2 path ("0::/a/b" in /proc/self/cgroup), or null. */
export function ownCgroupPath(procSelfCgroup: string): string | null {
  for (const line of procSelfCgroup.split('\n')) if (line.startsWith('0::')) return line.slice(3).trim() || '/';
  return null;
}

/** What became of a task in its cgroup. */
export interface TaskMemory {
  oom: boolean;
  memPeakKiB: number | null;
}

/** A task's cgroup: start its process in `openDir` (or with `wrap`), read what happened with `finish`. */
export interface TaskCgroup {
  readonly dir: string;
  /** The cgroup's directory, open (O_RDONLY | O_DIRECTORY), for a launcher that starts the process in it; `finish` closes it. */
  openDir(): number;
  /** The command that enters the cgroup and then execs `file args` (for launchers that cannot start it there). */
  wrap(file: string, args: string[]): { file: string; args: string[] };
  /** Reads memory.events and memory.peak, kills whatever is left, removes the cgroup (closing openDir's descriptor). */
  finish(): Promise<TaskMemory>;
}

export type CgroupSetup = { enforced: true; cgroups: TaskCgroups } | { enforced: false; reason: string };

export interface CgroupOptions {
  /** /proc/mounts text. */
  mounts: string;
  /** /proc/self/cgroup text. */
  selfCgroup: string;
  /** Memory handed to tasks, all together (tasks/memory.max). */
  taskMemMiB: number;
  /** The agent's own memory.min. */
  reserveMiB: number;
  /** Distinguishes agents sharing a cgroup (several on one host): part of the base's name. */
  name: string;
  pid?: number;
}

const ENTER_SCRIPT = 'echo $$ > "$0" && exec "$@"';

export class TaskCgroups {
  readonly base: string;
  readonly #tasks: string;
  readonly #cpu: boolean;
  readonly #peak: boolean;

  private constructor(base: string, cpu: boolean) {
    this.base = base;
    this.#tasks = join(base, 'tasks');
    this.#cpu = cpu;
    this.#peak = existsSync(join(this.#tasks, 'memory.peak'));
  }

  /** Makes the agent's tree and moves the agent into it, or says why tasks run unenforced. */
  static setup(o: CgroupOptions): CgroupSetup {
    const mount = cgroup2Mount(o.mounts);
    if (!mount) return { enforced: false, reason: 'no cgroup v2 file system is mounted' };
    const own = ownCgroupPath(o.selfCgroup);
    if (own === null) return { enforced: false, reason: 'the agent is not in a cgroup v2 hierarchy (cgroup v1)' };
    const parent = join(mount, own);
    const controllers = read(join(parent, 'cgroup.controllers'))?.split(/\s+/) ?? [];
    if (!controllers.includes('memory'))
      return { enforced: false, reason: `the memory controller is not available in ${parent} (cgroup v1 or hybrid host)` };
    const cpu = controllers.includes('cpu');
    const base = join(parent, `lilcluster-${o.name}`);
    const pid = String(o.pid ?? process.pid);
    const ctl = `+memory${cpu ? ' +cpu' : ''}`;
    try {
      for (const sub of ['agent', 'tasks']) mkdirSync(join(base, sub), { recursive: true });
      // Out of the parent first: a cgroup that enables controllers for its children may hold no process (but the root).
      writeFileSync(join(base, 'agent', 'cgroup.procs'), pid);
      writeFileSync(join(parent, 'cgroup.subtree_control'), ctl);
      writeFileSync(join(base, 'cgroup.subtree_control'), ctl);
      writeFileSync(join(base, 'agent', 'memory.min'), String(o.reserveMiB * MiB));
      writeFileSync(join(base, 'tasks', 'memory.max'), String(o.taskMemMiB * MiB));
      writeFileSync(join(base, 'tasks', 'cgroup.subtree_control'), ctl);
    } catch (err) {
      // Back where it was, and nothing left behind.
      tryWrite(join(parent, 'cgroup.procs'), pid);
      for (const d of [join(base, 'agent'), join(base, 'tasks'), base]) void removeCgroup(d);
      return { enforced: false, reason: `cannot set up cgroups under ${parent}: ${(err as Error).message}` };
    }
    const cg = new TaskCgroups(base, cpu);
    cg.#removeLeftovers();
    return { enforced: true, cgroups: cg };
  }

  /** A cgroup for one task with its request (none: only the tasks' common limit holds it). */
  create(key: string, req: Resources | undefined): TaskCgroup {
    const dir = join(this.#tasks, key);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'memory.oom.group'), '1');
    if (req && req.memMiB > 0) {
      writeFileSync(join(dir, 'memory.max'), String(req.memMiB * MiB));
      // No swap on a diskless node, but a host may have some: the limit must be the limit.
      tryWrite(join(dir, 'memory.swap.max'), '0');
    }
    if (req && this.#cpu) writeFileSync(join(dir, 'cpu.max'), cpuMax(req.cores));
    const procs = join(dir, 'cgroup.procs');
    const peak = this.#peak;
    let fd: number | undefined;
    return {
      dir,
      openDir: () => (fd ??= openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY)),
      wrap: (file, args) => ({ file: '/bin/sh', args: ['-c', ENTER_SCRIPT, procs, file, ...args] }),
      finish: async () => {
        if (fd !== undefined) closeSync(fd);
        fd = undefined;
        const events = parseMemoryEvents(read(join(dir, 'memory.events')) ?? '');
        const memPeakKiB = peak ? parseMemoryPeakKiB(read(join(dir, 'memory.peak'))) : null;
        await removeCgroup(dir);
        return { oom: events.oomKill > 0 || events.oomGroupKill > 0, memPeakKiB };
      },
    };
  }

  /** Task cgroups of a previous agent (its tasks were killed at start): removed. */
  #removeLeftovers(): void {
    let names: string[] = [];
    try {
      names = readdirSync(this.#tasks, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name);
    } catch {
      return;
    }
    for (const n of names) void removeCgroup(join(this.#tasks, n));
  }
}

/** Kills what is left in a cgroup (cgroup.kill, else each pid) and removes it; a few tries while the processes go. */
async function removeCgroup(dir: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') return;
    }
    if (!tryWrite(join(dir, 'cgroup.kill'), '1'))
      for (const pid of (read(join(dir, 'cgroup.procs')) ?? '').split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone already */
        }
      }
    await new Promise((r) => setTimeout(r, 20 + i * 10));
  }
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function tryWrite(path: string, text: string): boolean {
  try {
    writeFileSync(path, text);
    return true;
  } catch {
    return false;
  }
}

/** Memory to hand out to tasks by default: MemAvailable (else MemTotal) of /proc/meminfo less the reserve, in MiB. */
export function defaultTaskMemMiB(meminfo: string, reserveMiB: number): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(meminfo) ?? /^MemTotal:\s+(\d+) kB/m.exec(meminfo);
  return m ? Math.max(0, Math.floor(Number(m[1]) / 1024) - reserveMiB) : 0;
}

/** GPUs by their device nodes (/dev/nvidia0, /dev/nvidia1...; not nvidiactl or nvidia-uvm). */
export function countGpus(devNames: readonly string[]): number {
  return devNames.filter((n) => /^nvidia\d+$/.test(n)).length;
}
