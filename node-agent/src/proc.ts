/**
 * Process groups and /proc: kill a task's whole group, list a group's members, and sample
 * memory. Linux only (the agent's platform).
 *
 * Peak memory: Node cannot wait4() its children, so rusage's ru_maxrss is out of reach. We
 * sample /proc instead: the main process's VmHWM (the kernel's own high-water mark of its
 * resident set, so a late sample still sees an earlier peak) and the sum of VmRSS over the
 * process tree (children found through /proc/<pid>/task/<tid>/children), first shortly after
 * the start, then periodically; the peak reported is the largest of those. A task that ends
 * before the first sample reports null.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

/** Sends a signal to every process of a group; false if the group is gone. */
export function killGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

/** PIDs whose process group is `pgid` (a scan of /proc; used to prove a group is gone). */
export function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(Number(name));
    if (stat && stat.pgrp === pgid && stat.state !== 'Z') out.push(Number(name));
  }
  return out;
}

function readStat(pid: number): { pgrp: number; session: number; state: string } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Fields after the command name, which is in parentheses and may hold spaces.
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0]!, pgrp: Number(rest[2]), session: Number(rest[3]) };
  } catch {
    return undefined;
  }
}

function statusKiB(pid: number, field: 'VmHWM' | 'VmRSS'): number | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'latin1');
    const i = s.indexOf(`${field}:`);
    if (i < 0) return undefined;
    return parseInt(s.slice(i + field.length + 1), 10);
  } catch {
    return undefined;
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1').trim();
      if (text) for (const c of text.split(' ')) out.push(Number(c));
    }
  } catch {
    /* gone, or no CONFIG_PROC_CHILDREN */
  }
  return out;
}

/** One memory sample of a task: its main process's high-water mark, or its tree's current total if larger. */
export function sampleTreeKiB(rootPid: number): number | undefined {
  const hwm = statusKiB(rootPid, 'VmHWM');
  if (hwm === undefined) return undefined;
  let sum = 0;
  const stack = [rootPid];
  const seen = new Set<number>();
  while (stack.length && seen.size < 10_000) {
    const pid = stack.pop()!;
    if (seen.has(pid)) continue;
    seen.add(pid);
    sum += statusKiB(pid, 'VmRSS') ?? 0;
    for (const c of childrenOf(pid)) stack.push(c);
  }
  return Math.max(hwm, sum);
}

/**
 * Kills what a previous agent process left running: after `kill -9` of the agent its tasks
 * live on as orphans (Node has no PR_SET_PDEATHSIG). A task is its own session and process
 * group (spawned detached) working under the tasks dir, so: every process whose cwd is under
 * `tasksDir` and whose group is also its session gets its group killed. Returns the groups.
 * A task inside a task root (task-root.ts) works in the same dir seen through the root's bind
 * mount: its cwd reads `<root><tasksDir>/…` from out here.
 */
export function killOrphanTasks(tasksDir: string, rootDir?: string): number[] {
  const under = rootDir ? [tasksDir, `${rootDir}${tasksDir}`] : [tasksDir];
  const groups = new Set<number>();
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return [];
  }
  for (const name of names) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    let cwd: string;
    try {
      cwd = readlinkSync(`/proc/${name}/cwd`);
    } catch {
      continue;
    }
    if (!under.some((d) => cwd === d || cwd.startsWith(`${d}/`))) continue;
    const st = readStat(Number(name));
    if (st && st.pgrp === st.session && st.pgrp > 1 && st.pgrp !== process.pid) groups.add(st.pgrp);
  }
  for (const g of groups) killGroup(g, 'SIGKILL');
  return [...groups];
}
