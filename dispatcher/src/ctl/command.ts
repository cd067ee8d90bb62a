/**
 * How a `dispatcherctl` command is written. Each area adds a command module
 * (ctl/commands/<area>.ts) and lists it in ctl/commands/index.ts:
 *
 *   export const jobCommands: CommandModule = {
 *     register(program, ctl) {
 *       program
 *         .command('task')
 *         .description('show one task: state, attempts, node, result')
 *         .argument('<id>', 'task id')
 *         .action(ctl.action(async (ctx, id: string) => {
 *           const task = await ctx.api.get<TaskView>(`/api/v1/tasks/${encodeURIComponent(id)}`);
 *           ctx.print(task, (t) => keyValues([['state', t.state], ['node', t.node]]));
 *         }));
 *     },
 *   };
 *
 * `ctl.action` gives the handler a context (API client, `--json`, output) built from the
 * global options, turns thrown errors into a message + hint on stderr and an exit code, and
 * uses the handler's return value (a number) as the exit code when it has one.
 * `--json`, `--url`, `--token` and `--data-dir` are global: every command has them.
 */
import type { Command } from 'commander';
import { ApiClient, resolveTarget } from './client.js';
import { CtlError, EXIT } from './errors.js';

/** Where the CLI writes and what it reads from its environment (a process, or a test). */
export interface CtlIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: Record<string, string | undefined>;
  /** Aborted on Ctrl-C: long-running commands (events --follow, exec) stop cleanly. */
  signal?: AbortSignal;
  now?: () => number;
  fetch?: typeof fetch;
}

export interface GlobalOptions {
  url?: string;
  token?: string;
  dataDir?: string;
  json?: boolean;
}

export interface CtlContext {
  api: ApiClient;
  /** `--json` was given: print the API's JSON, nothing else, on stdout. */
  json: boolean;
  /** The command's own options merged with the global ones. */
  opts: Record<string, unknown>;
  out(text: string): void;
  err(text: string): void;
  /** Writes as is (streamed command output). */
  write(stream: 'stdout' | 'stderr', text: string): void;
  /** Prints `value` as JSON with `--json`, else what `human` renders. */
  print<T>(value: T, human: (v: T) => string): void;
  signal: AbortSignal | undefined;
  now(): number;
}

export interface CommandModule {
  /** Adds this module's commands (with their options, arguments and help) to the program. */
  register(program: Command, ctl: Ctl): void;
}

export type Handler<A extends unknown[]> = (ctx: CtlContext, ...args: A) => Promise<number | void> | number | void;

export class Ctl {
  /** The exit code of the command that ran. */
  exitCode: number = EXIT.OK;

  constructor(readonly io: CtlIo) {}

  /**
   * Wraps a command handler for commander's `.action()`. The handler gets the context, then
   * commander's arguments (positional arguments, then the command's options object).
   */
  action<A extends unknown[]>(handler: Handler<A>): (...args: unknown[]) => Promise<void> {
    return async (...args: unknown[]) => {
      const command = args.at(-1) as Command;
      const handlerArgs = args.slice(0, -1) as A;
      const opts = command.optsWithGlobals() as GlobalOptions & Record<string, unknown>;
      const json = opts.json === true;
      try {
        const ctx = this.context(opts);
        const code = await handler(ctx, ...handlerArgs);
        this.exitCode = typeof code === 'number' ? code : EXIT.OK;
      } catch (err) {
        this.exitCode = this.report(err, json);
      }
    };
  }

  /** Builds the context a handler sees (exported for commands that nest handlers). */
  context(opts: GlobalOptions & Record<string, unknown>): CtlContext {
    const io = this.io;
    const target = resolveTarget({ url: opts.url, token: opts.token, dataDir: opts.dataDir }, io.env);
    const json = opts.json === true;
    const out = (t: string) => io.stdout(t.endsWith('\n') || t === '' ? t : t + '\n');
    return {
      api: new ApiClient(target, io.fetch ?? fetch),
      json,
      opts,
      out,
      err: (t) => io.stderr(t.endsWith('\n') ? t : t + '\n'),
      write: (stream, t) => (stream === 'stdout' ? io.stdout(t) : io.stderr(t)),
      print: (value, human) => out(json ? JSON.stringify(value, null, 2) : human(value)),
      signal: io.signal,
      now: io.now ?? Date.now,
    };
  }

  /** Prints an error (JSON on stdout too with --json) and returns its exit code. */
  report(err: unknown, json: boolean): number {
    const e = err instanceof CtlError ? err : new CtlError('CTL_INTERNAL', (err as Error)?.message ?? String(err), { cause: err });
    if (json) this.io.stdout(JSON.stringify(e.toJSON(), null, 2) + '\n');
    this.io.stderr(`dispatcherctl: ${e.message}\n${e.hint ? `  hint: ${e.hint}\n` : ''}`);
    if (!(err instanceof CtlError) && this.io.env.LILCLUSTER_DEBUG) this.io.stderr(`${(err as Error)?.stack ?? ''}\n`);
    return e.exitCode;
  }
}
