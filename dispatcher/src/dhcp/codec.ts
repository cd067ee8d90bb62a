/**
 * DHCP codec: bytes in, a typed packet out, and back. Pure: no sockets, clocks or logs.
 *
 * Why not the `dhcp` npm package's codec (the tests' test/unit/dhcp/dhcp-package.ts wraps it):
 * - its parser is unsafe on hostile input: fuzzing showed it throws on valid packets (a PAD
 *   option makes it skip the next byte and read past the end), reads wrong-length options at
 *   the wrong offsets, rejects any non-Ethernet `htype` with a bare Error, and writes "Option
 *   N not known" to stderr for every option it does not know. `decodePacket` below is total:
 *   any byte string gives a packet or a DecodeError naming the field.
 * - its encoder is correct but costs about ten times this one per packet (a zero-filled
 *   1500-byte buffer, string splitting of every address), a large share of the CPU of a 4-way
 *   exchange, which the lease-rate target cannot spare (bench/dhcp-rate.sh). It stays the reference: a differential test
 *   checks that `encodePacket` writes exactly the bytes Protocol.format writes.
 */
import { macFromBytes, type Mac } from '../nodes/mac.js';
import {
  BOOTREPLY,
  BOOTREQUEST,
  DEFAULT_MAX_MESSAGE,
  ETHERNET_HLEN,
  FILE_LEN,
  FILE_OFFSET,
  FLAG_BROADCAST,
  HEADER_LEN,
  HTYPE_ETHERNET,
  MAGIC_COOKIE,
  MESSAGE_TYPES,
  MESSAGE_TYPE_BY_CODE,
  MIN_BOOTP_LEN,
  OPT,
  OPTIONS_OFFSET,
  OPTION_TYPES,
  SNAME_LEN,
  SNAME_OFFSET,
  type MessageType,
  type WireType,
} from './options.js';

/** A DHCP message by meaning. Wire details (cookie, option 53, overload, padding) stay in here. */
export interface DhcpPacket {
  op: 'request' | 'reply';
  /** Option 53; null for a plain BOOTP message. */
  type: MessageType | null;
  xid: number;
  secs: number;
  hops: number;
  /** The BROADCAST bit of `flags` (RFC 2131 §4.1). */
  broadcast: boolean;
  ciaddr: string;
  yiaddr: string;
  /** Next server (TFTP) in replies. */
  siaddr: string;
  /** Relay agent address; 0.0.0.0 when not relayed. */
  giaddr: string;
  mac: Mac;
  /** The BOOTP `sname` header (empty when it carries overloaded options). */
  serverName: string;
  /** Option 67, else the BOOTP `file` header. Encoded into both (some firmware reads only one). */
  bootFile?: string;
  subnetMask?: string;
  routers?: string[];
  dns?: string[];
  hostname?: string;
  domainName?: string;
  requestedIp?: string;
  leaseSeconds?: number;
  serverId?: string;
  parameterRequestList?: number[];
  /** Option 56: why a NAK was sent. */
  message?: string;
  maxMessageSize?: number;
  renewalSeconds?: number;
  rebindingSeconds?: number;
  /** Option 60, e.g. `PXEClient:Arch:00000:UNDI:002001`. */
  vendorClass?: string;
  clientId?: Uint8Array;
  /** Option 66 (next server by name or address). */
  tftpServer?: string;
  /** Option 77 as sent (iPXE sends the bare string `iPXE`; RFC 3004 clients a length-prefixed list). */
  userClass?: string;
  relayAgentInfo?: Uint8Array;
  /** Option 93: the first (preferred) architecture the client lists. */
  clientArch?: number;
  clientNdi?: Uint8Array;
  /** Option 97: type byte 0 + 16-byte GUID. */
  clientUuid?: Uint8Array;
  /** Option 43 (PXE vendor options for PXEClient). */
  vendorOptions?: Uint8Array;
  /** Option 175 (iPXE's encapsulated settings). */
  ipxeOptions?: Uint8Array;
  /** Options we do not interpret, raw, in the order first seen. */
  otherOptions?: ReadonlyMap<number, Uint8Array>;
}

