/**
 * A full or read-only data dir: new submissions are refused with DSP_ERR_STORE, results are
 * not acknowledged (the agent keeps them and sends again), and what was acknowledged before
 * stays. A real filesystem that fills up: a small tmpfs mounted for the test (needs root).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { openEngine, node, okResult, type Harness } from '../../unit/dispatch/helpers.js';
import { DispatcherError } from '../../../dispatcher/src/errors.js';

let mnt: string;

beforeAll(() => {
  mnt = mkdtempSync(join(tmpdir(), 'lc-dispatch-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32m', 'lc-dispatch-full', mnt]);
});

afterAll(() => {
  try {
    execFileSync('umount', ['-l', mnt]);
  } finally {
    rmSync(mnt, { recursive: true, force: true });
  }
});

/** Writes zeros until the filesystem is full; returns the filler's path. */
function fill(dir: string): string {
  const path = join(dir, 'filler');
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
  } finally {
    closeSync(fd);
  }
  return path;
}

async function storeError(p: Promise<unknown>): Promise<DispatcherError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DispatcherError);
  expect((err as DispatcherError).code).toBe('DSP_ERR_STORE');
  return err as DispatcherError;
}

describe('dispatch engine on a full or read-only data dir', () => {
  it('refuses new submissions with DSP_ERR_STORE, keeps what was acknowledged, and recovers when space comes back', async () => {
    const dir = join(mnt, 'data');
    let h: Harness = openEngine(dir);
    const a = await h.engine.submitJob({ command: ['x', '{i}'], params: Array.from({ length: 100 }, (_, i) => ({ i })) });
    const first = h.engine.takeTasks(node(1), 50);
    expect(
      await h.engine.submitResults(
        node(1),
        first.map((t) => okResult(t, { stdout: 'x'.repeat(1000) })),
      ),
    ).toEqual(first.map(() => 'recorded'));
    const rest = h.engine.takeTasks(node(2), 50);

    const filler = fill(mnt);
    const big = Array.from({ length: 50_000 }, (_, i) => ({ i, pad: 'p'.repeat(40) }));
    const e1 = await storeError(h.engine.submitJob({ command: ['y', '{i}'], params: big }));
    expect(e1.message).toMatch(/data store cannot be written/);
    expect(e1.status).toBe(503);
    // Results are not acknowledged while they cannot be made durable...
    await storeError(
      h.engine.submitResults(
        node(2),
        rest.map((t) => okResult(t, { stdout: 'y'.repeat(4000) })),
      ),
    );
    // ...and an upload cannot be stored either.
    await storeError(h.engine.blobs.put(Readable.from([Buffer.alloc(4 * 1024 * 1024)])));
    // Reads go on.
    expect(h.engine.listJobs().map((j) => j.id)).toEqual([a.id]);
    expect(h.engine.getJob(a.id).counts.done).toBe(50);

    rmSync(filler);
    // The agent sends its results again: accepted now, once.
    expect(
      await h.engine.submitResults(
        node(2),
        rest.map((t) => okResult(t)),
      ),
    ).toEqual(rest.map(() => 'recorded'));
    const b = await h.engine.submitJob({ command: ['y', '{i}'], params: big.slice(0, 1000) });
    h.close();

    h = openEngine(dir);
    expect(h.engine.getJob(a.id)).toMatchObject({ state: 'done', counts: { done: 100 } });
    expect(h.engine.getJob(b.id).counts.total).toBe(1000);
    h.close();
  });

  it('refuses submissions when the filesystem turns read-only under it (ext4 errors=remount-ro) and keeps everything', async () => {
    // A real ext4 on a loop device; trigger_fs_error makes the kernel turn it read-only, as an
    // I/O error would, with the store's files open.
    const img = join(mnt, 'ext4.img');
    const m = join(mnt, 'ext4');
    execFileSync('truncate', ['-s', '12M', img]);
    execFileSync('mkfs.ext4', ['-q', '-F', img]);
    const loop = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
    execFileSync('mkdir', ['-p', m]);
    try {
      execFileSync('mount', ['-o', 'errors=remount-ro', loop, m]);
      const dir = join(m, 'data');
      let h = openEngine(dir);
      const a = await h.engine.submitJob({ command: ['x'], tasks: [{}, {}] });
      const [t] = h.engine.takeTasks(node(1), 1);
      expect(await h.engine.submitResults(node(1), [okResult(t!)])).toEqual(['recorded']);
      writeFileSync(`/sys/fs/ext4/${basename(loop)}/trigger_fs_error`, '1');
      const e = await storeError(h.engine.submitJob({ command: ['y'] }));
      expect(e.hint).toMatch(/acknowledged before is kept/);
      const [t2] = h.engine.takeTasks(node(1), 1);
      await storeError(h.engine.submitResults(node(1), [okResult(t2!)]));
      expect(h.engine.getJob(a.id).counts.done).toBe(1);
      try {
        h.close();
      } catch {
        /* closing a database on a read-only filesystem may complain */
      }
      execFileSync('umount', [m]);
      try {
        execFileSync('e2fsck', ['-fy', img], { stdio: 'ignore' });
      } catch (err) {
        expect((err as { status?: number }).status).toBeLessThan(4); // 1 or 2: errors fixed
      }
      execFileSync('mount', [loop, m]);
      h = openEngine(dir);
      expect(h.engine.getJob(a.id).counts).toMatchObject({ done: 1, total: 2 });
      expect(h.engine.listJobs()).toHaveLength(1);
      h.close();
    } finally {
      try {
        execFileSync('umount', [m], { stdio: 'ignore' });
      } catch {
        /* not mounted */
      }
      execFileSync('losetup', ['-d', loop]);
    }
  });
});
