/**
 * Jobs' inputs tars (dispatch/blobs.ts) in PostgreSQL too, so that a dispatcher taking over
 * can hand them out: chunks of a content-addressed blob, written once (the same id is the
 * same bytes), on a connection of their own (a big upload does not hold up the shipping of
 * changes on the leader's session). The data dir keeps its copy as the fast path.
 */
import { createReadStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { BlobReplica } from '../../dispatch/blobs.js';
import { connect, type StoreUrl } from './connection.js';

const CHUNK_BYTES = 4 * 1024 * 1024;

export const BLOB_TABLE_SQL =
  'CREATE TABLE IF NOT EXISTS lc_blob_chunks (id TEXT NOT NULL, seq INTEGER NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (id, seq))';

export class SharedBlobs implements BlobReplica {
  #client: Promise<pg.Client> | undefined;

  constructor(private readonly store: StoreUrl) {}

  async put(id: string, path: string): Promise<void> {
    const c = await this.#connection();
    const have = await c.query('SELECT 1 FROM lc_blob_chunks WHERE id = $1 AND seq = 0', [id]);
    if (have.rowCount) return;
    await c.query('BEGIN');
    try {
      let seq = 0;
      for await (const chunk of createReadStream(path, { highWaterMark: CHUNK_BYTES })) {
        await c.query('INSERT INTO lc_blob_chunks (id, seq, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [id, seq++, chunk]);
      }
      if (seq === 0)
        await c.query('INSERT INTO lc_blob_chunks (id, seq, data) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING', [id, Buffer.alloc(0)]);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      this.#reset();
      throw err;
    }
  }

  async fetch(id: string, path: string): Promise<boolean> {
    const c = await this.#connection();
    const n = await c.query('SELECT count(*)::int AS n FROM lc_blob_chunks WHERE id = $1', [id]);
    const chunks = Number(n.rows[0]?.n ?? 0);
    if (chunks === 0) return false;
    const tmp = `${path}.fetch-${process.pid}-${randomBytes(4).toString('hex')}`;
    const fh = await open(tmp, 'wx', 0o600);
    try {
      for (let seq = 0; seq < chunks; seq++) {
        const r = await c.query('SELECT data FROM lc_blob_chunks WHERE id = $1 AND seq = $2', [id, seq]);
        if (!r.rowCount) throw new Error(`blob ${id} lacks chunk ${seq} in PostgreSQL`);
        await fh.write(r.rows[0].data as Buffer);
      }
      await fh.sync();
      await fh.close();
      await rename(tmp, path);
      return true;
    } catch (err) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      this.#reset();
      throw err;
    }
  }

  async close(): Promise<void> {
    const c = this.#client;
    this.#client = undefined;
    await (await c?.catch(() => undefined))?.end().catch(() => {});
  }

  #connection(): Promise<pg.Client> {
    this.#client ??= connect(this.store, { applicationName: 'lilcluster dispatcher (blobs)' }).then(async (c) => {
      await c.query(BLOB_TABLE_SQL);
      return c;
    });
    const p = this.#client;
    p.catch(() => this.#reset());
    return p;
  }

  #reset(): void {
    const c = this.#client;
    this.#client = undefined;
    void c?.then((x) => x.end()).catch(() => {});
  }
}
