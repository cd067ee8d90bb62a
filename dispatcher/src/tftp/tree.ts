/**
 * The TFTP server's policy, pure: which file of the read-only virtual tree a request names,
 * or which TFTP error refuses it, and which options are negotiated. The tree is flat
 * (`undionly.kpxe`, `ipxe.efi`, `snponly.efi`, `vmlinuz`, `initrd.img`); nothing on disk is
 * ever looked up by a client-supplied path.
 */
import { TftpErrorCode, printable, type TftpRequest } from './codec.js';

/** RFC 2348 §2: the valid blksize range. */
export const MIN_BLKSIZE = 8;
export const MAX_BLKSIZE_RFC = 65464;
/** RFC 7440 §3: the valid windowsize range. */
export const MAX_WINDOWSIZE_RFC = 65535;

/** Options we negotiate (node-tftp implements these; timeout and rollover are not echoed). */
export interface NegotiatedOptions {
  blksize?: number;
  windowsize?: number;
  /** RFC 2349: the client asks for the size (0 in an RRQ); the OACK carries the real one. */
  tsize?: 0;
}

export type TftpDecision =
  | { kind: 'serve'; name: string; options: NegotiatedOptions; ignored: string[] }
  | { kind: 'refuse'; code: TftpErrorCode; message: string };

export function decideRequest(req: TftpRequest, served: ReadonlySet<string>): TftpDecision {
  if (req.kind === 'write') return refuse(TftpErrorCode.ACCESS_VIOLATION, 'read-only server: writes are refused');
  if (req.mode === 'mail') return refuse(TftpErrorCode.ILLEGAL_OPERATION, 'mail mode is not supported');
  const name = treeName(req.filename);
  if (name.kind === 'refuse') return name;
  if (!served.has(name.name)) return refuse(TftpErrorCode.FILE_NOT_FOUND, `no file ${printable(req.filename)}`);
  const { options, ignored } = negotiate(req.options);
  return { kind: 'serve', name: name.name, options, ignored };
}

/**
 * Maps a requested name to a name of the flat tree. Accepts `name`, `/name` and `\name`
 * (some ROMs send absolute or DOS-style paths); refuses anything that could name something
 * else: `..` segments, nested paths, control or non-ASCII characters.
 */
export function treeName(filename: string): { kind: 'name'; name: string } | { kind: 'refuse'; code: TftpErrorCode; message: string } {
  if (/[^\x21-\x7e]/.test(filename)) return refuse(TftpErrorCode.ACCESS_VIOLATION, 'file name has control, space or non-ASCII characters');
  const segments = filename.replace(/\\/g, '/').split('/');
  if (segments.some((s) => s === '..' || s === '.')) return refuse(TftpErrorCode.ACCESS_VIOLATION, 'path escapes the boot tree');
  const nonEmpty = segments.filter((s) => s.length > 0);
  if (nonEmpty.length !== 1 || (segments.length > 1 && !(segments.length === 2 && segments[0] === '')))
    return refuse(TftpErrorCode.ACCESS_VIOLATION, 'path outside the boot tree');
  return { kind: 'name', name: nonEmpty[0]! };
}

/**
 * RFC 2347 §4: the server may ignore options it does not support or whose values are
 * invalid; it never fails a request for them. blksize is clamped to the RFC range here
 * (the server then caps it at its own maximum).
 */
export function negotiate(requested: Record<string, string>): { options: NegotiatedOptions; ignored: string[] } {
  const options: NegotiatedOptions = {};
  const ignored: string[] = [];
  for (const [key, value] of Object.entries(requested)) {
    const n = /^\d{1,10}$/.test(value) ? Number(value) : NaN;
    if (key === 'blksize' && n >= MIN_BLKSIZE) options.blksize = Math.min(n, MAX_BLKSIZE_RFC);
    else if (key === 'windowsize' && n >= 1) options.windowsize = Math.min(n, MAX_WINDOWSIZE_RFC);
    // RFC 2349 §2: the client sends 0 in an RRQ; a size from a confused client is ignored, not an error.
    else if (key === 'tsize' && Number.isFinite(n)) options.tsize = 0;
    else ignored.push(printable(key));
  }
  return { options, ignored };
}

function refuse(code: TftpErrorCode, message: string): { kind: 'refuse'; code: TftpErrorCode; message: string } {
  return { kind: 'refuse', code, message };
}
