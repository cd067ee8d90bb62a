/**
 * Group commit: many small writes share one transaction (and so one fsync), and each
 * caller's promise settles only after that transaction is durable. Under light load a
 * write commits on the next tick (no added latency); under heavy load batches grow up to
 * `maxBatch`, which is what keeps fsync-per-commit durability affordable.
 */
import type { Db } from './database.js';

export type Write<T> = () => T;

interface Pending {
  write: Write<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

export interface GroupCommitStats {
  commits: number;
  writes: number;
  /** Duration of the last commit, ms. */
  lastCommitMs: number;
  /** Sum of commit durations, ms (for an average). */
  totalCommitMs: number;
}

export class GroupCommit {
  #queue: Pending[] = [];
  #scheduled = false;
  #failed: Error | undefined;
  readonly stats: GroupCommitStats = { commits: 0, writes: 0, lastCommitMs: 0, totalCommitMs: 0 };

  constructor(
    private readonly db: Db,
    private readonly maxBatch = 5000,
  ) {}

  /** Queue a write; resolves with its return value once its transaction has committed. */
  run<T>(write: Write<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ write, resolve: resolve as (v: unknown) => void, reject });
      if (this.#queue.length >= this.maxBatch) this.flush();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** The last commit error, if the store could not be written (disk full, read-only...). */
  get failure(): Error | undefined {
    return this.#failed;
  }

  /** Commit everything queued now, synchronously. */
  flush(): void {
    this.#scheduled = false;
    const batch = this.#queue;
    if (batch.length === 0) return;
    this.#queue = [];
    const results: unknown[] = new Array(batch.length);
    const errors: (unknown | undefined)[] = new Array(batch.length);
    const t0 = performance.now();
    try {
      this.db.transaction(() => {
        for (let i = 0; i < batch.length; i++) {
          // A write that throws is reported to its own caller; the others still commit.
          // Each runs in a savepoint so its partial effects roll back alone.
          try {
            results[i] = this.db.transaction(batch[i]!.write)();
          } catch (err) {
            errors[i] = err ?? new Error('write failed');
          }
        }
      })();
      this.#failed = undefined;
    } catch (err) {
      this.#failed = err instanceof Error ? err : new Error(String(err));
      for (const p of batch) p.reject(err);
      return;
    } finally {
      const ms = performance.now() - t0;
      this.stats.lastCommitMs = ms;
      this.stats.totalCommitMs += ms;
    }
    this.stats.commits++;
    this.stats.writes += batch.length;
    for (let i = 0; i < batch.length; i++) {
      if (errors[i] !== undefined) batch[i]!.reject(errors[i]);
      else batch[i]!.resolve(results[i]);
    }
  }
}
