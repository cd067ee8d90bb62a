/**
 * `node-agent`: runs on every compute node (inside the RAM image, or on any Linux host).
 * Minimal for now: prints its version and addresses, then keeps trying to reach the
 * dispatcher with back-off. The task protocol arrives with the dispatch issue.
 *
 * Settings: flags, else environment, else the kernel command line (lc.dispatcher=, lc.token=).
 */
import { networkInterfaces } from 'node:os';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

declare const __LILCLUSTER_VERSION__: string | undefined;
const VERSION = typeof __LILCLUSTER_VERSION__ === 'string' ? __LILCLUSTER_VERSION__ : '0.1.0-dev';

function kernelArg(key: string): string | undefined {
  try {
    for (const part of readFileSync('/proc/cmdline', 'utf8').trim().split(/\s+/)) if (part.startsWith(`${key}=`)) return part.slice(key.length + 1);
  } catch {
    /* not Linux, or /proc not mounted */
  }
  return undefined;
}

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const dispatcher = flag('dispatcher') ?? process.env.LC_DISPATCHER ?? kernelArg('lc.dispatcher');
const token = flag('token') ?? process.env.LC_TOKEN ?? kernelArg('lc.token');

const addrs = Object.entries(networkInterfaces()).flatMap(([name, list]) =>
  (list ?? []).filter((a) => !a.internal).map((a) => `${name} ${a.address} ${a.mac}`),
);
console.log(`node-agent ${VERSION} on node ${process.version}`);
console.log(`addresses: ${addrs.length ? addrs.join(', ') : '(none)'}`);

if (!dispatcher) {
  console.error('node-agent: no dispatcher URL (pass --dispatcher URL, set LC_DISPATCHER, or boot with lc.dispatcher=URL)');
  process.exit(2);
}

let delay = 500;
for (;;) {
  try {
    const url = new URL('/api/v1/agent/hello', dispatcher);
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ version: VERSION, token: token ?? null, addresses: addrs }),
      signal: AbortSignal.timeout(5000),
    });
    console.log(`dispatcher ${dispatcher} answered ${res.status}`);
    delay = 5000;
  } catch (err) {
    console.log(`dispatcher ${dispatcher} unreachable (${(err as Error).message}); retrying in ${Math.round(delay / 1000)} s`);
    delay = Math.min(delay * 2, 30_000);
  }
  await sleep(delay + Math.random() * 250);
}
