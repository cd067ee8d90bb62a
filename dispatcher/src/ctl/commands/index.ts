/**
 * Every command module of `dispatcherctl`, in the order `--help` lists them. To add commands,
 * write a module (see ../command.ts) and add it here.
 */
import type { CommandModule } from '../command.js';
import { statusCommands } from './status.js';
import { nodeCommands } from './nodes.js';
import { controlCommands } from './control.js';
import { jobCommands } from './jobs.js';
import { eventCommands } from './events.js';
import { completionCommands } from './completion.js';
import { enrollmentCommands } from './enrollment.js';
import { imageCommands } from './images.js';
import { powerCommands } from './power.js';
import { consoleCommands } from './console.js';
import { bootServerCommands } from './boot-servers.js';

export const commandModules: readonly CommandModule[] = [
  statusCommands,
  nodeCommands,
  controlCommands,
  powerCommands,
  imageCommands,
  jobCommands,
  eventCommands,
  consoleCommands,
  enrollmentCommands,
  bootServerCommands,
  completionCommands,
];
