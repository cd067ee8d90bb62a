/**
 * The agent's settings: command-line flags, else environment, else the kernel command line
 * (how the RAM image passes them: the boot script puts lc.* on it). A pure function of those
 * three inputs, so tests need no process of their own.
 *
 *   setting          flag                  environment       kernel command line
 *   dispatcher URL   --dispatcher URL      LC_DISPATCHER     lc.dispatcher=
 *     (or, first of all, the text of --dispatcher-file FILE / LC_DISPATCHER_FILE once it exists: main.ts)
 *     A comma list names every dispatcher (standby dispatchers): the agent tries them in turn.
 *   boot token       --token T             LC_TOKEN          lc.token=
 *   enrollment token --enroll-token T      LC_ENROLL_TOKEN   —
 *   dispatcher key   --dispatcher-key FILE LC_PUBKEY_FILE    /etc/lilcluster/dispatcher.pub, then lc.pubkey=<base64>
 *   insecure mode    --insecure            LC_INSECURE=1     lc.insecure=1
 *   node MAC         --mac MAC             LC_MAC            lc.mac=, BOOTIF=01-aa-bb-...
 *   slots            --slots N             LC_SLOTS          lc.slots=
 *   task memory, MiB --task-memory N      LC_TASK_MEMORY    lc.task_memory=
 *   agent's reserve  --reserve-memory N    LC_RESERVE_MEMORY lc.reserve_memory=
 *   GPUs             --gpus N              LC_GPUS           lc.gpus=
 *
 * The key on the kernel command line is the weakest source: that line comes from the boot
 * script, i.e. from whoever answered the PXE boot, so it is used only when no file is there.
 */
import { DEFAULT_KILL_GRACE_MS, DEFAULT_MAX_OUTPUT_BYTES } from './runner.js';
import { AGENT_PATH } from '../../dispatcher/src/protocol/messages.js';
import { DEFAULT_RESERVE_MIB } from './cgroup.js';

/** Where the RAM image carries the dispatcher's public key (`make image DISPATCHER_KEY=...`). */
export const IMAGE_KEY_PATH = '/etc/lilcluster/dispatcher.pub';

export interface AgentFlags {
  dispatcher?: string;
  token?: string;
  enrollToken?: string;
  dispatcherKey?: string;
  insecure?: boolean;
  slots?: number;
  prefetch?: number;
  workDir?: string;
  maxOutput?: number;
  mac?: string;
  allowPower?: boolean;
  killGraceMs?: number;
  taskMemory?: number | string;
  reserveMemory?: number | string;
  gpus?: number | string;
}

export type KeySource = { kind: 'file'; path: string } | { kind: 'inline'; b64: string; from: string };

/** One dispatcher as the agent reaches it. */
export interface DispatcherAddress {
  /** ws(s)://host:port/api/v1/agent */
  wsUrl: string;
  /** http(s)://host:port — for inputs tars. */
  httpBase: string;
}

export interface AgentSettings extends DispatcherAddress {
  /** Every dispatcher, in the order given; the first is `wsUrl`/`httpBase`. */
  dispatchers: DispatcherAddress[];
  auth: { kind: 'boot' | 'enroll'; token: string };
  key: KeySource | null;
  insecure: boolean;
  mac: string | null;
  slots: number;
  prefetch: number;
  workDir: string;
  maxOutputBytes: number;
  allowPower: boolean;
  killGraceMs: number;
  /** Memory handed out to tasks, all together; null: what is available at start less the reserve. */
  taskMemMiB: number | null;
  /** Memory kept for the agent (its cgroup's memory.min) and left out of the tasks'. */
  reserveMiB: number;
  /** GPUs handed out to tasks; null: the /dev/nvidiaN devices counted. */
  gpus: number | null;
}

export class AgentConfigError extends Error {}

export function parseKernelCmdline(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of text.trim().split(/\s+/)) {
    const eq = part.indexOf('=');
    if (eq > 0) out.set(part.slice(0, eq), part.slice(eq + 1));
    else if (part) out.set(part, '');
  }
  return out;
}

const MAC_RE = /^([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})$/i;

