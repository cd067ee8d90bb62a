/** Where the built bundles are, from this tree's root. */
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
export const CTL_BIN = join(ROOT, 'dist/bin/dispatcherctl.mjs');
export const AGENT_BIN = join(ROOT, 'dist/bin/node-agent.mjs');
export const DISPATCHER_BIN = join(ROOT, 'dist/bin/dispatcher.mjs');
