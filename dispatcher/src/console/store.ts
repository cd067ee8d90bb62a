/**
 * The console log: per node (by MAC), the last lines of its consoles — `kernel` (netconsole,
 * console/netconsole.ts) and `serial` (Serial-over-LAN, when a BMC gives one). Kept in
 * SQLite, so they outlive the node and a dispatcher restart; bounded per node in lines and
 * bytes (the oldest go first), so no stream, however long or hostile, grows the store.
 *
 * Appends are batched: the lines that arrive in one turn of the event loop share one
 * transaction (committed, not fsynced: a console line is not worth a disk flush each).
 */
import type { Db, Migration } from '../store/database.js';
import type { Mac } from '../nodes/mac.js';

export const consoleMigrations: Migration[] = [
  {
    name: 'console/001-lines',
    sql: `CREATE TABLE console_lines (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      mac TEXT NOT NULL,
      source TEXT NOT NULL,
      ts INTEGER NOT NULL,
      text TEXT NOT NULL
    );
    CREATE INDEX console_lines_mac ON console_lines(mac, id);`,
  },
];

export const CONSOLE_SOURCES = ['kernel', 'serial'] as const;
export type ConsoleSource = (typeof CONSOLE_SOURCES)[number];

export interface ConsoleLine {
  /** Increasing over the whole store, never reused: `after=` resumes from it. */
  id: number;
  mac: Mac;
  source: ConsoleSource;
  ts: number;
  text: string;
}

/** Lines kept per node, all sources together. */
export const DEFAULT_CONSOLE_MAX_LINES = 5000;
/** Bytes of text kept per node. */
export const DEFAULT_CONSOLE_MAX_BYTES = 1024 * 1024;
/** Once over a cap, trimmed down to this share of it: not one DELETE per line. */
const TRIM_TO = 0.9;

export interface ConsoleLimits {
  maxLines: number;
  maxBytes: number;
}

interface Usage {
  lines: number;
  bytes: number;
}

export class ConsoleLog {
  readonly limits: ConsoleLimits;
  #queue: Omit<ConsoleLine, 'id'>[] = [];
  #scheduled = false;
  #closed = false;
  readonly #usage = new Map<Mac, Usage>();
  readonly #listeners = new Set<(lines: readonly ConsoleLine[]) => void>();
  readonly #insert;
  readonly #usageOf;
  readonly #oldest;
  readonly #deleteUpTo;
  readonly #write;
  readonly #listAll;
  readonly #listSource;

