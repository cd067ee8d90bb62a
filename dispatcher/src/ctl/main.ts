/**
 * `dispatcherctl`: the operator's CLI. Talks to the dispatcher's API on :8080.
 * (Commands arrive with the dispatch and operator issues.)
 */
import { Command } from 'commander';
import { VERSION } from '../version.js';

const program = new Command('dispatcherctl')
  .description('Control a lilcluster dispatcher: nodes, tasks, results, events')
  .version(VERSION)
  .option('--url <url>', 'dispatcher API URL (env LILCLUSTER_URL, default http://127.0.0.1:8080)')
  .option('--token <token>', 'admin token (env LILCLUSTER_TOKEN, or <data-dir>/admin.token)')
  .option('--json', 'machine-readable output');

program.parse();
