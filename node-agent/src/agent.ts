/**
 * The agent's core: asks for tasks when it has free slots, runs them, reports results until
 * they are acknowledged, answers operator commands, and sends heartbeats. All I/O goes through
 * the seams (seams.ts), so tests drive it with fakes.
 *
 * Flow control mirrors the hub's credit: `requested` counts tasks asked for and not yet
 * received; the agent asks for `slots + prefetch - running - queued - requested` more whenever
 * that is positive. Both sides reset the count on a new connection.
 *
 * Resources: tasks are packed by cores, memory and GPUs, not counted in slots. Each task costs
 * its request (none: one core, no memory), a task starts only when its request fits beside
 * the running ones (in order: no oversubscription, no overtaking), and with `resources` the
 * agent tells the hub what it has free beyond what it holds and asked for (`ready {free}`),
 * so that only tasks that fit are handed out. Prefetch is headroom in cores only.
 *
 * Heartbeats run on their own timer in this process's event loop; tasks are child processes,
 * so a node busy on every core still answers on time.
 */
import type { TaskAssignment, TaskResult } from '../../dispatcher/src/protocol/messages.js';
import type {
  AgentMessage,
  ControlCommand,
  KexecPlan,
  RebootPath,
  RunningTask,
  TaskRef,
  WireTaskResult,
} from '../../dispatcher/src/protocol/messages.js';
import { DEFAULT_TASK_RESOURCES, MAX_BATCH, MAX_UNDELIVERED_IN_HELLO } from '../../dispatcher/src/protocol/messages.js';
import type { NodeResources, Resources } from '../../dispatcher/src/protocol/messages.js';
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
  /** Every welcome, after the agent took it (main.ts gives the health check its spec). */
  onSession?: (s: SessionInfo) => void;
  /** While true, ask for no task (a new health check has not run yet); `topUp()` asks again after. */
  holdTasks?: () => boolean;
  /**
   * What the agent hands out to tasks (cores: `slots`); it then says what it has free when it
   * asks for work. Absent: `slots` cores, no memory limit, no GPU, and only counts are sent.
   */
  resources?: NodeResources;
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
  /** What it holds while it runs. */
  cost: Readonly<Resources>;
  /** The GPUs it was given (indices), if it asked for any. */
  gpus?: number[];
}

const keyOf = (taskId: number, attempt: number): string => `${taskId}:${attempt}`;