function normMac(text: string, from: string): string {
  const m = MAC_RE.exec(text.trim());
  if (!m) throw new AgentConfigError(`${from}: "${text}" is not a MAC address`);
  return m.slice(1, 7).join(':').toLowerCase();
}

/** `http://host:8080`, `ws://host:8080/api/v1/agent` or `host:8080` → both URLs. */
export function dispatcherUrls(text: string): DispatcherAddress {
  let u: URL;
  try {
    u = new URL(/^[a-z]+:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    throw new AgentConfigError(`dispatcher URL "${text}" is not a URL (e.g. http://10.42.0.1:8080)`);
  }
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol))
    throw new AgentConfigError(`dispatcher URL "${text}": use http:// or ws://`);
  const hostPort = u.host;
  const path = u.pathname === '/' || u.pathname === '' ? AGENT_PATH : u.pathname;
  return { wsUrl: `${secure ? 'wss' : 'ws'}://${hostPort}${path}`, httpBase: `${secure ? 'https' : 'http'}://${hostPort}` };
}

/**
 * `URL1,URL2,...` (every dispatcher of a leader and its standbys) → each one's URLs, in order,
 * the same dispatcher named twice kept once. A bad entry is named with its position.
 */
export function dispatcherList(text: string): DispatcherAddress[] {
  const parts = text.split(',').map((p) => p.trim());
  const out: DispatcherAddress[] = [];
  parts.forEach((part, i) => {
    const where = parts.length > 1 ? `dispatcher ${i + 1} of ${parts.length} in "${text}"` : 'the dispatcher';
    if (part === '') throw new AgentConfigError(`${where} is empty (give URL1,URL2,... with no empty entries)`);
    let d: DispatcherAddress;
    try {
      d = dispatcherUrls(part);
    } catch (err) {
      throw new AgentConfigError(parts.length > 1 ? `${where}: ${(err as Error).message}` : (err as Error).message, { cause: err });
    }
    if (!out.some((o) => o.wsUrl === d.wsUrl)) out.push(d);
  });
  return out;
}

function positiveInt(v: unknown, from: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new AgentConfigError(`${from}: expected a positive integer, got "${String(v)}"`);
  return n;
}

