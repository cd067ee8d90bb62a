/** IPv4 address arithmetic on unsigned 32-bit integers (dotted quads only at the edges). */

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1?\d?\d)\.(25[0-5]|2[0-4]\d|1?\d?\d)\.(25[0-5]|2[0-4]\d|1?\d?\d)\.(25[0-5]|2[0-4]\d|1?\d?\d)$/;

/** `10.42.0.7` → 0x0a2a0007; undefined if not a dotted quad. */
export function ipToInt(text: string): number | undefined {
  const m = IPV4_RE.exec(text);
  if (!m) return undefined;
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

export function intToIp(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

export const ZERO_IP = '0.0.0.0';
export const BROADCAST_IP = '255.255.255.255';

/** A subnet: network address and mask, both as integers. */
export interface Subnet {
  network: number;
  mask: number;
}

export function subnetOf(address: string, netmask: string): Subnet | undefined {
  const a = ipToInt(address);
  const m = ipToInt(netmask);
  if (a === undefined || m === undefined || !isContiguousMask(m)) return undefined;
  return { network: (a & m) >>> 0, mask: m };
}

export function inSubnet(ip: number, s: Subnet): boolean {
  return (ip & s.mask) >>> 0 === s.network;
}

export function broadcastOf(s: Subnet): number {
  return (s.network | ~s.mask) >>> 0;
}

/** 255.255.255.0 yes, 255.0.255.0 no. */
export function isContiguousMask(m: number): boolean {
  const inv = ~m >>> 0;
  return (inv & (inv + 1)) === 0;
}