  constructor(
    private readonly db: Db,
    limits: Partial<ConsoleLimits> = {},
  ) {
    this.limits = { maxLines: limits.maxLines ?? DEFAULT_CONSOLE_MAX_LINES, maxBytes: limits.maxBytes ?? DEFAULT_CONSOLE_MAX_BYTES };
    this.#insert = db.prepare('INSERT INTO console_lines (mac, source, ts, text) VALUES (?, ?, ?, ?)');
    this.#usageOf = db.prepare<[string], { lines: number; bytes: number | null }>(
      'SELECT count(*) AS lines, sum(length(CAST(text AS BLOB))) AS bytes FROM console_lines WHERE mac = ?',
    );
    this.#oldest = db.prepare<[string, number], { id: number; bytes: number }>(
      'SELECT id, length(CAST(text AS BLOB)) AS bytes FROM console_lines WHERE mac = ? ORDER BY id LIMIT ?',
    );
    this.#deleteUpTo = db.prepare('DELETE FROM console_lines WHERE mac = ? AND id <= ?');
    const select = 'SELECT id, mac, source, ts, text FROM console_lines WHERE mac = ? AND id > ?';
    this.#listAll = db.prepare<[string, number, number], ConsoleLine>(`${select} ORDER BY id DESC LIMIT ?`);
    this.#listSource = db.prepare<[string, number, string, number], ConsoleLine>(`${select} AND source = ? ORDER BY id DESC LIMIT ?`);
    this.#write = db.transaction((batch: Omit<ConsoleLine, 'id'>[]) => {
      const out: ConsoleLine[] = [];
      const touched = new Set<Mac>();
      for (const l of batch) {
        const u = this.#usageFor(l.mac); // read before the insert: it counts what is stored
        const id = Number(this.#insert.run(l.mac, l.source, l.ts, l.text).lastInsertRowid);
        out.push({ id, ...l });
        u.lines++;
        u.bytes += Buffer.byteLength(l.text);
        touched.add(l.mac);
      }
      for (const mac of touched) this.#trim(mac);
      return out;
    });
  }

  /** Queues lines of one node; they are stored (and listeners told) at the end of this turn. */
  append(mac: Mac, source: ConsoleSource, texts: readonly string[], ts: number): void {
    if (this.#closed || texts.length === 0) return;
    for (const text of texts) this.#queue.push({ mac, source, ts, text: redactSecrets(text) });
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Stores what is queued now. */
  flush(): void {
    this.#scheduled = false;
    const batch = this.#queue;
    if (batch.length === 0 || this.#closed) return;
    this.#queue = [];
    const stored = this.#write(batch);
    for (const fn of this.#listeners) fn(stored);
  }

  /** The last `limit` lines of a node after `afterId`, oldest first. */
  list(q: { mac: Mac; source?: ConsoleSource | undefined; afterId?: number | undefined; limit: number }): ConsoleLine[] {
    const rows = q.source
      ? this.#listSource.all(q.mac, q.afterId ?? 0, q.source, q.limit)
      : this.#listAll.all(q.mac, q.afterId ?? 0, q.limit);
    return rows.reverse();
  }

  /** What a node's lines take now. */
  usage(mac: Mac): Usage {
    return { ...this.#usageFor(mac) };
  }

  /** Told of every stored batch (all nodes), after it is committed. */
  subscribe(fn: (lines: readonly ConsoleLine[]) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Drops a node's lines (the node was forgotten). */
  forget(mac: Mac): void {
    this.flush();
    this.db.prepare('DELETE FROM console_lines WHERE mac = ?').run(mac);
    this.#usage.delete(mac);
  }

  close(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
    this.#listeners.clear();
  }

  #usageFor(mac: Mac): Usage {
    let u = this.#usage.get(mac);
    if (!u) {
      const row = this.#usageOf.get(mac);
      u = { lines: row?.lines ?? 0, bytes: row?.bytes ?? 0 };
      this.#usage.set(mac, u);
    }
    return u;
  }

  #trim(mac: Mac): void {
    const u = this.#usageFor(mac);
    const { maxLines, maxBytes } = this.limits;
    if (u.lines <= maxLines && u.bytes <= maxBytes) return;
    const keepLines = Math.floor(maxLines * TRIM_TO);
    const keepBytes = Math.floor(maxBytes * TRIM_TO);
    let upTo = -1;
    while (u.lines > keepLines || u.bytes > keepBytes) {
      const rows = this.#oldest.all(mac, Math.max(64, u.lines - keepLines));
      if (rows.length === 0) break;
      let progressed = false;
      for (const r of rows) {
        if (u.lines <= keepLines && u.bytes <= keepBytes) break;
        if (r.id <= upTo) continue;
        upTo = r.id;
        u.lines--;
        u.bytes -= r.bytes;
        progressed = true;
      }
      this.#deleteUpTo.run(mac, upTo);
      if (!progressed) break;
    }
  }
}

const logs = new WeakMap<Db, ConsoleLog>();

/**
 * A console line as it may be shown: the kernel prints its command line at boot (and netconsole
 * replays it), which carries the boot token until the agent spends it; console lines are
 * readable by anyone who can read the API, so the token never reaches the store.
 */
export function redactSecrets(text: string): string {
  return text.includes('lc.token=') ? text.replace(/\blc\.token=\S*/g, 'lc.token=(hidden)') : text;
}

/** The one console log of a store (the receivers append to it, the API reads it). */
export function consoleLogOf(db: Db): ConsoleLog {
  let log = logs.get(db);
  if (!log) {
    log = new ConsoleLog(db);
    logs.set(db, log);
  }
  return log;
}
