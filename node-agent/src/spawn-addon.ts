/**
 * The native spawner (node-agent/native/spawn.c, built by `make build` into
 * dist/native/spawn.node, shipped in the RAM image beside the agent). posix_spawn instead of
 * Node's fork of the whole agent: a task costs the agent a fraction of a millisecond of CPU
 * instead of ~1.3 ms, and the child another ~0.6 ms less (no page tables to copy and drop).
 *
 * When the addon is missing (not built, no Node headers, an old kernel without pidfd_open,
 * another platform) or LC_SPAWN=0, `loadSpawnAddon` says why and the runner keeps Node's
 * child_process.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The addon's surface (see spawn.c for the details). */
export interface SpawnAddon {
  /**
   * Starts `file` (looked up in env's PATH when it holds no slash) in its own session with
   * argv = args split on NUL (argc entries), envp = env split on NUL (envc entries), in cwd,
   * stdin from the bytes (or /dev/null), stdout and stderr into memfds. The work happens on a
   * threadpool thread; then, on this thread, onStart(null, pid, stdoutFd, stderrFd), or
   * onStart(errnoName) when it could not start; later onExit once (exitCode -1 when killed by
   * signal number `signal`). Throws at once only for arguments it cannot pass (NUL bytes).
   */
  spawn(
    file: string, args: string, argc: number, env: string, envc: number, cwd: string, stdin: Buffer | null,
    onStart: (error: string | null, pid: number, stdoutFd: number, stderrFd: number) => void,
    onExit: (exitCode: number, signal: number, maxRssKiB: number) => void,
  ): void;
  /** Frees bytes of an output file that were already read (the file keeps its size). */
  discard(fd: number, offset: number, length: number): void;
}

export type SpawnAddonLoad = { addon: SpawnAddon; path: string } | { addon: undefined; reason: string };

/**
 * The addon, if it can be used here. Looked for at LC_SPAWN_ADDON, beside the bundle
 * (/usr/lib/lilcluster/native in the image; dist/bin → dist/native on a host) and, from the
 * sources, in the tree's dist/native (`paths` replaces that list).
 */
export function loadSpawnAddon(opts: { env?: NodeJS.ProcessEnv; paths?: string[] } = {}): SpawnAddonLoad {
  const env = opts.env ?? process.env;
  if (env.LC_SPAWN === '0') return { addon: undefined, reason: 'LC_SPAWN=0' };
  if (process.platform !== 'linux') return { addon: undefined, reason: `not on Linux (${process.platform})` };
  const candidates = (
    opts.paths ?? [
      env.LC_SPAWN_ADDON,
      fileURLToPath(new URL('./native/spawn.node', import.meta.url)),
      fileURLToPath(new URL('../native/spawn.node', import.meta.url)),
      fileURLToPath(new URL('../../dist/native/spawn.node', import.meta.url)),
    ]
  ).filter((p): p is string => !!p);
  const path = candidates.find((p) => existsSync(p));
  if (!path) return { addon: undefined, reason: `spawn.node not built (make build; looked in ${candidates.join(', ')})` };
  try {
    const addon = createRequire(import.meta.url)(path) as SpawnAddon;
    if (typeof addon.spawn !== 'function' || typeof addon.discard !== 'function') return { addon: undefined, reason: `${path} is not the spawn addon` };
    return { addon, path };
  } catch (err) {
    return { addon: undefined, reason: `cannot load ${path}: ${(err as Error).message}` };
  }
}