export class Agent {
  readonly #deps: AgentDeps;
  readonly #opts: AgentOptions;
  readonly #running = new Map<string, Running>();
  readonly #queue: TaskAssignment[] = [];
  #requested = 0;
  /** What the agent hands out, what its running tasks hold, what its queued tasks will, what it asked for and has not received. */
  readonly #cap: Resources;
  readonly #alloc: Resources = { cores: 0, memMiB: 0, gpus: 0 };
  readonly #queuedAlloc: Resources = { cores: 0, memMiB: 0, gpus: 0 };
  readonly #requestedFree: Resources = { cores: 0, memMiB: 0, gpus: 0 };
  /** GPU indices no running task holds. */
  readonly #freeGpus: number[];
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
    const r = opts.resources;
    this.#cap = { cores: r?.cores ?? opts.slots, memMiB: r?.memMiB ?? Number.POSITIVE_INFINITY, gpus: r?.gpus ?? 0 };
    this.#freeGpus = Array.from({ length: this.#cap.gpus }, (_, i) => i);
  }

  /** Resources of the running tasks (the heartbeat's `allocated`). */
  get allocated(): Resources {
    return { ...this.#alloc };
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

  /** Asks for tasks if it has room (a hold on them, `holdTasks`, ended). */
  topUp(): void {
    this.#topUp();
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
    this.#opts.onSession?.(s);
    this.#requested = 0;
    zero(this.#requestedFree);
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
    zero(this.#requestedFree);
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    if (!this.#stopped) this.#opts.say(`disconnected from the dispatcher: ${why}`);
  }

  #onMessage(msg: AgentInbound): void {
    switch (msg.type) {
      case 'tasks':
        this.#requested = Math.max(0, this.#requested - msg.tasks.length);
        for (const t of msg.tasks) {
          const c = t.resources ?? DEFAULT_TASK_RESOURCES;
          this.#queue.push(t);
          add(this.#queuedAlloc, c, 1);
          add(this.#requestedFree, c, -1);
        }
        floorZero(this.#requestedFree);
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
    if (!this.#session || this.#stopped || this.#deps.runner.refusal() !== null || this.#opts.holdTasks?.()) return 0;
    return Math.min(MAX_BATCH, this.#opts.slots + this.#opts.prefetch - this.#running.size - this.#queue.length - this.#requested);
  }

  /** What to say is free when asking for `want` tasks; null: ask for none (every task costs a core at least). */
  #freeToAsk(): Resources | null {
    const cap = this.#cap;
    const a = this.#alloc;
    const q = this.#queuedAlloc;
    const r = this.#requestedFree;
    const cores = cap.cores + this.#opts.prefetch - a.cores - q.cores - r.cores;
    if (cores < 1) return null;
    const memMiB = cap.memMiB - a.memMiB - q.memMiB - r.memMiB;
    return {
      cores,
      memMiB: Math.max(0, Math.min(Number.MAX_SAFE_INTEGER, memMiB)),
      gpus: Math.max(0, cap.gpus - a.gpus - q.gpus - r.gpus),
    };
  }

  #topUp(): void {
    const want = this.#wanted();
    if (want <= 0) return;
    if (!this.#opts.resources) {
      if (this.#deps.source.send({ type: 'ready', n: want })) this.#requested += want;
      return;
    }
    const free = this.#freeToAsk();
    if (!free) return;
    if (this.#deps.source.send({ type: 'ready', n: want, free })) {
      this.#requested += want;
      add(this.#requestedFree, free, 1);
    }
  }

  /** Whether `c` fits beside the running tasks now. */
  #fitsNow(c: Readonly<Resources>): boolean {
    const a = this.#alloc;
    const cap = this.#cap;
    return a.cores + c.cores <= cap.cores && a.memMiB + c.memMiB <= cap.memMiB && a.gpus + c.gpus <= cap.gpus;
  }

  #startQueued(): void {
    while (this.#queue.length) {
      const task = this.#queue[0]!;
      const cost = task.resources ?? DEFAULT_TASK_RESOURCES;
      if (!this.#fitsNow(cost)) {
        if (cost.cores <= this.#cap.cores && cost.memMiB <= this.#cap.memMiB && cost.gpus <= this.#cap.gpus) break;
        // Larger than the whole node: it would wait here forever (the dispatcher should not have sent it).
        this.#queue.shift();
        add(this.#queuedAlloc, cost, -1);
        this.#refuseTooLarge(task, cost);
        continue;
      }
      this.#queue.shift();
      add(this.#queuedAlloc, cost, -1);
      const key = keyOf(task.taskId, task.attempt);
      if (this.#running.has(key)) continue; // already running (a re-sent assignment)
      const entry: Running = {
        task,
        startedAt: Date.now(),
        progress: null,
        progressDirty: false,
        handle: undefined as unknown as RunningHandle,
        cost,
      };
      add(this.#alloc, cost, 1);
      this.#running.set(key, entry);
      this.counts.started++;
      let run = task;
      if (cost.gpus > 0) {
        // Which GPUs are its own: CUDA and ROCm programs use only those they are shown.
        entry.gpus = this.#freeGpus.splice(0, cost.gpus);
        const ids = entry.gpus.join(',');
        run = { ...task, env: { CUDA_VISIBLE_DEVICES: ids, ROCR_VISIBLE_DEVICES: ids, ...task.env } };
      }
      entry.handle = this.#deps.runner.start(run, (f) => this.#onProgress(entry, f));
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
    // The refused ones' requests are unknown: forget what was asked for (the agent never starts beyond what it has).
    zero(this.#requestedFree);
    for (const r of msg.refused) {
      this.#opts.say(`task ${r.taskId} attempt ${r.attempt} refused: ${r.reason}`);
      const result = { ...notRun({ taskId: r.taskId, attempt: r.attempt }), error: r.reason };
      this.#deps.reporter.add(result);
      this.#toSend.push(result);
    }
    for (const t of msg.tasks) {
      this.#queue.push(t);
      add(this.#queuedAlloc, t.resources ?? DEFAULT_TASK_RESOURCES, 1);
    }
    this.#startQueued();
    if (msg.refused.length)
      this.#scheduleFlush(); // the flush asks for the freed slots in the same message
    else this.#topUp();
  }

  #refuseTooLarge(task: TaskAssignment, c: Readonly<Resources>): void {
    const cap = this.#cap;
    const why = `needs ${c.cores} cores, ${c.memMiB} MiB and ${c.gpus} GPUs; this node hands out ${cap.cores} cores, ${cap.memMiB} MiB and ${cap.gpus} GPUs`;
    this.#opts.say(`task ${task.taskId} attempt ${task.attempt} refused: ${why}`);
    const result = { ...notRun(task), error: `not started: it ${why}` };
    this.#deps.reporter.add(result);
    this.#toSend.push(result);
    this.#scheduleFlush();
  }

  #onFinished(key: string, entry: Running, result: TaskResult): void {
    if (this.#running.get(key) === entry) {
      this.#running.delete(key);
      add(this.#alloc, entry.cost, -1);
      if (entry.gpus) this.#freeGpus.push(...entry.gpus);
    }
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
        add(this.#queuedAlloc, q.resources ?? DEFAULT_TASK_RESOURCES, -1);
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
              cost: DEFAULT_TASK_RESOURCES,
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
      let want = this.#wanted();
      let free: Resources | null = null;
      if (want > 0 && this.#opts.resources) {
        free = this.#freeToAsk();
        if (!free) want = 0;
      }
      const msg: Extract<AgentMessage, { type: 'results' }> = { type: 'results', results: part };
      if (want > 0) msg.ready = want;
      if (free) msg.free = free;
      if (this.#deps.source.send(msg) && want > 0) {
        this.#requested += want;
        if (free) add(this.#requestedFree, free, 1);
      }
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
    this.#deps.source.send({
      type: 'heartbeat',
      ts: Date.now(),
      ...live,
      running: this.runningTasks().slice(0, MAX_BATCH),
      ...(this.#opts.resources ? { allocated: this.allocated } : {}),
    });
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

/** x += sign × c, field by field. */
function add(x: Resources, c: Readonly<Resources>, sign: number): void {
  x.cores += sign * c.cores;
  x.memMiB += sign * c.memMiB;
  x.gpus += sign * c.gpus;
}

function zero(x: Resources): void {
  x.cores = 0;
  x.memMiB = 0;
  x.gpus = 0;
}

function floorZero(x: Resources): void {
  if (x.cores < 0) x.cores = 0;
  if (x.memMiB < 0) x.memMiB = 0;
  if (x.gpus < 0) x.gpus = 0;
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
