/**
 * The Node runtime for the image: the binary running this build (process.execPath),
 * stripped into a temporary copy, plus exactly the shared libraries it loads and its
 * program interpreter, as the host's dynamic loader resolves them (ldd).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { elfInterpreter } from './elf.js';
import { ImageBuildError } from './errors.js';
import { run } from './tools.js';

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
  /** The stripped binary. */
  binary: Buffer;
  sourceSize: number;
  /** Files to place at the same absolute paths in the image: each library and the interpreter. */
  files: { path: string; data: Buffer }[];
}

export async function collectNodeRuntime(nodePath: string, workDir: string, strip: boolean): Promise<NodeRuntime> {
  let source: Buffer;
  try {
    source = readFileSync(nodePath);
  } catch (err) {
    throw new ImageBuildError('IMG_ERR_INPUT', `cannot read the Node binary ${nodePath}: ${(err as Error).message}`, { cause: err });
  }
  const ldd = parseLdd((await run('ldd', [nodePath], { hint: 'apt-get install libc-bin' })).stdout.toString('utf8'));
  if (ldd.notFound.length) throw new ImageBuildError('IMG_ERR_INPUT', `${nodePath} needs libraries the loader cannot find: ${ldd.notFound.join(', ')}`);

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
  const version = nodePath === process.execPath ? process.version : (await run(nodePath, ['--version'])).stdout.toString('utf8').trim();
  return {
    version,
    sourcePath: nodePath,
    binary,
    sourceSize: source.length,
    files: [...files].map(([path, data]) => ({ path, data })),
  };
}
