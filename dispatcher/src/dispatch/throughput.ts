/**
 * Tasks handed out and finished per second over the last minutes, for GET /api/v1/dispatch
 * (`throughput`): one counter pair per second in a fixed ring of `HISTORY_SECONDS`, read back
 * in steps. Not what the web page's chart or `dispatcherctl status` show: they read
 * api/status/throughput.ts, sampled from the metrics' completed-tasks counter.
 */

/** How far back the chart can look. */
export const HISTORY_SECONDS = 900;

export interface ThroughputPoint {
  /** Start of the step, unix ms. */
  t: number;
  completedPerS: number;
  dispatchedPerS: number;
}

export interface ThroughputView {
  stepSeconds: number;
  points: ThroughputPoint[];
}

export class Throughput {
  readonly #completed = new Float64Array(HISTORY_SECONDS);
  readonly #dispatched = new Float64Array(HISTORY_SECONDS);
  /** The second (unix s) each slot holds. */
  readonly #second = new Float64Array(HISTORY_SECONDS).fill(-1);

  constructor(private readonly now: () => number = Date.now) {}

  completed(n: number): void {
    if (n <= 0) return;
    const i = this.#slot(Math.floor(this.now() / 1000));
    this.#completed[i] = this.#completed[i]! + n;
  }

  dispatched(n: number): void {
    if (n <= 0) return;
    const i = this.#slot(Math.floor(this.now() / 1000));
    this.#dispatched[i] = this.#dispatched[i]! + n;
  }

  #slot(sec: number): number {
    const i = sec % HISTORY_SECONDS;
    if (this.#second[i] !== sec) {
      this.#second[i] = sec;
      this.#completed[i] = 0;
      this.#dispatched[i] = 0;
    }
    return i;
  }

  /** The last `seconds` (the current, partial second excluded), averaged over steps of `stepSeconds`. */
  view(seconds = 600, stepSeconds = 10): ThroughputView {
    const step = Math.max(1, Math.floor(stepSeconds));
    const span = Math.min(HISTORY_SECONDS - 1, Math.max(step, Math.floor(seconds)));
    const nowS = Math.floor(this.now() / 1000);
    const points: ThroughputPoint[] = [];
    for (let start = nowS - span; start + step <= nowS; start += step) {
      let c = 0;
      let d = 0;
      for (let s = start; s < start + step; s++) {
        const i = s % HISTORY_SECONDS;
        if (this.#second[i] === s) {
          c += this.#completed[i]!;
          d += this.#dispatched[i]!;
        }
      }
      points.push({ t: start * 1000, completedPerS: c / step, dispatchedPerS: d / step });
    }
    return { stepSeconds: step, points };
  }
}
