/**
 * The task root: when the node's image carries a root file system (`make image FROM=…` or
 * `PACKAGES=…`), /init mounts it (image/rootfs/init) and passes LC_TASK_ROOT and LC_TASK_PATH;
 * every task and every operator `exec` then runs inside that root, while the agent keeps running
 * from the initramfs (its Node and libraries never meet the image's libc).
 *
 * How: chroot (busybox's applet on the node) enters the root and execs the root's own /bin/sh,
 * which changes to the task's work dir — /tmp is bind-mounted at the same path inside — and
 * execs the task. One pid all along, so the process group, the signals, the exit code and
 * wait4's figures are the task's own. posix_spawn cannot chroot, nor can child_process: the
 * wrapping is a pure function of (command, root), shared by both launchers.
 *
 * Not a security boundary: tasks run as root, and root can leave a chroot. It is the image's
 * software that tasks get, not isolation.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_PATH, InheritedEnv } from './task-env.js';

export interface TaskRoot {
  /** The root directory (LC_TASK_ROOT). */
  dir: string;
  /** PATH inside the root (LC_TASK_PATH). */
  path: string;
  /** The chroot program and its leading arguments, outside the root. */
  chroot: readonly string[];
  /** "image ml version 0123abcd…", for the log and refusals. */
  label: string;
  /** The image's health check (LC_ROOT_HEALTH, from `make image HEALTH_CHECK=`): a /bin/sh command, or ''. */
  health: string;
}

export type TaskRootConfig = { kind: 'none' } | { kind: 'root'; root: TaskRoot } | { kind: 'refused'; reason: string };

export interface Command {
  file: string;
  args: string[];
  cwd: string;
}

/** Run by the root's /bin/sh: $1 the work dir, then the task's file and arguments. */
export const ENTER_SCRIPT = 'cd -- "$1" && shift && exec "$@"';
/** $0 of that shell: its error messages start with it. */
export const ENTER_NAME = 'lc-task';
/** How long the image's health check may take (it may import a large library on a slow node). */
export const HEALTH_TIMEOUT_MS = 300_000;
/** The agent's libraries, not the root's: never passed into the root. */
const HOST_ONLY_ENV = ['LD_LIBRARY_PATH', 'LD_PRELOAD'];

/** busybox's applet (the node's initramfs), else coreutils' chroot on a host. */
export function defaultChroot(exists: (p: string) => boolean = existsSync): readonly string[] {
  return exists('/bin/busybox') ? ['/bin/busybox', 'chroot'] : ['/usr/sbin/chroot'];
}

/**
 * LC_TASK_ROOT, LC_TASK_PATH, LC_TASK_ROOT_ERROR (set by /init when the image's root could not
 * be mounted), LC_ROOT_IMAGE and LC_ROOT_VERSION (for the log), LC_ROOT_HEALTH (the image's
 * health check). Empty values count as unset:
 * /init always passes them all.
 */
export function parseTaskRootEnv(env: Record<string, string | undefined>, chroot: readonly string[]): TaskRootConfig {
  const image = env.LC_ROOT_IMAGE || '';
  const label = image ? `image ${image}${env.LC_ROOT_VERSION ? ` version ${env.LC_ROOT_VERSION}` : ''}` : 'the root image';
  if (env.LC_TASK_ROOT_ERROR) return { kind: 'refused', reason: `${label} is not usable on this node: ${env.LC_TASK_ROOT_ERROR}` };
  const dir = env.LC_TASK_ROOT;
  if (!dir) return { kind: 'none' };
  if (!dir.startsWith('/') || dir.replace(/\/+$/, '') === '')
    return { kind: 'refused', reason: `LC_TASK_ROOT="${dir}": the task root must be an absolute path other than /` };
  const root = { dir: dir.replace(/\/+$/, ''), path: env.LC_TASK_PATH || DEFAULT_PATH, chroot, label, health: env.LC_ROOT_HEALTH || '' };
  return { kind: 'root', root };
}

/**
 * The command that runs `cmd` inside the root: `chroot ROOT /bin/sh -c ENTER_SCRIPT lc-task
 * CWD FILE ARGS...`. Every argument stays one argv entry (no shell parses them). A file
 * starting with '-' is refused: some shells' `exec` would read it as an option.
 */
