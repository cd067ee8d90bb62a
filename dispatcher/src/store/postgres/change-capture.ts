/**
 * Which rows changed since they were last shipped to PostgreSQL. Temporary triggers on every
 * store table note each changed primary key in a temporary table, stamped with the current
 * generation; `take()` reads the changed rows as they are now (a row gone is a delete) and
 * starts a new generation, and `shipped(gen)` forgets what that batch covered. A key changed
 * again after `take()` carries the newer generation and stays, so a failed or slow ship
 * never loses a change: the next `take()` reads it again, with its latest value.
 *
 * The triggers see every write, through group commit or not, so the PostgreSQL copy equals
 * the SQLite state as of each `take()`. `recursive_triggers` makes the rows an
 * `INSERT OR REPLACE` deletes visible to them.
 */
import type { Db } from '../database.js';
import { q, type MirrorTable } from './mirror-schema.js';

export type Row = Record<string, unknown>;

export interface TableChanges {
  table: MirrorTable;
  /** Whole rows, encoded for json_populate_recordset. */
  upserts: Row[];
  /** Key columns only. */
  deletes: Row[];
}

export interface ChangeBatch {
  gen: number;
  tables: TableChanges[];
  /** sqlite_sequence rows: AUTOINCREMENT counters, so ids are never reused after a takeover. */
  sequences: { name: string; seq: number }[];
  rows: number;
}

interface TableStatements {
  table: MirrorTable;
  changed: () => Row[];
  gone: () => unknown[];
}

export class ChangeCapture {
  #stmts: TableStatements[] = [];
  #gen = 0;
  #hasSequence: boolean;
  /** The counters as last shipped, and as taken by batches not yet shipped (by generation). */
  #lastSequences = '';
  #takenSequences = new Map<number, string>();

  constructor(
    private readonly db: Db,
    readonly tables: readonly MirrorTable[],
  ) {
    db.pragma('recursive_triggers = ON');
    db.exec(`CREATE TEMP TABLE IF NOT EXISTS _lc_changed (tbl TEXT NOT NULL, k NOT NULL, gen INTEGER NOT NULL, PRIMARY KEY (tbl, k)) WITHOUT ROWID;
      CREATE TEMP TABLE IF NOT EXISTS _lc_gen (g INTEGER NOT NULL);
      INSERT INTO _lc_gen SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM _lc_gen);`);
    this.#gen = db.prepare('SELECT g FROM temp._lc_gen').pluck().get() as number;
    for (const t of tables) this.#install(t);
    this.#hasSequence = db.prepare("SELECT 1 FROM main.sqlite_master WHERE name = 'sqlite_sequence'").get() !== undefined;
  }

