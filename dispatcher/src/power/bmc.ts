/**
 * A node's baseboard management controller (BMC): what the cluster file says about it, the
 * power actions every driver offers, and the checks on its password file. The drivers are
 * ipmi.ts (ipmitool, IPMI over LAN) and redfish.ts (HTTPS, DMTF Redfish).
 *
 * The password never leaves its file through us: ipmitool reads the file itself (-f), the
 * Redfish driver reads it for one request's Authorization header; no answer, event or log
 * line carries it.
 */
import { readFileSync, statSync } from 'node:fs';
import { DispatcherError } from '../errors.js';

export type BmcType = 'ipmi' | 'redfish';
export type PowerAction = 'on' | 'off' | 'cycle' | 'reset';
export const POWER_ACTIONS: readonly PowerAction[] = ['on', 'off', 'cycle', 'reset'];
export type PowerState = 'on' | 'off' | 'unknown';

/** A BMC as the cluster file gives it (per node, or per label group with its address expanded). */
export interface BmcSpec {
  type: BmcType;
  /** host or host:port (IPMI default 623, Redfish 443). */
  address: string;
  user: string;
  /** Readable by its owner only (mode 0600 or 0400). */
  passwordFile: string;
  /** Redfish: PEM file of the CA that signed the BMC's certificate (default: the system's CAs). */
  ca?: string;
  /** Redfish: false turns certificate checking off; only when the cluster file says so. */
  verify?: boolean;
  /** IPMI: false turns Serial-over-LAN capture of the node's serial console off (console/sol.ts). */
  sol?: boolean;
}

/** A label group's BMCs: `address` has `{n}` (the number at the end of the node's name) or `{name}`. */
export interface BmcGroup extends BmcSpec {
  labels: string[];
}

/** Why a BMC call failed: the service maps each to an error code. */
export type BmcFailureKind = 'auth' | 'timeout' | 'refused' | 'tls';

export class BmcFailure extends Error {
  constructor(
    readonly kind: BmcFailureKind,
    message: string,
  ) {
    super(message);
    this.name = 'BmcFailure';
  }
}

export interface BmcDriver {
  status(signal: AbortSignal): Promise<PowerState>;
  act(action: PowerAction, signal: AbortSignal): Promise<void>;
}

/** How a BMC is named in messages: never with its user or password. */
export function bmcLabel(b: BmcSpec): string {
  return `${b.type} BMC ${b.address}`;
}

/**
 * Refuses a password file that is missing, not a regular file, or readable by group or
 * world (a BMC password opens the machine's power and console).
 */
export function checkPasswordFile(path: string): string | null {
  let st;
  try {
    st = statSync(path);
  } catch (err) {
    return `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
  }
  if (!st.isFile()) return `${path} is not a regular file`;
  if (st.mode & 0o077)
    return `${path} is readable or writable by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); chmod 600 it`;
  return null;
}

/** The password (first line of the file), after the mode check. */
export function readPassword(b: BmcSpec): string {
  const why = checkPasswordFile(b.passwordFile);
  if (why) throw new DispatcherError('DSP_ERR_CONFIG', `passwordFile of the ${bmcLabel(b)}: ${why}`);
  return readFileSync(b.passwordFile, 'utf8').split(/\r?\n/)[0] ?? '';
}

/** host[:port] → [host, port]; a bracketed IPv6 address keeps its brackets out. */
export function splitAddress(address: string, defaultPort: number): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d{1,5}))?$/.exec(address);
  if (!m) return { host: address, port: defaultPort };
  return { host: (m[1] ?? m[2])!, port: m[3] ? Number(m[3]) : defaultPort };
}

/** `{n}`: the number at the end of the node's name (node12 → 12); `{name}`: the name. Null when the name has no number and {n} is asked. */
export function expandAddress(pattern: string, nodeName: string): string | null {
  const n = /(\d+)$/.exec(nodeName)?.[1];
  if (pattern.includes('{n}') && n === undefined) return null;
  return pattern.replaceAll('{n}', String(Number(n ?? 0))).replaceAll('{name}', nodeName);
}
