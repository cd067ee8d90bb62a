/**
 * DHCP and PXE constants, named as the RFCs name them, with each option's wire type.
 * Pure data: the codec (codec.ts) and the policies read it; nothing here touches bytes.
 */

/** BOOTP `op` field (RFC 951). */
export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
/** `htype` for Ethernet (RFC 1700); the only hardware type we serve. */
export const HTYPE_ETHERNET = 1;
export const ETHERNET_HLEN = 6;
/** RFC 2131 §3: 99.130.83.99 after the fixed header. */
export const MAGIC_COOKIE = 0x63825363;
/** Broadcast bit of the `flags` field (RFC 2131 §2, figure 2). */
export const FLAG_BROADCAST = 0x8000;

export const SERVER_PORT = 67;
export const CLIENT_PORT = 68;
/** PXE boot server / ProxyDHCP requests (PXE 2.1 §2.2.4). */
export const PXE_PORT = 4011;

/** Fixed BOOTP header size and byte offsets (RFC 2131 §2, figure 1). */
export const HEADER_LEN = 236;
export const OPTIONS_OFFSET = 240;
export const SNAME_OFFSET = 44;
export const SNAME_LEN = 64;
export const FILE_OFFSET = 108;
export const FILE_LEN = 128;
/**
 * RFC 1542 §3.4 / RFC 2131 §2: a BOOTP message is at least 300 bytes; some PXE ROMs drop
 * shorter replies, so encoded packets are padded to this size.
 */
export const MIN_BOOTP_LEN = 300;
/** RFC 2131 §2: every client accepts 576-byte IP datagrams, i.e. 548 bytes of DHCP. */
export const DEFAULT_MAX_MESSAGE = 548;

/** Option 53 values (RFC 2132 §9.6). */
export const MESSAGE_TYPES = {
  discover: 1,
  offer: 2,
  request: 3,
  decline: 4,
  ack: 5,
  nak: 6,
  release: 7,
  inform: 8,
} as const;
export type MessageType = keyof typeof MESSAGE_TYPES;
export const MESSAGE_TYPE_BY_CODE: ReadonlyMap<number, MessageType> = new Map(
  Object.entries(MESSAGE_TYPES).map(([name, code]) => [code, name as MessageType]),
);

/** How an option's value is laid out on the wire. */
export type WireType =
  | 'ip' // 4 bytes
  | 'ips' // n × 4 bytes, n ≥ 1
  | 'u8'
  | 'u16'
  | 'u32'
  | 'u16s' // n × 2 bytes
  | 'string' // NVT ASCII; we read and write it byte for byte (latin1)
  | 'bytes'; // opaque or encapsulated

/** Option codes we read or write (RFC 2132 unless noted). */
export const OPT = {
  PAD: 0,
  SUBNET_MASK: 1, // ip
  ROUTER: 3, // ips
  DOMAIN_SERVER: 6, // ips
  HOST_NAME: 12, // string
  DOMAIN_NAME: 15, // string
  VENDOR_SPECIFIC: 43, // bytes; for PXEClient, encapsulated PXE options (PXE 2.1 §2.4.4)
  REQUESTED_IP: 50, // ip
  LEASE_TIME: 51, // u32, seconds
  OVERLOAD: 52, // u8: 1 file, 2 sname, 3 both hold options
  MESSAGE_TYPE: 53, // u8
  SERVER_ID: 54, // ip
  PARAMETER_REQUEST_LIST: 55, // bytes (list of codes)
  MESSAGE: 56, // string (NAK reason)
  MAX_MESSAGE_SIZE: 57, // u16
  RENEWAL_TIME: 58, // u32, T1
  REBINDING_TIME: 59, // u32, T2
  VENDOR_CLASS_ID: 60, // string: PXEClient:Arch:xxxxx:UNDI:yyyzzz, HTTPClient:..., udhcp 1.36
  CLIENT_ID: 61, // bytes
  TFTP_SERVER_NAME: 66, // string
  BOOTFILE_NAME: 67, // string
  USER_CLASS: 77, // bytes: RFC 3004 length-prefixed list, but iPXE sends the bare string "iPXE"
  RELAY_AGENT_INFO: 82, // bytes (RFC 3046), echoed back to the relay
  CLIENT_ARCH: 93, // u16s (RFC 4578 §2.1)
  CLIENT_NDI: 94, // bytes: type, major, minor (RFC 4578 §2.2)
  CLIENT_UUID: 97, // bytes: type 0 + 16-byte GUID (RFC 4578 §2.3)
  IPXE_ENCAP: 175, // bytes: iPXE's encapsulated settings (feature list from the client)
  END: 255,
} as const;

