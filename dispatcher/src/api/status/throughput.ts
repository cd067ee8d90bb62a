/**
 * Tasks completed per interval over the last minutes, for the page's chart and `status`.
 * Samples a cumulative count (the dispatch engine's completed-tasks counter, or done+failed)
 * at each tick and keeps the differences in a ring.
 */

/** One point per this many seconds... */
export const THROUGHPUT_INTERVAL_S = 10;
/** ...for the last ten minutes. */
export const THROUGHPUT_POINTS = 60;

export interface ThroughputPoint {
  /** End of the interval, Unix ms. */
  ts: number;
  completed: number;
}

export class ThroughputSampler {
  readonly #points: ThroughputPoint[] = [];
  #last: number | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    /** The cumulative count, or undefined while nothing reports one. */
    private readonly read: () => number | undefined,
    private readonly now: () => number = Date.now,
    readonly intervalS = THROUGHPUT_INTERVAL_S,
    private readonly maxPoints = THROUGHPUT_POINTS,
  ) {}

  start(): void {
    this.#last = this.read();
    this.#timer = setInterval(() => this.sample(), this.intervalS * 1000);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Takes one sample (the timer calls it; tests call it directly). */
  sample(): void {
    const v = this.read();
    if (v === undefined) return;
    // A count that went down (the engine restarted its counter) counts as a fresh start.
    const completed = this.#last === undefined || v < this.#last ? 0 : v - this.#last;
    this.#last = v;
    this.#points.push({ ts: this.now(), completed });
    if (this.#points.length > this.maxPoints) this.#points.shift();
  }

  points(): ThroughputPoint[] {
    return [...this.#points];
  }
}
