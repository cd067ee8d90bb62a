/**
 * The one adapter to the `dhcp` npm package (it ships no types and reports errors as strings
 * and stderr lines), for tests only: its encoder, Protocol.format, is the reference for our
 * own `encodePacket`, and codec.test.ts checks both write the same bytes for any packet.
 * Every option code is registered through `addOption` under our wire type (options.ts), PXE and iPXE ones
 * included (43, 60, 77, 93, 94, 97, 175), so the package's table never disagrees with ours.
 * Why the server does not use the package at all is in codec.ts.
 */
import { createRequire } from 'node:module';
import type { DhcpPacket } from '../../../dispatcher/src/dhcp/codec.js';
import {
  BOOTREPLY,
  BOOTREQUEST,
  ETHERNET_HLEN,
  FLAG_BROADCAST,
  HTYPE_ETHERNET,
  MESSAGE_TYPES,
  MIN_BOOTP_LEN,
  OPT,
  OPTION_TYPES,
  type WireType,
} from '../../../dispatcher/src/dhcp/options.js';

interface PkgOptionDef {
  name: string;
  type: 'IP' | 'IPs' | 'UInt8' | 'UInt16' | 'UInt32' | 'UInt16s' | 'ASCII' | 'UInt8s';
}
interface PkgSeqBuffer {
  _data: Buffer;
  _w: number;
  addOptions(opts: Record<number, unknown>): void;
  addUInt8(v: number): void;
}
interface PkgPacket {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  chaddr: string;
  sname: string;
  file: string;
  options: Record<number, unknown>;
}

const require = createRequire(import.meta.url);
const pkgProtocol = require('dhcp/lib/protocol.js') as { format(p: PkgPacket): PkgSeqBuffer };
const pkgOptions = require('dhcp/lib/options.js') as { addOption(code: number, def: PkgOptionDef): void };

const PKG_TYPE: Record<WireType, PkgOptionDef['type']> = {
  ip: 'IP',
  ips: 'IPs',
  u8: 'UInt8',
  u16: 'UInt16',
  u32: 'UInt32',
  u16s: 'UInt16s',
  string: 'ASCII',
  bytes: 'UInt8s',
};

for (let code = 1; code < OPT.END; code++) {
  const known = OPTION_TYPES.get(code);
  pkgOptions.addOption(code, { name: known?.name ?? `option ${code}`, type: PKG_TYPE[known?.wire ?? 'bytes'] });
}

/**
 * Encodes a packet that `encodePacket` accepts, with the package's Protocol.format: option 53
 * first (format writes it alone, then we step back over its END and add the rest, which its
 * `for…in` writes in code order), padded to the BOOTP minimum like ours.
 */
export function formatWithDhcpPackage(p: DhcpPacket): Buffer {
  const o: Record<number, unknown> = {};
  const set = (code: number, v: unknown) => {
    if (v !== undefined && v !== '' && !(Array.isArray(v) && v.length === 0)) o[code] = v instanceof Uint8Array ? Array.from(v) : v;
  };
  set(OPT.SUBNET_MASK, p.subnetMask);
  set(OPT.ROUTER, p.routers);
  set(OPT.DOMAIN_SERVER, p.dns);
  set(OPT.HOST_NAME, p.hostname);
  set(OPT.DOMAIN_NAME, p.domainName);
  set(OPT.VENDOR_SPECIFIC, p.vendorOptions);
  set(OPT.REQUESTED_IP, p.requestedIp);
  set(OPT.LEASE_TIME, p.leaseSeconds);
  set(OPT.SERVER_ID, p.serverId);
  set(OPT.PARAMETER_REQUEST_LIST, p.parameterRequestList);
  set(OPT.MESSAGE, p.message);
  set(OPT.MAX_MESSAGE_SIZE, p.maxMessageSize);
  set(OPT.RENEWAL_TIME, p.renewalSeconds);
  set(OPT.REBINDING_TIME, p.rebindingSeconds);
  set(OPT.VENDOR_CLASS_ID, p.vendorClass);
  set(OPT.CLIENT_ID, p.clientId);
  set(OPT.TFTP_SERVER_NAME, p.tftpServer);
  set(OPT.BOOTFILE_NAME, p.bootFile);
  set(OPT.USER_CLASS, p.userClass === undefined || p.userClass === '' ? undefined : Array.from(Buffer.from(p.userClass, 'latin1')));
  set(OPT.RELAY_AGENT_INFO, p.relayAgentInfo);
  set(OPT.CLIENT_ARCH, p.clientArch === undefined ? undefined : [p.clientArch]);
  set(OPT.CLIENT_NDI, p.clientNdi);
  set(OPT.CLIENT_UUID, p.clientUuid);
  set(OPT.IPXE_ENCAP, p.ipxeOptions);
  for (const [code, v] of p.otherOptions ?? []) o[code] = Array.from(v);
  const sb = pkgProtocol.format({
    op: p.op === 'request' ? BOOTREQUEST : BOOTREPLY,
    htype: HTYPE_ETHERNET,
    hlen: ETHERNET_HLEN,
    hops: p.hops,
    xid: p.xid,
    secs: p.secs,
    flags: p.broadcast ? FLAG_BROADCAST : 0,
    ciaddr: p.ciaddr,
    yiaddr: p.yiaddr,
    siaddr: p.siaddr,
    giaddr: p.giaddr,
    chaddr: p.mac,
    sname: p.serverName,
    file: p.bootFile !== undefined && p.bootFile.length < 128 ? p.bootFile : '',
    options: p.type === null ? {} : { [OPT.MESSAGE_TYPE]: MESSAGE_TYPES[p.type] },
  });
  sb._w -= 1;
  sb.addOptions(o);
  sb.addUInt8(OPT.END);
  return Buffer.from(sb._data.subarray(0, Math.max(sb._w, MIN_BOOTP_LEN)));
}
