/**
 * The native launcher: tasks started by the spawn addon (spawn-addon.ts, spawn.c) —
 * posix_spawn in a new session from a threadpool thread (the event loop never waits for a
 * child's execve), stdout and stderr into memfds, the exit seen through a pidfd on the event
 * loop and reaped with wait4 (the group SIGKILLed first).
 *
 * Output: a short task's files are read once, at its exit. While tasks run, one poller reads
 * the new bytes of each task older than OUTPUT_POLL_MS every OUTPUT_POLL_MS (PROGRESS lines
 * arrive that way), and frees what it has read (the memfd would otherwise hold a chatty
 * task's whole output in RAM). Past `keepBytes`, only the last TAIL_BYTES of each read matter
 * (for PROGRESS lines): the rest is skipped, never read.
 *
 * Peak memory: samples of the task (its main process's high-water mark, or the whole tree's
 * resident memory if larger: children running side by side add up), 30 ms after the start
 * and at every poll, as the child_process launcher takes them; and wait4's ru_maxrss, which
 * is exact even for a task too short to sample — but only when it is above the agent's own
 * peak: at execve, Linux folds the peak of the address space being left into the child's
 * figure, and a posix_spawn child (CLONE_VM) leaves the agent's (a forked one, a copy of it).
 * So: the largest of the samples and of a trustworthy ru_maxrss; null when there is neither.
 */
import { closeSync, fstatSync, readSync } from 'node:fs';
import { constants } from 'node:os';
import type { Launcher, ProcessOutcome, ProcessSpec, RunningProcess } from './launcher.js';
import { FIRST_SAMPLE_MS } from './launcher.js';
import { killGroup, sampleTreeKiB } from './proc.js';
import type { SpawnAddon } from './spawn-addon.js';

/** How often running tasks' output is read and their memory sampled (progress latency, memory held by output). */
export const OUTPUT_POLL_MS = 250;
/** Read at most this much of one stream per poll, so one chatty task cannot stall the agent. */
const READ_PER_POLL_BYTES = 4 * 1024 * 1024;
/** Past keepBytes, this much of the newest output is read (for PROGRESS lines). */
const TAIL_BYTES = 64 * 1024;
/** Read bytes are freed (hole punched) in steps of at least this much. */
const DISCARD_MIN_BYTES = 1024 * 1024;
const CHUNK_BYTES = 64 * 1024;

const SIGNAL_NAMES: string[] = [];
for (const [name, n] of Object.entries(constants.signals)) SIGNAL_NAMES[n] ??= name;

/** One output memfd, read forward from where the last read stopped. */
class OutputFile {
  #pos = 0;
  #freed = 0;
  #midLine = false;

  constructor(
    readonly fd: number,
    private readonly keepBytes: number,
    private readonly deliver: (b: Buffer) => void,
    private readonly skipped: () => void,
    private readonly addon: SpawnAddon,
  ) {}

