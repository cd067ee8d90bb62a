/**
 * The event log: every node state transition, command, boot stage milestone and job
 * milestone is an event with a time. Kept in the store (for `dispatcherctl events`),
 * the newest in memory (for the web page), and pushed to live subscribers (SSE, --follow).
 */
import { EventEmitter } from 'node:events';
import type { ClusterEvent } from '../api/schemas.js';
import type { Db, Migration } from '../store/database.js';
import type { GroupCommit } from '../store/group-commit.js';

export const eventMigrations: Migration[] = [
  {
    name: 'events/001-create',
    sql: `CREATE TABLE events (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      ts INTEGER NOT NULL,
      kind TEXT NOT NULL,
      node TEXT,
      message TEXT NOT NULL,
      data TEXT
    );
    CREATE INDEX events_node ON events(node, id);`,
  },
];

/** An event as the API shows it (api/schemas.ts). */

export type NewEvent = Omit<ClusterEvent, 'id' | 'ts' | 'node' | 'data'> & {
  node?: string | null;
  data?: Record<string, unknown> | null;
  ts?: number;
};

const RECENT = 500;

export class EventLog {
  readonly #emitter = new EventEmitter();
  readonly #recent: ClusterEvent[] = [];
  #nextId: number;
  readonly #insert;

  constructor(
    private readonly db: Db,
    private readonly commits: GroupCommit,
    private readonly now: () => number = Date.now,
  ) {
    this.#emitter.setMaxListeners(0);
    this.#nextId = ((db.prepare('SELECT max(id) FROM events').pluck().get() as number | null) ?? 0) + 1;
    this.#insert = db.prepare('INSERT INTO events (id, ts, kind, node, message, data) VALUES (?, ?, ?, ?, ?, ?)');
    const rows = db.prepare('SELECT * FROM events ORDER BY id DESC LIMIT ?').all(RECENT) as EventRow[];
    for (const r of rows.reverse()) this.#recent.push(fromRow(r));
  }

  /** Record an event; returns it at once (the write is group-committed). */
  append(e: NewEvent): ClusterEvent {
    const ev: ClusterEvent = {
      id: this.#nextId++,
      ts: e.ts ?? this.now(),
      kind: e.kind,
      node: e.node ?? null,
      message: e.message,
      data: e.data ?? null,
    };
    this.#recent.push(ev);
    if (this.#recent.length > RECENT * 2) this.#recent.splice(0, this.#recent.length - RECENT);
    this.commits
      .run(() => this.#insert.run(ev.id, ev.ts, ev.kind, ev.node, ev.message, ev.data ? JSON.stringify(ev.data) : null))
      .catch(() => {
        /* the store's failure is reported by GroupCommit.failure; the event stays in memory */
      });
    this.#emitter.emit('event', ev);
    return ev;
  }

  /** The newest events, oldest first; `node` filters, `afterId` pages forward. */
  list(opts: { node?: string; afterId?: number; limit?: number; kind?: string } = {}): ClusterEvent[] {
    const limit = Math.min(opts.limit ?? 100, 10_000);
    const where: string[] = [];
    const args: unknown[] = [];
    if (opts.node) {
      where.push('node = ?');
      args.push(opts.node);
    }
    if (opts.afterId !== undefined) {
      where.push('id > ?');
      args.push(opts.afterId);
    }
    if (opts.kind) {
      where.push('kind LIKE ?');
      args.push(`${opts.kind}%`);
    }
    this.commits.flush(); // read your own writes
    const sql = `SELECT * FROM events ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY id DESC LIMIT ?`;
    const rows = this.db.prepare(sql).all(...args, limit) as EventRow[];
    return rows.reverse().map(fromRow);
  }

  recent(limit = 100): ClusterEvent[] {
    return this.#recent.slice(-limit);
  }

  subscribe(listener: (e: ClusterEvent) => void): () => void {
    this.#emitter.on('event', listener);
    return () => this.#emitter.off('event', listener);
  }
}

interface EventRow {
  id: number;
  ts: number;
  kind: string;
  node: string | null;
  message: string;
  data: string | null;
}

function fromRow(r: EventRow): ClusterEvent {
  return { id: r.id, ts: r.ts, kind: r.kind, node: r.node, message: r.message, data: r.data ? JSON.parse(r.data) : null };
}
