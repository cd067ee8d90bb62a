/**
 * Wake-on-LAN: the "magic packet" (AMD, "Magic Packet Technology", 1995) is 6 bytes of 0xFF
 * followed by the target MAC repeated 16 times, anywhere in a frame the NIC receives; we
 * send it as a UDP broadcast to port 9 (discard), as etherwake -b and most tools do.
 *
 * The broadcast must leave on the node network, not on the default route's interface:
 * with a known interface the socket is restricted to it (SO_BINDTOIFINDEX) and sends to the
 * limited broadcast 255.255.255.255; otherwise it sends to the node subnet's directed
 * broadcast (e.g. 10.42.0.255), which the kernel routes out of the right interface.
 */
import { createSocket } from 'node:dgram';
import { bindToIfindex } from '../net/socket-options.js';
import { macToBytes, type Mac } from './mac.js';

export const WOL_PORT = 9;
export const MAGIC_PACKET_BYTES = 102;
/** Copies sent per wake: a lost UDP datagram should not leave a machine asleep. */
export const DEFAULT_WOL_REPEAT = 3;

export function magicPacket(mac: Mac): Buffer {
  const m = macToBytes(mac);
  const pkt = Buffer.alloc(MAGIC_PACKET_BYTES, 0xff);
  for (let i = 0; i < 16; i++) m.copy(pkt, 6 + i * 6);
  return pkt;
}

/** The MAC a magic packet wakes, or undefined if the bytes are not one. */
export function parseMagicPacket(buf: Uint8Array): Mac | undefined {
  // The sync stream may appear anywhere in the payload (NICs scan the frame for it).
  for (let at = 0; at + MAGIC_PACKET_BYTES <= buf.length; at++) {
    let sync = true;
    for (let i = 0; i < 6 && sync; i++) sync = buf[at + i] === 0xff;
    if (!sync) continue;
    const mac = buf.subarray(at + 6, at + 12);
    let ok = true;
    for (let r = 1; r < 16 && ok; r++) for (let i = 0; i < 6 && ok; i++) ok = buf[at + 6 + r * 6 + i] === mac[i];
    if (ok) return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':') as Mac;
  }
  return undefined;
}

/** Directed broadcast address of `address`/`netmask` (RFC 919 §7). */
export function broadcastAddress(address: string, netmask: string): string {
  const a = address.split('.').map(Number);
  const m = netmask.split('.').map(Number);
  return a.map((x, i) => (x & (m[i] ?? 0)) | (~(m[i] ?? 0) & 0xff)).join('.');
}

export interface WakeTarget {
  /** The node network: its interface index (if known), the dispatcher's address and netmask. */
  ifindex: number | undefined;
  address: string;
  netmask: string;
}

export interface WakeOptions {
  port?: number;
  repeat?: number;
  /** Overrides the destination (tests). */
  destination?: string;
}

/** Sends the magic packet for `mac` on the node network; resolves with where it went. */
export async function sendWake(
  mac: Mac,
  target: WakeTarget,
  opts: WakeOptions = {},
): Promise<{ destination: string; port: number; packets: number }> {
  const port = opts.port ?? WOL_PORT;
  const repeat = opts.repeat ?? DEFAULT_WOL_REPEAT;
  const destination = opts.destination ?? (target.ifindex ? '255.255.255.255' : broadcastAddress(target.address, target.netmask));
  const sock = createSocket({ type: 'udp4' });
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(0, () => {
        sock.off('error', reject);
        resolve();
      });
    });
    sock.setBroadcast(true);
    if (target.ifindex && !opts.destination) {
      bindToIfindex(sock, target.ifindex);
    }
    const pkt = magicPacket(mac);
    for (let i = 0; i < repeat; i++)
      await new Promise<void>((resolve, reject) => sock.send(pkt, port, destination, (err) => (err ? reject(err) : resolve())));
    return { destination, port, packets: repeat };
  } finally {
    sock.close();
  }
}
