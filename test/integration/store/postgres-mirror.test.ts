/**
 * The PostgreSQL copy of the store equals SQLite after any writes: random inserts, updates,
 * deletes and INSERT OR REPLACEs on every real table (the migrations' schema), with hostile
 * values (NUL characters, blobs, reals in integer columns, big integers), shipped in batches
 * and loaded back into a fresh database as a new leader would. A ship that fails (the
 * database went away) loses nothing: the next one carries its rows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type pg from 'pg';
import { startPostgres, type Postgres } from '../../lab/postgres.js';
import { openStore, type Db } from '../../../dispatcher/src/store/database.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { ChangeCapture } from '../../../dispatcher/src/store/postgres/change-capture.js';
import { connect, parseStoreUrl } from '../../../dispatcher/src/store/postgres/connection.js';
import { META_TABLES_SQL, applyBatch, loadInto, remakeTables } from '../../../dispatcher/src/store/postgres/mirror.js';
import { q, readMirrorTables, type MirrorTable } from '../../../dispatcher/src/store/postgres/mirror-schema.js';

let server: Postgres;
let client: pg.Client;

beforeAll(async () => {
  server = await startPostgres();
  client = await connect(parseStoreUrl(server.url), { applicationName: 'mirror test' });
  for (const sql of META_TABLES_SQL) await client.query(sql);
}, 60_000);

afterAll(async () => {
  await client?.end();
  await server?.destroy();
});

interface ColumnInfo {
  name: string;
  type: string;
  notnull: number;
  pk: number;
}

function columnsOf(db: Db, table: string): ColumnInfo[] {
  return db.prepare('SELECT name, type, "notnull", pk FROM pragma_table_info(?)').all(table) as ColumnInfo[];
}

/** A value SQLite's column takes, hostile where it can be. */
function valueArb(c: ColumnInfo): fc.Arbitrary<unknown> {
  const t = c.type.toUpperCase();
  let v: fc.Arbitrary<unknown>;
  if (t.includes('INT'))
    v = c.pk
      ? fc.integer({ min: 1, max: 4 })
      : fc.oneof(fc.integer(), fc.constant(2 ** 53 - 1), fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e9, max: 1e9 }));
  else if (t.includes('TEXT') || t.includes('CHAR'))
    v = c.pk
      ? fc.constantFrom('a', 'b', 'c', 'd', 'e', "o'q", 'x"y')
      : fc.oneof(fc.string({ maxLength: 20 }), fc.constant('nul\0inside'), fc.constant('ünï😀'));
  else if (t.includes('BLOB')) v = fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a));
  else v = fc.double({ noNaN: true, noDefaultInfinity: true });
  return c.notnull || c.pk ? v : fc.option(v, { nil: null });
}

type Op = { kind: 'insert' | 'ignore' | 'replace' | 'upsert' | 'update' | 'delete'; table: string; row: Record<string, unknown> };

function opArb(db: Db, tables: MirrorTable[]): fc.Arbitrary<Op> {
  return fc.oneof(
    ...tables.map((t) => {
      const cols = columnsOf(db, t.name);
      const row = fc.record(Object.fromEntries(cols.map((c) => [c.name, valueArb(c)])));
      return fc.record({
        kind: fc.constantFrom('insert', 'ignore', 'replace', 'upsert', 'update', 'delete'),
        table: fc.constant(t.name),
        row,
      }) as fc.Arbitrary<Op>;
    }),
  );
}

function apply(db: Db, t: MirrorTable, op: Op): void {
  const cols = Object.keys(op.row);
  const keyWhere = t.key.map((k) => `${q(k)} = @${k}`).join(' AND ');
  try {
    const values = `(${cols.map(q).join(', ')}) VALUES (${cols.map((c) => `@${c}`).join(', ')})`;
    const nonKey = cols.filter((c) => !t.key.includes(c));
    if (op.kind === 'insert') db.prepare(`INSERT INTO ${q(t.name)} ${values}`).run(op.row);
    else if (op.kind === 'ignore' || op.kind === 'replace')
      db.prepare(`INSERT OR ${op.kind.toUpperCase()} INTO ${q(t.name)} ${values}`).run(op.row);
    else if (op.kind === 'upsert')
      db.prepare(
        `INSERT INTO ${q(t.name)} ${values} ON CONFLICT (${t.key.map(q).join(', ')}) ${nonKey.length ? `DO UPDATE SET ${nonKey.map((c) => `${q(c)} = excluded.${q(c)}`).join(', ')}` : 'DO NOTHING'}`,
      ).run(op.row);
    else if (op.kind === 'update') {
      const set = cols.filter((c) => !t.key.includes(c));
      if (set.length) db.prepare(`UPDATE ${q(t.name)} SET ${set.map((c) => `${q(c)} = @${c}`).join(', ')} WHERE ${keyWhere}`).run(op.row);
    } else db.prepare(`DELETE FROM ${q(t.name)} WHERE ${keyWhere}`).run(Object.fromEntries(t.key.map((k) => [k, op.row[k]])));
  } catch (err) {
    // A constraint of the table refused it: then nothing changed, which the copy must show
    // too. The change capture itself must never refuse a write.
    if (String(err).includes('_lc_')) throw err;
  }
}

