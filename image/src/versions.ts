/**
 * The versions an image output folder keeps, so that a rollout can go back to the previous one:
 *
 *   <out>/versions/<version>/{vmlinuz,initrd.img,root.cpio?,manifest.json}
 *   <out>/versions/order          one version per line, newest last
 *   <out>/{vmlinuz,initrd.img,root.cpio?,manifest.json}   hard links to the newest's files
 *
 * `<version>` is the first 12 hex characters of the manifest's `inputs`. A version folder is
 * renamed into place whole, the order file is replaced by rename, and a version is removed by
 * renaming it to a dot name first: a reader that skips dot names never sees a partial version.
 * The flat files keep what read dist/image before versions existed working; when they and the
 * order file disagree (a build killed between the two), the flat files win.
 */
import {
  copyFileSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { INITRD_FILE, KERNEL_FILE, MANIFEST_FILE, ROOT_FILE, imageMatchesManifest, readManifest, type ImageManifest } from './manifest.js';

export const VERSIONS_DIR = 'versions';
export const ORDER_FILE = 'order';
/** A version's name: the first 12 hex characters of its manifest's `inputs`. */
export const VERSION_PATTERN = /^[0-9a-f]{12}$/;
/** How many versions an output folder keeps when IMAGE_KEEP is not given. */
export const DEFAULT_KEEP = 3;
/** The order file lists a handful of 13-byte lines; anything far bigger is not ours and is not read. */
export const MAX_ORDER_BYTES = 64 * 1024;
/** Work folders of builds: `.build-<pid>` (build.ts). */
const WORK_DIR = /^\.build-(\d+)$/;
/** Warnings about one file are capped, so a hostile order file cannot flood the output. */
const MAX_WARNINGS = 5;

export const versionOf = (inputs: string): string => inputs.slice(0, 12);

export interface ParsedOrder {
  /** Versions, oldest first, each once, each one of `present`. */
  order: string[];
  warnings: string[];
}

/**
 * The order file's text → the versions it lists that exist, oldest first. Blank lines are
 * skipped; anything else that is not a present version (a bad name, `../x`, a version whose
 * folder is gone) is ignored with a warning; a version listed twice counts where it was listed last.
 */
export function parseOrder(text: string, present: ReadonlySet<string>): ParsedOrder {
  const order: string[] = [];
  const problems: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    const shown = JSON.stringify(line.length > 40 ? `${line.slice(0, 40)}…` : line);
    if (!VERSION_PATTERN.test(line)) problems.push(`line ${i + 1} ${shown} is not a version name`);
    else if (!present.has(line)) problems.push(`line ${i + 1} ${shown} has no version folder`);
    else {
      const at = order.indexOf(line);
      if (at >= 0) {
        order.splice(at, 1);
        problems.push(`line ${i + 1} ${shown} is listed twice`);
      }
      order.push(line);
    }
  });
  const warnings = problems.slice(0, MAX_WARNINGS).map((p) => `${VERSIONS_DIR}/${ORDER_FILE}: ignored ${p}`);
  if (problems.length > MAX_WARNINGS) warnings.push(`${VERSIONS_DIR}/${ORDER_FILE}: and ${problems.length - MAX_WARNINGS} more`);
  return { order, warnings };
}

/** A kept version's manifest, when its folder is a real folder holding a manifest whose inputs name it. */
export function versionManifest(outDir: string, version: string): ImageManifest | undefined {
  if (!VERSION_PATTERN.test(version)) return undefined;
  const dir = join(outDir, VERSIONS_DIR, version);
  try {
    if (!lstatSync(dir).isDirectory()) return undefined;
  } catch {
    return undefined;
  }
  const m = readManifest(dir);
  return m && typeof m.inputs === 'string' && versionOf(m.inputs) === version ? m : undefined;
}

/**
 * The kept versions, oldest first: the order file's, after the version folders it does not list
 * (a build killed before writing it; oldest modified first), with the flat files' version moved
 * last when it is kept (the flat files are written before the order file).
 */
export function readVersions(outDir: string): ParsedOrder {
  const dir = join(outDir, VERSIONS_DIR);
  if (!existsSync(dir)) return { order: [], warnings: [] };
  const warnings: string[] = [];
  const present = new Set<string>();
  for (const name of readdirSync(dir)) {
    if (!VERSION_PATTERN.test(name)) continue;
    if (versionManifest(outDir, name)) present.add(name);
    else warnings.push(`${VERSIONS_DIR}/${name}: not a folder with a manifest.json of that version; left alone`);
  }
  let parsed: ParsedOrder = { order: [], warnings: [] };
  const orderPath = join(dir, ORDER_FILE);
  try {
    const st = lstatSync(orderPath);
    if (!st.isFile()) warnings.push(`${VERSIONS_DIR}/${ORDER_FILE} is not a regular file; not read`);
    else if (st.size > MAX_ORDER_BYTES)
      warnings.push(`${VERSIONS_DIR}/${ORDER_FILE} is ${st.size} bytes (at most ${MAX_ORDER_BYTES}); not read`);
    else parsed = parseOrder(readFileSync(orderPath, 'utf8'), present);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (present.size) warnings.push(`${VERSIONS_DIR}/${ORDER_FILE} is missing`);
  }
  warnings.push(...parsed.warnings);
  const unlisted = [...present].filter((v) => !parsed.order.includes(v));
  if (unlisted.length) {
    const mtime = (v: string) => lstatSync(join(dir, v)).mtimeMs;
    unlisted.sort((a, b) => mtime(a) - mtime(b) || (a < b ? -1 : 1));
    warnings.push(`${VERSIONS_DIR}/${ORDER_FILE} does not list ${unlisted.join(' ')}: counted as the oldest`);
  }
  let order = [...unlisted, ...parsed.order];
  const flat = readManifest(outDir);
  const current = flat && typeof flat.inputs === 'string' ? versionOf(flat.inputs) : undefined;
  if (current && order.includes(current) && order.at(-1) !== current) {
    warnings.push(`the flat files are version ${current}, not ${order.at(-1)}: ${current} is the newest (a build was interrupted)`);
    order = [...order.filter((v) => v !== current), current];
  }
  return { order, warnings };
}