export function enterRoot(cmd: Command, root: TaskRoot): Command | { refused: string } {
  if (cmd.file.startsWith('-'))
    return { refused: `command "${cmd.file}": a command name starting with "-" cannot be run inside the task root` };
  return {
    file: root.chroot[0]!,
    args: [...root.chroot.slice(1), root.dir, '/bin/sh', '-c', ENTER_SCRIPT, ENTER_NAME, cmd.cwd, cmd.file, ...cmd.args],
    // The work dir outside: the same directory (bound at the same path); chroot then leaves it for /.
    cwd: cmd.cwd,
  };
}

/** The agent's environment as tasks inside the root inherit it: the root's PATH, not the agent's libraries. */
export function rootEnv(env: Record<string, string | undefined>, root: TaskRoot): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = { ...env, PATH: root.path };
  for (const k of HOST_ONLY_ENV) delete out[k];
  return out;
}

/**
 * Why tasks cannot run in `root`, or null: its /bin/sh must start there (run once, the way
 * tasks start: a missing shell, a broken loader or a foreign architecture all show), and the
 * tasks dir must be the same directory at the same path inside.
 */
export function checkTaskRoot(root: TaskRoot, tasksDir: string): string | null {
  const why = (s: string) => `task root ${root.dir} (${root.label}): ${s}; tasks are refused`;
  if (!statSync(root.dir, { throwIfNoEntry: false })?.isDirectory()) return why('not a directory');
  const probe = enterRoot({ file: '/bin/sh', args: ['-c', 'exit 0'], cwd: '/' }, root) as Command;
  const r = spawnSync(probe.file, probe.args, {
    cwd: probe.cwd,
    env: new InheritedEnv(rootEnv(process.env, root)).object({}),
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 10_000,
    encoding: 'utf8',
  });
  if (r.error) return why(`cannot run ${probe.file}: ${(r.error as NodeJS.ErrnoException).code ?? r.error.message}`);
  if (r.status !== 0) {
    const said = r.stderr.trim().split('\n').pop()?.trim();
    return why(`its /bin/sh does not run (${said || (r.signal ? `killed by ${r.signal}` : `exit status ${r.status}`)})`);
  }
  const outside = statSync(tasksDir, { throwIfNoEntry: false });
  const inside = statSync(join(root.dir, tasksDir), { throwIfNoEntry: false });
  if (!outside || !inside || outside.dev !== inside.dev || outside.ino !== inside.ino)
    return why(`the work dir ${tasksDir} is not at the same path inside it (bind-mount its file system there)`);
  return root.health ? checkHealth(root, why) : null;
}

/** The image's own health check, run once inside the root as tasks run: an image that fails it runs no task. */
function checkHealth(root: TaskRoot, why: (s: string) => string): string | null {
  const cmd = enterRoot({ file: '/bin/sh', args: ['-c', root.health], cwd: '/' }, root) as Command;
  const r = spawnSync(cmd.file, cmd.args, {
    cwd: cmd.cwd,
    env: new InheritedEnv(rootEnv(process.env, root)).object({}),
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: HEALTH_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    encoding: 'utf8',
  });
  if (r.status === 0) return null;
  const said = r.stderr?.trim().split('\n').pop()?.trim();
  const how = r.error
    ? (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT'
      ? `did not finish in ${HEALTH_TIMEOUT_MS / 1000} s`
      : `could not start (${r.error.message})`
    : r.signal
      ? `was killed by ${r.signal}`
      : `exited with status ${r.status}`;
  return why(`its health check \`${root.health}\` ${how}${said ? `: ${said}` : ''} (rebuild the image, or fix HEALTH_CHECK=)`);
}

/** parseTaskRootEnv, then checkTaskRoot: what the agent runs tasks with. */
export function loadTaskRoot(env: Record<string, string | undefined>, tasksDir: string, chroot = defaultChroot()): TaskRootConfig {
  const c = parseTaskRootEnv(env, chroot);
  if (c.kind !== 'root') return c;
  const why = checkTaskRoot(c.root, tasksDir);
  return why ? { kind: 'refused', reason: why } : c;
}

/** The agent's start line about it. */
export function describeTaskRoot(c: TaskRootConfig): string {
  if (c.kind === 'none') return "tasks run in the agent's own file system (no task root)";
  if (c.kind === 'refused') return `!!! ${c.reason}`;
  const health = c.root.health ? `, health check \`${c.root.health}\` passed` : '';
  return `tasks run inside ${c.root.label} at ${c.root.dir} (PATH=${c.root.path})${health}`;
}
