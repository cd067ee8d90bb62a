/**
 * Kernel modules: what a `.ko` says about itself (its `.modinfo` section) and the files
 * `depmod` would have written for the subset we ship. Debian's kernel package carries no
 * modules.dep / modules.alias (depmod runs at install time), so we derive them here. Pure.
 *
 * modules.dep format (depmod(8), kmod): one line per module, "path: dep1 dep2 ...", paths
 * relative to /lib/modules/<version>; a module's dependencies are listed so that each comes
 * before its own dependencies, and loaders (kmod, busybox modprobe) insert from the end.
 */
import { elfSection } from './elf.js';

export interface ModInfo {
  /** The `name=` field, when the kernel writes one (5.x and later do). */
  name: string | undefined;
  depends: string[];
  aliases: string[];
  firmware: string[];
  /** `softdep=pre: a b post: c`: modules to load around this one, not hard dependencies. */
  softdepPre: string[];
  softdepPost: string[];
}

export interface KernelModule extends ModInfo {
  /** Path relative to /lib/modules/<version>, e.g. kernel/drivers/net/virtio_net.ko */
  path: string;
  /** The module's name as the kernel and modprobe know it: "virtio_net". */
  module: string;
  size: number;
}

/** The name modprobe uses for a module file or a requested name: basename without ".ko", "-" as "_". */
export function moduleName(pathOrName: string): string {
  const base = pathOrName.slice(pathOrName.lastIndexOf('/') + 1);
  const noExt = base.replace(/\.ko(\.(xz|zst|gz))?$/, '');
  return noExt.replaceAll('-', '_');
}

