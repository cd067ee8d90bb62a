import { afterEach, describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { openStore, STORE_FILE, type Db } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { AUTO_CHECKPOINT_PAGES, Checkpointer } from '../../../dispatcher/src/store/checkpointer.js';
import { silentLogger } from '../../../dispatcher/src/log.js';

const migrations = [{ name: 't/001', sql: 'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)' }];

let open: { db: Db; cp: Checkpointer; gc: GroupCommit }[] = [];
afterEach(() => {
  for (const o of open) {
    o.gc.close();
    o.cp.stop();
    if (o.db.open) o.db.close();
  }
  open = [];
});

function start(checkMs = 20, maxWalFrames?: number) {
  const dir = mkdtempSync(join(tmpdir(), 'lc-ckpt-'));
  const db = openStore({ dataDir: dir, migrations });
  const gc = new GroupCommit(db);
  const cp = new Checkpointer(db, silentLogger(), { checkMs, ...(maxWalFrames ? { maxWalFrames } : {}) });
  const o = { db, cp, gc, dir, file: join(dir, STORE_FILE) };
  open.push(o);
  return o;
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function writeRows(gc: GroupCommit, db: Db, n: number): Promise<void> {
  const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
  const pad = 'x'.repeat(400);
  for (let b = 0; b < n; b += 500)
    await Promise.all(Array.from({ length: Math.min(500, n - b) }, (_, i) => gc.run(() => insert.run(`${b + i}${pad}`))));
}

describe('WAL checkpoints on a worker thread', () => {
  it('turns the connection’s automatic checkpoints off and copies the WAL into the database from the worker', async () => {
    const { db, gc, cp, file } = start();
    expect(cp.stats.running).toBe(true);
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
    await writeRows(gc, db, 5000);
    await until('a checkpoint', () => cp.stats.framesCopied > 0);
    expect(cp.stats.checkpoints).toBeGreaterThan(0);
    // What the worker copied is in the main database file: a copy of that file alone, without
    // its WAL, has the rows.
    await until('all frames copied', () => {
      // busy = 1 while the worker holds the checkpoint lock; SQLite then reports log and
      // checkpointed as -1 each, which are equal but mean nothing.
      const [r] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
      return r!.busy === 0 && r!.log === r!.checkpointed;
    });
    const alone = join(mkdtempSync(join(tmpdir(), 'lc-ckpt-copy-')), STORE_FILE);
    copyFileSync(file, alone);
    const raw = new Database(alone, { readonly: true, fileMustExist: true });
    try {
      expect((raw.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n).toBe(5000);
    } finally {
      raw.close();
    }
  });

  it('keeps the WAL bounded: rewound after each burst of commits, and checkpointed on the spot past its bound under relentless writes', async () => {
    // 2,000 rows of ~400 bytes are about 1 MB of WAL: without checkpoints 7 rounds would leave
    // a 7 MB WAL.
    const a = start();
    await writeRows(a.gc, a.db, 2000);
    await until('a checkpoint', () => a.cp.stats.framesCopied > 0);
    const sizes: number[] = [];
    for (let round = 0; round < 6; round++) {
      const copied = a.cp.stats.framesCopied;
      await writeRows(a.gc, a.db, 2000);
      await until('the worker to copy this burst', () => a.cp.stats.framesCopied > copied);
      await sleep(60); // a lull: the next write rewinds the WAL
      sizes.push(statSync(`${a.file}-wal`).size);
    }
    expect(Math.max(...sizes)).toBeLessThan(3 * 1024 * 1024);
    expect((a.db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n).toBe(14_000);

    // No lull at all, and a bound of 300 frames (1.2 MB), once the worker runs (it may take a
    // second to start on a loaded machine, and the bound is its to report).
    const b = start(20, 300);
    await writeRows(b.gc, b.db, 100);
    await until("the worker's first checkpoint", () => b.cp.stats.framesCopied > 0);
    await writeRows(b.gc, b.db, 13_900);
    await until('a forced checkpoint', () => b.cp.stats.forced > 0);
    await writeRows(b.gc, b.db, 2000);
    expect(statSync(`${b.file}-wal`).size).toBeLessThan(3 * 1024 * 1024);
    expect((b.db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n).toBe(16_000);
  });

  it('gives the connection its automatic checkpoints back when the worker fails', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lc-ckpt-'));
    const db = openStore({ dataDir: dir, migrations });
    const gc = new GroupCommit(db);
    const cp = new Checkpointer(db, silentLogger(), { checkMs: 20, driver: join(dir, 'no-such-driver.js') });
    open.push({ db, cp, gc });
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
    await until('the fallback', () => !cp.stats.running);
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(AUTO_CHECKPOINT_PAGES);
  });

  it('does nothing for an in-memory database', () => {
    const mem = new Database(':memory:');
    const cp = new Checkpointer(mem, silentLogger());
    expect(cp.stats.running).toBe(false);
    cp.stop();
    mem.close();
  });
});
