/**
 * A task's environment: the agent's own (PATH, LD_LIBRARY_PATH, locale... as the machine set
 * them up) minus the agent's settings — LC_TOKEN and LC_ENROLL_TOKEN above all, which tasks
 * must not see — with the task's variables set on top (HOME, LC_TASK_ID... then the task's
 * own env, which may override any of them).
 *
 * The inherited part is the same for every task, so its `K=V` block for the native spawner
 * is built once; a task only adds its own entries (the common case), or, when it overrides
 * an inherited variable (PATH, say), the block is filtered for that task.
 */

/** The agent's settings (config.ts): never passed on to tasks. */
export const AGENT_ONLY_ENV: ReadonlySet<string> = new Set([
  'LC_TOKEN',
  'LC_ENROLL_TOKEN',
  'LC_DISPATCHER',
  'LC_PUBKEY_FILE',
  'LC_INSECURE',
  'LC_MAC',
  'LC_SLOTS',
  'LC_TASK_ROOT',
  'LC_TASK_PATH',
  'LC_TASK_ROOT_ERROR',
  'NODE_OPTIONS',
]);
/** Set for every task by the runner: left out of the shared block. */
export const PER_TASK_ENV: readonly string[] = ['HOME', 'LC_TASK_ID', 'LC_JOB_ID', 'LC_ATTEMPT', 'LC_WORK_DIR', 'LC_OUT_DIR'];
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** `count` entries `K=V` joined by NUL bytes (what spawn.c splits back into an envp). */
export interface EnvBlock {
  text: string;
  count: number;
}

export class InheritedEnv {
  readonly vars: Readonly<Record<string, string>>;
  #shared: EnvBlock | undefined;

  constructor(env: NodeJS.ProcessEnv = process.env) {
    const vars: Record<string, string> = {};
    for (const [k, v] of Object.entries(env)) if (!AGENT_ONLY_ENV.has(k) && v !== undefined) vars[k] = v;
    vars.PATH ||= DEFAULT_PATH;
    this.vars = vars;
  }

  /** The environment as an object (child_process). */
  object(set: Readonly<Record<string, string>>): NodeJS.ProcessEnv {
    return { ...this.vars, ...set };
  }

  /** The environment as a NUL-joined block (the native spawner). */
  block(set: Readonly<Record<string, string>>): EnvBlock {
    this.#shared ??= joinEntries(Object.entries(this.vars).filter(([k]) => !PER_TASK_ENV.includes(k)));
    const own = Object.entries(set);
    const overrides = own.some(([k]) => k in this.vars && !PER_TASK_ENV.includes(k));
    const base = overrides ? joinEntries(Object.entries(this.vars).filter(([k]) => !(k in set))) : this.#shared;
    const extra = joinEntries(own);
    if (!extra.count) return base;
    if (!base.count) return extra;
    return { text: `${base.text}\0${extra.text}`, count: base.count + extra.count };
  }
}

function joinEntries(entries: [string, string][]): EnvBlock {
  let text = '';
  for (let i = 0; i < entries.length; i++) text += i ? `\0${entries[i]![0]}=${entries[i]![1]}` : `${entries[i]![0]}=${entries[i]![1]}`;
  return { text, count: entries.length };
}
