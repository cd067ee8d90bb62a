/**
 * Group commit: many small writes share one transaction (and so one fsync), and each
 * caller's promise settles only after that transaction is durable. Under light load a
 * write commits on the next tick (no added latency); under heavy load batches grow up to
 * `maxBatch`, which is what keeps fsync-per-commit durability affordable.
 *
 * The fsync runs off the event loop. The store is in WAL mode with `synchronous=NORMAL`
 * (see database.ts), so SQLite's COMMIT only appends the transaction's frames to the WAL
 * file, without syncing it; we then fsync that file on libuv's threadpool and settle the
 * batch's promises when it returns. SQLite replays WAL frames up to the last commit frame
 * on recovery, so once the fsync returns the transaction survives a crash or power loss —
 * the same guarantee as `synchronous=FULL`, without blocking DHCP, boot scripts and agents
 * for milliseconds per commit. Batches that commit while an fsync is in flight are covered
 * by the next one (fsyncs coalesce too). Checkpoints still sync the WAL and the database
 * file themselves (SQLite does that in NORMAL mode).
 *
 * With the PostgreSQL store, "durable" means shipped there instead (store/durability.ts).
 *
 * Rule for every module: a write that must be durable before it is acknowledged goes
 * through `run()`. A transaction made directly on the database is committed but not synced.
 */
import type { Db } from './database.js';
import { WalDurability, type Durability } from './durability.js';

export type Write<T> = () => T;

interface Pending {
  write: Write<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** A committed write waiting for the fsync that makes it durable. */
interface Committed {
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
  value: unknown;
  error: unknown;
}

export interface GroupCommitStats {
  commits: number;
  writes: number;
  /** Duration of the last commit (the transaction, on the event loop), ms. */
  lastCommitMs: number;
  /** Sum of commit durations, ms (for an average). */
  totalCommitMs: number;
  /** WAL fsyncs done (off the event loop). */
  syncs: number;
  /** Duration of the last fsync, ms. */
  lastSyncMs: number;
  totalSyncMs: number;
}

export class GroupCommit {
  #queue: Pending[] = [];
  #scheduled = false;
  #failed: Error | undefined;
  /** Committed, not yet covered by an fsync. */
  #unsynced: Committed[] = [];
  #syncing = false;
  /** The writes the fsync now running on the threadpool covers. */
  #inflight: Committed[] = [];
  /** Set by close(): no more fsyncs start; one still running finds its writes settled. */
  #closing = false;
  readonly #durability: Durability | undefined;
  readonly stats: GroupCommitStats = { commits: 0, writes: 0, lastCommitMs: 0, totalCommitMs: 0, syncs: 0, lastSyncMs: 0, totalSyncMs: 0 };

  /** `durability` defaults to the WAL's fsync for a file database, nothing for an in-memory one. */
  constructor(
    private readonly db: Db,
    private readonly maxBatch = 5000,
    durability: Durability | undefined = WalDurability.of(db),
  ) {
    this.#durability = durability;
  }

  /** Queue a write; resolves with its return value once its transaction is durable. */
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

  /** The last error, if the store could not be written or synced (disk full, read-only...). */
  get failure(): Error | undefined {
    return this.#failed;
  }

  /**
   * Commits everything queued now, synchronously (so reads that follow see it); the
   * callers' promises settle when the fsync that covers it returns.
   */
  flush(): void {
    this.#scheduled = false;
    const batch = this.#queue;
    if (batch.length === 0) return;
    this.#queue = [];
    const results: unknown[] = new Array(batch.length);
    const errors: unknown[] = new Array(batch.length);
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
      const p = batch[i]!;
      this.#unsynced.push({ resolve: p.resolve, reject: p.reject, value: results[i], error: errors[i] });
    }
    this.#sync();
  }

  /** Resolves when everything queued so far is durable (before close() with a durability that cannot block). */
  drain(): Promise<void> {
    return this.run(() => undefined);
  }

  /**
   * Commits what is queued and syncs it before returning, blocking: for shutdown. Pending
   * promises settle (on the next turn of the event loop).
   */
  close(): void {
    this.#closing = true;
    this.flush();
    // A sync still running covers writes that this one covers too: they settle here, and
    // its callback (which finds them gone) closes the durability after it.
    const waiting = [...this.#inflight, ...this.#unsynced];
    this.#inflight = [];
    this.#unsynced = [];
    let error: unknown;
    try {
      this.#durability?.syncNow?.();
    } catch (err) {
      error = err;
    }
    settle(waiting, error);
    if (!this.#syncing) this.#durability?.close();
  }

  #sync(): void {
    if (this.#syncing || this.#closing || this.#unsynced.length === 0) return;
    const covering = this.#unsynced;
    this.#unsynced = [];
    if (this.#durability === undefined) {
      settle(covering, undefined);
      return;
    }
    this.#syncing = true;
    this.#inflight = covering;
    const t0 = performance.now();
    const done = (err: unknown) => {
      this.#syncing = false;
      if (this.#closing) {
        // close() synced and settled these writes already; the durability is ours to close now.
        this.#durability?.close();
        return;
      }
      this.#inflight = [];
      const ms = performance.now() - t0;
      this.stats.syncs++;
      this.stats.lastSyncMs = ms;
      this.stats.totalSyncMs += ms;
      if (err) this.#fail(err);
      else this.#failed = undefined;
      settle(covering, err ?? undefined);
      this.#sync(); // what committed meanwhile
    };
    this.#durability.sync().then(
      () => done(undefined),
      (err: unknown) => done(err ?? new Error('sync failed')),
    );
  }

  #fail(err: unknown): void {
    this.#failed = err instanceof Error ? err : new Error(String(err));
  }
}

function settle(list: readonly Committed[], syncError: unknown): void {
  for (const c of list) {
    if (syncError !== undefined) c.reject(syncError);
    else if (c.error !== undefined) c.reject(c.error);
    else c.resolve(c.value);
  }
}
