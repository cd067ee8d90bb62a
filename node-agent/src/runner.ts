/**
 * The real TaskRunner: each task runs in its own process group (spawned detached, so the
 * group id is the task's pid) and its own work dir under the agent's work dir (tmpfs on the
 * RAM image), with the inputs tar unpacked into it and an empty out/ for files to return.
 *
 *   - timeout: SIGTERM to the whole group, SIGKILL after the grace; the result says timedOut
 *   - when the main process exits, whatever it left running in its group is killed too
 *   - stdout and stderr are kept up to a limit each; beyond it the result is marked truncated
 *   - `PROGRESS 0.42` lines on stdout are reported (protocol/progress.ts)
 *   - peak memory: sampled from /proc (proc.ts says how)
 *   - files under out/ come back as a gzip-compressed tar
 *
 * The task's environment is the agent's (PATH, LD_LIBRARY_PATH, locale... as the machine set
 * them up) minus the agent's own settings — LC_TOKEN and LC_ENROLL_TOKEN above all, which tasks
 * must not see — with HOME set to the work dir, the LC_TASK_ID, LC_JOB_ID, LC_ATTEMPT,
 * LC_WORK_DIR and LC_OUT_DIR variables, and the task's own env last.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { TaskAssignment, TaskResult } from '../../dispatcher/src/dispatch/contract.js';
import { ProgressScanner } from '../../dispatcher/src/protocol/progress.js';
import type { ExecOutcome, RunningHandle, TaskRunner } from './seams.js';
import { killGroup, sampleTreeKiB } from './proc.js';
import { packDirTarGz, safeJoin, TarError, unpackTar } from './tarball.js';

/** Per stream (stdout, stderr); `--max-output` overrides. */
export const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;
/** Total size of the files under out/ that a result may carry. */
export const DEFAULT_MAX_OUTPUTS_BYTES = 16 * 1024 * 1024;
/** Total size of a task's unpacked inputs (they live in RAM on the diskless image). */
export const DEFAULT_MAX_INPUT_BYTES = 1024 * 1024 * 1024;
/** SIGTERM → SIGKILL grace at a timeout or cancel. */
export const DEFAULT_KILL_GRACE_MS = 3000;
/** First memory sample after the start, then one every MEMORY_SAMPLE_MS. */
const FIRST_SAMPLE_MS = 30;
const MEMORY_SAMPLE_MS = 500;
/** After the main process exits, wait this long for its pipes to drain. */
const DRAIN_MS = 2000;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface RunnerOptions {
  /** Task work dirs are created under it (`<taskId>-<attempt>`). */
  tasksDir: string;
  maxOutputBytes: number;
  maxOutputsBytes: number;
  maxInputBytes: number;
  killGraceMs: number;
  /** http(s)://host:port of the dispatcher, for inputs tars; null if unknown. */
  httpBase: string | null;
  userAgent: string;
  /** Keep work dirs after the task (debugging). */
  keepWorkDirs?: boolean;
}

class Capture {
  readonly #chunks: Buffer[] = [];
  #bytes = 0;
  truncated = false;
  constructor(private readonly max: number) {}
  push(b: Buffer): void {
    if (this.#bytes >= this.max) {
      this.truncated = true;
      return;
    }
    const room = this.max - this.#bytes;
    if (b.length > room) {
      this.#chunks.push(b.subarray(0, room));
      this.#bytes = this.max;
      this.truncated = true;
    } else {
      this.#chunks.push(b);
      this.#bytes += b.length;
    }
  }
  text(): string {
    return this.#chunks.length === 1 ? this.#chunks[0]!.toString('utf8') : Buffer.concat(this.#chunks).toString('utf8');
  }
}

interface ProcessOutcome {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  cancelled: boolean;
  durationMs: number;
  maxRssKiB: number | null;
  spawnError: string | null;
}

interface ProcessSpec {
  file: string;
  args: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  stdin: Buffer | null;
  timeoutMs: number;
  killGraceMs: number;
  onStdout: (b: Buffer) => void;
  onStderr: (b: Buffer) => void;
  sampleMemory: boolean;
}

