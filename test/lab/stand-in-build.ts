/**
 * Image builds that take seconds, for the image tests that are not about the kernel or Node:
 * a kernel stand-in (the builder copies vmlinuz as it is and reads modules' .modinfo only),
 * module stand-ins (ELF headers), an agent stand-in, and this Node unstripped at zstd -1.
 *
 *   writeStandIns(work);
 *   await buildImage(standInBuildOptions(work, out, { extraRootfs: tree }), progress);
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { BuildOptions } from '../../image/src/options.js';

export const STAND_IN_KVER = '6.1.0-0-lctest';

/** Writes the stand-ins into `work`: vmlinuz, modules/<kver>/… (`lcfake` and `modules`), node-agent.mjs. */
export function writeStandIns(work: string, modules: readonly string[] = []): void {
  writeFileSync(join(work, 'vmlinuz'), Buffer.alloc(4096, 0x4b));
  const modDir = join(work, 'modules', STAND_IN_KVER, 'kernel/drivers/net');
  mkdirSync(modDir, { recursive: true });
  const ko = Buffer.alloc(64);
  ko.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  for (const m of ['lcfake', ...modules]) writeFileSync(join(modDir, `${m}.ko`), ko);
  writeFileSync(join(work, 'node-agent.mjs'), 'console.log("agent stand-in");\n');
}

/** Build options for the stand-ins in `work` (see writeStandIns), into `outDir`. */
export function standInBuildOptions(work: string, outDir: string, extra: Partial<BuildOptions> = {}): BuildOptions {
  return {
    outDir,
    cacheDir: resolve('.cache/image'),
    kernelDeb: undefined,
    kernel: join(work, 'vmlinuz'),
    modulesDir: join(work, 'modules', STAND_IN_KVER),
    busyboxDeb: undefined,
    nodePath: process.execPath,
    stripNode: false,
    agentPath: join(work, 'node-agent.mjs'),
    spawnAddonPath: undefined,
    packageJson: resolve('package.json'),
    dispatcherKey: undefined,
    modules: ['lcfake'],
    firmware: false,
    zstdLevel: 1,
    zstdThreads: undefined,
    mtime: 0,
    force: false,
    imageDir: resolve('image'),
    ...extra,
  };
}
