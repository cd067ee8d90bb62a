/**
 * Task files in and out: inputs arrive as a tar (optionally gzip-compressed) and are
 * unpacked into the task's work dir; files the task wrote under out/ go back as a
 * gzip-compressed tar. tar-stream does the format; paths are checked here, because an
 * inputs tar is network input like any other.
 */
import { createWriteStream } from 'node:fs';
import { lstat, mkdir, readFile, readdir, readlink, symlink } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, relative, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { createGunzip, gzip } from 'node:zlib';
import { promisify } from 'node:util';
import tar from 'tar-stream';

const gzipAsync = promisify(gzip);

export class TarError extends Error {}

/**
 * Packs every file under `dir` (paths relative to it) into a gzip-compressed tar. Returns
 * null when there is nothing to pack; throws TarError when the files add up to more than
 * `maxBytes` (they are not sent at all rather than sent in part).
 */
export async function packDirTarGz(dir: string, maxBytes: number): Promise<Buffer | null> {
  const entries: { name: string; kind: 'file' | 'directory' | 'symlink'; mode: number; mtime: Date; target?: string }[] = [];
  let total = 0;
  const walk = async (rel: string): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(join(dir, rel));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && rel === '') return;
      throw err;
    }
    for (const name of names.sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(dir, r));
      if (st.isDirectory()) {
        entries.push({ name: r, kind: 'directory', mode: st.mode & 0o7777, mtime: st.mtime });
        await walk(r);
      } else if (st.isFile()) {
        total += st.size;
        if (total > maxBytes) throw new TarError(`out/ holds more than ${maxBytes} bytes`);
        entries.push({ name: r, kind: 'file', mode: st.mode & 0o7777, mtime: st.mtime });
      } else if (st.isSymbolicLink()) {
        entries.push({ name: r, kind: 'symlink', mode: 0o777, mtime: st.mtime, target: await readlink(join(dir, r)) });
      } // sockets, fifos, devices: not files a result can carry
    }
  };
  await walk('');
  if (entries.length === 0) return null;
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const e of entries) {
    if (e.kind === 'file') {
      const data = await readFile(join(dir, e.name));
      await new Promise<void>((res, rej) => pack.entry({ name: e.name, size: data.length, mode: e.mode, mtime: e.mtime, type: 'file' }, data, (err) => (err ? rej(err) : res())));
    } else if (e.kind === 'directory') {
      pack.entry({ name: e.name, mode: e.mode, mtime: e.mtime, type: 'directory' });
    } else {
      pack.entry({ name: e.name, mode: e.mode, mtime: e.mtime, type: 'symlink', linkname: e.target! });
    }
  }
  pack.finalize();
  await ended;
  return gzipAsync(Buffer.concat(chunks), { level: 6 });
}

/** The path of an archive member inside `root`, or undefined if it would land outside (`..`, absolute). */
export function safeJoin(root: string, member: string): string | undefined {
  if (member.includes('\0')) return undefined;
  const clean = normalize(member.replace(/^\.\/+/, ''));
  if (clean === '.' || clean === '' ) return root;
  if (isAbsolute(clean) || clean === '..' || clean.startsWith(`..${sep}`)) return undefined;
  const full = join(root, clean);
  const rel = relative(root, full);
  return rel.startsWith('..') || isAbsolute(rel) ? undefined : full;
}

/**
 * Unpacks a tar (gzip-compressed or not: detected by its magic bytes) into `root`. Files and
 * directories are created; symbolic links only when they point inside `root`; other member
 * types are skipped. Throws TarError on an unsafe path or when the members add up to more
 * than `maxBytes`.
 */
export async function unpackTar(input: Readable, root: string, maxBytes: number): Promise<{ files: number; bytes: number }> {
  const extract = tar.extract();
  let total = 0;
  let files = 0;
  // Peek at the first chunk: gzip magic 1f 8b means a .tar.gz.
  const it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const first = await it.next();
  const head: Buffer = first.done ? Buffer.alloc(0) : Buffer.from(first.value);
  const src = Readable.from(
    (async function* () {
      if (head.length) yield head;
      for (;;) {
        const n = await it.next();
        if (n.done) return;
        yield n.value;
      }
    })(),
  );
  const gzipped = head[0] === 0x1f && head[1] === 0x8b;
  const consume = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      const target = safeJoin(root, h.name);
      if (!target) {
        entry.resume();
        throw new TarError(`inputs tar member "${h.name.slice(0, 200)}" would land outside the work dir`);
      }
      if (h.type === 'file' || h.type === 'contiguous-file') {
        total += h.size ?? 0;
        if (total > maxBytes) throw new TarError(`inputs are larger than ${maxBytes} bytes`);
        await mkdir(dirname(target), { recursive: true });
        await pipeline(entry, createWriteStream(target, { mode: (h.mode ?? 0o644) & 0o777 }));
        files++;
      } else if (h.type === 'directory') {
        await mkdir(target, { recursive: true });
        entry.resume();
      } else if (h.type === 'symlink' && h.linkname) {
        const dest = safeJoin(root, join(dirname(relative(root, target)), h.linkname));
        if (!dest || isAbsolute(h.linkname)) throw new TarError(`inputs tar symlink "${h.name.slice(0, 200)}" points outside the work dir`);
        await mkdir(dirname(target), { recursive: true });
        await symlink(h.linkname, target);
        entry.resume();
      } else entry.resume();
    }
  })().catch((err: unknown) => {
    extract.destroy(err as Error);
    input.destroy();
    throw err;
  });
  await Promise.all([gzipped ? pipeline(src, createGunzip(), extract) : pipeline(src, extract), consume]);
  return { files, bytes: total };
}