/** Wire type of every option we interpret; any other code is carried as opaque bytes. */
export const OPTION_TYPES: ReadonlyMap<number, { name: string; wire: WireType }> = new Map([
  [OPT.SUBNET_MASK, { name: 'subnet mask', wire: 'ip' }],
  [OPT.ROUTER, { name: 'router', wire: 'ips' }],
  [OPT.DOMAIN_SERVER, { name: 'domain name server', wire: 'ips' }],
  [OPT.HOST_NAME, { name: 'host name', wire: 'string' }],
  [OPT.DOMAIN_NAME, { name: 'domain name', wire: 'string' }],
  [OPT.VENDOR_SPECIFIC, { name: 'vendor-specific information', wire: 'bytes' }],
  [OPT.REQUESTED_IP, { name: 'requested IP address', wire: 'ip' }],
  [OPT.LEASE_TIME, { name: 'IP address lease time', wire: 'u32' }],
  [OPT.OVERLOAD, { name: 'option overload', wire: 'u8' }],
  [OPT.MESSAGE_TYPE, { name: 'DHCP message type', wire: 'u8' }],
  [OPT.SERVER_ID, { name: 'server identifier', wire: 'ip' }],
  [OPT.PARAMETER_REQUEST_LIST, { name: 'parameter request list', wire: 'bytes' }],
  [OPT.MESSAGE, { name: 'message', wire: 'string' }],
  [OPT.MAX_MESSAGE_SIZE, { name: 'maximum DHCP message size', wire: 'u16' }],
  [OPT.RENEWAL_TIME, { name: 'renewal (T1) time', wire: 'u32' }],
  [OPT.REBINDING_TIME, { name: 'rebinding (T2) time', wire: 'u32' }],
  [OPT.VENDOR_CLASS_ID, { name: 'vendor class identifier', wire: 'string' }],
  [OPT.CLIENT_ID, { name: 'client identifier', wire: 'bytes' }],
  [OPT.TFTP_SERVER_NAME, { name: 'TFTP server name', wire: 'string' }],
  [OPT.BOOTFILE_NAME, { name: 'bootfile name', wire: 'string' }],
  [OPT.USER_CLASS, { name: 'user class', wire: 'bytes' }],
  [OPT.RELAY_AGENT_INFO, { name: 'relay agent information', wire: 'bytes' }],
  [OPT.CLIENT_ARCH, { name: 'client system architecture', wire: 'u16s' }],
  [OPT.CLIENT_NDI, { name: 'client network device interface', wire: 'bytes' }],
  [OPT.CLIENT_UUID, { name: 'client machine identifier', wire: 'bytes' }],
  [OPT.IPXE_ENCAP, { name: 'iPXE encapsulated options', wire: 'bytes' }],
]);

/** PXE vendor options inside option 43 (PXE 2.1 §2.4.4). */
export const PXE_DISCOVERY_CONTROL = 6;
/**
 * Discovery control bit 3: "if a boot file name is present in the (Proxy)DHCP offer,
 * download it" — no boot server discovery, no menu. Pixiecore and dnsmasq send this to
 * BIOS PXE ROMs in proxy mode.
 */
export const PXE_DISCOVERY_USE_BOOTFILE = 0x08;

/** iPXE settings inside option 175 (iPXE `include/ipxe/dhcp.h`). */
export const IPXE_NO_PXEDHCP = 176;

/**
 * Client system architectures, option 93 (RFC 4578 §2.1 and the IANA "Processor
 * Architecture Types" registry).
 */
export const ARCH = {
  X86_BIOS: 0,
  EFI_IA32: 6,
  EFI_X64: 7,
  /** Registered as "EFI Byte Code", but x86-64 UEFI firmware sends it too (Pixiecore, iPXE treat it as x64). */
  EFI_BC: 9,
  EFI_ARM32: 10,
  EFI_ARM64: 11,
  EFI_IA32_HTTP: 15,
  EFI_X64_HTTP: 16,
  EFI_ARM64_HTTP: 19,
} as const;

/** Option 60 prefixes of network-boot clients (PXE 2.1 §2.4; UEFI 2.x §24.7 HTTP Boot). */
export const VENDOR_PXE_CLIENT = 'PXEClient';
export const VENDOR_HTTP_CLIENT = 'HTTPClient';