/**
 * A packet with every field present (absent options as undefined), so all packets share one
 * object shape: property reads in the handlers stay fast under a storm. Build packets from it.
 */
export function blankPacket(op: DhcpPacket['op'], type: MessageType | null, xid: number, mac: Mac): DhcpPacket {
  return {
    op,
    type,
    xid,
    secs: 0,
    hops: 0,
    broadcast: false,
    ciaddr: '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    giaddr: '0.0.0.0',
    mac,
    serverName: '',
    bootFile: undefined,
    subnetMask: undefined,
    routers: undefined,
    dns: undefined,
    hostname: undefined,
    domainName: undefined,
    requestedIp: undefined,
    leaseSeconds: undefined,
    serverId: undefined,
    parameterRequestList: undefined,
    message: undefined,
    maxMessageSize: undefined,
    renewalSeconds: undefined,
    rebindingSeconds: undefined,
    vendorClass: undefined,
    clientId: undefined,
    tftpServer: undefined,
    userClass: undefined,
    relayAgentInfo: undefined,
    clientArch: undefined,
    clientNdi: undefined,
    clientUuid: undefined,
    vendorOptions: undefined,
    ipxeOptions: undefined,
    otherOptions: undefined,
  };
}

/** What decodePacket adds: facts derived from the bytes. */
export interface ReceivedPacket extends DhcpPacket {
  /** The client is iPXE: user class "iPXE" or option 175 present. */
  readonly isIPXE: boolean;
  /** Size on the wire, bytes. */
  readonly size: number;
}

/** Why bytes are not a DHCP packet: the field at fault and the byte counts involved. */
export class DecodeError {
  readonly name = 'DecodeError';
  constructor(
    /** `header`, `op`, `chaddr`, `magic cookie`, `option 50 (requested IP address)`... */
    readonly field: string,
    readonly message: string,
    /** Byte offset in the packet where the problem starts, when there is one. */
    readonly offset?: number,
  ) {}
  toString(): string {
    return `${this.field}: ${this.message}${this.offset !== undefined ? ` (at byte ${this.offset})` : ''}`;
  }
}

