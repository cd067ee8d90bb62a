/**
 * Just enough of ELF64 (little-endian, x86-64) for the image builder: a named section's bytes
 * (a kernel module's `.modinfo`), the program interpreter (PT_INTERP) of an executable and the
 * libraries a dynamically linked file needs (DT_NEEDED, DT_RPATH, DT_RUNPATH).
 * Pure and bounds-checked: a truncated or foreign file gives an ElfError, never a wrong answer.
 * Layout: System V ABI, "ELF Header", "Section Header", "Program Header", "Dynamic Section" (elf(5)).
 */

export class ElfError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ElfError';
  }
}

const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const PT_INTERP = 3;
const SHT_NOBITS = 8;

interface ElfHeader {
  phoff: number;
  phentsize: number;
  phnum: number;
  shoff: number;
  shentsize: number;
  shnum: number;
  shstrndx: number;
}

function u64(buf: Uint8Array, off: number, what: string): number {
  if (off + 8 > buf.length) throw new ElfError(`truncated ELF: ${what} at ${off} past end (${buf.length} bytes)`);
  const v = Buffer.from(buf.buffer, buf.byteOffset, buf.length).readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ElfError(`${what} too large`);
  return Number(v);
}
function u32(buf: Uint8Array, off: number, what: string): number {
  if (off + 4 > buf.length) throw new ElfError(`truncated ELF: ${what} at ${off} past end (${buf.length} bytes)`);
  return Buffer.from(buf.buffer, buf.byteOffset, buf.length).readUInt32LE(off);
}
function u16(buf: Uint8Array, off: number, what: string): number {
  if (off + 2 > buf.length) throw new ElfError(`truncated ELF: ${what} at ${off} past end (${buf.length} bytes)`);
  return Buffer.from(buf.buffer, buf.byteOffset, buf.length).readUInt16LE(off);
}

function slice(buf: Uint8Array, off: number, size: number, what: string): Uint8Array {
  if (off < 0 || size < 0 || off + size > buf.length)
    throw new ElfError(`${what} (${size} bytes at ${off}) lies outside the file (${buf.length} bytes)`);
  return buf.subarray(off, off + size);
}

function readHeader(buf: Uint8Array): ElfHeader {
  if (buf.length < 64 || buf[0] !== 0x7f || buf[1] !== 0x45 || buf[2] !== 0x4c || buf[3] !== 0x46)
    throw new ElfError('not an ELF file (bad magic)');
  if (buf[4] !== ELFCLASS64 || buf[5] !== ELFDATA2LSB) throw new ElfError('not a 64-bit little-endian ELF file');
  return {
    phoff: u64(buf, 0x20, 'e_phoff'),
    shoff: u64(buf, 0x28, 'e_shoff'),
    phentsize: u16(buf, 0x36, 'e_phentsize'),
    phnum: u16(buf, 0x38, 'e_phnum'),
    shentsize: u16(buf, 0x3a, 'e_shentsize'),
    shnum: u16(buf, 0x3c, 'e_shnum'),
    shstrndx: u16(buf, 0x3e, 'e_shstrndx'),
  };
}

function cString(buf: Uint8Array, off: number, what: string): string {
  if (off >= buf.length) throw new ElfError(`${what}: string offset ${off} outside its table`);
  const end = buf.indexOf(0, off);
  return Buffer.from(buf.subarray(off, end < 0 ? buf.length : end)).toString('utf8');
}

/** The bytes of the section called `name`, or undefined when the file has none. */
export function elfSection(buf: Uint8Array, name: string): Uint8Array | undefined {
  const h = readHeader(buf);
  if (h.shnum === 0) return undefined;
  if (h.shentsize < 64) throw new ElfError(`e_shentsize ${h.shentsize} too small`);
  if (h.shstrndx >= h.shnum) throw new ElfError(`e_shstrndx ${h.shstrndx} >= e_shnum ${h.shnum}`);
  const section = (i: number) => {
    const at = h.shoff + i * h.shentsize;
    return {
      name: u32(buf, at, 'sh_name'),
      type: u32(buf, at + 4, 'sh_type'),
      offset: u64(buf, at + 0x18, 'sh_offset'),
      size: u64(buf, at + 0x20, 'sh_size'),
    };
  };
  const strtab = section(h.shstrndx);
  const names = slice(buf, strtab.offset, strtab.size, 'section name table');
  for (let i = 0; i < h.shnum; i++) {
    const s = section(i);
    if (cString(names, s.name, 'section name') !== name) continue;
    if (s.type === SHT_NOBITS) return new Uint8Array(0);
    return slice(buf, s.offset, s.size, `section ${name}`);
  }
  return undefined;
}

