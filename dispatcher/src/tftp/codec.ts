/**
 * TFTP wire format, the part the dispatcher decides on: read/write requests with their
 * options (RFC 1350 §5, RFC 2347 option extension) and ERROR packets. Pure: bytes in,
 * typed request out, and back. The transfer itself (DATA/ACK/OACK windows) is node-tftp's,
 * behind tftp/node-tftp.ts.
 */

/** RFC 1350 §5 opcodes; OACK from RFC 2347. */
export const TftpOpcode = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;

/** RFC 1350 Appendix error codes; 8 from RFC 2347 (option negotiation refused). */
export const TftpErrorCode = {
  NOT_DEFINED: 0,
  FILE_NOT_FOUND: 1,
  ACCESS_VIOLATION: 2,
  DISK_FULL: 3,
  ILLEGAL_OPERATION: 4,
  UNKNOWN_TID: 5,
  FILE_EXISTS: 6,
  NO_SUCH_USER: 7,
  OPTION_REFUSED: 8,
} as const;
export type TftpErrorCode = (typeof TftpErrorCode)[keyof typeof TftpErrorCode];

/** RFC 2347 §2: a request with its options must fit in 512 bytes. */
export const MAX_REQUEST_BYTES = 512;

export type TftpMode = 'octet' | 'netascii' | 'mail';

export interface TftpRequest {
  kind: 'read' | 'write';
  /** As sent, bytes read as latin1 (RFC 1350 names are netascii). */
  filename: string;
  mode: TftpMode;
  /** RFC 2347 options; names lower-cased (they are case-insensitive), values as sent. */
  options: Record<string, string>;
}

/** A packet that is not a well-formed request; names the field and where it broke. */
export class TftpDecodeError extends Error {
  constructor(
    readonly field: string,
    message: string,
    readonly offset: number,
    readonly length: number,
  ) {
    super(`${field}: ${message} (at byte ${offset} of ${length})`);
    this.name = 'TftpDecodeError';
  }
}

/** Decodes an RRQ or WRQ (RFC 1350 §5 figure 5-1, RFC 2347 §2). Throws TftpDecodeError. */
export function decodeRequest(packet: Uint8Array): TftpRequest {
  const len = packet.length;
  if (len < 4) throw new TftpDecodeError('opcode', 'packet too short for a request', 0, len);
  if (len > MAX_REQUEST_BYTES)
    throw new TftpDecodeError('packet', `request longer than ${MAX_REQUEST_BYTES} bytes`, MAX_REQUEST_BYTES, len);
  const op = (packet[0]! << 8) | packet[1]!;
  if (op !== TftpOpcode.RRQ && op !== TftpOpcode.WRQ) throw new TftpDecodeError('opcode', `${op} is not RRQ or WRQ`, 0, len);
  let offset = 2;
  const field = (name: string): string => {
    const end = packet.indexOf(0, offset);
    if (end < 0) throw new TftpDecodeError(name, 'missing NUL terminator', offset, len);
    const s = Buffer.from(packet.buffer, packet.byteOffset + offset, end - offset).toString('latin1');
    offset = end + 1;
    return s;
  };
  const filename = field('filename');
  if (filename.length === 0) throw new TftpDecodeError('filename', 'empty', 2, len);
  const modeText = field('mode').toLowerCase();
  if (modeText !== 'octet' && modeText !== 'netascii' && modeText !== 'mail')
    throw new TftpDecodeError('mode', `unknown mode "${printable(modeText)}"`, offset, len);
  const options: Record<string, string> = Object.create(null) as Record<string, string>;
  while (offset < len) {
    const name = field('option name').toLowerCase();
    const value = field(`option ${printable(name)}`);
    if (name.length === 0) throw new TftpDecodeError('option name', 'empty', offset, len);
    options[name] = value;
  }
  return { kind: op === TftpOpcode.RRQ ? 'read' : 'write', filename, mode: modeText, options };
}

/** Encodes an RRQ/WRQ (for tests and tools). */
export function encodeRequest(req: TftpRequest): Buffer {
  const parts: Buffer[] = [Buffer.from([0, req.kind === 'read' ? TftpOpcode.RRQ : TftpOpcode.WRQ])];
  const str = (s: string) => parts.push(Buffer.from(s, 'latin1'), Buffer.from([0]));
  str(req.filename);
  str(req.mode);
  for (const [k, v] of Object.entries(req.options)) {
    str(k);
    str(v);
  }
  return Buffer.concat(parts);
}

/** ERROR packet (RFC 1350 §5 figure 5-4). The message is sent as printable ASCII. */
export function encodeError(code: TftpErrorCode, message: string): Buffer {
  const text = Buffer.from(printable(message).slice(0, 200), 'latin1');
  const buf = Buffer.alloc(4 + text.length + 1);
  buf.writeUInt16BE(TftpOpcode.ERROR, 0);
  buf.writeUInt16BE(code, 2);
  text.copy(buf, 4);
  return buf;
}

export interface TftpErrorPacket {
  code: number;
  message: string;
}

/** Decodes an ERROR packet; undefined for any other packet. */
export function decodeError(packet: Uint8Array): TftpErrorPacket | undefined {
  if (packet.length < 4 || packet[0] !== 0 || packet[1] !== TftpOpcode.ERROR) return undefined;
  const end = packet.indexOf(0, 4);
  const message = Buffer.from(packet.buffer, packet.byteOffset + 4, (end < 0 ? packet.length : end) - 4).toString('latin1');
  return { code: (packet[2]! << 8) | packet[3]!, message: printable(message) };
}

/** Opcode of any TFTP packet, or undefined if it is too short to have one. */
export function opcodeOf(packet: Uint8Array): number | undefined {
  return packet.length >= 2 ? (packet[0]! << 8) | packet[1]! : undefined;
}

/** Block number of an ACK (RFC 1350 figure 5-3), undefined for anything else. */
export function ackBlockOf(packet: Uint8Array): number | undefined {
  return packet.length === 4 && packet[0] === 0 && packet[1] === TftpOpcode.ACK ? (packet[2]! << 8) | packet[3]! : undefined;
}

/** Replaces anything but printable ASCII, for logs and error messages. */
export function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}
