import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { ElfError, elfInterpreter, elfSection } from '../../../image/src/elf.js';
import {
  describeModule,
  loadOrder,
  moduleName,
  modulesAlias,
  modulesDep,
  modulesSoftdep,
  parseModinfo,
  selectModules,
  type KernelModule,
} from '../../../image/src/modules.js';

/** A minimal ELF64 LE relocatable with the given sections (what a .ko looks like to our reader). */
function elfWithSections(sections: Record<string, Uint8Array>): Buffer {
  const names = ['', '.shstrtab', ...Object.keys(sections)];
  const shstrtab = Buffer.from(names.map((n) => n + '\0').join(''));
  const nameOff = (i: number) => names.slice(0, i).reduce((n, s) => n + s.length + 1, 0);
  const bodies = [shstrtab, ...Object.values(sections).map((b) => Buffer.from(b))];
  const header = Buffer.alloc(64);
  header.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  header.writeUInt16LE(1, 0x10); // ET_REL
  header.writeUInt16LE(62, 0x12); // EM_X86_64
  let off = 64;
  const offsets = bodies.map((b) => {
    const o = off;
    off += b.length;
    return o;
  });
  const shoff = off;
  header.writeBigUInt64LE(BigInt(shoff), 0x28);
  header.writeUInt16LE(64, 0x3a);
  header.writeUInt16LE(names.length, 0x3c);
  header.writeUInt16LE(1, 0x3e);
  const shdrs = Buffer.alloc(64 * names.length); // section 0 stays SHT_NULL
  bodies.forEach((b, i) => {
    const at = 64 * (i + 1);
    shdrs.writeUInt32LE(nameOff(i + 1), at);
    shdrs.writeUInt32LE(i === 0 ? 3 : 1, at + 4); // SHT_STRTAB / SHT_PROGBITS
    shdrs.writeBigUInt64LE(BigInt(offsets[i]!), at + 0x18);
    shdrs.writeBigUInt64LE(BigInt(b.length), at + 0x20);
  });
  return Buffer.concat([header, ...bodies, shdrs]);
}

const modinfo = (...kv: string[]) => Buffer.from(kv.map((s) => s + '\0').join(''));

function mod(module: string, depends: string[] = [], extra: Partial<KernelModule> = {}): KernelModule {
  return {
    name: module,
    module,
    path: `kernel/${module}.ko`,
    depends,
    aliases: [],
    firmware: [],
    softdepPre: [],
    softdepPost: [],
    size: 1,
    ...extra,
  };
}

