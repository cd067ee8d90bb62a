/**
 * What the DHCP server says, as pure functions of the request and the decisions already
 * taken (address, first stage, node): reply packets for full and proxy mode, where a reply
 * goes (RFC 2131 §4.1), which REQUEST state a client is in (§4.3.2), and whether a
 * DISCOVER starts a new boot. The server only calls these and moves bytes.
 */
import { blankPacket, type DhcpPacket } from './codec.js';
import type { FirstStageDecision } from '../boot/first-stage.js';
import { wantsNetworkBoot } from '../boot/first-stage.js';
import type { BootStage } from '../boot/timeline.js';
import {
  CLIENT_PORT,
  IPXE_NO_PXEDHCP,
  OPT,
  PXE_DISCOVERY_CONTROL,
  PXE_DISCOVERY_USE_BOOTFILE,
  SERVER_PORT,
  VENDOR_HTTP_CLIENT,
  VENDOR_PXE_CLIENT,
} from './options.js';
import { BROADCAST_IP, ZERO_IP } from './ipv4.js';

/** Network settings every full-mode reply carries. */
export interface LeaseParams {
  /** Our address on the node network: option 54 and next-server. */
  serverId: string;
  subnetMask: string;
  /** Option 3; empty for none. For a relayed request without configured routers, the relay. */
  routers: string[];
  dns: string[];
  leaseSeconds: number;
}

export interface Destination {
  address: string;
  port: number;
}

/** RFC 2131 §4.3.2: how to read a DHCPREQUEST. RENEWING and REBINDING differ only in the IP destination, which a UDP socket does not show; both are handled alike. */
export type RequestState = 'selecting' | 'init-reboot' | 'renewing' | 'malformed';

export function requestState(p: DhcpPacket): RequestState {
  if (p.serverId !== undefined) return p.requestedIp !== undefined && p.ciaddr === ZERO_IP ? 'selecting' : 'malformed';
  if (p.requestedIp !== undefined) return p.ciaddr === ZERO_IP ? 'init-reboot' : 'malformed';
  return p.ciaddr !== ZERO_IP ? 'renewing' : 'malformed';
}

/**
 * Where a reply goes (RFC 2131 §4.1):
 * - relayed (giaddr set): to the relay's port 67;
 * - NAK: broadcast;
 * - the client has an address (ciaddr set: RENEWING, INFORM): unicast to it;
 * - otherwise broadcast. RFC 2131 would unicast to yiaddr when the BROADCAST bit is clear,
 *   but that needs an ARP entry for a host that has no address yet, which a Node socket
 *   cannot add (dnsmasq and ISC dhcpd inject it with a raw socket or ioctl). Every client
 *   accepts broadcast replies, so we broadcast, as many servers do.
 */
export function replyDestination(req: DhcpPacket, reply: DhcpPacket): Destination {
  if (req.giaddr !== ZERO_IP) return { address: req.giaddr, port: SERVER_PORT };
  if (reply.type === 'nak') return { address: BROADCAST_IP, port: CLIENT_PORT };
  if (req.ciaddr !== ZERO_IP) return { address: req.ciaddr, port: CLIENT_PORT };
  return { address: BROADCAST_IP, port: CLIENT_PORT };
}

/** Sets the boot information of a first-stage decision on a reply. */
export function setBootFields(r: DhcpPacket, boot: FirstStageDecision, serverAddress: string, mode: 'full' | 'proxy'): void {
  switch (boot.kind) {
    case 'none':
    case 'unsupported':
      return;
    case 'tftp':
      // Next-server in siaddr and option 66; the file in option 67 and the `file` header.
      r.siaddr = serverAddress;
      r.tftpServer = serverAddress;
      r.bootFile = boot.file;
      return;
    case 'http':
      // UEFI HTTP boot only takes an offer that echoes "HTTPClient" in option 60.
      r.siaddr = serverAddress;
      r.bootFile = boot.url;
      r.vendorClass = VENDOR_HTTP_CLIENT;
      return;
    case 'script':
      r.siaddr = serverAddress;
      r.bootFile = boot.url;
      // In full mode, tell iPXE not to wait ~2 s for ProxyDHCP offers that will never come:
      // option 175 with the encapsulated no-pxedhcp setting (176) = 1.
      if (mode === 'full') r.ipxeOptions = NO_PXEDHCP;
      return;
  }
}

const NO_PXEDHCP = Uint8Array.of(IPXE_NO_PXEDHCP, 1, 1);
const PXE_USE_BOOTFILE = Uint8Array.of(PXE_DISCOVERY_CONTROL, 1, PXE_DISCOVERY_USE_BOOTFILE, OPT.END);

/** Fields every reply copies from its request (RFC 2131 table 3; option 82 per RFC 3046 §2.2; 61 per RFC 6842). */
function replyBase(req: DhcpPacket, type: 'offer' | 'ack' | 'nak'): DhcpPacket {
  const r = blankPacket('reply', type, req.xid, req.mac);
  r.broadcast = req.broadcast;
  r.giaddr = req.giaddr;
  r.clientId = req.clientId;
  if (req.giaddr !== ZERO_IP) r.relayAgentInfo = req.relayAgentInfo;
  return r;
}

function setNetwork(r: DhcpPacket, params: LeaseParams, hostname: string | undefined): void {
  r.serverId = params.serverId;
  r.subnetMask = params.subnetMask;
  if (params.routers.length) r.routers = params.routers;
  if (params.dns.length) r.dns = params.dns;
  if (hostname) r.hostname = hostname;
}