/** The program interpreter an executable asks for (e.g. /lib64/ld-linux-x86-64.so.2), or undefined for a static one. */
export function elfInterpreter(buf: Uint8Array): string | undefined {
  const h = readHeader(buf);
  if (h.phnum > 0 && h.phentsize < 56) throw new ElfError(`e_phentsize ${h.phentsize} too small`);
  for (let i = 0; i < h.phnum; i++) {
    const at = h.phoff + i * h.phentsize;
    if (u32(buf, at, 'p_type') !== PT_INTERP) continue;
    const offset = u64(buf, at + 0x08, 'p_offset');
    const size = u64(buf, at + 0x20, 'p_filesz');
    return cString(slice(buf, offset, size, 'PT_INTERP'), 0, 'PT_INTERP');
  }
  return undefined;
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
// Dynamic section tags (elf(5), "Dynamic section"); each entry is d_tag + d_val, 8 bytes each.
const DT_NULL = 0n;
const DT_NEEDED = 1n;
const DT_STRTAB = 5n;
const DT_STRSZ = 10n;
const DT_RPATH = 15n;
const DT_RUNPATH = 29n;
const DYN_ENTRY_SIZE = 16;

/** What the dynamic loader reads from a dynamically linked file: the libraries it needs and where to look first. */
export interface ElfDynamic {
  /** DT_NEEDED sonames, in file order. */
  needed: string[];
  /** DT_RPATH and DT_RUNPATH, split on ":" (the loader ignores DT_RPATH when DT_RUNPATH is present). */
  rpath: string[];
  runpath: string[];
}

/**
 * The dynamic section of an executable or shared library, found through the program headers
 * (PT_DYNAMIC, with DT_STRTAB mapped from its virtual address through PT_LOAD), so it works
 * on files stripped of their section headers. Undefined for a file without PT_DYNAMIC
 * (static executables, relocatable objects such as kernel modules).
 */
export function elfDynamic(buf: Uint8Array): ElfDynamic | undefined {
  const h = readHeader(buf);
  if (h.phnum > 0 && h.phentsize < 56) throw new ElfError(`e_phentsize ${h.phentsize} too small`);
  const loads: { vaddr: number; offset: number; filesz: number }[] = [];
  let dynamic: { offset: number; size: number } | undefined;
  for (let i = 0; i < h.phnum; i++) {
    const at = h.phoff + i * h.phentsize;
    const type = u32(buf, at, 'p_type');
    if (type === PT_LOAD)
      loads.push({
        offset: u64(buf, at + 0x08, 'p_offset'),
        vaddr: u64(buf, at + 0x10, 'p_vaddr'),
        filesz: u64(buf, at + 0x20, 'p_filesz'),
      });
    else if (type === PT_DYNAMIC && !dynamic) dynamic = { offset: u64(buf, at + 0x08, 'p_offset'), size: u64(buf, at + 0x20, 'p_filesz') };
  }
  if (!dynamic) return undefined;
  const dyn = slice(buf, dynamic.offset, dynamic.size, 'PT_DYNAMIC');
  const view = Buffer.from(dyn.buffer, dyn.byteOffset, dyn.length);
  const needed: bigint[] = [];
  const rpath: bigint[] = [];
  const runpath: bigint[] = [];
  let strtab: bigint | undefined;
  let strsz: bigint | undefined;
  for (let off = 0; off + DYN_ENTRY_SIZE <= view.length; off += DYN_ENTRY_SIZE) {
    // d_val may be any 64-bit value for tags we do not use: read as bigint, convert only what we use.
    const tag = view.readBigUInt64LE(off);
    const val = view.readBigUInt64LE(off + 8);
    if (tag === DT_NULL) break;
    if (tag === DT_NEEDED) needed.push(val);
    else if (tag === DT_RPATH) rpath.push(val);
    else if (tag === DT_RUNPATH) runpath.push(val);
    else if (tag === DT_STRTAB) strtab = val;
    else if (tag === DT_STRSZ) strsz = val;
  }
  if (needed.length + rpath.length + runpath.length === 0) return { needed: [], rpath: [], runpath: [] };
  if (strtab === undefined || strsz === undefined) throw new ElfError('dynamic section without DT_STRTAB/DT_STRSZ');
  if (strtab > BigInt(Number.MAX_SAFE_INTEGER) || strsz > BigInt(Number.MAX_SAFE_INTEGER))
    throw new ElfError('DT_STRTAB/DT_STRSZ too large');
  const addr = Number(strtab);
  const seg = loads.find((l) => addr >= l.vaddr && addr - l.vaddr < l.filesz);
  if (!seg) throw new ElfError(`DT_STRTAB 0x${addr.toString(16)} lies in no PT_LOAD segment`);
  const strings = slice(buf, seg.offset + (addr - seg.vaddr), Number(strsz), 'dynamic string table');
  const str = (v: bigint, what: string) => {
    if (v >= BigInt(strings.length))
      throw new ElfError(`${what}: string offset ${v} outside the dynamic string table (${strings.length} bytes)`);
    return cString(strings, Number(v), what);
  };
  const paths = (vs: bigint[], what: string) => vs.flatMap((v) => str(v, what).split(':')).filter(Boolean);
  return { needed: needed.map((v) => str(v, 'DT_NEEDED')), rpath: paths(rpath, 'DT_RPATH'), runpath: paths(runpath, 'DT_RUNPATH') };
}