export function resolveSettings(
  flags: AgentFlags,
  env: Record<string, string | undefined>,
  cmdline: Map<string, string>,
  opts: { cpuCount: number; fileExists: (p: string) => boolean; tmpDir: string },
): AgentSettings {
  const dispatcher = flags.dispatcher ?? env.LC_DISPATCHER ?? cmdline.get('lc.dispatcher');
  if (!dispatcher)
    throw new AgentConfigError('no dispatcher URL: pass --dispatcher URL, set LC_DISPATCHER, or boot with lc.dispatcher=URL');
  const dispatchers = dispatcherList(dispatcher);
  const { wsUrl, httpBase } = dispatchers[0]!;

  const bootToken = flags.token ?? env.LC_TOKEN ?? cmdline.get('lc.token');
  const enrollToken = flags.enrollToken ?? env.LC_ENROLL_TOKEN;
  let auth: AgentSettings['auth'];
  if (flags.enrollToken !== undefined) auth = { kind: 'enroll', token: flags.enrollToken };
  else if (bootToken) auth = { kind: 'boot', token: bootToken };
  else if (enrollToken) auth = { kind: 'enroll', token: enrollToken };
  else
    throw new AgentConfigError(
      "no token: a PXE-booted node gets lc.token= from its boot script; on another host pass --enroll-token (the dispatcher's enroll.token)",
    );

  let key: KeySource | null = null;
  const keyFile = flags.dispatcherKey ?? env.LC_PUBKEY_FILE;
  if (keyFile) key = { kind: 'file', path: keyFile };
  else if (opts.fileExists(IMAGE_KEY_PATH)) key = { kind: 'file', path: IMAGE_KEY_PATH };
  else if (cmdline.get('lc.pubkey'))
    key = { kind: 'inline', b64: cmdline.get('lc.pubkey')!, from: 'lc.pubkey= on the kernel command line' };

  const insecure = flags.insecure === true || env.LC_INSECURE === '1' || cmdline.get('lc.insecure') === '1';

  let mac: string | null = null;
  if (flags.mac) mac = normMac(flags.mac, '--mac');
  else if (env.LC_MAC) mac = normMac(env.LC_MAC, 'LC_MAC');
  else if (cmdline.get('lc.mac')) mac = normMac(cmdline.get('lc.mac')!, 'lc.mac=');
  else if (cmdline.get('BOOTIF')) mac = normMac(cmdline.get('BOOTIF')!.replace(/^01-/, ''), 'BOOTIF='); // pxelinux form: 01-<mac with hyphens>

  const slotsRaw = flags.slots ?? env.LC_SLOTS ?? cmdline.get('lc.slots');
  const slots = slotsRaw === undefined ? Math.max(1, opts.cpuCount) : positiveInt(slotsRaw, 'slots');
  const prefetch = flags.prefetch === undefined ? 0 : Number(flags.prefetch);
  if (!Number.isInteger(prefetch) || prefetch < 0)
    throw new AgentConfigError(`--prefetch: expected an integer ≥ 0, got "${String(flags.prefetch)}"`);
  const maxOutputBytes = flags.maxOutput === undefined ? DEFAULT_MAX_OUTPUT_BYTES : positiveInt(flags.maxOutput, '--max-output');
  const killGraceMs = flags.killGraceMs === undefined ? DEFAULT_KILL_GRACE_MS : positiveInt(flags.killGraceMs, '--kill-grace');
  const workDir = flags.workDir ?? `${opts.tmpDir}/lc-agent${mac ? `-${mac.replaceAll(':', '')}` : ''}`;
  const mib = (v: number | string | undefined, from: string): number | null => {
    if (v === undefined) return null;
    const n = Number(v);
    if (String(v).trim() === '' || !Number.isInteger(n) || n < 0)
      throw new AgentConfigError(`${from}: expected MiB, an integer ≥ 0, got "${String(v)}"`);
    return n;
  };
  const taskMemMiB = mib(flags.taskMemory ?? env.LC_TASK_MEMORY ?? cmdline.get('lc.task_memory'), 'task memory');
  const reserveMiB =
    mib(flags.reserveMemory ?? env.LC_RESERVE_MEMORY ?? cmdline.get('lc.reserve_memory'), 'reserve memory') ?? DEFAULT_RESERVE_MIB;
  const gpusRaw = flags.gpus ?? env.LC_GPUS ?? cmdline.get('lc.gpus');
  let gpus: number | null = null;
  if (gpusRaw !== undefined) {
    gpus = Number(gpusRaw);
    if (String(gpusRaw).trim() === '' || !Number.isInteger(gpus) || gpus < 0)
      throw new AgentConfigError(`gpus: expected an integer ≥ 0, got "${String(gpusRaw)}"`);
  }

  return {
    wsUrl,
    httpBase,
    dispatchers,
    auth,
    key,
    insecure,
    mac,
    slots,
    prefetch,
    workDir,
    maxOutputBytes,
    allowPower: flags.allowPower === true,
    killGraceMs,
    taskMemMiB,
    reserveMiB,
    gpus,
  };
}

/**
 * Where task work dirs go by default: the temp dir if it is in RAM (the diskless image's
 * /tmp), else /dev/shm when that is a tmpfs (hosts whose /tmp is on disk: creating and
 * removing a directory per task there costs milliseconds, e.g. ext4 mounted with discard),
 * else the temp dir anyway. `mounts` is /proc/mounts.
 */
export function defaultWorkRoot(mounts: string, tmpDir: string): string {
  const fsTypeOf = (path: string): string | undefined => {
    let best: { mp: string; type: string } | undefined;
    for (const line of mounts.split('\n')) {
      const [, mp, type] = line.split(' ');
      if (!mp || !type) continue;
      if ((path === mp || path.startsWith(mp.endsWith('/') ? mp : `${mp}/`)) && (!best || mp.length >= best.mp.length)) best = { mp, type };
    }
    return best?.type;
  };
  const inRam = (t: string | undefined) => t === 'tmpfs' || t === 'ramfs' || t === 'rootfs';
  if (inRam(fsTypeOf(tmpDir))) return tmpDir;
  if (inRam(fsTypeOf('/dev/shm'))) return '/dev/shm';
  return tmpDir;
}