function splitList(value: string, sep: RegExp): string[] {
  return value
    .split(sep)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** Parses a `.modinfo` section: NUL-separated "key=value" strings (include/linux/moduleparam.h MODULE_INFO). */
export function parseModinfo(section: Uint8Array): ModInfo {
  const info: ModInfo = { name: undefined, depends: [], aliases: [], firmware: [], softdepPre: [], softdepPost: [] };
  for (const raw of Buffer.from(section).toString('utf8').split('\0')) {
    const eq = raw.indexOf('=');
    if (eq <= 0) continue;
    const key = raw.slice(0, eq);
    const value = raw.slice(eq + 1);
    switch (key) {
      case 'name':
        info.name = value;
        break;
      case 'depends':
        info.depends.push(...splitList(value, /,/).map(moduleName));
        break;
      case 'alias':
        if (value) info.aliases.push(value);
        break;
      case 'firmware':
        if (value) info.firmware.push(value);
        break;
      case 'softdep': {
        // "pre: mod1 mod2 post: mod3" (either part optional)
        let into: string[] | undefined;
        for (const word of splitList(value, /\s+/)) {
          if (word === 'pre:') into = info.softdepPre;
          else if (word === 'post:') into = info.softdepPost;
          else into?.push(moduleName(word));
        }
        break;
      }
    }
  }
  return info;
}

/** Reads a module file's metadata. Throws ElfError for a file that is not a module. */
export function describeModule(path: string, bytes: Uint8Array): KernelModule {
  const section = elfSection(bytes, '.modinfo');
  const info = section ? parseModinfo(section) : parseModinfo(new Uint8Array(0));
  return { ...info, path, module: info.name ? moduleName(info.name) : moduleName(path), size: bytes.length };
}

export interface ModuleSelection {
  /** Every module to ship: the requested ones and everything they depend on, sorted by path. */
  modules: KernelModule[];
  /** Requested names that the kernel has built in (nothing to ship, nothing to load). */
  builtin: string[];
  /** Requested names found neither as a module nor built in. */
  missing: string[];
  /** Hard dependencies (`depends=`) of a shipped module that are neither modules nor built in: a broken kernel package. */
  unresolved: string[];
  /** Soft dependencies that are neither modules nor built in (optional by definition). */
  absentSoft: string[];
}

/**
 * The closure of `wanted` under `depends=` (and softdeps, which drivers such as mlx5_core use
 * for optional helpers; shipping them is cheap and lets /init load them).
 */
export function selectModules(
  index: ReadonlyMap<string, KernelModule>,
  wanted: readonly string[],
  builtin: ReadonlySet<string>,
): ModuleSelection {
  const chosen = new Map<string, KernelModule>();
  const missing = new Set<string>();
  const builtinHit = new Set<string>();
  const unresolved = new Set<string>();
  const absentSoft = new Set<string>();
  const visit = (name: string, why: 'requested' | 'hard' | 'soft') => {
    if (chosen.has(name)) return;
    const mod = index.get(name);
    if (!mod) {
      if (builtin.has(name)) {
        if (why === 'requested') builtinHit.add(name);
      } else if (why === 'requested') missing.add(name);
      else if (why === 'hard') unresolved.add(name);
      else absentSoft.add(name);
      return;
    }
    chosen.set(name, mod);
    for (const dep of mod.depends) visit(dep, 'hard');
    for (const dep of [...mod.softdepPre, ...mod.softdepPost]) visit(dep, 'soft');
  };
  for (const w of wanted) visit(moduleName(w), 'requested');
  const sorted = (s: Set<string>) => [...s].sort(compareBytes);
  return {
    modules: [...chosen.values()].sort((a, b) => compareBytes(a.path, b.path)),
    builtin: sorted(builtinHit),
    missing: sorted(missing),
    unresolved: sorted(unresolved),
    absentSoft: sorted(absentSoft),
  };
}

/** Byte-wise string order (not locale order): the same everywhere, so outputs are reproducible. */
export function compareBytes(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * All modules in an order they can be inserted: each after its hard dependencies.
 * Depth-first, dependencies visited in name order, so the order is deterministic.
 */
export function loadOrder(mods: readonly KernelModule[]): KernelModule[] {
  const byName = new Map(mods.map((m) => [m.module, m]));
  const out: KernelModule[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (m: KernelModule) => {
    const s = state.get(m.module);
    if (s) return; // done, or a cycle (the kernel refuses those anyway): do not loop
    state.set(m.module, 'visiting');
    for (const d of [...m.depends].sort()) {
      const dep = byName.get(d);
      if (dep) visit(dep);
    }
    state.set(m.module, 'done');
    out.push(m);
  };
  for (const m of [...mods].sort((a, b) => compareBytes(a.module, b.module))) visit(m);
  return out;
}

/** The hard dependencies of one module, transitively, each listed before its own dependencies. */
function dependencyList(m: KernelModule, byName: ReadonlyMap<string, KernelModule>): KernelModule[] {
  const deps = m.depends.map((d) => byName.get(d)).filter((d): d is KernelModule => d !== undefined);
  const order = loadOrder(collect(deps, byName)); // dependencies first
  return order.reverse(); // modules.dep wants dependents first; loaders insert from the end
}

function collect(roots: KernelModule[], byName: ReadonlyMap<string, KernelModule>): KernelModule[] {
  const seen = new Map<string, KernelModule>();
  const stack = [...roots];
  while (stack.length) {
    const m = stack.pop()!;
    if (seen.has(m.module)) continue;
    seen.set(m.module, m);
    for (const d of m.depends) {
      const dep = byName.get(d);
      if (dep) stack.push(dep);
    }
  }
  return [...seen.values()];
}

export function modulesDep(mods: readonly KernelModule[]): string {
  const byName = new Map(mods.map((m) => [m.module, m]));
  return [...mods]
    .sort((a, b) => compareBytes(a.path, b.path))
    .map((m) => {
      const deps = dependencyList(m, byName).map((d) => d.path);
      return deps.length ? `${m.path}: ${deps.join(' ')}\n` : `${m.path}:\n`;
    })
    .join('');
}

export function modulesAlias(mods: readonly KernelModule[]): string {
  let out = '# Aliases extracted from modules themselves.\n';
  for (const m of [...mods].sort((a, b) => compareBytes(a.module, b.module))) for (const a of m.aliases) out += `alias ${a} ${m.module}\n`;
  return out;
}

export function modulesSoftdep(mods: readonly KernelModule[]): string {
  let out = '# Soft dependencies extracted from modules themselves.\n';
  for (const m of [...mods].sort((a, b) => compareBytes(a.module, b.module))) {
    if (!m.softdepPre.length && !m.softdepPost.length) continue;
    const pre = m.softdepPre.length ? ` pre: ${m.softdepPre.join(' ')}` : '';
    const post = m.softdepPost.length ? ` post: ${m.softdepPost.join(' ')}` : '';
    out += `softdep ${m.module}${pre}${post}\n`;
  }
  return out;
}
