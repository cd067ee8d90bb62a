/**
 * `dispatcherctl`: the operator's CLI. Talks to the dispatcher's API on :8080 (see
 * program.ts for the commands, command.ts for how to add one).
 */
import { runCtl } from './program.js';

const abort = new AbortController();
let interrupted = false;
process.on('SIGINT', () => {
  // First Ctrl-C: stop streams cleanly (events --follow, exec); second: leave at once.
  if (interrupted) process.exit(130);
  interrupted = true;
  abort.abort();
});
// `dispatcherctl events | head` closes stdout early: that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
});

const code = await runCtl(process.argv.slice(2), {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  env: process.env,
  signal: abort.signal,
});
process.exitCode = interrupted && code === 0 ? 130 : code;
