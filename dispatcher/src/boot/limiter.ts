/**
 * Concurrency bounds for transfers. `FairLimiter`: at most `max` tasks run at once, at most
 * `perClient` of them for one client; the others wait in their client's line, and a freed
 * slot goes to the waiting client with the fewest running (round-robin among equals), so one
 * client's pile of requests (or stalled readers) cannot keep the others waiting. A boot storm queues instead of failing;
 * only a full queue turns work away (`maxQueue` in all, `perClientQueue` for one client, so
 * a flood cannot grow memory without bound). `FifoLimiter` is the one-client case: FIFO.
 */
export interface Submitted {
  /** Leaves the queue (a client that went away while waiting); no-op once started. */
  cancel(): void;
}

export interface FairLimits {
  /** Tasks running at once, every client together. */
  max: number;
  /** Tasks waiting, every client together. */
  maxQueue: number;
  /** Tasks running at once for one client (default: max). */
  perClient?: number;
  /** Tasks waiting for one client (default: maxQueue). */
  perClientQueue?: number;
}

type Start = (release: () => void) => void;

/** One client's running count and waiting line. */
interface Line {
  client: string;
  active: number;
  queue: { start: Start }[];
}

export class FairLimiter {
  readonly max: number;
  readonly maxQueue: number;
  readonly perClient: number;
  readonly perClientQueue: number;
  #active = 0;
  #queued = 0;
  readonly #lines = new Map<string, Line>();
  /** Lines with someone waiting, in turn order: a line that was served goes to the back. */
  readonly #turns: Line[] = [];

  constructor(limits: FairLimits) {
    this.max = limits.max;
    this.maxQueue = limits.maxQueue;
    this.perClient = limits.perClient ?? limits.max;
    this.perClientQueue = limits.perClientQueue ?? limits.maxQueue;
    if (!(this.max >= 1) || !(this.perClient >= 1)) throw new RangeError(`${new.target.name}: max and perClient must be at least 1`);
  }

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#queued;
  }

  /** Clients with a transfer running or waiting. */
  get clients(): number {
    return this.#lines.size;
  }

  /**
   * Runs `start` now if a slot is free for this client, else when one frees and its turn
   * comes. `start` gets `release`, which it must call exactly once when its work ends (extra
   * calls are ignored). Returns undefined, without running anything, when the queue (all of
   * it, or this client's line) is full.
   */
  submit(start: Start, client = ''): Submitted | undefined {
    let l = this.#lines.get(client);
    if (!l) {
      l = { client, active: 0, queue: [] };
      this.#lines.set(client, l);
    }
    if (this.#active < this.max && l.active < this.perClient && l.queue.length === 0) {
      this.#run(l, start);
      return { cancel() {} };
    }
    if (this.#queued >= this.maxQueue || l.queue.length >= this.perClientQueue) {
      this.#forgetIfIdle(l);
      return undefined;
    }
    const entry = { start };
    l.queue.push(entry);
    this.#queued++;
    if (l.queue.length === 1) this.#turns.push(l);
    return {
      cancel: () => {
        const i = l.queue.indexOf(entry);
        if (i < 0) return; // started already (or cancelled)
        l.queue.splice(i, 1);
        this.#queued--;
        if (l.queue.length === 0) this.#turns.splice(this.#turns.indexOf(l), 1);
        this.#forgetIfIdle(l);
      },
    };
  }

  #run(line: Line, start: Start): void {
    this.#active++;
    line.active++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#active--;
      line.active--;
      this.#forgetIfIdle(line);
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
    while (this.#active < this.max) {
      // The waiting client with the fewest running, the longest unserved among equals.
      let i = -1;
      for (let j = 0; j < this.#turns.length; j++) {
        const l = this.#turns[j]!;
        if (l.active < this.perClient && (i < 0 || l.active < this.#turns[i]!.active)) i = j;
      }
      if (i < 0) return;
      const line = this.#turns.splice(i, 1)[0]!;
      const entry = line.queue.shift()!;
      this.#queued--;
      if (line.queue.length > 0) this.#turns.push(line);
      this.#run(line, entry.start);
    }
  }

  #forgetIfIdle(line: Line): void {
    if (line.active === 0 && line.queue.length === 0) this.#lines.delete(line.client);
  }
}

/** First in, first out: the fair limiter with one client. */
export class FifoLimiter extends FairLimiter {
  constructor(max: number, maxQueue: number) {
    super({ max, maxQueue });
  }
}
