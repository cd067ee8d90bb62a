/**
 * The native spawner (node-agent/native/spawn.c, built by `make build` into
 * dist/native/spawn.node, shipped in the RAM image beside the agent). posix_spawn instead of
 * Node's fork of the whole agent: a task costs the agent a fraction of the CPU of a fork, and
 * the child less too (no page tables to copy and drop); `make bench-dispatch` measures it.
 *
 * When the addon is missing (not built, no Node headers, an old kernel without pidfd_open,
 * another platform) or LC_SPAWN=0, `loadSpawnAddon` says why and the runner keeps Node's
 * child_process.
 */
import { loadAddon, type AddonLoad } from './native-addon.js';

/** The addon's surface (see spawn.c for the details). */
export interface SpawnAddon {
  /**
   * Starts `file` (looked up in env's PATH when it holds no slash) in its own session with
   * argv = args split on NUL (argc entries), envp = env split on NUL (envc entries), in cwd,
   * stdin from the bytes (or /dev/null), stdout and stderr into memfds. The work happens on a
   * threadpool thread; then, on this thread, onStart(null, pid, stdoutFd, stderrFd), or
   * onStart(errnoName) when it could not start; later onExit once (exitCode -1 when killed by
   * signal number `signal`). Throws at once only for arguments it cannot pass (NUL bytes).
   * With `cgroupFd` (an open cgroup v2 directory; `intoCgroup` builds only) the process starts
   * in that cgroup (clone3, CLONE_INTO_CGROUP); another descriptor fails the start ("EBADF (clone3)").
   */
  spawn(
    file: string,
    args: string,
    argc: number,
    env: string,
    envc: number,
    cwd: string,
    stdin: Buffer | null,
    onStart: (error: string | null, pid: number, stdoutFd: number, stderrFd: number) => void,
    onExit: (exitCode: number, signal: number, maxRssKiB: number) => void,
    cgroupFd?: number | null,
  ): void;
  /** Whether spawn takes a cgroupFd (clone3 is x86-64 only here); absent in an older build. */
  readonly intoCgroup?: boolean;
  /** Frees bytes of an output file that were already read (the file keeps its size). */
  discard(fd: number, offset: number, length: number): void;
}

export type SpawnAddonLoad = AddonLoad<SpawnAddon>;

/** The addon, if it can be used here (where it is looked for: native-addon.ts). */
export function loadSpawnAddon(opts: { env?: NodeJS.ProcessEnv; paths?: string[] } = {}): SpawnAddonLoad {
  return loadAddon<SpawnAddon>('spawn', (m) => typeof m.spawn === 'function' && typeof m.discard === 'function', opts);
}
