/**
 * Task files in and out: inputs arrive as a tar (optionally gzip-compressed) and are
 * unpacked into the task's work dir; files the task wrote under out/ go back as a
 * gzip-compressed tar. tar-stream does the format; paths are checked here, because an
 * inputs tar is network input like any other.
 */
import { constants as fsConstants, type Stats } from 'node:fs';
import { link, lstat, mkdir, open, readFile, readdir, readlink, symlink, unlink } from 'node:fs/promises';
import { isAbsolute, join, normalize, relative, sep } from 'node:path';
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
      await new Promise<void>((res, rej) =>
        pack.entry({ name: e.name, size: data.length, mode: e.mode, mtime: e.mtime, type: 'file' }, data, (err) =>
          err ? rej(err) : res(),
        ),
      );
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
  if (clean === '.' || clean === '') return root;
  if (isAbsolute(clean) || clean === '..' || clean.startsWith(`..${sep}`)) return undefined;
  const full = join(root, clean);
  const rel = relative(root, full);
  return rel.startsWith('..') || isAbsolute(rel) ? undefined : full;
}

/**
 * Unpacks a tar (gzip-compressed or not: detected by its magic bytes) into `root`, which
 * nothing else writes to meanwhile. The rules, each refusal a TarError naming the entry:
 *
 *   - names: absolute, `..` components and NUL bytes are refused (not normalised away)
 *   - every directory on the way is checked with lstat and created one level at a time; a
 *     symlink (or anything not a directory) on the way is refused, so no entry is ever
 *     written through a link, whichever entry made it
 *   - files are created with O_EXCL|O_NOFOLLOW; an existing file of the same name is
 *     replaced (unlinked first), an existing symlink or directory is refused
 *   - symlinks may be created, with a relative target that stays inside `root` read as
 *     text; the unpacker itself never follows one
 *   - hard links only to a regular file already unpacked inside `root`, reached without links
 *   - devices and fifos are dropped; modes keep only the permission bits (no set-id, sticky)
 *   - the files add up to at most `maxBytes`
 */
export async function unpackTar(input: Readable, root: string, maxBytes: number): Promise<{ files: number; bytes: number }> {
  await mkdir(root, { recursive: true });
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
      const kind = h.type === 'symlink' ? 'symlink' : h.type === 'link' ? 'hard link' : 'entry';
      const refuse = (why: string) => new TarError(`inputs tar ${kind} "${clip(h.name)}" ${why}`);
      try {
        if (h.type !== 'file' && h.type !== 'contiguous-file' && h.type !== 'directory' && h.type !== 'symlink' && h.type !== 'link') {
          entry.resume(); // devices, fifos and the like: dropped
          continue;
        }
        const parts = memberParts(h.name, refuse);
        if (parts.length === 0) {
          if (h.type !== 'directory') throw refuse('names the work dir itself');
          entry.resume();
          continue;
        }
        const dir = await parentDir(root, parts, refuse);
        const target = join(dir, parts[parts.length - 1]!);
        const rel = parts.join('/');
        const existing = await lstatOrNull(target);
        if (h.type === 'directory') {
          if (!existing) await mkdir(target, { mode: ((h.mode ?? 0o755) & 0o777) | 0o700 });
          else if (existing.isSymbolicLink())
            throw refuse(`would go through the symlink "${clip(rel)}": nothing is written through a link`);
          else if (!existing.isDirectory()) throw refuse(`would replace "${clip(rel)}", which is not a directory`);
          entry.resume();
          continue;
        }
        if (existing) {
          if (existing.isSymbolicLink()) throw refuse(`would write through the symlink "${clip(rel)}": nothing is written through a link`);
          if (!existing.isFile()) throw refuse(`would replace "${clip(rel)}", which is not a file`);
          await unlink(target); // a later member of the same name wins, as with tar(1)
        }
        if (h.type === 'symlink') {
          const to = h.linkname ?? '';
          if (to === '' || to.includes('\0')) throw refuse('has an empty target or one with a NUL byte');
          if (isAbsolute(to) || !staysInside(parts.slice(0, -1), to)) throw refuse(`points outside the work dir (-> "${clip(to)}")`);
          await symlink(to, target);
          entry.resume();
        } else if (h.type === 'link') {
          const srcParts = memberParts(h.linkname ?? '', () => refuse(`points outside the work dir (-> "${clip(h.linkname ?? '')}")`));
          if (srcParts.length === 0) throw refuse('points at the work dir itself');
          const srcDir = await parentDir(root, srcParts, refuse, false);
          const source = join(srcDir, srcParts[srcParts.length - 1]!);
          if (!(await lstatOrNull(source))?.isFile())
            throw refuse(`-> "${clip(h.linkname ?? '')}" is not a regular file already in the work dir`);
          await link(source, target);
          entry.resume();
        } else {
          total += h.size ?? 0;
          if (total > maxBytes) throw new TarError(`inputs are larger than ${maxBytes} bytes`);
          // O_EXCL|O_NOFOLLOW: even a link that appeared since the lstat is not followed.
          const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;
          const fh = await open(target, flags, (h.mode ?? 0o644) & 0o777);
          await pipeline(entry, fh.createWriteStream());
          files++;
        }
      } catch (err) {
        entry.resume();
        if (err instanceof TarError) throw err;
        throw refuse(`cannot be unpacked: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
  })().catch((err: unknown) => {
    extract.destroy(err as Error);
    input.destroy();
    throw err;
  });
  await Promise.all([gzipped ? pipeline(src, createGunzip(), extract) : pipeline(src, extract), consume]);
  return { files, bytes: total };
}

/** A member name's components (`.` and empty ones dropped); absolute names, `..` and NUL refused. */
function memberParts(name: string, refuse: (why: string) => TarError): string[] {
  if (name.includes('\0')) throw refuse('has a NUL byte in its name');
  if (name.startsWith('/')) throw refuse('would land outside the work dir (absolute name)');
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw refuse('would land outside the work dir ("..")');
  return parts;
}

/**
 * The directory that holds the member `parts` under `root`, each component checked with
 * lstat: a directory goes on, a missing one is created (when `create`), a symlink or
 * anything else is refused.
 */
async function parentDir(root: string, parts: readonly string[], refuse: (why: string) => TarError, create = true): Promise<string> {
  let dir = root;
  for (let i = 0; i < parts.length - 1; i++) {
    const next = join(dir, parts[i]!);
    const st = await lstatOrNull(next);
    const rel = clip(parts.slice(0, i + 1).join('/'));
    if (!st) {
      if (!create) throw refuse(`-> "${rel}" does not exist in the work dir`);
      await mkdir(next, { mode: 0o755 });
    } else if (st.isSymbolicLink()) throw refuse(`goes through the symlink "${rel}": nothing is written through a link`);
    else if (!st.isDirectory()) throw refuse(`goes through "${rel}", which is not a directory`);
    dir = next;
  }
  return dir;
}

/** Whether a relative symlink target, read as text from the link's directory, stays inside the root. */
function staysInside(linkDir: readonly string[], target: string): boolean {
  let depth = linkDir.length;
  for (const p of target.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') {
      if (--depth < 0) return false;
    } else depth++;
  }
  return true;
}

async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}
