/**
 * Durability by PostgreSQL: a committed SQLite transaction is durable once the rows it
 * changed are committed in PostgreSQL (synchronous_commit on: fsynced there), over the
 * session that holds the leader lock. Group commit calls `sync()` once per batch, so one
 * PostgreSQL transaction carries many writes under load.
 *
 * When the database is away, `sync()` does not fail: it waits until the session is back
 * (writes stay in SQLite meanwhile, unacknowledged) or until another dispatcher leads,
 * which ends this one (`onLeadershipLost`). Writes made outside group commit are shipped
 * by a short timer.
 */
import type { Logger } from '../../log.js';
import type { Durability } from '../durability.js';
import type { ChangeCapture } from './change-capture.js';
import { type Leadership, LeadershipLost } from './leadership.js';
import { batchSql } from './mirror.js';

const BACKGROUND_SHIP_MS = 200;

export interface ShipStats {
  batches: number;
  rows: number;
  lastShipMs: number;
  totalShipMs: number;
  failures: number;
}

export class PostgresDurability implements Durability {
  #chain: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout;
  #closed = false;
  readonly stats: ShipStats = { batches: 0, rows: 0, lastShipMs: 0, totalShipMs: 0, failures: 0 };

  constructor(
    private readonly capture: ChangeCapture,
    private readonly leadership: Leadership,
    private readonly log: Logger,
    private readonly onLeadershipLost: (err: LeadershipLost) => void,
  ) {
    this.#timer = setInterval(() => {
      if (!this.#closed && this.capture.pending()) void this.sync().catch(() => {});
    }, BACKGROUND_SHIP_MS);
    this.#timer.unref();
  }

  /** Whether changes can be made durable now (mutating API calls are refused when not). */
  get available(): boolean {
    return this.leadership.available;
  }

  sync(): Promise<void> {
    const next = this.#chain.then(() => this.#ship());
    this.#chain = next.catch(() => {});
    return next;
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
  }

  async #ship(): Promise<void> {
    for (;;) {
      const batch = this.capture.take();
      if (!batch) return;
      const t0 = performance.now();
      try {
        const sql = batchSql(batch);
        if (sql) await this.leadership.run(sql);
      } catch (err) {
        this.stats.failures++;
        if (this.#closed) throw err;
        this.log.warn({ err: (err as Error).message, rows: batch.rows }, 'cannot ship changes to PostgreSQL; waiting for it');
        try {
          await this.leadership.regain();
        } catch (lost) {
          if (lost instanceof LeadershipLost) this.onLeadershipLost(lost);
          throw lost;
        }
        continue; // the same keys, read again with their latest values
      }
      this.capture.shipped(batch.gen);
      const ms = performance.now() - t0;
      this.stats.batches++;
      this.stats.rows += batch.rows;
      this.stats.lastShipMs = ms;
      this.stats.totalShipMs += ms;
      return;
    }
  }
}
