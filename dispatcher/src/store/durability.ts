/**
 * What makes a committed transaction durable before group commit acknowledges it: an fsync
 * of SQLite's WAL on the threadpool (the embedded store), nothing (an in-memory store), or
 * the shipping of the changed rows to PostgreSQL (store/postgres/postgres-durability.ts).
 */
import { closeSync, fsync, fsyncSync, openSync } from 'node:fs';
import type { Db } from './database.js';

export interface Durability {
  /** Makes durable everything committed so far; rejects if it could not. */
  sync(): Promise<void>;
  /** The same, blocking (shutdown). Absent when the durability cannot block: drain first. */
  syncNow?(): void;
  /** Nothing more will be synced. */
  close(): void;
}

/** The WAL of a file database, fsynced on libuv's threadpool (see group-commit.ts). */
export class WalDurability implements Durability {
  #fd: number | undefined;

  constructor(private readonly walPath: string) {}

  static of(db: Db): Durability | undefined {
    return db.memory || db.name === '' ? undefined : new WalDurability(`${db.name}-wal`);
  }

  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      let fd: number | undefined;
      try {
        fd = this.#open();
      } catch (err) {
        reject(err);
        return;
      }
      if (fd === undefined) resolve();
      else fsync(fd, (err) => (err ? reject(err) : resolve()));
    });
  }

  syncNow(): void {
    const fd = this.#open();
    if (fd !== undefined) fsyncSync(fd);
  }

  close(): void {
    if (this.#fd === undefined) return;
    try {
      closeSync(this.#fd);
    } catch {
      /* already gone */
    }
    this.#fd = undefined;
  }

  #open(): number | undefined {
    // The WAL exists once a transaction has committed; it keeps its inode while the
    // database is open (a checkpoint rewinds it, it does not replace it).
    if (this.#fd === undefined) {
      try {
        this.#fd = openSync(this.walPath, 'r');
      } catch (err) {
        // No WAL yet: nothing was ever written (a batch whose writes all failed).
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    }
    return this.#fd;
  }
}