describe('ELF reader', () => {
  it('finds a section by name and returns its bytes', () => {
    const elf = elfWithSections({ '.text': Buffer.from([0x90, 0xc3]), '.modinfo': modinfo('license=GPL') });
    expect(Buffer.from(elfSection(elf, '.modinfo')!).toString()).toBe('license=GPL\0');
    expect(elfSection(elf, '.nothere')).toBeUndefined();
  });

  it('reads the program interpreter of the Node binary running this test', () => {
    const interp = elfInterpreter(readFileSync(process.execPath));
    expect(interp).toMatch(/^\/.*ld-linux.*\.so\.\d$/);
  });

  it.each([
    ['not ELF', Buffer.from('#!/bin/sh\necho hi\n'.padEnd(80))],
    ['32-bit', Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 1, 1]), Buffer.alloc(60)])],
    ['truncated section table', elfWithSections({ '.modinfo': modinfo('a=b') }).subarray(0, 100)],
  ])('rejects %s with an ElfError', (_what, bytes) => {
    expect(() => elfSection(bytes, '.modinfo')).toThrow(ElfError);
  });

  it('gives a section or an ElfError for any mutation of a valid file, nothing else', () => {
    const valid = elfWithSections({ '.text': Buffer.alloc(16, 0x90), '.modinfo': modinfo('alias=pci:v*d*', 'depends=a,b') });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 12 }),
        fc.nat(valid.length),
        (edits, cut) => {
          const b = Buffer.from(valid);
          for (const [at, v] of edits) b[at] = v;
          const bytes = b.subarray(0, Math.max(cut, 1));
          try {
            const s = elfSection(bytes, '.modinfo');
            if (s) expect(s.byteOffset + s.length).toBeLessThanOrEqual(bytes.byteOffset + bytes.length);
            elfInterpreter(bytes);
          } catch (err) {
            expect(err).toBeInstanceOf(ElfError);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('.modinfo', () => {
  it('parses depends, aliases, firmware and softdeps as the kernel writes them', () => {
    const info = parseModinfo(
      modinfo(
        'license=GPL',
        'firmware=rtl_nic/rtl8168d-1.fw',
        'firmware=rtl_nic/rtl8168e-1.fw',
        'alias=pci:v000010ECd00008168sv*sd*bc*sc*i*',
        'alias=pci:v000010ECd00008161sv*sd*bc*sc*i*',
        'softdep=pre: realtek',
        'depends=mii,libphy',
        'name=r8169',
        'vermagic=6.1.0-56-amd64 SMP mod_unload',
      ),
    );
    expect(info).toEqual({
      name: 'r8169',
      depends: ['mii', 'libphy'],
      aliases: ['pci:v000010ECd00008168sv*sd*bc*sc*i*', 'pci:v000010ECd00008161sv*sd*bc*sc*i*'],
      firmware: ['rtl_nic/rtl8168d-1.fw', 'rtl_nic/rtl8168e-1.fw'],
      softdepPre: ['realtek'],
      softdepPost: [],
    });
    expect(parseModinfo(modinfo('depends=')).depends).toEqual([]);
    expect(parseModinfo(modinfo('softdep=pre: a-b post: c')).softdepPost).toEqual(['c']);
  });

  it('names a module file as modprobe does', () => {
    expect(moduleName('kernel/drivers/pci/controller/pci-hyperv-intf.ko')).toBe('pci_hyperv_intf');
    expect(moduleName('i2c-algo-bit')).toBe('i2c_algo_bit');
    expect(moduleName('x.ko.xz')).toBe('x');
  });

  it('describes a module file from its ELF .modinfo section', () => {
    const m = describeModule(
      'kernel/drivers/net/virtio_net.ko',
      elfWithSections({ '.modinfo': modinfo('depends=net_failover,virtio', 'alias=virtio:d00000001v*', 'name=virtio_net') }),
    );
    expect(m).toMatchObject({ module: 'virtio_net', depends: ['net_failover', 'virtio'], aliases: ['virtio:d00000001v*'] });
  });
});

describe('module selection and depmod files', () => {
  // a → b → c, a → c, d alone, e soft-depends on f; g is built in
  const index = new Map(
    [
      mod('a', ['b', 'c']),
      mod('b', ['c']),
      mod('c'),
      mod('d'),
      mod('e', [], { softdepPre: ['f', 'nothere'] }),
      mod('f'),
      mod('unused'),
    ].map((m) => [m.module, m]),
  );

  it('takes the closure of hard and soft dependencies, reports built-in and missing names', () => {
    const sel = selectModules(index, ['a', 'e', 'g', 'zz'], new Set(['g']));
    expect(sel.modules.map((m) => m.module)).toEqual(['a', 'b', 'c', 'e', 'f']);
    expect(sel.builtin).toEqual(['g']);
    expect(sel.missing).toEqual(['zz']);
    expect(sel.absentSoft).toEqual(['nothere']);
    expect(sel.unresolved).toEqual([]);
    expect(selectModules(new Map([['x', mod('x', ['gone'])]]), ['x'], new Set()).unresolved).toEqual(['gone']);
  });

  it('writes modules.dep with each dependency before its own dependencies (loaders insert from the end)', () => {
    const dep = modulesDep(selectModules(index, ['a', 'd'], new Set()).modules);
    expect(dep).toBe('kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\nkernel/d.ko:\n');
  });

  it('orders any dependency graph so that modules.dep, read from the end, loads dependencies first', () => {
    const graph = fc.integer({ min: 1, max: 12 }).chain((n) =>
      fc.array(fc.uniqueArray(fc.nat(n - 1), { maxLength: 4 }), { minLength: n, maxLength: n }).map((deps) =>
        // only edges to lower numbers: a DAG, like real module dependencies
        deps.map((d, i) =>
          mod(
            `m${i}`,
            d.filter((j) => j < i).map((j) => `m${j}`),
          ),
        ),
      ),
    );
    fc.assert(
      fc.property(graph, (mods) => {
        const byPath = new Map(mods.map((m) => [m.path, m]));
        for (const line of modulesDep(mods).trim().split('\n')) {
          const [self, rest] = line.split(':') as [string, string];
          const list = rest.trim() ? rest.trim().split(' ') : [];
          const loadSeq = [...list].reverse();
          loadSeq.push(self);
          const loaded = new Set<string>();
          for (const p of loadSeq) {
            for (const d of byPath.get(p)!.depends) expect(loaded.has(`kernel/${d}.ko`)).toBe(true);
            loaded.add(p);
          }
        }
        const order = loadOrder(mods).map((m) => m.module);
        const seen = new Set<string>();
        for (const name of order) {
          for (const d of mods.find((m) => m.module === name)!.depends) expect(seen.has(d)).toBe(true);
          seen.add(name);
        }
      }),
    );
  });

  it('writes modules.alias and modules.softdep in depmod syntax', () => {
    const mods = [
      mod('virtio_net', [], { aliases: ['virtio:d00000001v*'] }),
      mod('r8169', [], { aliases: ['pci:v000010ECd00008168sv*sd*bc*sc*i*'], softdepPre: ['realtek'] }),
    ];
    expect(modulesAlias(mods)).toBe(
      '# Aliases extracted from modules themselves.\nalias pci:v000010ECd00008168sv*sd*bc*sc*i* r8169\nalias virtio:d00000001v* virtio_net\n',
    );
    expect(modulesSoftdep(mods)).toBe('# Soft dependencies extracted from modules themselves.\nsoftdep r8169 pre: realtek\n');
  });
});