  /** Reads what was written since the last call; `final`: all of it (the task has ended). */
  read(final: boolean): void {
    const size = fstatSync(this.fd).size;
    let budget = final ? Infinity : READ_PER_POLL_BYTES;
    while (this.#pos < size && budget > 0) {
      if (this.#pos >= this.keepBytes && size - this.#pos > TAIL_BYTES) {
        this.#pos = size - TAIL_BYTES;
        this.#midLine = true;
        this.skipped();
      }
      const want = Math.min(CHUNK_BYTES, size - this.#pos, budget);
      const b = Buffer.allocUnsafe(want);
      const n = readSync(this.fd, b, 0, want, this.#pos);
      if (n <= 0) break;
      this.#pos += n;
      budget -= n;
      let chunk = n === want ? b : b.subarray(0, n);
      if (this.#midLine) {
        // After a skip, start at the next line: a partial line is no PROGRESS line.
        const nl = chunk.indexOf(10);
        if (nl < 0) continue;
        this.#midLine = false;
        chunk = chunk.subarray(nl + 1);
      }
      if (chunk.length) this.deliver(chunk);
    }
    if (!final && this.#pos - this.#freed >= DISCARD_MIN_BYTES) {
      this.addon.discard(this.fd, this.#freed, this.#pos - this.#freed);
      this.#freed = this.#pos;
    }
  }

  close(): void {
    closeSync(this.fd);
  }
}

interface Live {
  pid: number;
  startedAt: number;
  out: OutputFile;
  err: OutputFile;
  sampleMemory: boolean;
  peak: number;
  firstSample: NodeJS.Timeout | undefined;
}

export class NativeLauncher implements Launcher {
  readonly kind = 'native';
  readonly intoCgroup: boolean;
  readonly #live = new Set<Live>();
  #poller: NodeJS.Timeout | undefined;

  constructor(private readonly addon: SpawnAddon) {
    this.intoCgroup = addon.intoCgroup === true;
  }

  launch(spec: ProcessSpec): RunningProcess {
    const t0 = performance.now();
    let timedOut = false;
    let cancelled = false;
    let exited = false;
    let killTimer: NodeJS.Timeout | undefined;
    let graceTimer: NodeJS.Timeout | undefined;
    let resolve!: (o: ProcessOutcome) => void;
    const done = new Promise<ProcessOutcome>((r) => (resolve = r));
    let live: Live | undefined;
    const failed = (why: string) => {
      exited = true;
      clearTimeout(killTimer);
      resolve({
        exitCode: null,
        signal: null,
        timedOut,
        cancelled,
        durationMs: Math.round(performance.now() - t0),
        maxRssKiB: null,
        spawnError: `cannot start ${spec.file}: ${why}`,
      });
    };

    // Before the start is confirmed there is no pid to signal: onStart does it then.
    const terminate = () => {
      if (exited || !live) return;
      const pid = live.pid;
      killGroup(pid, 'SIGTERM');
      graceTimer ??= setTimeout(() => {
        if (!exited) killGroup(pid, 'SIGKILL');
      }, spec.killGraceMs);
    };

    const onStart = (error: string | null, pid: number, outFd: number, errFd: number) => {
      if (error !== null) return failed(error);
      live = {
        pid,
        startedAt: t0,
        sampleMemory: spec.sampleMemory,
        peak: -1,
        firstSample: undefined,
        out: new OutputFile(outFd, spec.keepBytes, spec.onStdout, () => spec.onSkip?.('stdout'), this.addon),
        err: new OutputFile(errFd, spec.keepBytes, spec.onStderr, () => spec.onSkip?.('stderr'), this.addon),
      };
      this.#live.add(live);
      this.#poller ??= setInterval(() => this.#poll(), OUTPUT_POLL_MS).unref();
      if (spec.sampleMemory) {
        const l = live;
        l.firstSample = setTimeout(() => sampleInto(l), FIRST_SAMPLE_MS);
      }
      if (timedOut || cancelled) terminate();
    };

    const onExit = (code: number, signal: number, maxRssKiB: number) => {
      exited = true;
      clearTimeout(killTimer);
      clearTimeout(graceTimer);
      const durationMs = Math.round(performance.now() - t0);
      const l = live!;
      clearTimeout(l.firstSample);
      this.#live.delete(l);
      if (this.#live.size === 0) this.#stopPoller();
      try {
        l.out.read(true);
        l.err.read(true);
      } catch {
        /* what was read is kept */
      }
      l.out.close();
      l.err.close();
      // Above the agent's own peak, ru_maxrss can only be the task's; below, it may be ours.
      const exact = maxRssKiB > process.resourceUsage().maxRSS ? maxRssKiB : -1;
      const peak = Math.max(exact, l.peak);
      resolve({
        exitCode: code >= 0 ? code : null,
        signal: signal ? (SIGNAL_NAMES[signal] ?? `SIG${signal}`) : null,
        timedOut,
        cancelled,
        durationMs,
        maxRssKiB: spec.sampleMemory && peak >= 0 ? peak : null,
        spawnError: null,
      });
    };

    const env = spec.env.inherited.block(spec.env.set);
    try {
      this.addon.spawn(
        spec.file,
        [spec.file, ...spec.args].join('\0'),
        spec.args.length + 1,
        env.text,
        env.count,
        spec.cwd,
        spec.stdin,
        onStart,
        onExit,
        spec.cgroupFd,
      );
    } catch (err) {
      failed((err as NodeJS.ErrnoException).code ?? (err as Error).message);
      return {
        done,
        stop: () => {
          cancelled = true;
        },
      };
    }
    killTimer = setTimeout(() => {
      timedOut = true;
      terminate();
    }, spec.timeoutMs);
    return {
      done,
      stop: () => {
        cancelled = true;
        terminate();
      },
    };
  }

  #stopPoller(): void {
    clearInterval(this.#poller);
    this.#poller = undefined;
  }

  /** Output and memory of the tasks that have run for a while. */
  #poll(): void {
    const now = performance.now();
    for (const l of this.#live) {
      if (now - l.startedAt < OUTPUT_POLL_MS) continue;
      try {
        l.out.read(false);
        l.err.read(false);
      } catch {
        /* read again at the exit */
      }
      if (l.sampleMemory) sampleInto(l);
    }
  }
}

function sampleInto(l: Live): void {
  const kib = sampleTreeKiB(l.pid);
  if (kib !== undefined) l.peak = Math.max(l.peak, kib);
}