/** A packet of ours that cannot be put on the wire (a bug or a bad setting, not hostile input). */
export class EncodeError extends Error {
  override readonly name = 'EncodeError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** Decodes one UDP payload. Never throws: a packet, or a DecodeError naming the field. */
export function decodePacket(buf: Uint8Array): ReceivedPacket | DecodeError {
  try {
    return decode(buf);
  } catch (err) {
    // decode() bounds-checks every read; this only guards against a bug turning into a crash.
    return new DecodeError('packet', `internal decoder error: ${(err as Error)?.message ?? String(err)}`);
  }
}

function decode(buf: Uint8Array): ReceivedPacket | DecodeError {
  if (buf.length < OPTIONS_OFFSET)
    return new DecodeError(
      'header',
      `${buf.length} bytes; a DHCP message needs at least ${OPTIONS_OFFSET} (${HEADER_LEN}-byte BOOTP header + 4-byte magic cookie)`,
    );
  const op = buf[0]!;
  if (op !== BOOTREQUEST && op !== BOOTREPLY) return new DecodeError('op', `must be 1 (BOOTREQUEST) or 2 (BOOTREPLY), got ${op}`, 0);
  if (buf[1] !== HTYPE_ETHERNET || buf[2] !== ETHERNET_HLEN)
    return new DecodeError('chaddr', `only Ethernet is served (htype 1, hlen 6), got htype ${buf[1]}, hlen ${buf[2]}`, 1);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (view.getUint32(HEADER_LEN) !== MAGIC_COOKIE)
    return new DecodeError('magic cookie', `expected 99.130.83.99, got ${ipAt(buf, HEADER_LEN)}`, HEADER_LEN);

  const raw = new Map<number, Uint8Array[]>();
  const walked = walkOptions(buf, OPTIONS_OFFSET, buf.length, 'options', raw);
  if (walked) return walked;
  let serverName = cString(buf, SNAME_OFFSET, SNAME_LEN);
  let headerFile: string | undefined = cString(buf, FILE_OFFSET, FILE_LEN);
  const overload = raw.get(OPT.OVERLOAD);
  if (overload) {
    // RFC 2131 §4.1 / RFC 3396 §4: with option 52 the `file` (1), `sname` (2) or both (3)
    // fields hold more options, read in that order after the options field.
    const v = concat(overload);
    if (v.length !== 1 || v[0]! < 1 || v[0]! > 3)
      return new DecodeError(optionField(OPT.OVERLOAD), `must be 1 byte of value 1-3, got ${v.length} byte(s)`);
    raw.delete(OPT.OVERLOAD);
    if (v[0]! & 1) {
      const e = walkOptions(buf, FILE_OFFSET, FILE_OFFSET + FILE_LEN, 'file (overloaded)', raw);
      if (e) return e;
      headerFile = undefined;
    }
    if (v[0]! & 2) {
      const e = walkOptions(buf, SNAME_OFFSET, SNAME_OFFSET + SNAME_LEN, 'sname (overloaded)', raw);
      if (e) return e;
      serverName = '';
    }
  }

  const p = blankPacket(
    op === BOOTREQUEST ? 'request' : 'reply',
    null,
    view.getUint32(4),
    macFromBytes(buf.subarray(28, 28 + ETHERNET_HLEN)),
  ) as Mutable<ReceivedPacket>;
  p.secs = view.getUint16(8);
  p.hops = buf[3]!;
  p.broadcast = (view.getUint16(10) & FLAG_BROADCAST) !== 0;
  p.ciaddr = ipAt(buf, 12);
  p.yiaddr = ipAt(buf, 16);
  p.siaddr = ipAt(buf, 20);
  p.giaddr = ipAt(buf, 24);
  p.serverName = serverName;
  if (headerFile) p.bootFile = headerFile;
  p.isIPXE = false;
  p.size = buf.length;

  let other: Map<number, Uint8Array> | undefined;
  for (const [code, parts] of raw) {
    const v = concat(parts);
    const known = OPTION_TYPES.get(code);
    if (!known) {
      other ??= new Map();
      other.set(code, v);
      continue;
    }
    const err = checkLength(code, known.wire, v);
    if (err) return err;
    switch (code) {
      case OPT.MESSAGE_TYPE: {
        const t = MESSAGE_TYPE_BY_CODE.get(v[0]!);
        if (!t) return new DecodeError(optionField(code), `unknown message type ${v[0]}`);
        p.type = t;
        break;
      }
      case OPT.SUBNET_MASK:
        p.subnetMask = ipAt(v, 0);
        break;
      case OPT.ROUTER:
        p.routers = ipList(v);
        break;
      case OPT.DOMAIN_SERVER:
        p.dns = ipList(v);
        break;
      case OPT.HOST_NAME:
        setString(p, 'hostname', v);
        break;
      case OPT.DOMAIN_NAME:
        setString(p, 'domainName', v);
        break;
      case OPT.VENDOR_SPECIFIC:
        p.vendorOptions = v;
        break;
      case OPT.REQUESTED_IP:
        p.requestedIp = ipAt(v, 0);
        break;
      case OPT.LEASE_TIME:
        p.leaseSeconds = u32(v);
        break;
      case OPT.SERVER_ID:
        p.serverId = ipAt(v, 0);
        break;
      case OPT.PARAMETER_REQUEST_LIST:
        p.parameterRequestList = Array.from(v);
        break;
      case OPT.MESSAGE:
        setString(p, 'message', v);
        break;
      case OPT.MAX_MESSAGE_SIZE:
        p.maxMessageSize = (v[0]! << 8) | v[1]!;
        break;
      case OPT.RENEWAL_TIME:
        p.renewalSeconds = u32(v);
        break;
      case OPT.REBINDING_TIME:
        p.rebindingSeconds = u32(v);
        break;
      case OPT.VENDOR_CLASS_ID:
        setString(p, 'vendorClass', v);
        break;
      case OPT.CLIENT_ID:
        p.clientId = v;
        break;
      case OPT.TFTP_SERVER_NAME:
        setString(p, 'tftpServer', v);
        break;
      case OPT.BOOTFILE_NAME:
        setString(p, 'bootFile', v);
        break;
      case OPT.USER_CLASS:
        setString(p, 'userClass', v);
        break;
      case OPT.RELAY_AGENT_INFO:
        p.relayAgentInfo = v;
        break;
      case OPT.CLIENT_ARCH:
        p.clientArch = (v[0]! << 8) | v[1]!;
        break;
      case OPT.CLIENT_NDI:
        p.clientNdi = v;
        break;
      case OPT.CLIENT_UUID:
        p.clientUuid = v;
        break;
      case OPT.IPXE_ENCAP:
        p.ipxeOptions = v;
        break;
      default:
        other ??= new Map();
        other.set(code, v);
    }
  }
  if (other) p.otherOptions = other;
  p.isIPXE = p.ipxeOptions !== undefined || isIpxeUserClass(p.userClass);
  return p;
}

/**
 * Reads TLV options in [start, end) into `out` (repeated codes are concatenated later, RFC 3396).
 * Stops at END; a missing END is tolerated (some clients omit it and pad to the end instead).
 */
function walkOptions(buf: Uint8Array, start: number, end: number, area: string, out: Map<number, Uint8Array[]>): DecodeError | undefined {
  let i = start;
  while (i < end) {
    const code = buf[i]!;
    if (code === OPT.PAD) {
      i++;
      continue;
    }
    if (code === OPT.END) return undefined;
    if (i + 1 >= end) return new DecodeError(optionField(code), `${area}: length byte missing at the end of the area`, i);
    const len = buf[i + 1]!;
    if (i + 2 + len > end) return new DecodeError(optionField(code), `${area}: says ${len} bytes but only ${end - i - 2} remain`, i);
    const parts = out.get(code);
    const value = buf.subarray(i + 2, i + 2 + len);
    if (parts) parts.push(value);
    else out.set(code, [value]);
    i += 2 + len;
  }
  return undefined;
}

function checkLength(code: number, wire: WireType, v: Uint8Array): DecodeError | undefined {
  const n = v.length;
  const bad = (want: string) => new DecodeError(optionField(code), `must be ${want}, got ${n} byte(s)`);
  switch (wire) {
    case 'ip':
    case 'u32':
      return n === 4 ? undefined : bad('4 bytes');
    case 'ips':
      return n >= 4 && n % 4 === 0 ? undefined : bad('a non-empty multiple of 4 bytes');
    case 'u8':
      return n === 1 ? undefined : bad('1 byte');
    case 'u16':
      return n === 2 ? undefined : bad('2 bytes');
    case 'u16s':
      return n >= 2 && n % 2 === 0 ? undefined : bad('a non-empty multiple of 2 bytes');
    case 'string':
    case 'bytes':
      return undefined;
  }
}

/** iPXE sends option 77 as the bare string "iPXE"; an RFC 3004 client would send [4,'iPXE']. */
function isIpxeUserClass(uc: string | undefined): boolean {
  if (uc === undefined) return false;
  if (uc === 'iPXE') return true;
  for (let i = 0; i < uc.length; ) {
    const len = uc.charCodeAt(i);
    if (uc.slice(i + 1, i + 1 + len) === 'iPXE') return true;
    i += 1 + len;
  }
  return false;
}

function optionField(code: number): string {
  const known = OPTION_TYPES.get(code);
  return known ? `option ${code} (${known.name})` : `option ${code}`;
}

function setString(
  p: Mutable<ReceivedPacket>,
  key: 'hostname' | 'domainName' | 'message' | 'vendorClass' | 'tftpServer' | 'bootFile' | 'userClass',
  v: Uint8Array,
): void {
  // Some clients NUL-terminate strings; an empty string is as good as absent.
  let end = v.length;
  while (end > 0 && v[end - 1] === 0) end--;
  if (end > 0) p[key] = Buffer.from(v.buffer, v.byteOffset, end).toString('latin1');
}

function cString(buf: Uint8Array, offset: number, len: number): string {
  let end = offset;
  while (end < offset + len && buf[end] !== 0) end++;
  return Buffer.from(buf.buffer, buf.byteOffset + offset, end - offset).toString('latin1');
}

function ipAt(b: Uint8Array, i: number): string {
  return `${b[i]}.${b[i + 1]}.${b[i + 2]}.${b[i + 3]}`;
}

function ipList(v: Uint8Array): string[] {
  const out: string[] = [];
  for (let i = 0; i < v.length; i += 4) out.push(ipAt(v, i));
  return out;
}

function u32(v: Uint8Array): number {
  return ((v[0]! << 24) | (v[1]! << 16) | (v[2]! << 8) | v[3]!) >>> 0;
}

function concat(parts: Uint8Array[]): Uint8Array {
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

// ---------------------------------------------------------------------------------------------
// Encoding

export interface EncodeOptions {
  /**
   * Largest DHCP message the peer accepts (option 57 minus IP/UDP headers, RFC 2132 §9.10);
   * default 548 (576-byte datagrams, which every client must accept).
   */
  maxLength?: number;
}

/** Nothing we send is bigger than an Ethernet frame allows. */
const MAX_PACKET = 1500;

/** One option to write: its code, wire type and validated value. */
interface Entry {
  code: number;
  wire: WireType;
  value: string | string[] | number | number[] | Uint8Array;
  len: number;
}

/**
 * Encodes a packet: option 53 first (ISC dhcpd and Kea do so for old clients that look only
 * there), then the others in code order, END, padding to the 300-byte BOOTP minimum.
 * Byte for byte what the `dhcp` package's Protocol.format writes (checked by a differential
 * test, test/unit/dhcp/codec.test.ts), at a tenth of its cost: no 1500-byte buffer per
 * packet, no string splitting of addresses. Throws EncodeError if a field cannot be represented.
 */
export function encodePacket(p: DhcpPacket, opts: EncodeOptions = {}): Buffer {
  const entries = optionEntries(p);
  let total = OPTIONS_OFFSET + (p.type === null ? 0 : 3) + 1;
  for (const e of entries) total += 2 + e.len;
  const limit = Math.min(opts.maxLength ?? DEFAULT_MAX_MESSAGE, MAX_PACKET);
  if (total > limit) throw new EncodeError('packet', `${total} bytes exceed the ${limit}-byte limit`);
  const sname = headerString('serverName', p.serverName, SNAME_LEN);
  // A boot file too long for the header goes in option 67 only.
  const file = p.bootFile !== undefined && p.bootFile.length < FILE_LEN ? headerString('bootFile', p.bootFile, FILE_LEN) : '';
  const mac = macBytes(p.mac);

  const b = Buffer.alloc(Math.max(total, MIN_BOOTP_LEN));
  b[0] = p.op === 'request' ? BOOTREQUEST : BOOTREPLY;
  b[1] = HTYPE_ETHERNET;
  b[2] = ETHERNET_HLEN;
  b[3] = u8Field('hops', p.hops);
  b.writeUInt32BE(u32Field('xid', p.xid), 4);
  b.writeUInt16BE(u16Field('secs', p.secs), 8);
  b.writeUInt16BE(p.broadcast ? FLAG_BROADCAST : 0, 10);
  writeIp(b, 12, 'ciaddr', p.ciaddr);
  writeIp(b, 16, 'yiaddr', p.yiaddr);
  writeIp(b, 20, 'siaddr', p.siaddr);
  writeIp(b, 24, 'giaddr', p.giaddr);
  mac.copy(b, 28);
  b.write(sname, SNAME_OFFSET, 'latin1');
  b.write(file, FILE_OFFSET, 'latin1');
  b.writeUInt32BE(MAGIC_COOKIE, HEADER_LEN);
  let o = OPTIONS_OFFSET;
  if (p.type !== null) {
    b[o++] = OPT.MESSAGE_TYPE;
    b[o++] = 1;
    b[o++] = MESSAGE_TYPES[p.type];
  }
  for (const e of entries) {
    b[o++] = e.code;
    b[o++] = e.len;
    o = writeValue(b, o, e);
  }
  b[o] = OPT.END;
  return b;
}

function writeValue(b: Buffer, o: number, e: Entry): number {
  switch (e.wire) {
    case 'ip':
      writeIp(b, o, '', e.value as string);
      return o + 4;
    case 'ips':
      for (const a of e.value as string[]) {
        writeIp(b, o, '', a);
        o += 4;
      }
      return o;
    case 'u8':
      b[o] = e.value as number;
      return o + 1;
    case 'u16':
      b.writeUInt16BE(e.value as number, o);
      return o + 2;
    case 'u32':
      b.writeUInt32BE(e.value as number, o);
      return o + 4;
    case 'u16s':
      for (const v of e.value as number[]) {
        b.writeUInt16BE(v, o);
        o += 2;
      }
      return o;
    case 'string':
      return o + b.write(e.value as string, o, 'latin1');
    case 'bytes':
      b.set(e.value as Uint8Array, o);
      return o + e.len;
  }
}

/** The options of `p` (all but 53), validated, in code order. */
function optionEntries(p: DhcpPacket): Entry[] {
  const out: Entry[] = [];
  const add = (code: number, wire: WireType, value: Entry['value'], len: number) => out.push({ code, wire, value, len });
  const ip = (code: number, field: string, v: string | undefined) => {
    if (v !== undefined) add(code, 'ip', ipField(field, v), 4);
  };
  const ips = (code: number, field: string, v: string[] | undefined) => {
    if (v === undefined || v.length === 0) return;
    if (v.length > 63) throw new EncodeError(field, `${v.length} addresses, at most 63 fit in an option`);
    for (const a of v) ipField(field, a);
    add(code, 'ips', v, 4 * v.length);
  };
  const str = (code: number, field: string, v: string | undefined) => {
    if (v === undefined || v === '') return;
    if (!isLatin1(v)) throw new EncodeError(field, 'has characters outside latin1');
    if (v.length > 255) throw new EncodeError(field, `${v.length} bytes, at most 255 fit in an option`);
    add(code, 'string', v, v.length);
  };
  const bytes = (code: number, field: string, v: Uint8Array | undefined) => {
    if (v === undefined) return;
    if (v.length > 255) throw new EncodeError(field, `${v.length} bytes, at most 255 fit in an option`);
    add(code, 'bytes', v, v.length);
  };
  const num = (code: number, wire: 'u16' | 'u32', field: string, v: number | undefined) => {
    if (v === undefined) return;
    const max = wire === 'u16' ? 0xffff : 0xffffffff;
    if (!Number.isInteger(v) || v < 0 || v > max) throw new EncodeError(field, `${v} is out of range 0-${max}`);
    add(code, wire, v, wire === 'u16' ? 2 : 4);
  };
  // In code order.
  ip(OPT.SUBNET_MASK, 'subnetMask', p.subnetMask);
  ips(OPT.ROUTER, 'routers', p.routers);
  ips(OPT.DOMAIN_SERVER, 'dns', p.dns);
  str(OPT.HOST_NAME, 'hostname', p.hostname);
  str(OPT.DOMAIN_NAME, 'domainName', p.domainName);
  bytes(OPT.VENDOR_SPECIFIC, 'vendorOptions', p.vendorOptions);
  ip(OPT.REQUESTED_IP, 'requestedIp', p.requestedIp);
  num(OPT.LEASE_TIME, 'u32', 'leaseSeconds', p.leaseSeconds);
  ip(OPT.SERVER_ID, 'serverId', p.serverId);
  if (p.parameterRequestList !== undefined)
    bytes(OPT.PARAMETER_REQUEST_LIST, 'parameterRequestList', u8Array('parameterRequestList', p.parameterRequestList));
  str(OPT.MESSAGE, 'message', p.message);
  num(OPT.MAX_MESSAGE_SIZE, 'u16', 'maxMessageSize', p.maxMessageSize);
  num(OPT.RENEWAL_TIME, 'u32', 'renewalSeconds', p.renewalSeconds);
  num(OPT.REBINDING_TIME, 'u32', 'rebindingSeconds', p.rebindingSeconds);
  str(OPT.VENDOR_CLASS_ID, 'vendorClass', p.vendorClass);
  bytes(OPT.CLIENT_ID, 'clientId', p.clientId);
  str(OPT.TFTP_SERVER_NAME, 'tftpServer', p.tftpServer);
  str(OPT.BOOTFILE_NAME, 'bootFile', p.bootFile);
  if (p.userClass !== undefined && p.userClass !== '') {
    if (!isLatin1(p.userClass)) throw new EncodeError('userClass', 'has characters outside latin1');
    bytes(OPT.USER_CLASS, 'userClass', Buffer.from(p.userClass, 'latin1'));
  }
  bytes(OPT.RELAY_AGENT_INFO, 'relayAgentInfo', p.relayAgentInfo);
  if (p.clientArch !== undefined) {
    if (!Number.isInteger(p.clientArch) || p.clientArch < 0 || p.clientArch > 0xffff)
      throw new EncodeError('clientArch', `${p.clientArch} is out of range 0-65535`);
    add(OPT.CLIENT_ARCH, 'u16s', [p.clientArch], 2);
  }
  bytes(OPT.CLIENT_NDI, 'clientNdi', p.clientNdi);
  bytes(OPT.CLIENT_UUID, 'clientUuid', p.clientUuid);
  bytes(OPT.IPXE_ENCAP, 'ipxeOptions', p.ipxeOptions);
  if (p.otherOptions && p.otherOptions.size > 0) {
    for (const [code, v] of p.otherOptions) {
      if (
        !Number.isInteger(code) ||
        code <= OPT.PAD ||
        code >= OPT.END ||
        code === OPT.MESSAGE_TYPE ||
        code === OPT.OVERLOAD ||
        OPTION_TYPES.has(code)
      )
        throw new EncodeError('otherOptions', `code ${code} cannot be written as an opaque option`);
      bytes(code, `option ${code}`, v);
    }
    out.sort((a, b) => a.code - b.code);
  }
  return out;
}

/** Writes a dotted quad as 4 bytes; EncodeError (naming `field`) if it is not one. */
function writeIp(b: Buffer, o: number, field: string, v: string): void {
  let part = 0;
  let digits = 0;
  let k = 0;
  for (let i = 0; i <= v.length; i++) {
    const c = i < v.length ? v.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || part > 255 || k > 3) throw new EncodeError(field || 'address', `"${v}" is not an IPv4 address`);
      b[o + k++] = part;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      part = part * 10 + (c - 48);
      digits++;
    } else throw new EncodeError(field || 'address', `"${v}" is not an IPv4 address`);
  }
  if (k !== 4) throw new EncodeError(field || 'address', `"${v}" is not an IPv4 address`);
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
function ipField(field: string, v: string): string {
  if (!IPV4_RE.test(v)) throw new EncodeError(field, `"${v}" is not an IPv4 address`);
  return v;
}
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
function macBytes(mac: string): Buffer {
  if (!MAC_RE.test(mac)) throw new EncodeError('mac', `"${mac}" is not a MAC address`);
  return Buffer.from(mac.replaceAll(':', ''), 'hex');
}
function u8Field(field: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new EncodeError(field, `${v} is out of range 0-255`);
  return v;
}
function u16Field(field: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new EncodeError(field, `${v} is out of range 0-65535`);
  return v;
}
function u32Field(field: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new EncodeError(field, `${v} is out of range 0-4294967295`);
  return v;
}
function u8Array(field: string, v: number[]): Uint8Array {
  for (const x of v) u8Field(field, x);
  return Uint8Array.from(v);
}
function headerString(field: string, v: string, size: number): string {
  // ASCII only: the `dhcp` package (our reference encoder) writes header strings as UTF-8.
  if (!/^[\x01-\x7f]*$/.test(v)) throw new EncodeError(field, 'must be ASCII without NUL in a BOOTP header field');
  if (v.length >= size) throw new EncodeError(field, `${v.length} bytes; the BOOTP header field holds ${size - 1} and a NUL`);
  return v;
}
function isLatin1(v: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /^[\u0000-\u00ff]*$/.test(v);
}
