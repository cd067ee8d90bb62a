/**
 * The real TaskRunner: each task runs in its own process group (its own session, so the
 * group id is the task's pid) and its own work dir under the agent's work dir (tmpfs on the
 * RAM image), with the inputs tar unpacked into it and an empty out/ for files to return.
 *
 *   - timeout: SIGTERM to the whole group, SIGKILL after the grace; the result says timedOut
 *   - when the main process exits, whatever it left running in its group is killed too
 *   - stdout and stderr are kept up to a limit each; beyond it the result is marked truncated
 *   - `PROGRESS 0.42` lines on stdout are reported (protocol/progress.ts)
 *   - peak memory: wait4's ru_maxrss and /proc samples (native-launcher.ts), or /proc
 *     samples alone (launcher.ts, child_process)
 *   - files under out/ come back as a gzip-compressed tar
 *   - with cgroups (cgroup.ts), each task runs in its own, held to its request; a task the
 *     kernel killed for memory comes back as `oom`, with its cgroup's peak memory
 *
 * The processes are started by a Launcher (launcher.ts): the native spawner when its addon
 * loads, else Node's child_process. The environment: task-env.ts. With a task root (the
 * image's root file system, task-root.ts), tasks and `exec` commands run inside it.
 *
 * Per task, the common case costs two mkdirs and two rmdirs, done synchronously: on a tmpfs
 * they take microseconds, less than a round trip through libuv's threadpool.
 */
import { createReadStream, createWriteStream, mkdirSync, rmdirSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StringDecoder } from 'node:string_decoder';
import type { TaskAssignment, TaskResult } from '../../dispatcher/src/protocol/messages.js';
import { ProgressScanner } from '../../dispatcher/src/protocol/progress.js';
import type { ExecOutcome, RunningHandle, TaskRunner } from './seams.js';
import { ChildProcessLauncher, type Launcher } from './launcher.js';
import type { TaskCgroup, TaskCgroups, TaskMemory } from './cgroup.js';
import { findExecutable } from './executable.js';
import { NativeLauncher } from './native-launcher.js';
import { loadSpawnAddon } from './spawn-addon.js';
import { InheritedEnv } from './task-env.js';
import { enterRoot, rootEnv, type Command, type TaskRootConfig } from './task-root.js';
import { packDirTarGz, safeJoin, TarError, unpackTar } from './tarball.js';

/** Per stream (stdout, stderr); `--max-output` overrides. */
export const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;
/** Total size of the files under out/ that a result may carry. */
export const DEFAULT_MAX_OUTPUTS_BYTES = 16 * 1024 * 1024;
/** Total size of a task's unpacked inputs (they live in RAM on the diskless image). */
export const DEFAULT_MAX_INPUT_BYTES = 1024 * 1024 * 1024;
/** SIGTERM → SIGKILL grace at a timeout or cancel. */
export const DEFAULT_KILL_GRACE_MS = 3000;

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
  /** How tasks are started; default: `defaultLauncher()`. */
  launcher?: Launcher;
  /** Where tasks run (task-root.ts: `loadTaskRoot`); default: the agent's own file system. */
  taskRoot?: TaskRootConfig;
  /** Each task in its own cgroup, held to its request (cgroup.ts); absent: not enforced. */
  cgroups?: TaskCgroups;
}

/** The native launcher if its addon loads, else child_process; `note` says which and why. */
export function defaultLauncher(env: NodeJS.ProcessEnv = process.env): { launcher: Launcher; note: string } {
  const load = loadSpawnAddon({ env });
  if (load.addon) return { launcher: new NativeLauncher(load.addon), note: `tasks start with posix_spawn (${load.path})` };
  return { launcher: new ChildProcessLauncher(), note: `tasks start with Node's child_process: ${load.reason}` };
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
    if (this.#chunks.length === 0) return '';
    return this.#chunks.length === 1 ? this.#chunks[0]!.toString('utf8') : Buffer.concat(this.#chunks).toString('utf8');
  }
}

export class ProcessRunner implements TaskRunner {
  readonly launcher: Launcher;
  /** Operator commands stream their output as it comes: always through child_process's pipes. */
  readonly #execLauncher = new ChildProcessLauncher();
  readonly #env: InheritedEnv;
  readonly #root: TaskRootConfig;

  constructor(private readonly opts: RunnerOptions) {
    this.launcher = opts.launcher ?? defaultLauncher().launcher;
    this.#root = opts.taskRoot ?? { kind: 'none' };
    this.#env = new InheritedEnv(this.#root.kind === 'root' ? rootEnv(process.env, this.#root.root) : process.env);
  }

  refusal(): string | null {
    return this.#root.kind === 'refused' ? this.#root.reason : null;
  }

