/**
 * The `dispatcherctl` program: global options, every command module, help, and the mapping
 * of outcomes to exit codes. `runCtl` never calls process.exit, so tests run it in-process.
 */
import { Command, CommanderError, Option } from 'commander';
import { VERSION } from '../version.js';
import { Ctl, type CtlIo } from './command.js';
import { EXIT } from './errors.js';
import { commandModules } from './commands/index.js';
import { DEFAULT_DATA_DIR, DEFAULT_URL } from './client.js';

export function buildProgram(ctl: Ctl): Command {
  const program = new Command('dispatcherctl')
    .description('Control a lilcluster dispatcher: nodes, jobs, tasks, events')
    .version(VERSION, '-V, --version')
    .addOption(new Option('--url <url>', `dispatcher API URL (env LILCLUSTER_URL, default ${DEFAULT_URL})`))
    .addOption(new Option('--token <token>', 'admin token (env LILCLUSTER_TOKEN, else <data-dir>/admin.token)'))
    .addOption(
      new Option(
        '--data-dir <dir>',
        `the dispatcher's data dir, to read admin.token from (env LILCLUSTER_DATA_DIR, default ${DEFAULT_DATA_DIR})`,
      ),
    )
    .option('--json', "machine-readable output: the API's JSON on stdout")
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .showHelpAfterError('(add --help for usage)')
    .addHelpText(
      'after',
      `
Exit codes: 0 ok, 1 refused or failed, 2 bad usage, 3 dispatcher unreachable, 4 missing or
wrong admin token; \`exec\` exits with the command's own exit code.

Examples:
  dispatcherctl status
  dispatcherctl nodes --state ready
  dispatcherctl reboot node3
  dispatcherctl reboot --all --rolling --batch 2
  dispatcherctl exec node3 -- uname -a
  dispatcherctl events --follow
  source <(dispatcherctl completion bash)`,
    );
  program.exitOverride();
  program.configureOutput({ writeOut: (s) => ctl.io.stdout(s), writeErr: (s) => ctl.io.stderr(s) });

  for (const m of commandModules) m.register(program, ctl);

  // Every command inherits the output routing and exit behaviour.
  for (const c of allCommands(program)) {
    c.exitOverride();
    c.configureOutput({ writeOut: (s) => ctl.io.stdout(s), writeErr: (s) => ctl.io.stderr(s) });
    c.showHelpAfterError('(add --help for usage)');
    c.configureHelp({ showGlobalOptions: true });
  }
  return program;
}

export function allCommands(root: Command): Command[] {
  const out: Command[] = [];
  const walk = (c: Command) => {
    for (const sub of c.commands) {
      out.push(sub);
      walk(sub);
    }
  };
  walk(root);
  return out;
}

/** Runs one invocation; resolves with the exit code. */
export async function runCtl(argv: readonly string[], io: CtlIo): Promise<number> {
  const ctl = new Ctl(io);
  const program = buildProgram(ctl);
  if (argv.length === 0) {
    io.stdout(program.helpInformation());
    return EXIT.OK;
  }
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return ctl.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.OK;
      return EXIT.USAGE; // commander already printed what was wrong
    }
    return ctl.report(err, argv.includes('--json'));
  }
}
