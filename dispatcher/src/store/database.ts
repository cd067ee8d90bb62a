/**
 * The dispatcher's store: one SQLite database (better-sqlite3, WAL) in the data dir.
 * Each module owns its tables and declares them as named migrations; `openStore` applies
 * the ones not yet applied, in the order given, inside one transaction each.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { AUTO_CHECKPOINT_PAGES } from './checkpointer.js';

export type Db = Database.Database;

export interface Migration {
  /** Unique and stable, e.g. `nodes/001-create`. Never rename an applied migration. */
  name: string;
  sql: string;
}

export const STORE_FILE = 'dispatcher.db';

export interface OpenStoreOptions {
  /** `':memory:'` for unit tests; otherwise the data dir holding dispatcher.db. */
  dataDir: string;
  migrations: readonly Migration[];
  /**
   * `NORMAL` (default): COMMIT does not fsync; GroupCommit fsyncs the WAL off the event loop
   * before it acknowledges a write (see group-commit.ts), which gives the durability of
   * `FULL` without blocking the event loop. `FULL` makes every COMMIT sync on the spot.
   */
  synchronous?: 'FULL' | 'NORMAL';
}

export function openStore(opts: OpenStoreOptions): Db {
  let file = ':memory:';
  if (opts.dataDir !== ':memory:') {
    mkdirSync(opts.dataDir, { recursive: true });
    file = join(opts.dataDir, STORE_FILE);
  }
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${opts.synchronous ?? 'NORMAL'}`);
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  // Checkpoint in bigger steps: fewer stalls under a steady stream of small commits. The
  // dispatcher moves checkpoints to a worker thread (checkpointer.ts), which turns this off.
  db.pragma(`wal_autocheckpoint = ${AUTO_CHECKPOINT_PAGES}`);
  applyMigrations(db, opts.migrations);
  return db;
}

export function applyMigrations(db: Db, migrations: readonly Migration[]): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)');
  const applied = new Set(db.prepare('SELECT name FROM schema_migrations').pluck().all() as string[]);
  const record = db.prepare('INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)');
  for (const m of migrations) {
    if (applied.has(m.name)) continue;
    db.transaction(() => {
      db.exec(m.sql);
      record.run(m.name, Date.now());
    })();
  }
}
