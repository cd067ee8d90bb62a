/**
 * Do the programs and libraries the extra layers add find the shared libraries they need, in
 * the image? The image has no ld.so.cache, so the loader searches, for each DT_NEEDED soname
 * (ld.so(8), "Shared object dependencies"): DT_RPATH (only without DT_RUNPATH), LD_LIBRARY_PATH
 * (/init sets it to the Node runtime's folders), DT_RUNPATH, then its built-in system folders.
 * Pure: it looks names up in the assembled Rootfs, following symlinks inside the image.
 */
import { posix } from 'node:path';
import type { CpioEntry } from './cpio.js';
import { ElfError, elfDynamic, elfInterpreter } from './elf.js';

/** glibc's system search path on Debian amd64 (`/lib64/ld-linux-x86-64.so.2 --help`). */
export const SYSTEM_LIBRARY_DIRS: readonly string[] = ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib', '/usr/lib'];

/** The x86-64 dynamic loader (PT_INTERP of every Debian amd64 program). */
export const DEFAULT_INTERPRETER = '/lib64/ld-linux-x86-64.so.2';

/** The image as the loader sees it. */
export interface ImageLookup {
  get(path: string): CpioEntry | undefined;
  isDirectory(path: string): boolean;
}

export interface ElfCandidate {
  /** Absolute path in the image. */
  path: string;
  data: Uint8Array;
}

export interface MissingLibrary {
  /** A soname (libjq.so.1), or the program interpreter's path. */
  soname: string;
  /** Absolute image paths of the files that need it. */
  neededBy: string[];
}

const MAX_SYMLINKS = 40; // as the kernel's path walk (ELOOP)

/** The file `path` ends at inside the image, following symlinks; undefined if it is not there (or not a file). */
export function resolveInImage(fs: ImageLookup, path: string): string | undefined {
  let pending = path.split('/').filter(Boolean);
  const done: string[] = [];
  let hops = 0;
  while (pending.length) {
    const part = pending.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      done.pop();
      continue;
    }
    const here = [...done, part].join('/');
    const e = fs.get(here);
    if (e?.type === 'symlink') {
      if (++hops > MAX_SYMLINKS) return undefined;
      pending = [...e.target.split('/').filter(Boolean), ...pending];
      if (e.target.startsWith('/')) done.length = 0;
      continue;
    }
    if (pending.length === 0) return e?.type === 'file' ? `/${here}` : undefined;
    if (!fs.isDirectory(here)) return undefined;
    done.push(part);
  }
  return undefined;
}

function expandOrigin(dir: string, file: string): string | undefined {
  const origin = posix.dirname(file);
  const out = dir.replace(/\$(\{ORIGIN\}|ORIGIN)/g, origin);
  // $LIB and $PLATFORM depend on the loader's build; a folder we cannot name is not searched.
  return out.includes('$') ? undefined : out;
}

/**
 * For every ELF file among `files` that is dynamically linked: the sonames no search folder of
 * the image holds, and a missing program interpreter. Files that are not ELF, or not an ELF
 * this reader knows (32-bit, damaged), are not checked.
 */
export function missingLibraries(fs: ImageLookup, files: readonly ElfCandidate[], libraryPath: readonly string[] = []): MissingLibrary[] {
  const missing = new Map<string, string[]>();
  const note = (soname: string, by: string) => missing.set(soname, [...(missing.get(soname) ?? []), by]);
  for (const f of files) {
    if (f.data.length < 4 || f.data[0] !== 0x7f || f.data[1] !== 0x45 || f.data[2] !== 0x4c || f.data[3] !== 0x46) continue;
    let dyn: ReturnType<typeof elfDynamic>;
    let interp: string | undefined;
    try {
      dyn = elfDynamic(f.data);
      interp = elfInterpreter(f.data);
    } catch (err) {
      if (err instanceof ElfError) continue;
      throw err;
    }
    if (interp && !resolveInImage(fs, interp)) note(interp, f.path);
    if (!dyn) continue;
    const dirs = [...(dyn.runpath.length ? [] : dyn.rpath), ...libraryPath, ...dyn.runpath, ...SYSTEM_LIBRARY_DIRS].flatMap(
      (d) => expandOrigin(d, f.path) ?? [],
    );
    // Libraries that need the loader itself (for __tls_get_addr) get the one already running, wherever it lies.
    const loader = interp ?? DEFAULT_INTERPRETER;
    for (const soname of dyn.needed) {
      // A soname with a slash is a path, used as it is (ld.so(8)).
      const found = soname.includes('/')
        ? resolveInImage(fs, posix.resolve(posix.dirname(f.path), soname))
        : soname === posix.basename(loader)
          ? resolveInImage(fs, loader)
          : dirs.some((d) => resolveInImage(fs, `${d}/${soname}`));
      if (!found) note(soname, f.path);
    }
  }
  return [...missing]
    .map(([soname, neededBy]) => ({ soname, neededBy }))
    .sort((a, b) => (a.soname < b.soname ? -1 : a.soname > b.soname ? 1 : 0));
}
