/**
 * Just enough of ELF64 (little-endian, x86-64) for the image builder: a named section's bytes
 * (a kernel module's `.modinfo`) and the program interpreter (PT_INTERP) of an executable.
 * Pure and bounds-checked: a truncated or foreign file gives an ElfError, never a wrong answer.
 * Layout: System V ABI, "ELF Header", "Section Header", "Program Header" (elf(5)).
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
  if (off < 0 || size < 0 || off + size > buf.length) throw new ElfError(`${what} (${size} bytes at ${off}) lies outside the file (${buf.length} bytes)`);
  return buf.subarray(off, off + size);
}

function readHeader(buf: Uint8Array): ElfHeader {
  if (buf.length < 64 || buf[0] !== 0x7f || buf[1] !== 0x45 || buf[2] !== 0x4c || buf[3] !== 0x46) throw new ElfError('not an ELF file (bad magic)');
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
