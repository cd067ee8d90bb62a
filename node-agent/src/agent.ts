/**
 * The agent's core: asks for tasks when it has free slots, runs them, reports results until
 * they are acknowledged, answers operator commands, and sends heartbeats. All I/O goes through
 * the seams (seams.ts), so tests drive it with fakes.
 *
 * Flow control mirrors the hub's credit: `requested` counts tasks asked for and not yet
 * received; the agent asks for `slots + prefetch - running - queued - requested` more whenever
 * that is positive. Both sides reset the count on a new connection.
 *
 * Heartbeats run on their own timer in this process's event loop; tasks are child processes,
 * so a node busy on every core still answers on time.
 */
import type { TaskAssignment, TaskResult } from '../../dispatcher/src/protocol/messages.js';
import type {
  ControlCommand,
  KexecPlan,
  RebootPath,
  RunningTask,
  TaskRef,
  WireTaskResult,
} from '../../dispatcher/src/protocol/messages.js';
import { MAX_BATCH, MAX_UNDELIVERED_IN_HELLO } from '../../dispatcher/src/protocol/messages.js';
import { PROGRESS_THROTTLE_MS } from '../../dispatcher/src/protocol/progress.js';
import { toWireResult } from '../../dispatcher/src/protocol/results.js';
import type { Inventory, Power, Reporter, RunningHandle, SessionInfo, TaskRunner, TaskSource } from './seams.js';
import type { AgentInbound, PartialTasks } from './task-batch.js';

/** Results not acknowledged after this long are sent again (the dispatcher's store may have been down). */
export const RESEND_AFTER_MS = 30_000;
/** Power commands run this long after their acknowledgement, so the ack reaches the dispatcher. */
export const POWER_DELAY_MS = 300;
/** A control-output message carries at most this much text. */
const OUTPUT_CHUNK = 64 * 1024;
/** RebootPath.reason's bound in the protocol. */
const MAX_REASON = 4096;

export interface AgentOptions {
  slots: number;
  /** Tasks asked for beyond the free slots, queued locally so a slot never waits a round trip. */
  prefetch: number;
  /** exec commands without a timeout of their own. */
  execTimeoutMs: number;
  say: (line: string) => void;
}

export interface AgentDeps {
  source: TaskSource;
  runner: TaskRunner;
  reporter: Reporter;
  inventory: Inventory;
  power: Power;
}

interface Running {
  task: TaskAssignment;
  handle: RunningHandle;
  startedAt: number;
  progress: number | null;
  progressDirty: boolean;
  cancelled?: { reason: string; report: boolean };
}

const keyOf = (taskId: number, attempt: number): string => `${taskId}:${attempt}`;

export class Agent {
  readonly #deps: AgentDeps;
  readonly #opts: AgentOptions;
  readonly #running = new Map<string, Running>();
  readonly #queue: TaskAssignment[] = [];
  #requested = 0;
  #session: SessionInfo | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #progressTimer: NodeJS.Timeout | undefined;
  #resendTimer: NodeJS.Timeout | undefined;
  #toSend: TaskResult[] = [];
  #flushScheduled = false;
  #stopped = false;
  /** A kexec reboot is loading or jumping: a second one would race it for the same files. */
  #rebooting = false;
  /** Counters for tests and the console. */
  readonly counts = { started: 0, finished: 0, acked: 0, cancelled: 0 };

  constructor(deps: AgentDeps, opts: AgentOptions) {
    this.#deps = deps;
    this.#opts = opts;
  }

