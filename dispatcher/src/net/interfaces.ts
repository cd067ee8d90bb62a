/** The node network as the dispatcher sees it: its interface, index, address and netmask. */
import { networkInterfaces } from 'node:os';
import { readFileSync } from 'node:fs';
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
  const addrs = networkInterfaces()[iface];
  if (!addrs) throw new DispatcherError('DSP_ERR_CONFIG', `no network interface named ${iface}`, { hint: 'list them with `ip -br addr`' });
  const v4 = addrs.find((a) => a.family === 'IPv4');
  if (!v4 && !advertise)
    throw new DispatcherError('DSP_ERR_CONFIG', `interface ${iface} has no IPv4 address`, {
      hint: `give it one (ip addr add 10.42.0.1/24 dev ${iface}) or pass --advertise-address`,
    });
  return {
    name: iface,
    ifindex: ifindexOf(iface),
    address: advertise ?? v4!.address,
    netmask: v4?.netmask ?? '255.255.255.0',
    mac: v4?.mac ?? addrs[0]?.mac,
  };
}

export function ifindexOf(iface: string): number {
  try {
    return Number(readFileSync(`/sys/class/net/${iface}/ifindex`, 'utf8').trim());
  } catch (err) {
    throw new DispatcherError('DSP_ERR_CONFIG', `cannot read the index of interface ${iface}`, { cause: err });
  }
}

function firstNonInternalIPv4(): string | undefined {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return undefined;
}
