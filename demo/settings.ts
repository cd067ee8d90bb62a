/**
 * The demo's settings: fixed names and addresses of its private network, and what the
 * environment may change (DEMO_*). Pure: `demoSettings(env, repoRoot)`.
 */
import { isAbsolute, join, resolve } from 'node:path';
import type { Firmware } from '../test/lab/qemu.js';

/** Every interface the demo creates starts with this; `stop` removes whatever matches it. */
export const IFACE_PREFIX = 'lcdemo';
export const BRIDGE = `${IFACE_PREFIX}0`;
/** The node network: the dispatcher is .1, nodes get fixed addresses .11, .12..., the pool is for strangers. */
export const SUBNET_PREFIX = '10.77.0';
export const DISPATCHER_IP = `${SUBNET_PREFIX}.1`;
export const DHCP_RANGE = `${SUBNET_PREFIX}.100-${SUBNET_PREFIX}.199`;
/** The dispatcher's port on the bridge address; the host's localhost port forwards to it. */
export const DISPATCHER_PORT = 8080;

export const DEFAULT_NODES = 3;
export const MAX_NODES = 9;
/** Enough for the 30 MiB initrd, its 104 MiB unpacked root and a Node task (~140 MiB used after boot). */
export const DEFAULT_MEMORY_MIB = 512;
export const DEFAULT_TASKS = 300;
/** Per task; 300 × 100,000 samples put π̂ within ±0.0003 (1 σ). */
export const DEFAULT_SAMPLES = 100_000;
/** A UEFI PXE boot takes ~60 s under TCG on an idle 2-core machine; several at once on a loaded one, a few minutes. */
export const DEFAULT_BOOT_TIMEOUT_S = 600;
/** The run fails when |π̂ − π| is larger (30 σ with the defaults: only a wrong result fails). */
export const PI_TOLERANCE = 0.01;

export type Accel = 'auto' | 'kvm' | 'tcg';

export interface DemoNode {
  name: string;
  mac: string;
  ip: string;
  firmware: Firmware;
  tap: string;
}

export interface DemoSettings {
  repoRoot: string;
  /** State: pid files, logs, consoles, the dispatcher's data dir. Absolute. */
  stateDir: string;
  dataDir: string;
  nodes: DemoNode[];
  /** Check the result, tear down and exit with the outcome (CI). */
  exitWhenDone: boolean;
  accel: Accel;
  memoryMiB: number;
  /** vCPUs per machine (the agent runs as many tasks at once). */
  cpus: number;
  /** The host's 127.0.0.1 port that forwards to the dispatcher. */
  localPort: number;
  tasks: number;
  samples: number;
  bootTimeoutS: number;
}

export class SettingsError extends Error {
  override name = 'SettingsError';
}

function intSetting(env: NodeJS.ProcessEnv, name: string, def: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new SettingsError(`${name}=${raw}: expected a whole number from ${min} to ${max}`);
  return n;
}

/** node1 BIOS, node2 UEFI, node3 BIOS...: odd nodes BIOS, even ones UEFI, so two nodes already mix them. */
export function demoNodes(count: number): DemoNode[] {
  return Array.from({ length: count }, (_, i) => {
    const k = i + 1;
    return {
      name: `node${k}`,
      mac: `52:54:00:77:00:${k.toString(16).padStart(2, '0')}`,
      ip: `${SUBNET_PREFIX}.${10 + k}`,
      firmware: k % 2 === 1 ? 'bios' : 'uefi',
      tap: `${IFACE_PREFIX}-n${k}`,
    };
  });
}

export function demoSettings(env: NodeJS.ProcessEnv, repoRoot: string): DemoSettings {
  const dir = env.DEMO_DIR || join(repoRoot, '.cache', 'demo');
  const stateDir = isAbsolute(dir) ? dir : resolve(repoRoot, dir);
  const accel = (env.DEMO_ACCEL || 'auto') as Accel;
  if (!['auto', 'kvm', 'tcg'].includes(accel)) throw new SettingsError(`DEMO_ACCEL=${accel}: expected auto, kvm or tcg`);
  const exitRaw = env.DEMO_EXIT ?? '';
  if (!['', '0', '1'].includes(exitRaw)) throw new SettingsError(`DEMO_EXIT=${exitRaw}: expected 1 (or 0)`);
  return {
    repoRoot,
    stateDir,
    dataDir: join(stateDir, 'data'),
    nodes: demoNodes(intSetting(env, 'DEMO_NODES', DEFAULT_NODES, 1, MAX_NODES)),
    exitWhenDone: exitRaw === '1',
    accel,
    memoryMiB: intSetting(env, 'DEMO_MEMORY_MIB', DEFAULT_MEMORY_MIB, 384, 65536),
    cpus: intSetting(env, 'DEMO_CPUS', 1, 1, 64),
    localPort: intSetting(env, 'DEMO_PORT', DISPATCHER_PORT, 1, 65535),
    tasks: intSetting(env, 'DEMO_TASKS', DEFAULT_TASKS, 1, 100_000),
    samples: intSetting(env, 'DEMO_SAMPLES', DEFAULT_SAMPLES, 1000, 1_000_000_000),
    bootTimeoutS: intSetting(env, 'DEMO_BOOT_TIMEOUT', DEFAULT_BOOT_TIMEOUT_S, 30, 86_400),
  };
}

/** The cluster file: each demo machine by MAC under its name, with a fixed address and its firmware as a label. */
export function clusterFileText(nodes: readonly DemoNode[]): string {
  const lines = ['# Written by make demo: the demo machines by MAC.', 'enrollment: auto', 'nodes:'];
  for (const n of nodes) {
    lines.push(`  - name: ${n.name}`, `    mac: "${n.mac}"`, `    ip: ${n.ip}`, `    labels: [demo, ${n.firmware}]`);
  }
  return lines.join('\n') + '\n';
}