  /** The command as started: inside the task root when there is one; a string says why it cannot start. */
  #placed(cmd: Command): Command | string {
    if (this.#root.kind === 'none') return cmd;
    if (this.#root.kind === 'refused') return this.#root.reason;
    const c = enterRoot(cmd, this.#root.root);
    return 'refused' in c ? c.refused : c;
  }

  start(task: TaskAssignment, onProgress: (fraction: number) => void): RunningHandle {
    let stop: (() => void) | undefined;
    let cancelReason: string | undefined;
    const startedAt = Date.now();
    const result = this.#run(
      task,
      onProgress,
      (s) => {
        stop = s;
        if (cancelReason !== undefined) s();
      },
      () => cancelReason,
    ).catch((err: unknown) => failed(task, startedAt, `agent error: ${(err as Error).message}`));
    return {
      result,
      cancel: (reason) => {
        cancelReason ??= reason;
        stop?.();
      },
    };
  }

  async #run(
    task: TaskAssignment,
    onProgress: (f: number) => void,
    setStop: (s: () => void) => void,
    cancelled: () => string | undefined,
  ): Promise<TaskResult> {
    const startedAt = Date.now();
    if (this.#root.kind === 'refused') return failed(task, startedAt, this.#root.reason);
    const dir = join(this.opts.tasksDir, `${task.taskId}-${task.attempt}`);
    const outDir = join(dir, 'out');
    let outEmpty = false;
    let cg: TaskCgroup | undefined;
    let mem: TaskMemory | undefined;
    try {
      makeWorkDir(dir, outDir);
      if (task.inputsPath) {
        const err = await this.#fetchInputs(task.inputsPath, task.inputsSha256, dir);
        if (err) return failed(task, startedAt, err);
      }
      let cwd = dir;
      if (task.cwd) {
        const c = safeJoin(dir, task.cwd);
        if (!c) return failed(task, startedAt, `cwd "${task.cwd}" is outside the task's work dir`);
        if (!statSync(c, { throwIfNoEntry: false })?.isDirectory())
          return failed(task, startedAt, `cwd "${task.cwd}" does not exist in the task's work dir`);
        cwd = c;
      }
      if (cancelled() !== undefined) return failed(task, startedAt, 'cancelled before it started');

      const [file, args] = typeof task.command === 'string' ? ['/bin/sh', ['-c', task.command]] : [task.command[0]!, task.command.slice(1)];
      let placed = this.#placed({ file, args, cwd });
      if (typeof placed === 'string') return failed(task, startedAt, placed);
      let cgroupFd: number | undefined;
      if (this.opts.cgroups) {
        // Behind the wrapper a missing command would be the wrapper's exit 127: outside a task
        // root it is checked here, as spawn would. The native launcher says ENOENT itself.
        const wrapped = !this.launcher.intoCgroup;
        if (wrapped && this.#root.kind === 'none' && !findExecutable(placed.file, task.env?.PATH ?? this.#env.vars.PATH ?? '', placed.cwd))
          return failed(task, startedAt, `cannot start ${placed.file}: ENOENT (not found, or not executable, on the task's PATH)`);
        try {
          cg = this.opts.cgroups.create(`${task.taskId}-${task.attempt}`, task.resources);
          if (wrapped) placed = { ...placed, ...cg.wrap(placed.file, placed.args) };
          else cgroupFd = cg.openDir();
        } catch (err) {
          return failed(task, startedAt, `cannot make the task's cgroup: ${(err as Error).message}`);
        }
      }
      const stdout = new Capture(this.opts.maxOutputBytes);
      const stderr = new Capture(this.opts.maxOutputBytes);
      let scanner = new ProgressScanner(onProgress);
      const set = {
        HOME: dir,
        LC_TASK_ID: String(task.taskId),
        LC_JOB_ID: String(task.jobId),
        LC_ATTEMPT: String(task.attempt),
        LC_WORK_DIR: dir,
        LC_OUT_DIR: outDir,
        ...task.env,
      };
      const proc = this.launcher.launch({
        ...placed,
        env: { inherited: this.#env, set },
        stdin: task.stdinB64 ? Buffer.from(task.stdinB64, 'base64') : null,
        timeoutMs: task.timeoutMs,
        killGraceMs: this.opts.killGraceMs,
        keepBytes: this.opts.maxOutputBytes,
        onStdout: (b) => {
          stdout.push(b);
          scanner.push(b);
        },
        onStderr: (b) => stderr.push(b),
        onSkip: (stream) => {
          if (stream === 'stdout') scanner = new ProgressScanner(onProgress);
        },
        sampleMemory: true,
        ...(cgroupFd !== undefined ? { cgroupFd } : {}),
      });
      setStop(proc.stop);
      const o = await proc.done;
      if (cg) {
        mem = await cg.finish();
        cg = undefined;
      }
      let outputs: string | null = null;
      const errors: string[] = [];
      if (o.spawnError) errors.push(o.spawnError);
      if (o.timedOut) errors.push(`killed at its timeout of ${task.timeoutMs} ms`);
      // Most tasks write nothing: removing the empty out/ is then the whole check (one call).
      outEmpty = tryRmdir(outDir);
      if (!outEmpty) {
        try {
          const tgz = await packDirTarGz(outDir, this.opts.maxOutputsBytes);
          outputs = tgz ? tgz.toString('base64') : null;
        } catch (err) {
          errors.push(err instanceof TarError ? `outputs not returned: ${err.message}` : `outputs not returned: ${(err as Error).message}`);
        }
      }
      return {
        taskId: task.taskId,
        attempt: task.attempt,
        exitCode: o.exitCode,
        signal: o.signal,
        timedOut: o.timedOut,
        error: errors.length ? errors.join('; ') : null,
        startedAt,
        durationMs: o.durationMs,
        maxRssKiB: o.maxRssKiB,
        stdout: stdout.text(),
        stderr: stderr.text(),
        stdoutTruncated: stdout.truncated,
        stderrTruncated: stderr.truncated,
        outputsTarGzB64: outputs,
        ...(mem ? { oom: mem.oom, memPeakKiB: mem.memPeakKiB } : {}),
      };
    } finally {
      if (cg) await cg.finish();
      if (!this.opts.keepWorkDirs) await removeWorkDir(dir, outEmpty);
    }
  }

  /**
   * Fetches the task's inputs tar beside the work dir (not in it: the task never sees it),
   * checks its sha256 against the one in the assignment — the assignment arrives sealed, the
   * tar over plain HTTP — and only then unpacks it. Returns why it failed, or undefined.
   */
  async #fetchInputs(path: string, sha256: string | null, dir: string): Promise<string | undefined> {
    if (!this.opts.httpBase) return "the task has inputs but the agent does not know the dispatcher's HTTP address";
    const url = new URL(path, this.opts.httpBase);
    if (!sha256) return `inputs ${url.pathname}: the assignment carries no sha256 for them; not fetched`;
    const file = `${dir}.inputs`;
    const max = this.opts.maxInputBytes;
    try {
      const res = await fetch(url, { headers: { 'user-agent': this.opts.userAgent } });
      if (!res.ok || !res.body) return `inputs ${url.pathname}: HTTP ${res.status}`;
      const hash = createHash('sha256');
      let bytes = 0;
      const count = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          bytes += chunk.length;
          if (bytes > max) return cb(new TarError(`the download is larger than ${max} bytes`));
          hash.update(chunk);
          cb(null, chunk);
        },
      });
      await pipeline(
        Readable.fromWeb(res.body as Parameters<typeof Readable.fromWeb>[0]),
        count,
        createWriteStream(file, { flags: 'wx', mode: 0o600 }),
      );
      const got = hash.digest('hex');
      if (got !== sha256)
        return `inputs ${url.pathname}: sha256 mismatch (expected ${sha256}, got ${got} for ${bytes} bytes); nothing unpacked`;
      await unpackTar(createReadStream(file), dir, max);
      return undefined;
    } catch (err) {
      return `inputs ${url.pathname}: ${(err as Error).message}`;
    } finally {
      await rm(file, { force: true }).catch(() => {});
    }
  }

  exec(
    command: string[] | string,
    timeoutMs: number,
    onOutput: (stream: 'stdout' | 'stderr', chunk: string) => void,
  ): Promise<ExecOutcome> {
    const [file, args] = typeof command === 'string' ? ['/bin/sh', ['-c', command]] : [command[0]!, command.slice(1)];
    const placed = this.#placed({ file, args, cwd: '/' });
    if (typeof placed === 'string') return Promise.resolve({ exitCode: null, signal: null, timedOut: false, durationMs: 0, error: placed });
    const dec = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
    const proc = this.#execLauncher.launch({
      ...placed,
      env: { inherited: this.#env, set: { HOME: process.env.HOME || '/root' } },
      stdin: null,
      timeoutMs,
      killGraceMs: this.opts.killGraceMs,
      keepBytes: Infinity,
      onStdout: (b) => onOutput('stdout', dec.stdout.write(b)),
      onStderr: (b) => onOutput('stderr', dec.stderr.write(b)),
      sampleMemory: false,
    });
    return proc.done.then((o) => ({
      exitCode: o.exitCode,
      signal: o.signal,
      timedOut: o.timedOut,
      durationMs: o.durationMs,
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
  if (outRemoved && tryRmdir(dir)) return;
  await rm(dir, { recursive: true, force: true }).catch(() => {});
}

function tryRmdir(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch {
    return false; // not empty (or gone)
  }
}

/** `<dir>/out`, with `<dir>`: two mkdirs, or a recursive one if the tasks dir went missing. */
function makeWorkDir(dir: string, outDir: string): void {
  try {
    mkdirSync(dir);
    mkdirSync(outDir);
  } catch {
    mkdirSync(outDir, { recursive: true });
  }
}

function failed(task: TaskAssignment, startedAt: number, error: string): TaskResult {
  return {
    taskId: task.taskId,
    attempt: task.attempt,
    exitCode: null,
    signal: null,
    timedOut: false,
    error,
    startedAt,
    durationMs: Date.now() - startedAt,
    maxRssKiB: null,
    stdout: '',
    stderr: '',
    stdoutTruncated: false,
    stderrTruncated: false,
    outputsTarGzB64: null,
  };
}
