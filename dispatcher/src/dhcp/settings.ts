/**
 * The full-mode address plan, derived from the configuration, the node network and the
 * cluster file's reservations: subnet, dynamic range, excluded addresses. Pure; errors
 * name the setting at fault.
 */
import type { DhcpConfig } from '../config.js';
import { DispatcherError } from '../errors.js';
import type { Mac } from '../nodes/mac.js';
import type { NodeRecord } from '../nodes/registry.js';
import type { PoolConfig } from './allocator.js';
import { broadcastOf, inSubnet, intToIp, ipToInt, subnetOf, type Subnet } from './ipv4.js';

/** Without --range: hosts .100 to .249 of the subnet (or its upper half, if it has fewer than 256 addresses). */
export const DEFAULT_RANGE_FIRST_HOST = 100;
export const DEFAULT_RANGE_LAST_HOST = 249;

export interface AddressPlan {
  pool: PoolConfig;
  subnetMask: string;
  /** Reservations skipped, with the reason (outside the subnet, duplicate...). */
  warnings: { mac: Mac; ip: string; reason: string }[];
}

export function planAddresses(dhcp: DhcpConfig, network: { address: string; netmask: string }, nodes: readonly Pick<NodeRecord, 'mac' | 'fixedIp'>[]): AddressPlan {
  const subnetMask = dhcp.netmask ?? network.netmask;
  const subnet = subnetOf(network.address, subnetMask);
  if (!subnet) throw new DispatcherError('DSP_ERR_CONFIG', `dhcp.netmask: ${subnetMask} is not a netmask`);
  const server = ipToInt(network.address)!;

  let rangeStart: number;
  let rangeEnd: number;
  if (dhcp.rangeStart !== undefined && dhcp.rangeEnd !== undefined) {
    rangeStart = ipToInt(dhcp.rangeStart)!;
    rangeEnd = ipToInt(dhcp.rangeEnd)!;
    const where = `the node network ${intToIp(subnet.network)}/${prefixLength(subnet)} (interface address ${network.address})`;
    if (!inSubnet(rangeStart, subnet) || !inSubnet(rangeEnd, subnet))
      throw new DispatcherError('DSP_ERR_CONFIG', `dhcp.range: ${dhcp.rangeStart}-${dhcp.rangeEnd} is not inside ${where}`, {
        hint: 'pick a range in the interface subnet, or set dhcp.netmask',
      });
    if (rangeEnd < rangeStart) throw new DispatcherError('DSP_ERR_CONFIG', `dhcp.range: ${dhcp.rangeStart} comes after ${dhcp.rangeEnd}`);
  } else {
    ({ rangeStart, rangeEnd } = defaultRange(subnet));
    if (rangeEnd < rangeStart)
      throw new DispatcherError('DSP_ERR_CONFIG', `dhcp.range: the node network ${network.address}/${prefixLength(subnet)} has no room for a range`, {
        hint: 'give the interface a bigger subnet (a /24 is usual) or pass --range',
      });
  }

  const excluded = new Set<number>([server]);
  if (dhcp.router) excluded.add(ipToInt(dhcp.router)!);

  const byIp = new Map<number, Mac>();
  const byMac = new Map<Mac, number>();
  const warnings: AddressPlan['warnings'] = [];
  for (const n of nodes) {
    if (!n.fixedIp) continue;
    const ip = ipToInt(n.fixedIp);
    if (ip === undefined || !inSubnet(ip, subnet) || ip === subnet.network || ip === broadcastOf(subnet)) {
      warnings.push({ mac: n.mac, ip: n.fixedIp, reason: 'not a host address of the node network' });
      continue;
    }
    if (excluded.has(ip)) {
      warnings.push({ mac: n.mac, ip: n.fixedIp, reason: "is the dispatcher's or the router's address" });
      continue;
    }
    const other = byIp.get(ip);
    if (other) {
      warnings.push({ mac: n.mac, ip: n.fixedIp, reason: `already reserved for ${other}` });
      continue;
    }
    byIp.set(ip, n.mac);
    byMac.set(n.mac, ip);
  }

  return {
    subnetMask,
    warnings,
    pool: {
      subnet,
      rangeStart,
      rangeEnd,
      excluded,
      reservationOf: (mac) => byMac.get(mac),
      reservedFor: (ip) => byIp.get(ip),
    },
  };
}

export function defaultRange(subnet: Subnet): { rangeStart: number; rangeEnd: number } {
  const size = broadcastOf(subnet) - subnet.network + 1;
  if (size >= 256) return { rangeStart: subnet.network + DEFAULT_RANGE_FIRST_HOST, rangeEnd: subnet.network + DEFAULT_RANGE_LAST_HOST };
  return { rangeStart: subnet.network + Math.floor(size / 2), rangeEnd: broadcastOf(subnet) - 1 };
}

function prefixLength(s: Subnet): number {
  let n = 0;
  for (let m = s.mask; m & 0x80000000; m = (m << 1) >>> 0) n++;
  return n;
}
