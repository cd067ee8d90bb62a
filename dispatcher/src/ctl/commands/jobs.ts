/**
 * Job and task commands: submit, tasks, task, results, cancel. Owned by the dispatch engine;
 * written the way ctl/command.ts shows. (Placeholder until the engine's commands land.)
 */
import type { CommandModule } from '../command.js';

export const jobCommands: CommandModule = {
  register() {
    /* the dispatch engine's commands register here */
  },
};