/** Every table's rows, as PostgreSQL can hold them (NUL characters become U+FFFD). */
function dump(db: Db, tables: MirrorTable[]): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const t of tables)
    out[t.name] = (db.prepare(`SELECT * FROM ${q(t.name)} ORDER BY ${t.key.map(q).join(', ')}`).all() as Record<string, unknown>[]).map(
      (r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, typeof v === 'string' ? v.replaceAll('\0', '\uFFFD') : v])),
    );
  out.sqlite_sequence = db.prepare('SELECT name, seq FROM sqlite_sequence ORDER BY name').all();
  return out;
}

/** An empty store, its PostgreSQL copy made afresh, and the capture of its changes. */
async function freshCopy(): Promise<{ db: Db; capture: ChangeCapture }> {
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  const tables = readMirrorTables(db);
  await client.query('BEGIN');
  await remakeTables(client, tables);
  await client.query('COMMIT');
  return { db, capture: new ChangeCapture(db, tables) };
}

/** What the leader's durability does with a batch, on the test's connection. */
async function ship(capture: ChangeCapture): Promise<void> {
  const batch = capture.take();
  if (!batch) return;
  await client.query('BEGIN');
  await applyBatch(client, batch);
  await client.query('COMMIT');
  capture.shipped(batch.gen);
}

describe('the PostgreSQL copy of the store', () => {
  it('equals SQLite after any writes, loaded back as a new leader would', async () => {
    const probe = openStore({ dataDir: ':memory:', migrations: allMigrations });
    const tables = readMirrorTables(probe);
    expect(tables.length).toBeGreaterThan(10);
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(opArb(probe, tables), { maxLength: 25 }), { minLength: 1, maxLength: 4 }), async (batches) => {
        await client.query('DELETE FROM lc_sqlite_sequence');
        const { db, capture } = await freshCopy();
        await applyBatch(client, capture.everything());
        await ship(capture);
        for (const ops of batches) {
          for (const op of ops) apply(db, tables.find((t) => t.name === op.table)!, op);
          await ship(capture);
        }
        expect(capture.pending()).toBe(false);
        const loaded = openStore({ dataDir: ':memory:', migrations: allMigrations });
        await loadInto(client, loaded, tables);
        expect(dump(loaded, tables)).toEqual(dump(db, tables));
        db.close();
        loaded.close();
      }),
      { numRuns: 25 },
    );
    probe.close();
  }, 120_000);

  it('takes every form of write the modules use, on a row that exists', async () => {
    const { db, capture } = await freshCopy();
    const pin = (sql: string) => db.prepare(sql).run();
    pin("INSERT INTO image_pins (mac, image, version) VALUES ('m1', 'a', '1')");
    pin("INSERT INTO image_pins (mac, image, version) VALUES ('m1', 'a', '2') ON CONFLICT(mac) DO UPDATE SET version = excluded.version");
    pin("INSERT OR IGNORE INTO image_pins (mac, image, version) VALUES ('m1', 'a', '3')");
    pin("INSERT OR REPLACE INTO image_pins (mac, image, version) VALUES ('m2', 'b', '1')");
    pin("UPDATE OR ROLLBACK image_pins SET mac = 'm3' WHERE mac = 'm2'");
    pin("INSERT INTO image_pins (mac, image, version) VALUES ('m4', 'c', '1') ON CONFLICT(mac) DO NOTHING");
    pin("DELETE FROM image_pins WHERE mac = 'm4'");
    await ship(capture);
    const r = await client.query('SELECT mac, image, version FROM image_pins ORDER BY mac');
    expect(r.rows).toEqual([
      { mac: 'm1', image: 'a', version: '2' },
      { mac: 'm3', image: 'b', version: '1' },
    ]);
    db.close();
  });

  it('a batch that failed to ship is carried by the next, with its rows as they are then', async () => {
    const { db, capture } = await freshCopy();
    db.prepare("INSERT INTO image_pins (mac, image, version) VALUES ('52:54:00:00:00:01', 'a', '1')").run();
    const lost = capture.take()!;
    expect(lost.rows).toBe(1);
    // The ship fails (not applied, not marked shipped); meanwhile the row changes and another appears.
    db.prepare("UPDATE image_pins SET version = '2' WHERE mac = '52:54:00:00:00:01'").run();
    db.prepare("INSERT INTO image_pins (mac, image, version) VALUES ('52:54:00:00:00:02', 'b', '1')").run();
    await ship(capture);
    const r = await client.query('SELECT mac, version FROM image_pins ORDER BY mac');
    expect(r.rows).toEqual([
      { mac: '52:54:00:00:00:01', version: '2' },
      { mac: '52:54:00:00:00:02', version: '1' },
    ]);
    expect(capture.pending()).toBe(false);
    db.close();
  });
});
