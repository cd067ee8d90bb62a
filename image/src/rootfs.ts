/**
 * The initramfs contents, gathered from several sources and emitted in one deterministic
 * order: sorted by path (byte order), every parent directory created before its children
 * (the kernel's unpacker does not create missing parents). Pure.
 */
import { checkPath, type CpioEntry } from './cpio.js';
import { compareBytes } from './modules.js';

export class RootfsConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RootfsConflictError';
  }
}

function rel(path: string): string {
  const p = path.replace(/^\/+/, '').replace(/\/+$/, '');
  checkPath(p);
  return p;
}

export class Rootfs {
  readonly #entries = new Map<string, CpioEntry>();
  /** Every ancestor of an entry's path: the directories entries() will create if nobody adds them. */
  readonly #parents = new Set<string>();

  addDirectory(path: string, mode = 0o755): void {
    const p = rel(path);
    const prev = this.#entries.get(p);
    if (prev && prev.type !== 'directory') throw new RootfsConflictError(`${p} is both a directory and a ${prev.type}`);
    this.#set({ type: 'directory', path: p, mode });
  }

  addFile(path: string, data: Uint8Array, mode = 0o644): void {
    this.#add({ type: 'file', path: rel(path), mode, data });
  }

  addSymlink(path: string, target: string): void {
    this.#add({ type: 'symlink', path: rel(path), target });
  }

  addCharDevice(path: string, mode: number, major: number, minor: number): void {
    this.#add({ type: 'char-device', path: rel(path), mode, major, minor });
  }

  /** Replaces a file, symlink or device at the same path (a later layer wins); never a directory. */
  replace(e: Exclude<CpioEntry, { type: 'directory' }>): void {
    const p = rel(e.path);
    const prev = this.#entries.get(p);
    if (this.isDirectory(p))
      throw new RootfsConflictError(`${p} is a directory${prev ? '' : ' (it holds other entries)'}, not a ${e.type}`);
    this.#set({ ...e, path: p });
  }

  has(path: string): boolean {
    return this.#entries.has(rel(path));
  }

  /** The entry added at `path` (not the implicit parents; see isDirectory). */
  get(path: string): CpioEntry | undefined {
    return this.#entries.get(rel(path));
  }

  /** True for a directory added as such or one that entries() will create as a parent. */
  isDirectory(path: string): boolean {
    const p = rel(path);
    return this.#entries.get(p)?.type === 'directory' || (!this.#entries.has(p) && this.#parents.has(p));
  }

  /** Total bytes of file data (what the unpacked initramfs costs in RAM, roughly). */
  get dataSize(): number {
    let n = 0;
    for (const e of this.#entries.values()) if (e.type === 'file') n += e.data.length;
    return n;
  }

  /** Every entry, parents first, in byte order of path. Missing parents become 0755 directories. */
  entries(): CpioEntry[] {
    const all = new Map(this.#entries);
    for (const p of this.#entries.keys()) {
      for (let i = p.indexOf('/'); i > 0; i = p.indexOf('/', i + 1)) {
        const parent = p.slice(0, i);
        const existing = all.get(parent);
        if (!existing) all.set(parent, { type: 'directory', path: parent, mode: 0o755 });
        else if (existing.type !== 'directory') throw new RootfsConflictError(`${parent} is a ${existing.type} but ${p} lies under it`);
      }
    }
    // Sorting whole paths puts "a" before "a/b"; a sibling like "a-b" may fall between them, which is harmless.
    return [...all.values()].sort((a, b) => compareBytes(a.path, b.path));
  }

  #add(e: CpioEntry): void {
    const prev = this.#entries.get(e.path);
    if (prev && !sameEntry(prev, e)) throw new RootfsConflictError(`two different entries for ${e.path}`);
    this.#set(e);
  }

  #set(e: CpioEntry): void {
    this.#entries.set(e.path, e);
    for (let i = e.path.indexOf('/'); i > 0; i = e.path.indexOf('/', i + 1)) this.#parents.add(e.path.slice(0, i));
  }
}

export function sameEntry(a: CpioEntry, b: CpioEntry): boolean {
  if (a.type === 'file' && b.type === 'file') return a.mode === b.mode && Buffer.compare(Buffer.from(a.data), Buffer.from(b.data)) === 0;
  if (a.type === 'symlink' && b.type === 'symlink') return a.target === b.target;
  return JSON.stringify(a) === JSON.stringify(b);
}
