import { describe, expect, it, vi } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync, symlinkSync, existsSync, readlinkSync, readdirSync } from 'node:fs';
import { tempDir } from './temp-dirs.js';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { packDirTarGz, safeJoin, TarError, unpackTar } from '../../../node-agent/src/tarball.js';
import { Outbox } from '../../../node-agent/src/outbox.js';
import { okResult } from './fakes.js';

const tmp = () => tempDir('lc-agent-files-');

async function makeTar(
  entries: { name: string; body?: string; type?: 'file' | 'directory' | 'symlink'; linkname?: string }[],
): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const done = new Promise<void>((r) => pack.on('end', () => r()));
  for (const e of entries) {
    if ((e.type ?? 'file') === 'file') pack.entry({ name: e.name, size: Buffer.byteLength(e.body ?? '') }, e.body ?? '');
    else pack.entry({ name: e.name, type: e.type, ...(e.linkname ? { linkname: e.linkname } : {}) });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

async function listTarGz(tgz: Buffer): Promise<Record<string, string>> {
  const ex = tar.extract();
  const out: Record<string, string> = {};
  const reading = (async () => {
    for await (const e of ex) {
      const parts: Buffer[] = [];
      for await (const c of e) parts.push(c as Buffer);
      out[`${e.header.type}:${e.header.name}`] = e.header.type === 'symlink' ? `-> ${e.header.linkname}` : Buffer.concat(parts).toString();
    }
  })();
  ex.end(gunzipSync(tgz));
  await reading;
  return out;
}

describe('task files', () => {
  it.each([
    ['a/b.txt', true],
    ['./a', true],
    ['a/../b', true],
    ['../etc/passwd', false],
    ['a/../../x', false],
    ['/etc/passwd', false],
    ['a\0b', false],
  ])('safeJoin(%j) is inside: %s', (member, inside) => {
    expect(safeJoin('/work/t', member) !== undefined).toBe(inside);
  });

  it('packs out/ as a gzip tar with files, directories and links, or null when empty', async () => {
    const d = tmp();
    expect(await packDirTarGz(join(d, 'missing'), 1000)).toBeNull();
    mkdirSync(join(d, 'out/sub'), { recursive: true });
    expect(await packDirTarGz(join(d, 'out'), 1000)).not.toBeNull(); // an empty directory is still an entry
    writeFileSync(join(d, 'out/a.txt'), 'alpha');
    writeFileSync(join(d, 'out/sub/b.txt'), 'beta');
    symlinkSync('a.txt', join(d, 'out/link'));
    const listing = await listTarGz((await packDirTarGz(join(d, 'out'), 1000))!);
    expect(listing).toEqual({ 'file:a.txt': 'alpha', 'symlink:link': '-> a.txt', 'directory:sub': '', 'file:sub/b.txt': 'beta' });
    await expect(packDirTarGz(join(d, 'out'), 5)).rejects.toThrow(TarError);
  });

  it('unpacks plain and gzip tars into the work dir', async () => {
    const t = await makeTar([
      { name: 'dir', type: 'directory' },
      { name: 'dir/in.txt', body: 'input' },
      { name: 'top.txt', body: 'x' },
      { name: 'l', type: 'symlink', linkname: 'dir/in.txt' },
    ]);
    for (const data of [t, gzipSync(t)]) {
      const d = tmp();
      expect(await unpackTar(Readable.from([data]), d, 1 << 20)).toEqual({ files: 2, bytes: 6 });
      expect(readFileSync(join(d, 'dir/in.txt'), 'utf8')).toBe('input');
      expect(readlinkSync(join(d, 'l'))).toBe('dir/in.txt');
    }
  });

  it.each([
    ['a path escaping with ..', [{ name: '../escape.txt', body: 'x' }], /outside the work dir/],
    ['an absolute symlink', [{ name: 'l', type: 'symlink' as const, linkname: '/etc/passwd' }], /points outside/],
    ['a symlink escaping with ..', [{ name: 'a/l', type: 'symlink' as const, linkname: '../../x' }], /points outside/],
    ['members over the size limit', [{ name: 'big', body: 'x'.repeat(200) }], /larger than 100 bytes/],
  ])('refuses an inputs tar with %s', async (_w, entries, re) => {
    const d = tmp();
    await expect(unpackTar(Readable.from([await makeTar(entries)]), join(d, 'w'), 100)).rejects.toThrow(re);
    expect(existsSync(join(d, 'escape.txt'))).toBe(false);
  });

  it('refuses garbage instead of a tar', async () => {
    await expect(unpackTar(Readable.from([Buffer.from('this is not a tar file'.repeat(40))]), tmp(), 1 << 20)).rejects.toThrow();
  });
});

describe('outbox', () => {
  it('keeps unacknowledged results on disk across restarts and removes them once acknowledged', async () => {
    const d = join(tmp(), 'outbox');
    const a = new Outbox(d, () => {}, 30);
    a.add(okResult({ taskId: 1, attempt: 1 }, { stdout: 'one' }));
    a.add(okResult({ taskId: 2, attempt: 1 }));
    expect(readdirSync(d)).toHaveLength(0); // not yet: an acknowledgement usually comes first
    await vi.waitFor(() => expect(readdirSync(d)).toHaveLength(1)); // one file per batch
    const b = new Outbox(d);
    expect(b.unacknowledged().map((r) => [r.taskId, r.stdout])).toEqual([
      [1, 'one'],
      [2, ''],
    ]);
    b.acknowledge([{ taskId: 1, attempt: 1 }]);
    expect(new Outbox(d).size).toBe(2); // file kept: task 2 still waits
    b.acknowledge([{ taskId: 2, attempt: 1 }]);
    await vi.waitFor(() => expect(readdirSync(d)).toHaveLength(0));
    expect(new Outbox(d).size).toBe(0);
  });

  it('never writes results acknowledged in time', async () => {
    const d = join(tmp(), 'outbox');
    const o = new Outbox(d, () => {}, 30);
    for (let i = 1; i <= 100; i++) o.add(okResult({ taskId: i, attempt: 1 }));
    o.acknowledge(Array.from({ length: 100 }, (_, i) => ({ taskId: i + 1, attempt: 1 })));
    o.add(okResult({ taskId: 500, attempt: 1 }));
    await new Promise((r) => setTimeout(r, 100));
    expect(readdirSync(d)).toHaveLength(1);
    expect(new Outbox(d).unacknowledged().map((r) => r.taskId)).toEqual([500]);
  });

  it('drops a torn file and works in memory only without a dir', () => {
    const d = join(tmp(), 'outbox');
    mkdirSync(d);
    writeFileSync(join(d, '3.json'), '[{"taskId":');
    expect(new Outbox(d).size).toBe(0);
    expect(existsSync(join(d, '3.json'))).toBe(false);
    const m = new Outbox(null);
    m.add(okResult({ taskId: 1, attempt: 1 }));
    expect(m.size).toBe(1);
  });
});
