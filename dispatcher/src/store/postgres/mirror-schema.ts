/**
 * The shape of the PostgreSQL copy of the store, read from the SQLite schema the migrations
 * made: one table per SQLite table, the same name, columns and primary key. Every module
 * keeps writing its SQL once, for SQLite; this is the one place that knows PostgreSQL's
 * types. The copy keeps no other constraint or index: SQLite enforces them before a row is
 * shipped, and the copy only ever receives whole rows by primary key.
 */
import type { Db } from '../database.js';

export type PgType = 'NUMERIC' | 'TEXT' | 'BYTEA';

export interface MirrorColumn {
  name: string;
  pgType: PgType;
}

export interface MirrorTable {
  name: string;
  columns: MirrorColumn[];
  /** Primary-key columns, in key order. */
  key: string[];
}

/** Tables SQLite keeps for itself, or that are not state. */
const NOT_MIRRORED = /^sqlite_/;

/**
 * SQLite's declared type → PostgreSQL, by SQLite's affinity rules. NUMERIC for integers and
 * reals alike: SQLite lets an INTEGER column hold 1.5, and the copy must take whatever SQLite took.
 */
export function pgTypeOf(declared: string): PgType {
  const t = declared.toUpperCase();
  if (t.includes('INT')) return 'NUMERIC';
  if (t.includes('CHAR') || t.includes('CLOB') || t.includes('TEXT')) return 'TEXT';
  if (t === '' || t.includes('BLOB')) return 'BYTEA';
  return 'NUMERIC';
}

export function readMirrorTables(db: Db): MirrorTable[] {
  const names = db.prepare("SELECT name FROM main.sqlite_master WHERE type = 'table' ORDER BY name").pluck().all() as string[];
  const tables: MirrorTable[] = [];
  for (const name of names) {
    if (NOT_MIRRORED.test(name)) continue;
    const cols = db.prepare(`SELECT name, type, pk FROM pragma_table_info(?)`).all(name) as { name: string; type: string; pk: number }[];
    const key = cols
      .filter((c) => c.pk > 0)
      .sort((a, b) => a.pk - b.pk)
      .map((c) => c.name);
    // Every table of the store declares its key; one without could not be shipped by key.
    if (key.length === 0) throw new Error(`store table ${name} has no PRIMARY KEY: the PostgreSQL store ships rows by key`);
    tables.push({ name, columns: cols.map((c) => ({ name: c.name, pgType: pgTypeOf(c.type) })), key });
  }
  return tables;
}

export const q = (ident: string): string => `"${ident.replaceAll('"', '""')}"`;

export function createTableSql(t: MirrorTable): string {
  const cols = t.columns.map((c) => `${q(c.name)} ${c.pgType}`).join(', ');
  return `CREATE TABLE ${q(t.name)} (${cols}, PRIMARY KEY (${t.key.map(q).join(', ')}))`;
}

/** A table's shape as text, to compare what PostgreSQL has with what SQLite has. */
export function shapeOf(t: MirrorTable): string {
  return `${t.columns.map((c) => `${c.name}:${c.pgType}`).join(',')}|${t.key.join(',')}`;
}

/** A JSON array of rows as an SQL literal (standard_conforming_strings: only quotes are doubled). */
export function jsonLiteral(rows: readonly unknown[]): string {
  return `'${JSON.stringify(rows).replaceAll("'", "''")}'::json`;
}

/** Rows of a changed table go in as one JSON array (`json`: an SQL expression, any number of rows). */
export function upsertSql(t: MirrorTable, json: string): string {
  const cols = t.columns.map((c) => q(c.name)).join(', ');
  const nonKey = t.columns.filter((c) => !t.key.includes(c.name));
  const onConflict = nonKey.length ? `DO UPDATE SET ${nonKey.map((c) => `${q(c.name)} = EXCLUDED.${q(c.name)}`).join(', ')}` : 'DO NOTHING';
  return `INSERT INTO ${q(t.name)} (${cols}) SELECT ${cols} FROM json_populate_recordset(NULL::${q(t.name)}, ${json}) ON CONFLICT (${t.key.map(q).join(', ')}) ${onConflict}`;
}

export function deleteSql(t: MirrorTable, json: string): string {
  const key = t.key.map(q).join(', ');
  return `DELETE FROM ${q(t.name)} WHERE (${key}) IN (SELECT ${key} FROM json_populate_recordset(NULL::${q(t.name)}, ${json}))`;
}
