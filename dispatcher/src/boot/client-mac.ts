/**
 * Which machine is behind a client IP. TFTP carries no MAC, and the kernel and initrd URLs
 * may come without one, so transfers are attributed by the address the DHCP server handed
 * out (the node's `ip`, set through NodeRegistry.setIp) or, failing that, by the kernel's
 * neighbour table (/proc/net/arp): the client just talked to us, so its entry is fresh.
 */
import { readFileSync } from 'node:fs';
import type { NodeRegistry } from '../nodes/registry.js';
import { parseMac, type Mac } from '../nodes/mac.js';

/** ATF_COM (include/uapi/linux/if_arp.h): the entry is complete. */
const ATF_COM = 0x2;
/** How long a read of /proc/net/arp is reused (override with the constructor). */
export const DEFAULT_ARP_CACHE_MS = 500;
const REBUILD_MIN_MS = 100;

export interface ClientMacSource {
  macOf(ip: string): Mac | undefined;
}

/**
 * Parses /proc/net/arp:
 *   IP address       HW type     Flags       HW address            Mask     Device
 *   10.42.0.101      0x1         0x2         52:54:00:12:34:56     *        br0
 * Incomplete entries (flags without ATF_COM) and all-zero addresses are skipped.
 */
export function parseProcNetArp(text: string): Map<string, Mac> {
  const out = new Map<string, Mac>();
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 4) continue;
    const [ip, , flags, hw] = cols as [string, string, string, string];
    if (!(Number.parseInt(flags, 16) & ATF_COM)) continue;
    const mac = parseMac(hw);
    if (!mac || mac === '00:00:00:00:00:00') continue;
    out.set(ip, mac);
  }
  return out;
}

/** `::ffff:10.0.0.5` (an IPv4 peer of a dual-stack socket) → `10.0.0.5`. */
export function plainIPv4(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

export class ClientMacLookup implements ClientMacSource {
  #byIp = new Map<string, Mac>();
  #builtAt = -Infinity;
  #arp = new Map<string, Mac>();
  #arpReadAt = -Infinity;

  constructor(
    private readonly nodes: NodeRegistry,
    private readonly readArp: () => string = () => readFileSync('/proc/net/arp', 'utf8'),
    private readonly now: () => number = Date.now,
    private readonly arpCacheMs = DEFAULT_ARP_CACHE_MS,
  ) {}

  macOf(address: string): Mac | undefined {
    const ip = plainIPv4(address);
    const cached = this.#byIp.get(ip);
    if (cached && this.nodes.byMac(cached)?.ip === ip) return cached;
    const t = this.now();
    if (t - this.#builtAt >= REBUILD_MIN_MS || cached) {
      // Rebuilt on a miss, at most every REBUILD_MIN_MS: a flood from unknown addresses stays cheap.
      this.#builtAt = t;
      this.#byIp = new Map();
      for (const n of this.nodes.list()) if (n.ip) this.#byIp.set(n.ip, n.mac);
    }
    return this.#byIp.get(ip) ?? this.#fromArp(ip);
  }

  #fromArp(ip: string): Mac | undefined {
    const t = this.now();
    if (t - this.#arpReadAt >= this.arpCacheMs || !this.#arp.has(ip)) {
      if (t - this.#arpReadAt < 50) return this.#arp.get(ip); // a flood of unknown IPs reads the file at most 20×/s
      this.#arpReadAt = t;
      try {
        this.#arp = parseProcNetArp(this.readArp());
      } catch {
        this.#arp = new Map();
      }
    }
    return this.#arp.get(ip);
  }
}
