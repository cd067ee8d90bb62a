/**
 * The PostgreSQL store (`--store postgres://…`), as one dispatcher sees it: wait for the
 * leader lock (a standby until then), check the schema versions, load every table into an
 * in-memory SQLite database, migrate it if this dispatcher is newer, and ship each
 * committed change back (postgres-durability.ts). Every module keeps its SQLite SQL and
 * its synchronous reads; PostgreSQL holds the durable, shared copy.
 */
import { existsSync, readFileSync, writeFileSync, renameSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { DispatcherError } from '../../errors.js';
import type { Logger } from '../../log.js';
import { applyMigrations, ensureDataDir, openStore, type Db, type Migration } from '../database.js';
import { ChangeCapture } from './change-capture.js';
import { connect, type StoreUrl } from './connection.js';
import { Leadership, type LeaderInfo, type LeadershipLost, type Self } from './leadership.js';
import { appliedMigrations, applyBatch, loadInto, remakeTables, tablesToRemake } from './mirror.js';
import { readMirrorTables } from './mirror-schema.js';
import { PostgresDurability } from './postgres-durability.js';
import { SharedBlobs } from './shared-blobs.js';
import { ADMIN_TOKEN_FILE, ENROLL_TOKEN_FILE, IDENTITY_KEY_FILE, IDENTITY_PUB_FILE } from '../../trust/secrets.js';

export interface SharedStore {
  store: StoreUrl;
  db: Db;
  durability: PostgresDurability;
  leadership: Leadership;
  /** Jobs' inputs tars, for whichever dispatcher leads. */
  blobs: SharedBlobs;
  /** Rows loaded from PostgreSQL when this dispatcher took the lead. */
  loadedRows: number;
  /** After the data dir's secrets are made: stores any PostgreSQL lacks (the first leader's). */
  publishSecrets(dataDir: string): Promise<void>;
  close(): Promise<void>;
}

export interface TakeLeadOptions {
  store: StoreUrl;
  self: Self;
  migrations: readonly Migration[];
  dataDir: string;
  log: Logger;
  onStandby?: (leader: LeaderInfo | undefined) => void;
  onLeadershipLost: (err: LeadershipLost) => void;
}

/** Checks the database once, at start: a wrong connection string or schema fails here. */
export async function checkDatabase(store: StoreUrl, migrations: readonly Migration[]): Promise<void> {
  const client = await connect(store, { applicationName: 'lilcluster dispatcher (check)' });
  try {
    await checkSchema(client, store, migrations);
  } finally {
    await client.end().catch(() => {});
  }
}

export async function takeLead(opts: TakeLeadOptions): Promise<SharedStore> {
  const { store, log, migrations } = opts;
  await checkDatabase(store, migrations);
  const leadership = await Leadership.waitToLead(store, opts.self, { log, onStandby: opts.onStandby });
  try {
    const client = leadership.client;
    // Checked again under the lock: a newer dispatcher may have led while this one waited.
    const applied = await checkSchema(client, store, migrations);
    const known = new Set(applied ?? []);
    const db = openStore({ dataDir: ':memory:', migrations: migrations.filter((m) => known.has(m.name)) });
    const t0 = Date.now();
    let loadedRows = 0;
    if (applied !== undefined) {
      loadedRows = await loadInto(client, db, readMirrorTables(db));
      log.info({ rows: loadedRows, ms: Date.now() - t0 }, 'state loaded from PostgreSQL');
    }
    const newer = migrations.filter((m) => !known.has(m.name));
    applyMigrations(db, migrations);
    const tables = readMirrorTables(db);
    const capture = new ChangeCapture(db, tables);
    // A fresh database, or one this dispatcher just migrated, gets every table copied whole
    // (a migration may rewrite rows, not only shapes); otherwise only tables whose shape differs.
    const remake = applied === undefined || newer.length > 0 ? tables : await tablesToRemake(client, tables);
    if (remake.length) {
      if (applied !== undefined && newer.length)
        log.info({ from: applied.length, to: migrations.length, migrations: newer.map((m) => m.name) }, 'migrating the PostgreSQL store');
      await leadership.transaction(async (c) => {
        await remakeTables(c, remake);
        await applyBatch(c, capture.everything(remake));
      });
    }
    // The copy now equals SQLite: changes start from here.
    const first = capture.take();
    if (first) capture.shipped(first.gen);
    await downloadSecrets(client, opts.dataDir);
    const durability = new PostgresDurability(capture, leadership, log, opts.onLeadershipLost);
    const blobs = new SharedBlobs(store);
    return {
      store,
      db,
      durability,
      leadership,
      blobs,
      loadedRows,
      publishSecrets: (dataDir) => uploadSecrets(leadership.client, dataDir),
      async close() {
        durability.close();
        await blobs.close();
        await leadership.close();
      },
    };
  } catch (err) {
    await leadership.close();
    throw err;
  }
}

/**
 * What a new leader would load, without taking the lead: every table of the PostgreSQL store
 * in an in-memory SQLite database (read-only use: checks, reports, tests).
 */
export async function readSnapshot(store: StoreUrl, migrations: readonly Migration[]): Promise<Db> {
  const client = await connect(store, { applicationName: 'lilcluster snapshot' });
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const applied = await checkSchema(client, store, migrations);
    const known = new Set(applied ?? []);
    const db = openStore({ dataDir: ':memory:', migrations: migrations.filter((m) => known.has(m.name)) });
    if (applied !== undefined) await loadInto(client, db, readMirrorTables(db));
    await client.query('COMMIT');
    return db;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * The database's schema against this dispatcher's migrations: refuses one written by a newer
 * dispatcher (both versions named) and one whose tables are not lilcluster's. Returns the
 * applied migrations (undefined: an empty database).
 */
async function checkSchema(client: pg.Client, store: StoreUrl, migrations: readonly Migration[]): Promise<string[] | undefined> {
  const applied = await appliedMigrations(client);
  if (applied === undefined) {
    const r = await client.query(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name NOT LIKE 'lc\\_%' ORDER BY 1 LIMIT 5",
    );
    if (r.rows.length)
      throw new DispatcherError(
        'DSP_ERR_STORE_SCHEMA',
        `the database ${store.display} has tables that are not lilcluster's (${r.rows.map((x: { table_name: string }) => x.table_name).join(', ')}), and no schema version`,
        { hint: 'give lilcluster a database of its own: createdb lilcluster' },
      );
    return undefined;
  }
  const ours = new Set(migrations.map((m) => m.name));
  const unknown = applied.filter((n) => !ours.has(n));
  if (unknown.length)
    throw new DispatcherError(
      'DSP_ERR_STORE_SCHEMA',
      `the database ${store.display} is at schema version ${applied.length} (it has ${unknown.join(', ')}), written by a newer dispatcher; this one knows version ${migrations.length} (up to ${migrations.at(-1)?.name})`,
      { hint: 'run the same or a newer dispatcher version on every head machine' },
    );
  return applied;
}

const SECRET_FILES = [ADMIN_TOKEN_FILE, ENROLL_TOKEN_FILE, IDENTITY_KEY_FILE, IDENTITY_PUB_FILE];

/**
 * Every dispatcher of a store uses the same secrets: the image's public key, the admin and
 * enroll tokens. The leader writes PostgreSQL's into its data dir before it reads them.
 */
async function downloadSecrets(client: pg.Client, dataDir: string): Promise<void> {
  if (dataDir === ':memory:') return;
  ensureDataDir(dataDir);
  const r = await client.query('SELECT name, value FROM lc_secrets');
  for (const { name, value } of r.rows as { name: string; value: string }[]) {
    if (!SECRET_FILES.includes(name)) continue;
    const path = join(dataDir, name);
    if (existsSync(path) && readFileSync(path, 'utf8') === value) continue;
    const tmp = `${path}.tmp-${process.pid}`;
    const mode = name === IDENTITY_PUB_FILE ? 0o644 : 0o600;
    writeFileSync(tmp, value, { mode });
    chmodSync(tmp, mode);
    renameSync(tmp, path);
  }
}

async function uploadSecrets(client: pg.Client, dataDir: string): Promise<void> {
  if (dataDir === ':memory:') return;
  for (const name of SECRET_FILES) {
    const path = join(dataDir, name);
    if (!existsSync(path)) continue;
    await client.query('INSERT INTO lc_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [
      name,
      readFileSync(path, 'utf8'),
    ]);
  }
}
