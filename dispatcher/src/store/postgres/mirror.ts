/**
 * The PostgreSQL side of the shared store: the copy's tables (made, checked, remade after a
 * migration), one transaction per shipped batch, and the load of every table into a fresh
 * SQLite database when a dispatcher takes the lead.
 */
import type pg from 'pg';
import { APPLIED_MIGRATIONS_SQL, type Db } from '../database.js';
import type { ChangeBatch } from './change-capture.js';
import { createTableSql, deleteSql, jsonLiteral, q, shapeOf, upsertSql, type MirrorTable, type PgType } from './mirror-schema.js';

/** The store's own tables in PostgreSQL, beside the copies of SQLite's (and leadership.ts's lc_leader). */
export const META_TABLES_SQL = [
  'CREATE TABLE IF NOT EXISTS lc_sqlite_sequence (name TEXT PRIMARY KEY, seq NUMERIC NOT NULL)',
  // The data dir's secrets (admin and enroll tokens, identity key), the same on every dispatcher.
  'CREATE TABLE IF NOT EXISTS lc_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)',
];

const LOAD_PAGE_ROWS = 20_000;

/** Names of the migrations the database has applied, or undefined when it has no store yet. */
export async function appliedMigrations(client: pg.Client): Promise<string[] | undefined> {
  const exists = await client.query("SELECT to_regclass('public.schema_migrations') IS NOT NULL AS ok");
  if (!exists.rows[0]?.ok) return undefined;
  const r = await client.query(APPLIED_MIGRATIONS_SQL);
  return r.rows.map((row: { name: string }) => row.name);
}

/** The copy's tables whose shape differs from SQLite's (or that are missing): they are remade and copied whole. */
export async function tablesToRemake(client: pg.Client, tables: readonly MirrorTable[]): Promise<MirrorTable[]> {
  const r = await client.query(
    `SELECT c.table_name, c.column_name, upper(c.data_type) AS data_type, c.ordinal_position,
       (SELECT k.ordinal_position FROM information_schema.key_column_usage k
          JOIN information_schema.table_constraints tc ON tc.constraint_name = k.constraint_name AND tc.table_schema = k.table_schema
         WHERE tc.constraint_type = 'PRIMARY KEY' AND k.table_schema = c.table_schema AND k.table_name = c.table_name AND k.column_name = c.column_name) AS key_pos
     FROM information_schema.columns c WHERE c.table_schema = 'public' ORDER BY c.table_name, c.ordinal_position`,
  );
  const have = new Map<string, MirrorTable>();
  for (const row of r.rows as { table_name: string; column_name: string; data_type: string; key_pos: number | null }[]) {
    const t = have.get(row.table_name) ?? { name: row.table_name, columns: [], key: [] };
    have.set(row.table_name, t);
    t.columns.push({ name: row.column_name, pgType: row.data_type as PgType });
    if (row.key_pos !== null) t.key[row.key_pos - 1] = row.column_name;
  }
  return tables.filter((t) => {
    const h = have.get(t.name);
    return !h || shapeOf(h) !== shapeOf(t);
  });
}

/** Drops and makes again the given tables (in the caller's transaction). */
export async function remakeTables(client: pg.Client, tables: readonly MirrorTable[]): Promise<void> {
  for (const t of tables) {
    await client.query(`DROP TABLE IF EXISTS ${q(t.name)}`);
    await client.query(createTableSql(t));
  }
}

/**
 * A batch as one SQL text: PostgreSQL runs a multi-statement simple query as one transaction
 * (or within the caller's), and the whole batch costs one round trip and one commit.
 */
export function batchSql(batch: ChangeBatch): string {
  const parts: string[] = [];
  for (const c of batch.tables) {
    if (c.deletes.length) parts.push(deleteSql(c.table, jsonLiteral(c.deletes)));
    if (c.upserts.length) parts.push(upsertSql(c.table, jsonLiteral(c.upserts)));
  }
  if (batch.sequences.length)
    parts.push(
      `INSERT INTO lc_sqlite_sequence (name, seq) SELECT name, seq FROM json_populate_recordset(NULL::lc_sqlite_sequence, ${jsonLiteral(batch.sequences)}) ON CONFLICT (name) DO UPDATE SET seq = EXCLUDED.seq`,
    );
  return parts.join(';\n');
}

/** Applies a batch (in the caller's transaction, if it opened one). */
export async function applyBatch(client: pg.Client, batch: ChangeBatch): Promise<void> {
  const sql = batchSql(batch);
  if (sql) await client.query(sql);
}

/**
 * Copies every table from PostgreSQL into `db` (fresh, migrated to the same versions), in
 * pages by key, inside one SQLite transaction. Foreign keys are checked at the end: the copy
 * was consistent when shipped, and the order of tables does not matter on the way.
 */
export async function loadInto(
  client: pg.Client,
  db: Db,
  tables: readonly MirrorTable[],
  progress?: (table: string, rows: number) => void,
): Promise<number> {
  let total = 0;
  const pages: { t: MirrorTable; rows: Record<string, unknown>[] }[] = [];
  for (const t of tables) {
    const cols = t.columns.map((c) => q(c.name)).join(', ');
    const key = t.key.map(q).join(', ');
    let after: unknown[] | undefined;
    for (;;) {
      const where = after ? `WHERE (${key}) > (${t.key.map((_, i) => `$${i + 1}`).join(', ')})` : '';
      const r = await client.query(`SELECT ${cols} FROM ${q(t.name)} ${where} ORDER BY ${key} LIMIT ${LOAD_PAGE_ROWS}`, after ?? []);
      if (r.rows.length === 0) break;
      pages.push({ t, rows: r.rows });
      total += r.rows.length;
      progress?.(t.name, total);
      const last = r.rows.at(-1) as Record<string, unknown>;
      after = t.key.map((k) => last[k]);
      if (r.rows.length < LOAD_PAGE_ROWS) break;
    }
  }
  const seq = await client.query('SELECT name, seq FROM lc_sqlite_sequence');
  db.pragma('foreign_keys = OFF');
  try {
    db.transaction(() => {
      for (const t of tables) db.prepare(`DELETE FROM main.${q(t.name)}`).run();
      const inserts = new Map<string, ReturnType<Db['prepare']>>();
      for (const { t, rows } of pages) {
        let ins = inserts.get(t.name);
        if (!ins) {
          ins = db.prepare(
            `INSERT INTO main.${q(t.name)} (${t.columns.map((c) => q(c.name)).join(', ')}) VALUES (${t.columns.map((c) => `@${c.name}`).join(', ')})`,
          );
          inserts.set(t.name, ins);
        }
        for (const row of rows) ins.run(row);
      }
      if (seq.rows.length) {
        const del = db.prepare('DELETE FROM main.sqlite_sequence WHERE name = ?');
        const put = db.prepare('INSERT INTO main.sqlite_sequence (name, seq) VALUES (?, ?)');
        for (const s of seq.rows as { name: string; seq: number }[]) {
          del.run(s.name);
          put.run(s.name, s.seq);
        }
      }
    })();
  } finally {
    db.pragma('foreign_keys = ON');
  }
  return total;
}