  #install(t: MirrorTable): void {
    const keyOf = (row: 'NEW' | 'OLD') =>
      t.key.length === 1 ? `${row}.${q(t.key[0]!)}` : `json_array(${t.key.map((k) => `${row}.${q(k)}`).join(', ')})`;
    // An upsert, never INSERT OR REPLACE: a statement with its own conflict clause (an upsert,
    // INSERT OR IGNORE…) imposes it on the OR clauses of the triggers it fires, not on their
    // upserts; and a DELETE by key would not use the index (the key column has no affinity).
    const note = (row: 'NEW' | 'OLD') =>
      `INSERT INTO temp._lc_changed (tbl, k, gen) VALUES (${sqlString(t.name)}, ${keyOf(row)}, (SELECT g FROM temp._lc_gen)) ON CONFLICT (tbl, k) DO UPDATE SET gen = excluded.gen;`;
    const name = (op: string) => q(`_lc_${t.name}_${op}`);
    const keyMoved = t.key.map((k) => `OLD.${q(k)} IS NOT NEW.${q(k)}`).join(' OR ');
    this.db.exec(`CREATE TEMP TRIGGER IF NOT EXISTS ${name('ins')} AFTER INSERT ON main.${q(t.name)} BEGIN ${note('NEW')} END;
      CREATE TEMP TRIGGER IF NOT EXISTS ${name('upd')} AFTER UPDATE ON main.${q(t.name)} BEGIN ${note('NEW')} END;
      CREATE TEMP TRIGGER IF NOT EXISTS ${name('key')} AFTER UPDATE ON main.${q(t.name)} WHEN ${keyMoved} BEGIN ${note('OLD')} END;
      CREATE TEMP TRIGGER IF NOT EXISTS ${name('del')} AFTER DELETE ON main.${q(t.name)} BEGIN ${note('OLD')} END;`);
    const match =
      t.key.length === 1 ? `t.${q(t.key[0]!)} = c.k` : t.key.map((k, i) => `t.${q(k)} = json_extract(c.k, '$[${i}]')`).join(' AND ');
    const changed = this.db.prepare(
      `SELECT t.* FROM temp._lc_changed c JOIN main.${q(t.name)} t ON ${match} WHERE c.tbl = ${sqlString(t.name)} AND c.gen <= ?`,
    );
    const gone = this.db
      .prepare(
        `SELECT c.k FROM temp._lc_changed c WHERE c.tbl = ${sqlString(t.name)} AND c.gen <= ? AND NOT EXISTS (SELECT 1 FROM main.${q(t.name)} t WHERE ${match})`,
      )
      .pluck();
    this.#stmts.push({ table: t, changed: () => changed.all(this.#gen) as Row[], gone: () => gone.all(this.#gen) });
  }

  /** Whether anything changed that is not shipped yet. */
  pending(): boolean {
    return this.db.prepare('SELECT EXISTS (SELECT 1 FROM temp._lc_changed)').pluck().get() === 1;
  }

  /**
   * The rows changed up to now, as they are now, or undefined when nothing changed. Later
   * changes belong to the next batch.
   */
  take(): ChangeBatch | undefined {
    if (!this.pending()) return undefined;
    const batch: ChangeBatch = { gen: this.#gen, tables: [], sequences: this.#sequencesChanged(), rows: 0 };
    const changed = new Set(this.db.prepare('SELECT DISTINCT tbl FROM temp._lc_changed WHERE gen <= ?').pluck().all(this.#gen) as string[]);
    for (const s of this.#stmts) {
      if (!changed.has(s.table.name)) continue;
      const upserts = s.changed().map((r) => encodeRow(s.table, r));
      const deletes = s.gone().map((k) => keyRow(s.table, k));
      if (upserts.length || deletes.length) {
        batch.tables.push({ table: s.table, upserts, deletes });
        batch.rows += upserts.length + deletes.length;
      }
    }
    this.#gen++;
    this.db.prepare('UPDATE temp._lc_gen SET g = ?').run(this.#gen);
    return batch;
  }

  /** The batch of generation `gen` is in PostgreSQL: its keys are done unless changed since. */
  shipped(gen: number): void {
    this.db.prepare('DELETE FROM temp._lc_changed WHERE gen <= ?').run(gen);
    for (const [g, key] of this.#takenSequences) {
      if (g > gen) continue;
      if (g === gen) this.#lastSequences = key;
      this.#takenSequences.delete(g);
    }
  }

  /** Every row of every table: the first copy into an empty PostgreSQL, or after a migration. */
  everything(tables: readonly MirrorTable[] = this.tables): ChangeBatch {
    const batch: ChangeBatch = { gen: this.#gen - 1, tables: [], sequences: this.#sequences(), rows: 0 };
    for (const t of tables) {
      const upserts = (this.db.prepare(`SELECT * FROM main.${q(t.name)}`).all() as Row[]).map((r) => encodeRow(t, r));
      batch.tables.push({ table: t, upserts, deletes: [] });
      batch.rows += upserts.length;
    }
    return batch;
  }

  /** The AUTOINCREMENT counters when they moved since the last batch (they only grow). */
  #sequencesChanged(): { name: string; seq: number }[] {
    const now = this.#sequences();
    const key = JSON.stringify(now);
    if (key === this.#lastSequences) return [];
    this.#takenSequences.set(this.#gen, key);
    return now;
  }

  #sequences(): { name: string; seq: number }[] {
    if (!this.#hasSequence) return [];
    return this.db.prepare('SELECT name, seq FROM main.sqlite_sequence').all() as { name: string; seq: number }[];
  }
}

function sqlString(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/**
 * A row as json_populate_recordset takes it: BLOBs as bytea hex, and NUL characters (which
 * PostgreSQL's text cannot hold; SQLite's can) as U+FFFD.
 */
export function encodeRow(t: MirrorTable, row: Row): Row {
  for (const c of t.columns) {
    const v = row[c.name];
    if (v === null || v === undefined) continue;
    if (c.pgType === 'BYTEA') {
      row[c.name] = `\\x${(Buffer.isBuffer(v) ? v : Buffer.from(String(v))).toString('hex')}`;
    } else if (c.pgType === 'TEXT') {
      if (typeof v === 'string') {
        if (v.includes('\0')) row[c.name] = v.replaceAll('\0', '\uFFFD');
      } else row[c.name] = Buffer.isBuffer(v) ? v.toString('utf8').replaceAll('\0', '\uFFFD') : String(v);
    } else if (typeof v === 'bigint') row[c.name] = v.toString();
    else if (typeof v !== 'number') {
      const n = Number(Buffer.isBuffer(v) ? v.toString() : v);
      row[c.name] = Number.isFinite(n) ? n : null;
    } else if (!Number.isFinite(v)) row[c.name] = null;
  }
  return row;
}

function keyRow(t: MirrorTable, k: unknown): Row {
  if (t.key.length === 1) return encodeRow(t, { [t.key[0]!]: k });
  const parts = JSON.parse(String(k)) as unknown[];
  const row: Row = {};
  t.key.forEach((name, i) => {
    row[name] = parts[i];
  });
  return encodeRow(t, row);
}
