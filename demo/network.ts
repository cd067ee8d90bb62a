/**
 * The demo's private network, in the host's own namespace so the dispatcher is reachable
 * from the host without any forwarding rule:
 *
 *   lcdemo0 (bridge, 10.77.0.1/24) ── lcdemo-n1 (tap) ── QEMU node1
 *                                  ── lcdemo-n2 (tap) ── QEMU node2 ...
 *
 * Nothing else is attached to the bridge (no physical NIC, no route out, no NAT): the
 * dispatcher's DHCP answers there only, and the machines see nobody but the dispatcher.
 * Every interface is named `lcdemo*`; `removeNetwork` deletes whatever matches.
 */
import { execFile } from 'node:child_process';
import { BRIDGE, DISPATCHER_IP, IFACE_PREFIX, type DemoNode } from './settings.js';

function ip(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ip ${args.join(' ')}: ${String(stderr).trim() || err.message}`, { cause: err }));
      else resolve(String(stdout));
    });
  });
}

/** Names of the host's interfaces that belong to the demo. */
export async function demoInterfaces(): Promise<string[]> {
  const out = await ip(['-o', 'link', 'show']);
  return out
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1])
    .filter((n): n is string => n?.startsWith(IFACE_PREFIX) === true);
}

export async function removeNetwork(): Promise<string[]> {
  const names = await demoInterfaces();
  // Taps first, then the bridge (deleting the bridge alone would leave the taps).
  names.sort((a, b) => (a === BRIDGE ? 1 : b === BRIDGE ? -1 : a.localeCompare(b)));
  for (const n of names) await ip(['link', 'del', n]).catch(() => undefined);
  return names;
}

/**
 * The bridge with the dispatcher's address. Create it before the dispatcher starts and the
 * taps after: a bridge without ports has carrier, one whose only ports are taps no QEMU has
 * opened yet has none, and the dispatcher (libuv's interface list) does not see an interface
 * without carrier.
 */
export async function createBridge(): Promise<void> {
  // forward_delay 0 and no STP: ports forward at once, so the firmware's first DHCP DISCOVER is not lost.
  await ip(['link', 'add', 'name', BRIDGE, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0']);
  await ip(['addr', 'add', `${DISPATCHER_IP}/24`, 'dev', BRIDGE]);
  await ip(['link', 'set', BRIDGE, 'up']);
}

/** One tap per machine on the bridge, for QEMU's `-netdev tap,ifname=...`. */
export async function createTaps(nodes: readonly DemoNode[]): Promise<void> {
  for (const n of nodes) {
    await ip(['tuntap', 'add', 'dev', n.tap, 'mode', 'tap']);
    await ip(['link', 'set', n.tap, 'master', BRIDGE]);
    await ip(['link', 'set', n.tap, 'up']);
  }
}
