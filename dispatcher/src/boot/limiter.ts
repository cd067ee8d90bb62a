/**
 * A first-in first-out concurrency bound: at most `max` tasks run at once, the others wait
 * in order. A boot storm queues instead of failing; only a full queue turns work away
 * (`maxQueue`, so a flood cannot grow memory without bound).
 */
export interface Submitted {
  /** Leaves the queue (a client that went away while waiting); no-op once started. */
  cancel(): void;
}

export class FifoLimiter {
  #active = 0;
  readonly #queue: { start: (release: () => void) => void; cancelled: boolean }[] = [];
  #head = 0;

  constructor(
    readonly max: number,
    readonly maxQueue: number,
  ) {
    if (!(max >= 1)) throw new RangeError('FifoLimiter: max must be at least 1');
  }

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#queue.length - this.#head;
  }

  /**
   * Runs `start` now if a slot is free, else when one frees. `start` gets `release`, which
   * it must call exactly once when its work ends (extra calls are ignored). Returns
   * undefined, without running anything, when the queue is full.
   */
  submit(start: (release: () => void) => void): Submitted | undefined {
    if (this.#active < this.max) {
      this.#run(start);
      return { cancel() {} };
    }
    if (this.queued >= this.maxQueue) return undefined;
    const entry = { start, cancelled: false };
    this.#queue.push(entry);
    return {
      cancel: () => {
        entry.cancelled = true;
      },
    };
  }

  #run(start: (release: () => void) => void): void {
    this.#active++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#active--;
      this.#next();
    };
    try {
      start(release);
    } catch (err) {
      release();
      throw err;
    }
  }

  #next(): void {
    while (this.#active < this.max && this.#head < this.#queue.length) {
      const entry = this.#queue[this.#head++]!;
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue.splice(0, this.#head);
        this.#head = 0;
      }
      if (!entry.cancelled) this.#run(entry.start);
    }
  }
}
