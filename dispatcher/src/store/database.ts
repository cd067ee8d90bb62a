/**
 * The dispatcher's store: one SQLite database (better-sqlite3, WAL) in the data dir.
 * Each module owns its tables and declares them as named migrations; `openStore` applies
 * the ones not yet applied, in the order given, inside one transaction each.
 */
import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DispatcherError } from '../errors.js';
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
    ensureDataDir(opts.dataDir);
    file = join(opts.dataDir, STORE_FILE);
    try {
      createPrivate(file);
    } catch (err) {
      throw dataDirError(opts.dataDir, err);
    }
  }
  let db: Db | undefined;
  try {
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${opts.synchronous ?? 'NORMAL'}`);
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    // Checkpoint in bigger steps: fewer stalls under a steady stream of small commits. The
    // dispatcher moves checkpoints to a worker thread (checkpointer.ts), which turns this off.
    db.pragma(`wal_autocheckpoint = ${AUTO_CHECKPOINT_PAGES}`);
    applyMigrations(db, opts.migrations);
  } catch (err) {
    db?.close();
    if (opts.dataDir !== ':memory:' && /^SQLITE_(CANTOPEN|READONLY|IOERR|FULL|PERM|AUTH)/.test(String((err as { code?: unknown }).code)))
      throw dataDirError(opts.dataDir, err);
    throw err;
  }
  return db;
}

/**
 * Makes the data dir if it is missing, readable by this user only (it holds the database,
 * the tokens and the identity key), and checks that files can be made in it: as root,
 * permission bits do not stop a write, but a read-only mount does, and it is better said at
 * start in one line than as a SQLite stack trace.
 */
export function ensureDataDir(dir: string): void {
  try {
    if (mkdirSync(dir, { recursive: true, mode: 0o700 }) !== undefined) chmodSync(dir, 0o700);
    const probe = join(dir, `.write-probe-${process.pid}`);
    writeFileSync(probe, '', { mode: 0o600 });
    unlinkSync(probe);
  } catch (err) {
    throw dataDirError(dir, err);
  }
}

/**
 * Creates `file` mode 0600 whatever the umask, or narrows an existing one (and its WAL and
 * shared-memory files) to 0600: SQLite gives the -wal and -shm files the database's mode.
 */
function createPrivate(file: string): void {
  if (!existsSync(file)) closeSync(openSync(file, 'a', 0o600));
  for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f) && (statSync(f).mode & 0o077) !== 0) chmodSync(f, 0o600);
}

function dataDirError(dir: string, err: unknown): DispatcherError {
  const e = err as { code?: string; message?: string };
  const why: Record<string, string> = {
    EROFS: 'it is on a read-only file system',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    ENOSPC: 'no space left on the device',
    ENOTDIR: 'a part of the path is not a directory',
    EEXIST: 'a file of that name is in the way',
    SQLITE_READONLY: 'the database is read-only',
    SQLITE_CANTOPEN: 'the database cannot be opened',
    SQLITE_FULL: 'no space left on the device',
  };
  const reason = (e.code && why[e.code]) ?? e.message ?? String(err);
  return new DispatcherError('DSP_ERR_DATA_DIR', `cannot use the data dir ${dir}: ${reason}${e.code ? ` (${e.code})` : ''}`, {
    hint: 'it holds the database and tokens: make it writable by the user running the dispatcher, or pass --data-dir DIR',
    cause: err,
  });
}

/** The names of the applied migrations: the same SQL on SQLite and on the PostgreSQL copy. */
export const APPLIED_MIGRATIONS_SQL = 'SELECT name FROM schema_migrations';

export function applyMigrations(db: Db, migrations: readonly Migration[]): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)');
  const applied = new Set(db.prepare(APPLIED_MIGRATIONS_SQL).pluck().all() as string[]);
  const record = db.prepare('INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)');
  for (const m of migrations) {
    if (applied.has(m.name)) continue;
    db.transaction(() => {
      db.exec(m.sql);
      record.run(m.name, Date.now());
    })();
  }
}
