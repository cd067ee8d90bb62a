/** The node network as the dispatcher sees it: its interface, index, address and netmask. */
import { networkInterfaces } from 'node:os';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { DispatcherError } from '../errors.js';

export interface NodeNetwork {
  /** Interface name; undefined when the dispatcher serves no DHCP (proxy/off without --interface). */
  name: string | undefined;
  ifindex: number | undefined;
  /** The dispatcher's IPv4 address on the node network, as nodes reach it. */
  address: string;
  netmask: string;
  mac: string | undefined;
}

export function resolveNodeNetwork(iface: string | undefined, advertise: string | undefined): NodeNetwork {
  if (!iface) {
    const address = advertise ?? firstNonInternalIPv4() ?? '127.0.0.1';
    return { name: undefined, ifindex: undefined, address, netmask: '255.255.255.0', mac: undefined };
  }
  const info = readInterface(iface);
  if (!info) throw new DispatcherError('DSP_ERR_CONFIG', `no network interface named ${iface}`, { hint: 'list them with `ip -br addr`' });
  const v4 = info.ipv4[0];
  if (!v4 && !advertise)
    throw new DispatcherError('DSP_ERR_CONFIG', `interface ${iface} has no IPv4 address`, {
      hint: `give it one (ip addr add 10.42.0.1/24 dev ${iface}) or pass --advertise-address`,
    });
  return {
    name: iface,
    ifindex: info.ifindex,
    address: advertise ?? v4!.address,
    netmask: v4 ? prefixToNetmask(v4.prefixLen) : '255.255.255.0',
    mac: info.mac,
  };
}

interface InterfaceInfo {
  ifindex: number;
  mac: string | undefined;
  ipv4: { address: string; prefixLen: number }[];
}

/**
 * An interface's index, MAC and IPv4 addresses, whether or not it is running: Node's
 * os.networkInterfaces() leaves out interfaces without carrier (a bridge whose only port is a
 * tap no VM has opened yet), so read iproute2's JSON instead, falling back to Node's list.
 */
function readInterface(iface: string): InterfaceInfo | undefined {
  try {
    const out = execFileSync('ip', ['-j', 'addr', 'show', 'dev', iface], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const [link] = JSON.parse(out) as {
      ifindex: number;
      address?: string;
      addr_info?: { family: string; local: string; prefixlen: number }[];
    }[];
    if (!link) return undefined;
    const ipv4 = (link.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => ({ address: a.local, prefixLen: a.prefixlen }));
    return { ifindex: link.ifindex, mac: link.address, ipv4 };
  } catch {
    const addrs = networkInterfaces()[iface];
    if (!addrs) return undefined;
    const ipv4 = addrs.filter((a) => a.family === 'IPv4').map((a) => ({ address: a.address, prefixLen: netmaskToPrefix(a.netmask) }));
    return { ifindex: ifindexOf(iface), mac: addrs[0]?.mac, ipv4 };
  }
}

export function prefixToNetmask(prefixLen: number): string {
  const bits = prefixLen <= 0 ? 0 : (0xffffffff << (32 - Math.min(prefixLen, 32))) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 0xff).join('.');
}

function netmaskToPrefix(mask: string): number {
  return mask.split('.').reduce(
    (n, o) =>
      n +
      (Number(o) >>> 0)
        .toString(2)
        .split('')
        .filter((b) => b === '1').length,
    0,
  );
}

export function ifindexOf(iface: string): number {
  try {
    return Number(readFileSync(`/sys/class/net/${iface}/ifindex`, 'utf8').trim());
  } catch (err) {
    throw new DispatcherError('DSP_ERR_CONFIG', `cannot read the index of interface ${iface}`, { cause: err });
  }
}

function firstNonInternalIPv4(): string | undefined {
  for (const list of Object.values(networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}
