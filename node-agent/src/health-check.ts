/**
 * The cluster file's health check, run by the agent (Slurm's HealthCheckProgram, LBNL NHC):
 * the dispatcher names it in its welcome; the agent runs it at once and then every interval
 * (counted from the end of the previous run, so runs never overlap), the way an operator's
 * `exec` runs (own process group, inside the task root if there is one), kills it at its
 * timeout, and reports each run. Exit 0 passes; a non-zero exit, a start failure or a hang
 * fails. The dispatcher drains the node on a failure and undrains it on the next pass.
 *
 * Output is bounded while it arrives: the last MAX_HEALTH_OUTPUT bytes of stdout and stderr
 * together (the end is where the error usually is), so a chatty check costs no memory. A
 * failure's first line says what happened when the check itself did not (`timed out after
 * 30s`, `cannot start …`, `exited with status 3`).
 */
import type { HealthCheck } from '../../dispatcher/src/protocol/messages.js';
import { MAX_HEALTH_OUTPUT } from '../../dispatcher/src/protocol/messages.js';
import type { TaskRunner } from './seams.js';

export interface HealthRun {
  ok: boolean;
  exitCode: number | null;
  timedOut: boolean;
  output: string;
  durationMs: number;
}

/** The last `max` bytes of what was pushed (cut on a UTF-8 character boundary when read). */
export class TailBuffer {
  #chunks: Buffer[] = [];
  #bytes = 0;
  constructor(readonly max: number) {}

  push(text: string): void {
    if (!text) return;
    let b = Buffer.from(text, 'utf8');
    if (b.length > this.max) b = b.subarray(b.length - this.max);
    this.#chunks.push(b);
    this.#bytes += b.length;
    while (this.#bytes - this.#chunks[0]!.length >= this.max) this.#bytes -= this.#chunks.shift()!.length;
  }

  text(max = this.max): string {
    let b = Buffer.concat(this.#chunks);
    if (b.length > max) b = b.subarray(b.length - max);
    let start = 0;
    while (start < b.length && (b[start]! & 0xc0) === 0x80) start++; // not in the middle of a character
    return b.subarray(start).toString('utf8');
  }
}

/** Runs the check once: its outcome with bounded output. */
export async function runHealthCheck(runner: Pick<TaskRunner, 'exec'>, spec: HealthCheck): Promise<HealthRun> {
  const tail = new TailBuffer(MAX_HEALTH_OUTPUT);
  const t0 = Date.now();
  let o;
  try {
    o = await runner.exec(spec.command, spec.timeoutMs, (_stream, chunk) => tail.push(chunk));
  } catch (err) {
    o = { exitCode: null, signal: null, timedOut: false, durationMs: Date.now() - t0, error: (err as Error).message };
  }
  const ok = o.exitCode === 0 && !o.timedOut && !o.error;
  // What the check did not say itself leads, so the dispatcher's drain reason (the first line) says it.
  const head = o.timedOut
    ? `timed out after ${fmtSeconds(spec.timeoutMs)}`
    : o.error
      ? `cannot run the health check: ${o.error}`
      : o.signal
        ? `killed by ${o.signal}`
        : !ok && !tail.text().trim()
          ? `exited with status ${o.exitCode} (no output)`
          : '';
  const headBytes = head ? Buffer.byteLength(head, 'utf8') + 1 : 0;
  const output = head ? `${head}\n${tail.text(Math.max(0, MAX_HEALTH_OUTPUT - headBytes))}` : tail.text();
  return { ok, exitCode: o.exitCode, timedOut: o.timedOut, output: output.slice(0, MAX_HEALTH_OUTPUT), durationMs: o.durationMs };
}

function fmtSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${(ms / 1000).toFixed(1)}s`;
}

export interface HealthCheckerDeps {
  runner: Pick<TaskRunner, 'exec'>;
  /** Reports a run to the dispatcher; false when there is no session. */
  send: (run: HealthRun) => boolean;
  say: (line: string) => void;
  /** The first run of a new check is over (and reported): tasks may be asked for again (`holding`). */
  released?: () => void;
}

/** Runs the welcome's health check on its schedule; `configure` at every welcome. */
export class HealthChecker {
  readonly #d: HealthCheckerDeps;
  #spec: HealthCheck | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Bumped by every new spec or stop: a run of an older one reports nothing and schedules nothing. */
  #generation = 0;
  #running = false;
  #last: HealthRun | undefined;
  #holding = false;
  readonly counts = { runs: 0 };

  constructor(deps: HealthCheckerDeps) {
    this.#d = deps;
  }

  /**
   * From a new check until its first run is reported: the agent asks for no task meanwhile, so
   * a node that fails its check at boot is drained before it is handed any (the report goes
   * out before the agent's next `ready`).
   */
  get holding(): boolean {
    return this.#holding;
  }

  /** A welcome: its check (or none). The same check keeps its schedule; its last outcome is sent again (the dispatcher may be new). */
  configure(spec: HealthCheck | undefined): void {
    if (spec && this.#spec && JSON.stringify(spec) === JSON.stringify(this.#spec)) {
      if (this.#last) this.#d.send(this.#last);
      return;
    }
    this.#stopLoop();
    this.#spec = spec;
    this.#last = undefined;
    if (!spec) return this.#release();
    this.#holding = true; // a hold of the previous check, if any, carries on
    const shown = typeof spec.command === 'string' ? spec.command : spec.command.join(' ');
    this.#d.say(`health check \`${shown.slice(0, 200)}\` every ${fmtSeconds(spec.intervalMs)} (timeout ${fmtSeconds(spec.timeoutMs)})`);
    void this.#run(this.#generation);
  }

  stop(): void {
    this.#stopLoop();
    this.#spec = undefined;
    this.#holding = false;
  }

  #release(): void {
    if (!this.#holding) return;
    this.#holding = false;
    this.#d.released?.();
  }

  #stopLoop(): void {
    this.#generation++;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async #run(gen: number): Promise<void> {
    const spec = this.#spec;
    if (!spec || this.#running) return;
    this.#running = true;
    let run: HealthRun;
    try {
      run = await runHealthCheck(this.#d.runner, spec);
    } finally {
      this.#running = false;
    }
    this.counts.runs++;
    if (gen !== this.#generation) {
      if (this.#spec) void this.#run(this.#generation); // the check changed while this one ran
      return;
    }
    if (!run.ok && (this.#last?.ok ?? true)) this.#d.say(`health check failed: ${run.output.split('\n')[0]}`);
    else if (run.ok && this.#last && !this.#last.ok) this.#d.say('health check passes again');
    this.#last = run;
    this.#d.send(run); // unsent (no session): the next welcome sends the last run again
    this.#release();
    this.#timer = setTimeout(() => void this.#run(gen), spec.intervalMs);
    this.#timer.unref();
  }
}