/** Writes the order file through a temporary file and a rename: a reader sees the old list or the new. */
export function writeOrder(outDir: string, order: readonly string[]): void {
  const dir = join(outDir, VERSIONS_DIR);
  const tmp = join(dir, `.${ORDER_FILE}-${process.pid}.tmp`);
  writeFileSync(tmp, order.map((v) => `${v}\n`).join(''));
  renameSync(tmp, join(dir, ORDER_FILE));
}

/** The files of a version, the manifest last. */
function versionFiles(m: ImageManifest): string[] {
  return [KERNEL_FILE, INITRD_FILE, ...(m.root ? [ROOT_FILE] : []), MANIFEST_FILE];
}

/** A hard link (no extra disk), or a copy where the file system has none. */
function linkOrCopy(from: string, to: string): void {
  rmSync(to, { force: true });
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
  }
}

/** Moves a complete folder into versions/<version>, replacing a folder of that name (FORCE=1, or a damaged one). */
export function placeVersion(outDir: string, staged: string, version: string): void {
  const dir = join(outDir, VERSIONS_DIR);
  mkdirSync(dir, { recursive: true });
  const target = join(dir, version);
  const old = join(dir, `.old-${version}-${process.pid}`);
  rmSync(old, { recursive: true, force: true });
  if (existsSync(target)) renameSync(target, old);
  renameSync(staged, target);
  rmSync(old, { recursive: true, force: true });
}

/**
 * Flat files built before versions existed become a version (their files linked into `staging`,
 * then renamed into place), when their manifest is intact and describes them. Returns its name.
 */
export function adoptFlat(outDir: string, staging: string, kept: readonly string[]): { version?: string; warning?: string } {
  const flat = readManifest(outDir);
  if (!flat) return {};
  if (typeof flat.inputs !== 'string' || !/^[0-9a-f]{64}$/.test(flat.inputs))
    return { warning: `${MANIFEST_FILE} has no inputs digest: the flat files are not kept as a version` };
  const version = versionOf(flat.inputs);
  if (kept.includes(version)) return {};
  if (!imageMatchesManifest(outDir, flat))
    return { warning: `the flat files do not match ${MANIFEST_FILE}: they are not kept as a version` };
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  for (const f of versionFiles(flat)) linkOrCopy(join(outDir, f), join(staging, f));
  placeVersion(outDir, staging, version);
  return { version };
}

/** Points the flat files at a kept version: its files, then its manifest, each by link (or copy) and rename. */
export function pointFlat(outDir: string, version: string, m: ImageManifest): void {
  const dir = join(outDir, VERSIONS_DIR, version);
  // An image that had a root and now has none: the old root.cpio goes before the manifest that no longer names it.
  if (!m.root) rmSync(join(outDir, ROOT_FILE), { force: true });
  for (const f of versionFiles(m)) {
    const tmp = join(outDir, `.${f}-${process.pid}.tmp`);
    linkOrCopy(join(dir, f), tmp);
    renameSync(tmp, join(outDir, f));
    // rename(2) does nothing when both names are links to one file (the flat files already point here).
    rmSync(tmp, { force: true });
  }
}

/**
 * Makes `version` (already in versions/) the newest: the flat files, then the order file, then
 * the versions beyond the newest `keep` are removed. Returns the new order and what went.
 */
export function selectVersion(
  outDir: string,
  version: string,
  m: ImageManifest,
  kept: readonly string[],
  keep: number,
): { order: string[]; removed: string[] } {
  const all = [...kept.filter((v) => v !== version), version];
  const order = all.slice(-Math.max(1, keep));
  const removed = all.slice(0, all.length - order.length);
  pointFlat(outDir, version, m);
  writeOrder(outDir, order);
  for (const v of removed) {
    const gone = join(outDir, VERSIONS_DIR, `.removed-${v}-${process.pid}`);
    renameSync(join(outDir, VERSIONS_DIR, v), gone);
    rmSync(gone, { recursive: true, force: true });
  }
  return { order, removed };
}

/** Work folders (and half-removed versions) that builds killed on the way left behind; a running build's are kept. */
export function removeStaleWork(outDir: string): string[] {
  const removed: string[] = [];
  const sweep = (dir: string, ...patterns: RegExp[]) => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      const pid = patterns.map((p) => p.exec(name)?.[1]).find(Boolean);
      if (!pid || Number(pid) === process.pid || running(Number(pid))) continue;
      rmSync(join(dir, name), { recursive: true, force: true });
      removed.push(name);
    }
  };
  sweep(outDir, WORK_DIR);
  sweep(outDir, /^\.[a-z.]+-(\d+)\.tmp$/);
  sweep(join(outDir, VERSIONS_DIR), /^\.(?:old|removed)-[0-9a-f]{12}-(\d+)$/, /^\.order-(\d+)\.tmp$/);
  return removed;
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