/** DHCPOFFER or DHCPACK carrying a lease of `ip` (RFC 2131 table 3). */
export function leaseReply(
  type: 'offer' | 'ack',
  req: DhcpPacket,
  ip: string,
  params: LeaseParams,
  boot: FirstStageDecision,
  hostname: string | undefined,
): DhcpPacket {
  const r = replyBase(req, type);
  // ACK to a RENEWING/REBINDING client keeps its ciaddr (table 3: "ciaddr from DHCPREQUEST or 0").
  if (type === 'ack') r.ciaddr = req.ciaddr;
  r.yiaddr = ip;
  setNetwork(r, params, hostname);
  r.leaseSeconds = params.leaseSeconds;
  // RFC 2131 §4.4.5 defaults: T1 = 0.5, T2 = 0.875 of the lease.
  r.renewalSeconds = Math.floor(params.leaseSeconds / 2);
  r.rebindingSeconds = Math.floor((params.leaseSeconds * 7) / 8);
  setBootFields(r, boot, params.serverId, 'full');
  return r;
}

/** DHCPACK to a DHCPINFORM: configuration only, no address, no lease time (RFC 2131 §4.3.5). */
export function informReply(req: DhcpPacket, params: LeaseParams, boot: FirstStageDecision, hostname: string | undefined): DhcpPacket {
  const r = replyBase(req, 'ack');
  r.ciaddr = req.ciaddr;
  setNetwork(r, params, hostname);
  setBootFields(r, boot, params.serverId, 'full');
  return r;
}

/** DHCPNAK (RFC 2131 table 3); relayed NAKs set the BROADCAST bit for the relay (§4.3.2). */
export function nakReply(req: DhcpPacket, serverId: string, message: string): DhcpPacket {
  const r = replyBase(req, 'nak');
  if (req.giaddr !== ZERO_IP) r.broadcast = true;
  r.serverId = serverId;
  r.message = message;
  return r;
}

/**
 * ProxyDHCP answer (PXE 2.1 §2.2.3, the way Pixiecore and dnsmasq do it): no address, our
 * address as server id and next-server, "PXEClient" (or "HTTPClient") in option 60 so the
 * client sees a PXE offer, its GUID echoed.
 * - On port 67 (an OFFER): BIOS ROMs and iPXE get option 43 with discovery control "use the
 *   boot file" and the file; UEFI firmware ignores offers that bypass boot-server discovery,
 *   so it gets the file without option 43 and comes to port 4011 for it (Pixiecore's finding).
 * - On port 4011 (an ACK to the client's REQUEST): the file.
 * iPXE takes a ProxyDHCP offer that carries a file without asking 4011, and its settings
 * outrank the DHCP server's, so iPXE reaches the boot script whatever the other server says.
 */
export function proxyReply(req: DhcpPacket, type: 'offer' | 'ack', boot: FirstStageDecision, serverAddress: string): DhcpPacket {
  const r = replyBase(req, type);
  if (type === 'ack') r.ciaddr = req.ciaddr;
  r.siaddr = serverAddress;
  r.serverName = serverAddress;
  r.serverId = serverAddress;
  setBootFields(r, boot, serverAddress, 'proxy');
  r.vendorClass = boot.kind === 'http' ? VENDOR_HTTP_CLIENT : VENDOR_PXE_CLIENT;
  r.clientUuid = req.clientUuid;
  if (type === 'offer' && (boot.kind === 'script' || (boot.kind === 'tftp' && boot.file === 'undionly.kpxe')))
    r.vendorOptions = PXE_USE_BOOTFILE;
  return r;
}

/** Within this long, DHCP from the same MAC belongs to the boot in progress. */
export const SAME_BOOT_WINDOW_MS = 5 * 60_000;
const DISCOVERY_STAGES: ReadonlySet<string> = new Set(['dhcp.discover', 'dhcp.offer', 'proxy.offer', 'dhcp.ignored']);
/** Stages between the firmware's DHCP and iPXE's (`http.firststage`: UEFI HTTP boot fetching iPXE). */
const CHAIN_STAGES: ReadonlySet<string> = new Set([
  'dhcp.discover',
  'dhcp.offer',
  'dhcp.request',
  'dhcp.ack',
  'dhcp.nak',
  'dhcp.ignored',
  'proxy.offer',
  'proxy.ack',
  'tftp.sent',
  'tftp.failed',
  'http.firststage',
]);

/**
 * Does this DISCOVER start a new boot of the machine (boot count +1, new timeline boot)?
 * Yes for a network-boot DISCOVER, except a firmware retransmitting its DISCOVER, and
 * iPXE doing DHCP right after the firmware chain-loaded it (same boot, next stage).
 * An OS's DHCP client (no PXE vendor class) never starts a boot.
 */
export function startsNewBoot(
  req: DhcpPacket & { isIPXE: boolean },
  latest: { stage: BootStage; ts: number } | undefined,
  now: number,
): boolean {
  if (req.type !== 'discover' || !wantsNetworkBoot(req)) return false;
  if (!latest || now - latest.ts > SAME_BOOT_WINDOW_MS) return true;
  if (DISCOVERY_STAGES.has(latest.stage)) return false;
  if (req.isIPXE && CHAIN_STAGES.has(latest.stage)) return false;
  return true;
}
