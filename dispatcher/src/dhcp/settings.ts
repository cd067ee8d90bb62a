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
  reservations: Reservations;
}

/** Where reservations come from: the node registry (cluster file `ip:`, or PATCH /api/v1/nodes). */
export interface ReservationSource {
  list(): readonly Pick<NodeRecord, 'mac' | 'fixedIp'>[];
  now(): number;
}

export type ReservationWarning = { mac: Mac; ip: string; reason: string };

export function planAddresses(dhcp: DhcpConfig, network: { address: string; netmask: string }, source: ReservationSource): AddressPlan {
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
      throw new DispatcherError(
        'DSP_ERR_CONFIG',
        `dhcp.range: the node network ${network.address}/${prefixLength(subnet)} has no room for a range`,
        {
          hint: 'give the interface a bigger subnet (a /24 is usual) or pass --range',
        },
      );
  }

  const excluded = new Set<number>([server]);
  if (dhcp.router) excluded.add(ipToInt(dhcp.router)!);
  const reservations = new Reservations(subnet, excluded, source);
  return {
    subnetMask,
    reservations,
    pool: {
      subnet,
      rangeStart,
      rangeEnd,
      excluded,
      reservationOf: (mac) => reservations.of(mac),
      reservedFor: (ip) => reservations.holder(ip),
    },
  };
}

/** How stale the reservation index may be: operator changes apply within this long. */
export const RESERVATIONS_REFRESH_MS = 1_000;

/**
 * Fixed addresses by MAC and by address, rebuilt from the registry at most once a second
 * (the allocator asks for every address it scans). Unusable ones are skipped with a reason.
 */
export class Reservations {
  #byIp = new Map<number, Mac>();
  #byMac = new Map<Mac, number>();
  #builtAt = -Infinity;
  #warnings: ReservationWarning[] = [];
  #reported = new Set<string>();
  /** Called once for each unusable reservation (log it). */
  onWarning: (w: ReservationWarning) => void = () => {};

  constructor(
    private readonly subnet: Subnet,
    private readonly excluded: ReadonlySet<number>,
    private readonly source: ReservationSource,
  ) {}

  of(mac: Mac): number | undefined {
    this.#refresh();
    return this.#byMac.get(mac);
  }

  holder(ip: number): Mac | undefined {
    this.#refresh();
    return this.#byIp.get(ip);
  }

  warnings(): readonly ReservationWarning[] {
    this.#refresh();
    return this.#warnings;
  }

  #refresh(): void {
    const now = this.source.now();
    if (now - this.#builtAt < RESERVATIONS_REFRESH_MS && now >= this.#builtAt) return;
    this.#builtAt = now;
    const byIp = new Map<number, Mac>();
    const byMac = new Map<Mac, number>();
    const warnings: ReservationWarning[] = [];
    const s = this.subnet;
    for (const n of this.source.list()) {
      if (!n.fixedIp) continue;
      const ip = ipToInt(n.fixedIp);
      let reason: string | undefined;
      if (ip === undefined || !inSubnet(ip, s) || ip === s.network || ip === broadcastOf(s))
        reason = 'not a host address of the node network';
      else if (this.excluded.has(ip)) reason = "is the dispatcher's or the router's address";
      else if (byIp.has(ip)) reason = `already reserved for ${byIp.get(ip)}`;
      if (reason) {
        warnings.push({ mac: n.mac, ip: n.fixedIp, reason });
        continue;
      }
      byIp.set(ip!, n.mac);
      byMac.set(n.mac, ip!);
    }
    this.#byIp = byIp;
    this.#byMac = byMac;
    this.#warnings = warnings;
    for (const w of warnings) {
      const key = `${w.mac} ${w.ip} ${w.reason}`;
      if (!this.#reported.has(key)) {
        this.#reported.add(key);
        this.onWarning(w);
      }
    }
  }
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
