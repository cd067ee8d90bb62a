/**
 * Where execvp would find a command: the agent checks before starting a task through a
 * wrapper (a cgroup's entering shell), so that a missing command is still a start failure
 * ("cannot start X"), not the wrapper's exit 127 that looks like the task's own failure.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';

/** The path `file` resolves to on `path` (a colon list; relative to `cwd` when `file` has a slash), or null. */
export function findExecutable(file: string, path: string, cwd: string): string | null {
  if (file === '') return null;
  const candidates = file.includes('/')
    ? [isAbsolute(file) ? file : join(cwd, file)]
    : path.split(':').map((dir) => join(dir === '' ? cwd : isAbsolute(dir) ? dir : join(cwd, dir), file));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      if (statSync(c).isFile()) return c;
    } catch {
      // not here: the next directory
    }
  }
  return null;
}