/** Runs one process in its own group to the end (its group killed), with a way to stop it early. */
function runProcess(spec: ProcessSpec): { done: Promise<ProcessOutcome>; stop: () => void } {
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
      child = spawn(spec.file, spec.args, { cwd: spec.cwd, env: spec.env, detached: true, stdio: [spec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
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

/** The agent's settings (config.ts): never passed on to tasks. */
const AGENT_ONLY_ENV = new Set(['LC_TOKEN', 'LC_ENROLL_TOKEN', 'LC_DISPATCHER', 'LC_PUBKEY_FILE', 'LC_INSECURE', 'LC_MAC', 'LC_SLOTS', 'NODE_OPTIONS']);

let inherited: NodeJS.ProcessEnv | undefined;
function baseEnv(dir: string): NodeJS.ProcessEnv {
  if (!inherited) {
    inherited = {};
    for (const [k, v] of Object.entries(process.env)) if (!AGENT_ONLY_ENV.has(k) && v !== undefined) inherited[k] = v;
    inherited.PATH ||= DEFAULT_PATH;
  }
  return { ...inherited, HOME: dir };
}

export class ProcessRunner implements TaskRunner {
  constructor(private readonly opts: RunnerOptions) {}

  start(task: TaskAssignment, onProgress: (fraction: number) => void): RunningHandle {
    let stop: (() => void) | undefined;
    let cancelReason: string | undefined;
    const startedAt = Date.now();
    const result = this.#run(task, onProgress, (s) => {
      stop = s;
      if (cancelReason !== undefined) s();
    }, () => cancelReason).catch((err: unknown) => failed(task, startedAt, `agent error: ${(err as Error).message}`));
    return {
      result,
      cancel: (reason) => {
        cancelReason ??= reason;
        stop?.();
      },
    };
  }

  async #run(task: TaskAssignment, onProgress: (f: number) => void, setStop: (s: () => void) => void, cancelled: () => string | undefined): Promise<TaskResult> {
    const startedAt = Date.now();
    const dir = join(this.opts.tasksDir, `${task.taskId}-${task.attempt}`);
    let outEmpty = false;
    try {
      await mkdir(join(dir, 'out'), { recursive: true });
      if (task.inputsPath) {
        const err = await this.#fetchInputs(task.inputsPath, dir);
        if (err) return failed(task, startedAt, err);
      }
      let cwd = dir;
      if (task.cwd) {
        const c = safeJoin(dir, task.cwd);
        if (!c) return failed(task, startedAt, `cwd "${task.cwd}" is outside the task's work dir`);
        const st = await stat(c).catch(() => undefined);
        if (!st?.isDirectory()) return failed(task, startedAt, `cwd "${task.cwd}" does not exist in the task's work dir`);
        cwd = c;
      }
      if (cancelled() !== undefined) return failed(task, startedAt, 'cancelled before it started');

      const [file, args] = typeof task.command === 'string' ? ['/bin/sh', ['-c', task.command]] : [task.command[0]!, task.command.slice(1)];
      const stdout = new Capture(this.opts.maxOutputBytes);
      const stderr = new Capture(this.opts.maxOutputBytes);
      const scanner = new ProgressScanner(onProgress);
      const env = {
        ...baseEnv(dir), LC_TASK_ID: String(task.taskId), LC_JOB_ID: String(task.jobId), LC_ATTEMPT: String(task.attempt), LC_WORK_DIR: dir,
        LC_OUT_DIR: join(dir, 'out'), ...task.env,
      };
      const proc = runProcess({
        file, args, cwd, env, stdin: task.stdinB64 ? Buffer.from(task.stdinB64, 'base64') : null, timeoutMs: task.timeoutMs,
        killGraceMs: this.opts.killGraceMs,
        onStdout: (b) => {
          stdout.push(b);
          scanner.push(b);
        },
        onStderr: (b) => stderr.push(b), sampleMemory: true,
      });
      setStop(proc.stop);
      const o = await proc.done;
      let outputs: string | null = null;
      const errors: string[] = [];
      if (o.spawnError) errors.push(o.spawnError);
      if (o.timedOut) errors.push(`killed at its timeout of ${task.timeoutMs} ms`);
      // Most tasks write nothing: removing the empty out/ is then the whole check (one call).
      outEmpty = await rmdir(join(dir, 'out')).then(
        () => true,
        () => false,
      );
      if (!outEmpty) {
        try {
          const tgz = await packDirTarGz(join(dir, 'out'), this.opts.maxOutputsBytes);
          outputs = tgz ? tgz.toString('base64') : null;
        } catch (err) {
          errors.push(err instanceof TarError ? `outputs not returned: ${err.message}` : `outputs not returned: ${(err as Error).message}`);
        }
      }
      return {
        taskId: task.taskId, attempt: task.attempt, exitCode: o.exitCode, signal: o.signal, timedOut: o.timedOut, error: errors.length ? errors.join('; ') : null,
        startedAt, durationMs: o.durationMs, maxRssKiB: o.maxRssKiB, stdout: stdout.text(), stderr: stderr.text(), stdoutTruncated: stdout.truncated,
        stderrTruncated: stderr.truncated, outputsTarGzB64: outputs,
      };
    } finally {
      if (!this.opts.keepWorkDirs) await removeWorkDir(dir, outEmpty);
    }
  }

  /** Fetches and unpacks the task's inputs tar; returns why it failed, or undefined. */
  async #fetchInputs(path: string, dir: string): Promise<string | undefined> {
    if (!this.opts.httpBase) return 'the task has inputs but the agent does not know the dispatcher\'s HTTP address';
    const url = new URL(path, this.opts.httpBase);
    try {
      const res = await fetch(url, { headers: { 'user-agent': this.opts.userAgent } });
      if (!res.ok || !res.body) return `inputs ${url.pathname}: HTTP ${res.status}`;
      await unpackTar(Readable.fromWeb(res.body as Parameters<typeof Readable.fromWeb>[0]), dir, this.opts.maxInputBytes);
      return undefined;
    } catch (err) {
      return `inputs ${url.pathname}: ${(err as Error).message}`;
    }
  }

  exec(command: string[] | string, timeoutMs: number, onOutput: (stream: 'stdout' | 'stderr', chunk: string) => void): Promise<ExecOutcome> {
    const [file, args] = typeof command === 'string' ? ['/bin/sh', ['-c', command]] : [command[0]!, command.slice(1)];
    const dir = this.opts.tasksDir;
    const dec = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
    const proc = runProcess({
      file, args, cwd: '/', env: { ...baseEnv(dir), HOME: process.env.HOME || '/root' }, stdin: null, timeoutMs, killGraceMs: this.opts.killGraceMs,
      onStdout: (b) => onOutput('stdout', dec.stdout.write(b)), onStderr: (b) => onOutput('stderr', dec.stderr.write(b)), sampleMemory: false,
    });
    return proc.done.then((o) => ({
      exitCode: o.exitCode, signal: o.signal, timedOut: o.timedOut, durationMs: o.durationMs,
      ...(o.spawnError ? { error: o.spawnError } : o.timedOut ? { error: `killed at its timeout of ${timeoutMs} ms` } : {}),
    }));
  }
}

/**
 * Removes a task's work dir. The common case — a task that wrote nothing, its empty out/
 * already removed — costs one rmdir; a recursive rm (a stat and a readdir per entry) only
 * when something is left.
 */
async function removeWorkDir(dir: string, outRemoved: boolean): Promise<void> {
  if (outRemoved && (await rmdir(dir).then(() => true, () => false))) return;
  await rm(dir, { recursive: true, force: true }).catch(() => {});
}

function failed(task: TaskAssignment, startedAt: number, error: string): TaskResult {
  return {
    taskId: task.taskId, attempt: task.attempt, exitCode: null, signal: null, timedOut: false, error, startedAt, durationMs: Date.now() - startedAt,
    maxRssKiB: null, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false, outputsTarGzB64: null,
  };
}
