/** Where the built bundles are, from this tree's root (the dispatcher's: test/lab/dispatcher.ts). */
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../../..');
export const CTL_BIN = join(ROOT, 'dist/bin/dispatcherctl.mjs');
export const AGENT_BIN = join(ROOT, 'dist/bin/node-agent.mjs');
