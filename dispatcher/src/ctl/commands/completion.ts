/** `dispatcherctl completion bash|zsh`: prints the completion script for the shell. */
import { Argument } from 'commander';
import type { CommandModule } from '../command.js';
import { bashCompletion, zshCompletion } from '../completion.js';

export const completionCommands: CommandModule = {
  register(program, ctl) {
    program
      .command('completion')
      .description('print a shell completion script (bash or zsh)')
      .addArgument(new Argument('<shell>', 'bash or zsh').choices(['bash', 'zsh']))
      .addHelpText(
        'after',
        '\nLoad it now:      source <(dispatcherctl completion bash)\nLoad it always:   dispatcherctl completion bash > /etc/bash_completion.d/dispatcherctl',
      )
      .action(
        ctl.action(async (ctx, shell: 'bash' | 'zsh') => {
          ctx.write('stdout', shell === 'bash' ? bashCompletion(program) : zshCompletion(program));
        }),
      );
  },
};
