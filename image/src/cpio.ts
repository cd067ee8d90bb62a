/**
 * cpio "newc" (SVR4, magic 070701) writer: the format the Linux kernel unpacks into its
 * initramfs (Documentation/driver-api/early-userspace/buffer-format.rst). Pure: entries in,
 * byte chunks out, no file system. The caller streams the chunks (e.g. into zstd) in order.
 *
 * Every entry is owned by root:root and stamped with one fixed mtime, and inode numbers are
 * handed out in entry order, so the same entries in the same order give the same bytes.
 */

/** The entries an initramfs needs. `mode` holds the permission bits only (0o7777 at most). */
export type CpioEntry =
  | { type: 'file'; path: string; mode: number; data: Uint8Array }
  | { type: 'directory'; path: string; mode: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char-device'; path: string; mode: number; major: number; minor: number };

export interface CpioWriterOptions {
  /** Seconds since the epoch written as every entry's mtime (reproducible builds: a constant). */
  mtime: number;
}

export class CpioFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CpioFormatError';
  }
}

// File type bits of st_mode (POSIX <sys/stat.h>), as cpio stores them.
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

const MAGIC = '070701';
const HEADER_SIZE = 110; // 6-byte magic + 13 fields of 8 hex digits
const MAX_FIELD = 0xffff_ffff; // each field is 8 hex digits
const TRAILER_NAME = 'TRAILER!!!';

interface RawHeader {
  ino: number;
  mode: number;
  nlink: number;
  mtime: number;
  fileSize: number;
  rdevMajor: number;
  rdevMinor: number;
  name: string;
}

const ZEROS = new Uint8Array(4);

/** Bytes of padding that bring `length` to the next multiple of 4 (newc aligns names and data). */
export function padLength(length: number): number {
  return (4 - (length % 4)) % 4;
}

function hex8(value: number, field: string): string {
  if (!Number.isInteger(value) || value < 0 || value > MAX_FIELD)
    throw new CpioFormatError(`${field} ${value} does not fit a newc header field`);
  return value.toString(16).padStart(8, '0');
}

/** Header, name, NUL and the padding after them: everything before an entry's data. */
function encodeHeader(h: RawHeader): Uint8Array {
  const name = Buffer.from(h.name + '\0', 'utf8');
  const fields = [
    h.ino,
    h.mode,
    0 /* uid root */,
    0 /* gid root */,
    h.nlink,
    h.mtime,
    h.fileSize,
    0,
    0 /* devmajor/devminor of the file system: meaningless in an archive */,
    h.rdevMajor,
    h.rdevMinor,
    name.length,
    0 /* check: only used by the "crc" variant */,
  ];
  const names = [
    'ino',
    'mode',
    'uid',
    'gid',
    'nlink',
    'mtime',
    'filesize',
    'devmajor',
    'devminor',
    'rdevmajor',
    'rdevminor',
    'namesize',
    'check',
  ];
  const text = MAGIC + fields.map((v, i) => hex8(v, names[i]!)).join('');
  const out = Buffer.alloc(HEADER_SIZE + name.length + padLength(HEADER_SIZE + name.length));
  out.write(text, 0, 'latin1');
  name.copy(out, HEADER_SIZE);
  return out;
}

/** Archive paths are relative ("bin/busybox"), normalised, and never climb out of the root. */
export function checkPath(path: string): void {
  if (path === '' || path.startsWith('/') || path.endsWith('/'))
    throw new CpioFormatError(`bad archive path "${path}": must be relative, without a trailing slash`);
  if (path.includes('\0')) throw new CpioFormatError('archive path contains NUL');
  for (const part of path.split('/')) {
    if (part === '' || part === '.' || part === '..') throw new CpioFormatError(`bad archive path "${path}": empty, "." or ".." component`);
  }
}

function checkMode(mode: number, path: string): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777)
    throw new CpioFormatError(`bad mode ${mode} for "${path}": permission bits only`);
  return mode;
}

export class CpioWriter {
  readonly #mtime: number;
  #nextIno = 1;
  #finished = false;

  constructor(opts: CpioWriterOptions) {
    this.#mtime = opts.mtime;
    hex8(opts.mtime, 'mtime');
  }

  /** The chunks of one entry, in order: header (+ name), then for files and symlinks the data and its padding. */
  entry(e: CpioEntry): Uint8Array[] {
    if (this.#finished) throw new CpioFormatError('entry after trailer');
    checkPath(e.path);
    const ino = this.#nextIno++;
    const base = { ino, mtime: this.#mtime, rdevMajor: 0, rdevMinor: 0, name: e.path };
    switch (e.type) {
      case 'file':
        return this.#withData({ ...base, mode: S_IFREG | checkMode(e.mode, e.path), nlink: 1, fileSize: e.data.length }, e.data);
      case 'directory':
        return [encodeHeader({ ...base, mode: S_IFDIR | checkMode(e.mode, e.path), nlink: 2, fileSize: 0 })];
      case 'symlink': {
        if (e.target === '' || e.target.includes('\0')) throw new CpioFormatError(`bad symlink target for "${e.path}"`);
        const target = Buffer.from(e.target, 'utf8'); // the link text is the data, without NUL
        return this.#withData({ ...base, mode: S_IFLNK | 0o777, nlink: 1, fileSize: target.length }, target);
      }
      case 'char-device':
        return [
          encodeHeader({
            ...base,
            mode: S_IFCHR | checkMode(e.mode, e.path),
            nlink: 1,
            fileSize: 0,
            rdevMajor: e.major,
            rdevMinor: e.minor,
          }),
        ];
    }
  }

  /**
   * The header of a file whose `size` bytes the caller writes itself (one too large to hold in
   * memory, streamed from disk), to be followed by those bytes and padLength(size) zero bytes.
   */
  fileHeader(path: string, mode: number, size: number): Uint8Array {
    if (this.#finished) throw new CpioFormatError('entry after trailer');
    checkPath(path);
    const ino = this.#nextIno++;
    return encodeHeader({
      ino,
      mtime: this.#mtime,
      rdevMajor: 0,
      rdevMinor: 0,
      name: path,
      mode: S_IFREG | checkMode(mode, path),
      nlink: 1,
      fileSize: size,
    });
  }

  /** The end-of-archive marker; nothing may follow it. */
  trailer(): Uint8Array {
    this.#finished = true;
    return encodeHeader({ ino: 0, mode: 0, nlink: 1, mtime: 0, fileSize: 0, rdevMajor: 0, rdevMinor: 0, name: TRAILER_NAME });
  }

  #withData(h: RawHeader, data: Uint8Array): Uint8Array[] {
    const pad = padLength(data.length);
    return pad ? [encodeHeader(h), data, ZEROS.subarray(0, pad)] : [encodeHeader(h), data];
  }
}

/** A whole archive as chunks: convenient for tests and small archives. */
export function* cpioChunks(entries: Iterable<CpioEntry>, opts: CpioWriterOptions): Generator<Uint8Array> {
  const w = new CpioWriter(opts);
  for (const e of entries) yield* w.entry(e);
  yield w.trailer();
}
