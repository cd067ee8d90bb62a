/**
 * Where a boot script may be served: the decisions that bind a per-boot token to the node
 * network, and, when the dispatcher speaks DHCP, to the address the MAC used in this boot.
 *
 *   1. the request arrived on one of the node network's addresses (the socket's local
 *      address: the interface's IPv4 addresses and the advertised address). The API's other
 *      interfaces answer the boot routes 404. Without --interface the node network is the
 *      advertised (or chosen) address alone; when that is loopback (tests, `--dhcp off` on
 *      one host) every local process counts as being on the node network.
 *   2. full and proxy DHCP mode: the request comes from the address the DHCP exchange of this
 *      boot gave (full: the ACKed address; relayed: an address in the relay's subnet) or
 *      announced (proxy: the client's REQUEST / port-4011 source). `--dhcp off`: no check
 *      (the dispatcher never sees the exchange).
 *
 * PXE itself is not authenticated: whoever is on the node network and answers DHCP as a MAC
 * can boot as that MAC while no live node holds it. That is the trust model's floor.
 */
import { networkInterfaces } from 'node:os';
import type { NodeNetwork } from '../net/interfaces.js';
import type { Mac } from '../nodes/mac.js';
import { inSubnet, ipToInt } from '../dhcp/ipv4.js';
import { plainIPv4 } from '../boot/client-mac.js';

/** How long the address of a DHCP exchange stays good for the boot script (firmware to iPXE: seconds). */
export const BOOT_ADDRESS_TTL_MS = 10 * 60_000;
/** MACs remembered at most (a DHCP flood of random MACs must not grow memory without end). */
const MAX_REMEMBERED = 65_536;

/** Where a MAC's boot traffic may come from. */
export type SeenAddress = { kind: 'ip'; ip: string } | { kind: 'subnet'; subnet: { network: number; mask: number }; relay: string };

/** The node network's local addresses, re-read at most once a second on a miss (addresses can be added at run time). */
export class NodeNetworkGate {
  #addresses = new Set<string>();
  #readAt = -Infinity;

  constructor(
    private readonly network: Pick<NodeNetwork, 'name' | 'address'>,
    private readonly readAddresses: (ifname: string) => string[] = ipv4Of,
    private readonly now: () => number = Date.now,
  ) {
    this.#refresh();
  }

  /** Whether a request that arrived on `localAddress` came in on the node network. */
  admits(localAddress: string | undefined): boolean {
    if (!localAddress) return false;
    const ip = plainIPv4(localAddress);
    if (this.#addresses.has(ip)) return true;
    if (this.now() - this.#readAt < 1000) return false;
    this.#refresh();
    return this.#addresses.has(ip);
  }

  /** The node network is this host's loopback: everything local is on it (documented). */
  get isLoopback(): boolean {
    return this.network.address.startsWith('127.');
  }

  #refresh(): void {
    this.#readAt = this.now();
    const set = new Set<string>([this.network.address]);
    if (this.network.name) for (const a of this.readAddresses(this.network.name)) set.add(a);
    // Loopback node network: any loopback address of this host reaches it.
    if (this.isLoopback) set.add('127.0.0.1');
    this.#addresses = set;
  }
}

function ipv4Of(ifname: string): string[] {
  return (networkInterfaces()[ifname] ?? []).filter((a) => a.family === 'IPv4').map((a) => a.address);
}

/** Per MAC, the address its DHCP exchange of this boot used (kept in memory, for minutes). */
export class BootAddresses {
  readonly #seen = new Map<Mac, { at: number; addr: SeenAddress }>();

  constructor(
    private readonly now: () => number = Date.now,
    private readonly ttlMs = BOOT_ADDRESS_TTL_MS,
  ) {}

  remember(mac: Mac, addr: SeenAddress): void {
    if (addr.kind === 'ip' && (addr.ip === '0.0.0.0' || ipToInt(addr.ip) === undefined)) return;
    this.#seen.delete(mac); // re-inserted last: the oldest entries go first when the map is full
    if (this.#seen.size >= MAX_REMEMBERED) this.#seen.delete(this.#seen.keys().next().value as Mac);
    this.#seen.set(mac, { at: this.now(), addr });
  }

  /** What the DHCP exchange of this boot gave the MAC, if it was recent. */
  of(mac: Mac): SeenAddress | undefined {
    const e = this.#seen.get(mac);
    return e && this.now() - e.at <= this.ttlMs ? e.addr : undefined;
  }

  forget(mac: Mac): void {
    this.#seen.delete(mac);
  }
}

/** Why a boot script request is not served; undefined when it may be. */
export function bootOriginRefusal(
  req: { localAddress: string | undefined; peer: string; mac: Mac },
  gate: Pick<NodeNetworkGate, 'admits'>,
  dhcp: { mode: 'full' | 'proxy' | 'off'; seen: SeenAddress | undefined },
): { status: 404 | 403; why: string } | undefined {
  if (!gate.admits(req.localAddress)) return { status: 404, why: 'not on the node network' };
  if (dhcp.mode === 'off') return undefined;
  const seen = dhcp.seen;
  if (!seen) return { status: 403, why: `no DHCP exchange of ${req.mac} seen in this boot` };
  const peer = plainIPv4(req.peer);
  if (seen.kind === 'ip')
    return seen.ip === peer ? undefined : { status: 403, why: `${req.mac} used ${seen.ip} in its DHCP exchange, not ${peer}` };
  const p = ipToInt(peer);
  return p !== undefined && inSubnet(p, seen.subnet)
    ? undefined
    : { status: 403, why: `${req.mac} was relayed by ${seen.relay}; ${peer} is not in that subnet` };
}
