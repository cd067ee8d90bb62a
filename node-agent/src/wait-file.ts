/**
 * Waits for a file to appear and returns its text. The RAM image's /init starts the agent
 * before the network is up (Node's start-up then overlaps driver loading and DHCP) and writes
 * the dispatcher's URL to a file once it has a lease.
 */
import { readFileSync, watch } from 'node:fs';
import { dirname } from 'node:path';

/** Fallback poll, for file systems whose change events are not delivered. */
const POLL_MS = 500;

function readIfThere(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export function waitForFile(path: string, signal?: AbortSignal): Promise<string> {
  const now = readIfThere(path);
  if (now !== undefined) return Promise.resolve(now);
  return new Promise((resolve, reject) => {
    const done = (err: unknown, text?: string) => {
      watcher?.close();
      clearInterval(poll);
      signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(text!);
    };
    const check = () => {
      try {
        const text = readIfThere(path);
        if (text !== undefined) done(undefined, text);
      } catch (err) {
        done(err);
      }
    };
    const onAbort = () => done(signal!.reason ?? new Error('aborted'));
    let watcher: ReturnType<typeof watch> | undefined;
    try {
      watcher = watch(dirname(path), check);
    } catch {
      watcher = undefined; // the directory may not exist yet: the poll covers it
    }
    const poll = setInterval(check, POLL_MS);
    signal?.addEventListener('abort', onAbort, { once: true });
    check(); // the file may have appeared between the first read and the watch
  });
}
