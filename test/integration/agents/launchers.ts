/** What the runner suites share: both ways of starting tasks, and a task assignment builder. */
import type { TaskAssignment } from '../../../dispatcher/src/protocol/messages.js';
import { ChildProcessLauncher, type Launcher } from '../../../node-agent/src/launcher.js';
import { NativeLauncher } from '../../../node-agent/src/native-launcher.js';
import { loadSpawnAddon } from '../../../node-agent/src/spawn-addon.js';

export function nativeLauncher(): Launcher {
  const loaded = loadSpawnAddon({ env: {} });
  if (!loaded.addon) throw new Error(`the spawn addon is needed for this suite (make build): ${loaded.reason}`);
  return new NativeLauncher(loaded.addon);
}

/** Both ways of starting tasks pass the same suites. */
export const LAUNCHERS: [string, () => Launcher][] = [
  ['native', nativeLauncher],
  ['child_process', () => new ChildProcessLauncher()],
];

let nextId = 1;
export function task(command: string | string[], over: Partial<TaskAssignment> = {}): TaskAssignment {
  return {
    taskId: nextId++,
    jobId: 1,
    attempt: 1,
    command,
    env: {},
    cwd: null,
    stdinB64: null,
    inputsPath: null,
    inputsSha256: null,
    timeoutMs: 10_000,
    ...over,
  };
}