  start(): void {
    this.#deps.source.start({
      // Prefetched tasks not started yet count as held too: the engine keeps their leases.
      helloState: () => ({
        running: [
          ...this.runningTasks(),
          ...this.#queue.map((t) => ({ taskId: t.taskId, attempt: t.attempt, startedAt: Date.now(), progress: null })),
        ].slice(0, MAX_BATCH),
        undelivered: this.#deps.reporter.unacknowledged().slice(0, MAX_UNDELIVERED_IN_HELLO).map(refOf),
      }),
      connected: (s) => this.#onConnected(s),
      message: (m) => this.#onMessage(m),
      disconnected: (why) => this.#onDisconnected(why),
    });
    this.#resendTimer = setInterval(() => this.#resendOld(), RESEND_AFTER_MS);
    this.#resendTimer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#heartbeat);
    clearInterval(this.#resendTimer);
    clearTimeout(this.#progressTimer);
    await this.#deps.source.stop();
    // Not reported: the dispatcher sees the connection close and hands these tasks out again.
    for (const r of this.#running.values()) {
      r.cancelled = { reason: 'agent stopping', report: false };
      r.handle.cancel('agent stopping');
    }
    await Promise.all([...this.#running.values()].map((r) => r.handle.result));
  }

  runningTasks(): RunningTask[] {
    return [...this.#running.values()]
      .filter((r) => !r.cancelled)
      .map((r) => ({ taskId: r.task.taskId, attempt: r.task.attempt, startedAt: r.startedAt, progress: r.progress }));
  }

  get queued(): number {
    return this.#queue.length;
  }

  // ------------------------------------------------------------------ session

  #onConnected(s: SessionInfo): void {
    this.#session = s;
    this.#requested = 0;
    const t = s.verified ? '' : ' (INSECURE: dispatcher not verified)';
    this.#opts.say(
      `connected to the dispatcher as ${s.nodeName}${t}; ${this.#running.size} running, ${this.#deps.reporter.size} results to deliver`,
    );
    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => this.#sendHeartbeat(), s.heartbeatMs);
    this.#sendHeartbeat();
    // Results the dispatcher has not acknowledged go again (it records each task's result once).
    this.#toSend = this.#deps.reporter.unacknowledged();
    this.#scheduleFlush();
    this.#topUp();
  }

  #onDisconnected(why: string): void {
    this.#session = undefined;
    this.#requested = 0;
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    if (!this.#stopped) this.#opts.say(`disconnected from the dispatcher: ${why}`);
  }

  #onMessage(msg: AgentInbound): void {
    switch (msg.type) {
      case 'tasks':
        this.#requested = Math.max(0, this.#requested - msg.tasks.length);
        for (const t of msg.tasks) this.#queue.push(t);
        this.#startQueued();
        this.#topUp();
        return;
      case 'tasks-partial':
        return this.#onPartialTasks(msg);
      case 'ack':
        this.#deps.reporter.acknowledge(msg.refs);
        this.counts.acked += msg.refs.length;
        return;
      case 'cancel':
        for (const ref of msg.refs) this.#cancel(ref, msg.reason, msg.report);
        return;
      case 'control':
        return this.#onControl(msg.id, msg.command);
      case 'heartbeat':
        return;
      case 'error':
        this.#opts.say(`dispatcher rejected a message: ${msg.code}${msg.about ? ` (${msg.about})` : ''}: ${msg.message}`);
        if (msg.code === 'unavailable' && msg.about === 'results') setTimeout(() => this.#resendAll(), 5000).unref();
        return;
      case 'welcome':
      case 'refused':
        return; // handled by the source during the handshake
      default:
        return assertNever(msg);
    }
  }

  // ------------------------------------------------------------------ tasks

  /** How many more tasks to ask for now. */
  #wanted(): number {
    // A node that cannot start tasks asks for none: handed out, they would fail here and use up their attempts.
    if (!this.#session || this.#stopped || this.#deps.runner.refusal() !== null) return 0;
    return Math.min(MAX_BATCH, this.#opts.slots + this.#opts.prefetch - this.#running.size - this.#queue.length - this.#requested);
  }

  #topUp(): void {
    const want = this.#wanted();
    if (want > 0 && this.#deps.source.send({ type: 'ready', n: want })) this.#requested += want;
  }

  #startQueued(): void {
    while (this.#queue.length && this.#activeCount() < this.#opts.slots) {
      const task = this.#queue.shift()!;
      const key = keyOf(task.taskId, task.attempt);
      if (this.#running.has(key)) continue; // already running (a re-sent assignment)
      const entry: Running = {
        task,
        startedAt: Date.now(),
        progress: null,
        progressDirty: false,
        handle: undefined as unknown as RunningHandle,
      };
      this.#running.set(key, entry);
      this.counts.started++;
      entry.handle = this.#deps.runner.start(task, (f) => this.#onProgress(entry, f));
      void entry.handle.result.then((r) => this.#onFinished(key, entry, r));
    }
  }

  /**
   * A batch with assignments the agent cannot run: the valid ones are queued, the others
   * reported failed with the reason, and every slot of the batch is given back (asked for
   * again), so one bad assignment never stops the agent asking for work.
   */
  #onPartialTasks(msg: PartialTasks): void {
    // Unknown size: forget what was asked for; asking again at worst queues a few tasks early.
    this.#requested = msg.total === null ? 0 : Math.max(0, this.#requested - msg.total);
    for (const r of msg.refused) {
      this.#opts.say(`task ${r.taskId} attempt ${r.attempt} refused: ${r.reason}`);
      const result = { ...notRun({ taskId: r.taskId, attempt: r.attempt }), error: r.reason };
      this.#deps.reporter.add(result);
      this.#toSend.push(result);
    }
    for (const t of msg.tasks) this.#queue.push(t);
    this.#startQueued();
    if (msg.refused.length)
      this.#scheduleFlush(); // the flush asks for the freed slots in the same message
    else this.#topUp();
  }

  #activeCount(): number {
    return this.#running.size;
  }

  #onFinished(key: string, entry: Running, result: TaskResult): void {
    if (this.#running.get(key) === entry) this.#running.delete(key);
    this.counts.finished++;
    this.#startQueued();
    if (entry.cancelled && !entry.cancelled.report) return this.#topUp(); // the dispatcher has moved on
    if (entry.cancelled) result = { ...result, error: [`cancelled: ${entry.cancelled.reason}`, result.error].filter(Boolean).join('; ') };
    this.#deps.reporter.add(result);
    this.#toSend.push(result);
    this.#scheduleFlush();
  }

  #cancel(ref: { taskId: number; attempt?: number | undefined }, reason: string, report: boolean): boolean {
    let found = false;
    for (let i = this.#queue.length - 1; i >= 0; i--) {
      const q = this.#queue[i]!;
      if (q.taskId === ref.taskId && (ref.attempt === undefined || q.attempt === ref.attempt)) {
        this.#queue.splice(i, 1);
        found = true;
        if (report)
          this.#onFinished(
            keyOf(q.taskId, q.attempt),
            {
              task: q,
              handle: undefined as unknown as RunningHandle,
              startedAt: Date.now(),
              progress: null,
              progressDirty: false,
              cancelled: { reason, report },
            },
            notRun(q),
          );
      }
    }
    for (const r of this.#running.values()) {
      if (r.task.taskId !== ref.taskId || (ref.attempt !== undefined && r.task.attempt !== ref.attempt) || r.cancelled) continue;
      r.cancelled = { reason, report };
      r.handle.cancel(reason);
      this.counts.cancelled++;
      found = true;
    }
    return found;
  }

  #onProgress(entry: Running, fraction: number): void {
    entry.progress = fraction;
    entry.progressDirty = true;
    this.#progressTimer ??= setTimeout(() => this.#flushProgress(), PROGRESS_THROTTLE_MS);
  }

  #flushProgress(): void {
    this.#progressTimer = undefined;
    const items = [];
    for (const r of this.#running.values()) {
      if (!r.progressDirty || r.progress === null) continue;
      r.progressDirty = false;
      items.push({ taskId: r.task.taskId, attempt: r.task.attempt, fraction: r.progress });
    }
    if (items.length) this.#deps.source.send({ type: 'progress', items });
  }

  // ------------------------------------------------------------------ results

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => void this.#flush());
  }

  /** Sends the results finished since the last flush, as few messages as fit the dispatcher's limit. */
  async #flush(): Promise<void> {
    this.#flushScheduled = false;
    if (!this.#session || this.#toSend.length === 0) return this.#topUp();
    const batch = this.#toSend;
    this.#toSend = [];
    const wire = await Promise.all(batch.map(toWireResult));
    const budget = Math.floor((this.#session?.maxMessageBytes ?? 1 << 20) * 0.9);
    let part: WireTaskResult[] = [];
    let bytes = 0;
    for (const w of wire) {
      let size = 400 + textSize(w.stdout) + textSize(w.stderr) + (w.outputsTarGzB64?.length ?? 0) + (w.error?.length ?? 0);
      if (size > budget) {
        // One result alone is too big for the dispatcher (huge outputs): send it without its outputs.
        w.outputsTarGzB64 = null;
        w.error = [
          w.error,
          `outputs dropped: the result was larger than the dispatcher's ${this.#session?.maxMessageBytes} byte message limit`,
        ]
          .filter(Boolean)
          .join('; ');
        size = 400 + textSize(w.stdout) + textSize(w.stderr);
      }
      if (part.length && (bytes + size > budget || part.length >= MAX_BATCH)) {
        this.#deps.source.send({ type: 'results', results: part });
        part = [];
        bytes = 0;
      }
      part.push(w);
      bytes += size;
    }
    if (part.length) {
      // The slots these tasks freed are asked for again in the same message.
      const want = this.#wanted();
      if (this.#deps.source.send({ type: 'results', results: part, ...(want > 0 ? { ready: want } : {}) }) && want > 0)
        this.#requested += want;
    }
  }

  #resendAll(): void {
    if (!this.#session) return;
    this.#toSend = this.#deps.reporter.unacknowledged();
    this.#scheduleFlush();
  }

  #resendOld(): void {
    // Acks normally come within milliseconds; a result still held after RESEND_AFTER_MS was lost on the way.
    if (this.#session && this.#deps.reporter.size > 0 && this.#toSend.length === 0) this.#resendAll();
  }

  // ------------------------------------------------------------------ heartbeats and control

  #sendHeartbeat(): void {
    const live = this.#deps.inventory.live();
    this.#deps.source.send({ type: 'heartbeat', ts: Date.now(), ...live, running: this.runningTasks().slice(0, MAX_BATCH) });
  }

  #onControl(id: number, cmd: ControlCommand): void {
    const src = this.#deps.source;
    const ack = (ok: boolean, error?: string) => src.send({ type: 'control-ack', id, ok, ...(error ? { error } : {}) });
    const done = (ok: boolean, result?: unknown, error?: string) =>
      src.send({ type: 'control-done', id, ok, ...(result !== undefined ? { result } : {}), ...(error ? { error } : {}) });
    switch (cmd.kind) {
      case 'reboot':
      case 'poweroff': {
        const refusal = this.#deps.power.refusal();
        if (refusal) return void ack(false, refusal);
        if (cmd.kind === 'reboot' && cmd.kexec && !cmd.firmware) return this.#rebootByKexec(cmd.kexec, ack, done);
        ack(true);
        this.#opts.say(`${cmd.kind} requested by the dispatcher`);
        setTimeout(() => {
          const act = cmd.kind === 'reboot' ? this.#deps.power.reboot() : this.#deps.power.poweroff();
          act.catch((err: Error) => this.#opts.say(`${cmd.kind} failed: ${err.message}`));
        }, POWER_DELAY_MS);
        return;
      }
      case 'inspect':
        ack(true);
        this.#deps.inventory.inspect().then(
          (snapshot) => done(true, snapshot),
          (err: Error) => done(false, undefined, `inspect failed: ${err.message}`),
        );
        return;
      case 'exec': {
        ack(true);
        const out = (stream: 'stdout' | 'stderr', chunk: string) => {
          for (let i = 0; i < chunk.length; i += OUTPUT_CHUNK)
            src.send({ type: 'control-output', id, stream, data: chunk.slice(i, i + OUTPUT_CHUNK) });
        };
        this.#deps.runner.exec(cmd.command, cmd.timeoutMs ?? this.#opts.execTimeoutMs, out).then(
          (o) =>
            done(
              o.error === undefined,
              { exitCode: o.exitCode, signal: o.signal, durationMs: o.durationMs, timedOut: o.timedOut },
              o.error,
            ),
          (err: Error) => done(false, undefined, err.message),
        );
        return;
      }
      case 'cancel': {
        const found = this.#cancel({ taskId: cmd.taskId, attempt: cmd.attempt }, 'cancelled by the operator', true);
        return void ack(found, found ? undefined : `task ${cmd.taskId}${cmd.attempt ? ` attempt ${cmd.attempt}` : ''} is not running here`);
      }
      default:
        return assertNever(cmd);
    }
  }

  /**
   * Loads the plan, says which way the node reboots (control-done's RebootPath), then jumps.
   * Any failure — a refused file, kexec unable to load, or `kexec -e` coming back — ends in a
   * firmware reboot: the node must go down either way.
   */
  #rebootByKexec(plan: KexecPlan, ack: (ok: boolean, error?: string) => void, done: (ok: boolean, result: RebootPath) => void): void {
    if (this.#rebooting) return void ack(false, 'a reboot is already under way');
    this.#rebooting = true;
    ack(true);
    const power = this.#deps.power;
    const say = this.#opts.say;
    const byFirmware = (why: string) => {
      say(`rebooting by the firmware: ${why}`);
      setTimeout(() => power.reboot().catch((err: Error) => say(`reboot failed: ${err.message}`)), POWER_DELAY_MS);
    };
    say('reboot by kexec requested by the dispatcher: fetching the kernel and initrds');
    const started = Date.now();
    power.loadKexec(plan).then(
      () => {
        say(`kexec plan loaded in ${Date.now() - started} ms; jumping into the new kernel`);
        done(true, { path: 'kexec' });
        setTimeout(() => {
          const failed = (why: string) => byFirmware(`kexec failed: ${why}`);
          power.execKexec().then(
            () => failed('kexec -e returned'),
            (err: Error) => failed(err.message),
          );
        }, POWER_DELAY_MS);
      },
      (err: Error) => {
        const reason = err.message.length > MAX_REASON ? `${err.message.slice(0, MAX_REASON - 1)}…` : err.message;
        done(true, { path: 'firmware', reason });
        byFirmware(reason);
      },
    );
  }
}

function refOf(r: TaskResult): TaskRef {
  return { taskId: r.taskId, attempt: r.attempt };
}

function textSize(t: WireTaskResult['stdout']): number {
  return typeof t === 'string' ? t.length * 1.1 : t.gz.length;
}

function notRun(t: Pick<TaskAssignment, 'taskId' | 'attempt'>): TaskResult {
  return {
    taskId: t.taskId,
    attempt: t.attempt,
    exitCode: null,
    signal: null,
    timedOut: false,
    error: 'not started',
    startedAt: Date.now(),
    durationMs: 0,
    maxRssKiB: null,
    stdout: '',
    stderr: '',
    stdoutTruncated: false,
    stderrTruncated: false,
    outputsTarGzB64: null,
  };
}

function assertNever(x: never): never {
  throw new Error(`unhandled ${JSON.stringify(x)}`);
}
