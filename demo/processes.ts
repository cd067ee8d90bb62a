/**
 * The demo's long-running processes (dispatcher, QEMU machines, the localhost forwarder)
 * outlive `make demo`, so they are started detached, each with a pid file in the state dir,
 * and stopped by PID — never by name. A PID is only signalled if its command line names the
 * state dir (every process the demo starts has it in its arguments), so a recycled PID is
 * never hit. A process whose pid file was lost is still found by that same rule
 * (`ownProcesses`), which is how a second `make demo` cleans up after a crashed first one.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** SIGTERM, then SIGKILL after this long. */
const STOP_GRACE_MS = 5_000;

export function pidFile(stateDir: string, name: string): string {
  return join(stateDir, `${name}.pid`);
}

function argv(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw ? raw.replace(/\0$/, '').split('\0') : undefined; // empty for zombies
  } catch {
    return undefined;
  }
}

/**
 * Whether a command line is one the demo starts — QEMU, the dispatcher, or the forwarder —
 * for this state dir. Both conditions: a `tail -f .cache/demo/dispatcher.log` of the user's
 * names the state dir too, and must survive `make demo-stop`.
 */
export function isDemoCommand(args: readonly string[], stateDir: string): boolean {
  if (!args.some((a) => a.includes(stateDir))) return false;
  const [exe = '', script = '', sub = ''] = args;
  if (/(^|\/)qemu-system-[\w-]+$/.test(exe)) return true;
  if (!/(^|\/)node(js)?$/.test(exe)) return false;
  return /(^|\/)dispatcher\.mjs$/.test(script) || (/(^|\/)demo\.mjs$/.test(script) && sub === 'forward');
}

/** Whether `pid` is alive and one of ours. */
export function isOurs(pid: number, stateDir: string): boolean {
  const a = argv(pid);
  return a !== undefined && isDemoCommand(a, stateDir);
}

/**
 * Starts a process in a session of its own (Ctrl-C in the terminal does not reach it; the
 * demo stops it itself), its output appended to `logFile`, its PID in `<name>.pid`.
 */
export function spawnDetached(
  stateDir: string,
  name: string,
  cmd: string,
  args: string[],
  logFile: string,
  env: NodeJS.ProcessEnv = process.env,
): number {
  const out = openSync(logFile, 'a');
  try {
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', out, out], env });
    if (child.pid === undefined) throw new Error(`cannot start ${cmd}`);
    child.unref();
    writeFileSync(pidFile(stateDir, name), `${child.pid}\n`);
    return child.pid;
  } finally {
    closeSync(out);
  }
}

export function readPid(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Alive processes of ours: from the pid files, and any other whose command line names the state dir. */
export function ownProcesses(stateDir: string): { pid: number; what: string }[] {
  const found = new Map<number, string>();
  if (existsSync(stateDir)) {
    for (const f of readdirSync(stateDir)) {
      if (!f.endsWith('.pid')) continue;
      const pid = readPid(join(stateDir, f));
      if (pid !== undefined && isOurs(pid, stateDir)) found.set(pid, f.slice(0, -4));
    }
  }
  const skip = new Set([process.pid, process.ppid]);
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || skip.has(pid) || found.has(pid)) continue;
    const a = argv(pid);
    if (a && isDemoCommand(a, stateDir))
      found.set(pid, `${a[0]!.split('/').pop()!}${a[1]?.endsWith('.mjs') ? ` ${a[1].split('/').pop()}` : ''}`);
  }
  return [...found].map(([pid, what]) => ({ pid, what }));
}

/** SIGTERM, SIGKILL after a grace period; resolves when the process is gone (or was never ours). */
export async function stopPid(pid: number, stateDir: string): Promise<void> {
  if (!isOurs(pid, stateDir)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + STOP_GRACE_MS;
  while (isOurs(pid, stateDir)) {
    if (Date.now() > deadline) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    if (Date.now() > deadline + 5_000) throw new Error(`process ${pid} did not die after SIGKILL`);
    await sleep(50);
  }
}

/** Stops every process of ours; removes the pid files. Returns what it stopped. */
export async function stopAll(stateDir: string): Promise<string[]> {
  const procs = ownProcesses(stateDir);
  await Promise.all(procs.map((p) => stopPid(p.pid, stateDir)));
  if (existsSync(stateDir)) for (const f of readdirSync(stateDir)) if (f.endsWith('.pid')) rmSync(join(stateDir, f), { force: true });
  return procs.map((p) => `${p.what} (pid ${p.pid})`);
}
