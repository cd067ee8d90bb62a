/**
 * Running one process to its end, two ways behind one interface (the runner does not know
 * which): the native spawner (native-launcher.ts: posix_spawn, output in memfds, exit through
 * a pidfd) when its addon loads, else Node's child_process (here). Same contract for both —
 * test/integration/agents/runner.test.ts runs its suite against each:
 *
 *   - the process leads its own session and process group (the group id is its pid)
 *   - timeout or stop(): SIGTERM to the whole group, SIGKILL after the grace
 *   - when the main process exits, whatever is left in its group is SIGKILLed
 *   - stdout and stderr reach onStdout/onStderr in order, in full up to `keepBytes` each
 *     (past that a launcher may skip ahead, saying so with onSkip)
 *   - a process that cannot start resolves with `spawnError` ("cannot start X: ENOENT")
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { InheritedEnv } from './task-env.js';
import { killGroup, sampleTreeKiB } from './proc.js';

export interface ProcessSpec {
  file: string;
  args: string[];
  cwd: string;
  /** The inherited environment with `set` on top. */
  env: { inherited: InheritedEnv; set: Readonly<Record<string, string>> };
  stdin: Buffer | null;
  timeoutMs: number;
  killGraceMs: number;
  onStdout: (b: Buffer) => void;
  onStderr: (b: Buffer) => void;
  /** Bytes of each stream that must reach the callbacks in full. */
  keepBytes: number;
  /** Output of `stream` was skipped (beyond keepBytes); what follows starts at a line. */
  onSkip?: (stream: 'stdout' | 'stderr') => void;
  sampleMemory: boolean;
  /** An open cgroup v2 directory to start the process in (launchers with `intoCgroup` only); the caller closes it. */
  cgroupFd?: number;
}

export interface ProcessOutcome {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  cancelled: boolean;
  durationMs: number;
  maxRssKiB: number | null;
  spawnError: string | null;
}

export interface RunningProcess {
  done: Promise<ProcessOutcome>;
  /** SIGTERM to the group, SIGKILL after the grace; the outcome says cancelled. */
  stop(): void;
}

export interface Launcher {
  /** "native" or "child_process", for the agent's start line. */
  readonly kind: string;
  /** Starts processes straight into a cgroup (`cgroupFd`); else the caller wraps the command to enter it. */
  readonly intoCgroup: boolean;
  launch(spec: ProcessSpec): RunningProcess;
}

/** First memory sample after the start, then one every MEMORY_SAMPLE_MS (child_process has no wait4). */
export const FIRST_SAMPLE_MS = 30;
const MEMORY_SAMPLE_MS = 500;
/** After the main process exits, wait this long for its pipes to drain. */
const DRAIN_MS = 2000;

/**
 * Node's child_process: forks the agent per task (spawned detached, so in its own session),
 * output through pipes. Peak memory is sampled from /proc (proc.ts says how): null for a task
 * that ends before the first sample.
 */
export class ChildProcessLauncher implements Launcher {
  readonly kind = 'child_process';
  readonly intoCgroup = false;

  launch(spec: ProcessSpec): RunningProcess {
    if (spec.cgroupFd !== undefined) throw new Error('the child_process launcher cannot start a process into a cgroup: wrap the command');
    const t0 = performance.now();
    let child: ChildProcess;
    let timedOut = false;
    let cancelled = false;
    let peak: number | null = null;
    let killTimer: NodeJS.Timeout | undefined;
    let graceTimer: NodeJS.Timeout | undefined;
    let memTimer: NodeJS.Timeout | undefined;
    let exited = false;

    const terminate = () => {
      if (exited || child?.pid === undefined) return;
      killGroup(child.pid, 'SIGTERM');
      graceTimer ??= setTimeout(() => killGroup(child.pid!, 'SIGKILL'), spec.killGraceMs);
    };

    const done = new Promise<ProcessOutcome>((resolve) => {
      try {
        const env = spec.env.inherited.object(spec.env.set);
        child = spawn(spec.file, spec.args, {
          cwd: spec.cwd,
          env,
          detached: true,
          stdio: [spec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
        });
      } catch (err) {
        resolve({ exitCode: null, signal: null, timedOut, cancelled, durationMs: 0, maxRssKiB: null, spawnError: (err as Error).message });
        return;
      }
      child.stdout!.on('data', spec.onStdout);
      child.stderr!.on('data', spec.onStderr);
      if (spec.stdin) {
        child.stdin!.on('error', () => {}); // the task may not read its stdin (EPIPE)
        child.stdin!.end(spec.stdin);
      }
      const pid = child.pid;
      if (pid !== undefined) {
        killTimer = setTimeout(() => {
          timedOut = true;
          terminate();
        }, spec.timeoutMs);
        if (spec.sampleMemory) {
          const tick = () => {
            const kib = sampleTreeKiB(pid);
            if (kib !== undefined) peak = Math.max(peak ?? 0, kib);
            memTimer = setTimeout(tick, MEMORY_SAMPLE_MS);
          };
          memTimer = setTimeout(tick, FIRST_SAMPLE_MS);
        }
      }
      let settled = false;
      const finish = (exitCode: number | null, signal: string | null, spawnError: string | null) => {
        if (settled) return;
        settled = true;
        exited = true;
        clearTimeout(killTimer);
        clearTimeout(graceTimer);
        clearTimeout(memTimer);
        const durationMs = Math.round(performance.now() - t0);
        // Whatever the task left behind in its group goes with it.
        if (pid !== undefined) killGroup(pid, 'SIGKILL');
        const out = { exitCode, signal, timedOut, cancelled, durationMs, maxRssKiB: peak, spawnError };
        if (spawnError) return resolve(out);
        // Wait for the pipes to drain (the group is dead, so they close promptly).
        if (child.stdout!.closed && child.stderr!.closed) return resolve(out);
        const t = setTimeout(() => {
          child.stdout!.destroy();
          child.stderr!.destroy();
          resolve(out);
        }, DRAIN_MS);
        child.once('close', () => {
          clearTimeout(t);
          resolve(out);
        });
      };
      child.once('error', (err: NodeJS.ErrnoException) => finish(null, null, `cannot start ${spec.file}: ${err.code ?? err.message}`));
      child.once('exit', (code, signal) => finish(code, signal, null));
    });
    return {
      done,
      stop: () => {
        cancelled = true;
        terminate();
      },
    };
  }
}
