import { describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { pbkdf2 } from 'node:crypto';
import { join } from 'node:path';
import { openStore, type Db } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';

const migrations = [{ name: 't/001', sql: 'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)' }];

function fileStore(): Db {
  return openStore({ dataDir: mkdtempSync(join(tmpdir(), 'lc-gc-')), migrations });
}

describe('group commit', () => {
  it('commits many writes of one tick in one transaction and one WAL fsync, off the event loop', async () => {
    const db = fileStore();
    expect(db.pragma('synchronous', { simple: true })).toBe(1); // NORMAL: COMMIT itself does not sync
    const gc = new GroupCommit(db);
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
    const all = Promise.all(Array.from({ length: 1000 }, (_, i) => gc.run(() => Number(insert.run(`v${i}`).lastInsertRowid))));
    const ids = await all;
    expect(ids).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(gc.stats.commits).toBe(1);
    expect(gc.stats.syncs).toBe(1);
    expect(gc.stats.writes).toBe(1000);
  });

  it('settles a write only after its fsync, while its data is readable at once after flush', async () => {
    const db = fileStore();
    const gc = new GroupCommit(db);
    let settled = false;
    const p = gc.run(() => db.prepare("INSERT INTO t (v) VALUES ('x')").run()).then(() => (settled = true));
    gc.flush();
    expect(db.prepare('SELECT count(*) FROM t').pluck().get()).toBe(1);
    expect(settled).toBe(false); // the fsync runs on the threadpool: not settled in this turn
    await p;
    expect(settled).toBe(true);
    expect(gc.stats.syncs).toBe(1);
  });

  it('coalesces fsyncs: batches that commit while one runs share the next', async () => {
    const db = fileStore();
    const gc = new GroupCommit(db);
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
    const writes: Promise<unknown>[] = [];
    for (let batch = 0; batch < 20; batch++) {
      for (let i = 0; i < 10; i++) writes.push(gc.run(() => insert.run(`b${batch}`)));
      gc.flush();
    }
    await Promise.all(writes);
    expect(gc.stats.commits).toBe(20);
    expect(gc.stats.syncs).toBeLessThanOrEqual(3);
    expect(db.prepare('SELECT count(*) FROM t').pluck().get()).toBe(200);
  });

  it('rejects a failing write alone; the others of its batch commit', async () => {
    const db = fileStore();
    const gc = new GroupCommit(db);
    const ok1 = gc.run(() => db.prepare("INSERT INTO t (id, v) VALUES (1, 'a')").run());
    const bad = gc.run(() => db.prepare("INSERT INTO t (id, v) VALUES (1, 'dup')").run());
    const ok2 = gc.run(() => db.prepare("INSERT INTO t (id, v) VALUES (2, 'b')").run());
    await expect(ok1).resolves.toBeDefined();
    await expect(bad).rejects.toThrow(/UNIQUE/);
    await expect(ok2).resolves.toBeDefined();
    expect(db.prepare('SELECT v FROM t ORDER BY id').pluck().all()).toEqual(['a', 'b']);
  });

  it('works without a WAL on an in-memory store (nothing to sync)', async () => {
    const db = openStore({ dataDir: ':memory:', migrations });
    const gc = new GroupCommit(db);
    await gc.run(() => db.prepare("INSERT INTO t (v) VALUES ('m')").run());
    expect(gc.stats.syncs).toBe(0);
    expect(db.prepare('SELECT count(*) FROM t').pluck().get()).toBe(1);
  });

  it('close() while an fsync runs on the threadpool: every write settles resolved, and the WAL file is closed after that fsync', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lc-gc-'));
    const db = openStore({ dataDir: dir, migrations });
    const gc = new GroupCommit(db);
    const target = (fd: string) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return ''; // closed meanwhile
      }
    };
    const walFds = () => readdirSync('/proc/self/fd').filter((fd) => target(fd) === join(dir, 'dispatcher.db-wal'));
    // Keep libuv's threadpool busy, so the fsync below is still waiting in it when close() runs.
    const busy = Array.from({ length: 4 }, () => new Promise((r) => pbkdf2('x', 'y', 200_000, 32, 'sha256', r)));
    const first = gc.run(() => db.prepare("INSERT INTO t (v) VALUES ('in flight')").run());
    gc.flush(); // committed; its fsync is queued on the threadpool
    expect(gc.stats.commits).toBe(1);
    expect(walFds().length).toBeGreaterThan(0); // SQLite's and ours
    const second = gc.run(() => db.prepare("INSERT INTO t (v) VALUES ('queued')").run());
    gc.close();
    db.close();
    await expect(first).resolves.toBeDefined();
    await expect(second).resolves.toBeDefined();
    await Promise.all(busy);
    await new Promise((r) => setTimeout(r, 50)); // the threadpool fsync's callback
    expect(walFds()).toEqual([]); // neither SQLite's handle nor ours
    const again = openStore({ dataDir: dir, migrations });
    expect(again.prepare('SELECT v FROM t ORDER BY id').pluck().all()).toEqual(['in flight', 'queued']);
  });

  it('close() commits and syncs what is queued before the store closes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lc-gc-'));
    const db = openStore({ dataDir: dir, migrations });
    const gc = new GroupCommit(db);
    const p = gc.run(() => db.prepare("INSERT INTO t (v) VALUES ('last')").run());
    gc.close();
    db.close();
    await expect(p).resolves.toBeDefined();
    const again = openStore({ dataDir: dir, migrations });
    expect(again.prepare('SELECT v FROM t').pluck().all()).toEqual(['last']);
  });
});
