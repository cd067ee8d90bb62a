/**
 * The real Inventory, from systeminformation and /proc: what the machine is (sent once in
 * hello), how it is doing (every heartbeat: cheap reads only, no child processes), and a
 * full snapshot on demand (inspect). Every systeminformation call is bounded in time: a
 * missing tool (dmidecode, lsblk) must not hold up the hello.
 */
import { readFileSync } from 'node:fs';
import { hostname, loadavg, uptime, arch as osArch, release } from 'node:os';
import si from 'systeminformation';
import type { Inventory as InventoryInfo } from '../../dispatcher/src/protocol/messages.js';
import type { Inventory, LiveFigures } from './seams.js';

/** Each systeminformation call gets this long before we go on without it. */
const SI_TIMEOUT_MS = 5000;

function withTimeout<T>(p: Promise<T>, fallback: T, ms = SI_TIMEOUT_MS): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.catch(() => fallback),
    new Promise<T>((resolve) => {
      t = setTimeout(() => resolve(fallback), ms);
      t.unref();
    }),
  ]).finally(() => clearTimeout(t));
}

const clip = (s: unknown, n: number): string => String(s ?? '').slice(0, n);

/** Whether / is in RAM: the initramfs's rootfs, or a tmpfs/ramfs the image switched to. */
export function rootIsInRam(mounts = readMounts()): boolean {
  let type: string | undefined;
  for (const line of mounts.split('\n')) {
    const f = line.split(' ');
    if (f[1] === '/') type = f[2]; // the last mount on / is the one in use
  }
  return type === 'rootfs' || type === 'tmpfs' || type === 'ramfs';
}

function readMounts(): string {
  try {
    return readFileSync('/proc/mounts', 'utf8');
  } catch {
    return '';
  }
}

export function readMemInfoMiB(): { totalMiB: number; availableMiB: number } | null {
  try {
    const text = readFileSync('/proc/meminfo', 'latin1');
    const get = (k: string) => {
      const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text);
      return m ? Number(m[1]) / 1024 : undefined;
    };
    const total = get('MemTotal');
    const avail = get('MemAvailable') ?? get('MemFree');
    return total !== undefined && avail !== undefined ? { totalMiB: total, availableMiB: avail } : null;
  } catch {
    return null;
  }
}

export class SystemInventory implements Inventory {
  #cached: Promise<InventoryInfo> | undefined;

  collect(): Promise<InventoryInfo> {
    this.#cached ??= this.#collect();
    return this.#cached;
  }

  async #collect(): Promise<InventoryInfo> {
    const [cpu, mem, nics, disks, system, os] = await Promise.all([
      withTimeout(si.cpu(), null),
      withTimeout(si.mem(), null),
      withTimeout(si.networkInterfaces(), []),
      withTimeout(si.diskLayout(), []),
      withTimeout(si.system(), null),
      withTimeout(si.osInfo(), null),
    ]);
    const memTotal = mem?.total ?? (readMemInfoMiB()?.totalMiB ?? 0) * 1024 * 1024;
    return {
      hostname: clip(os?.hostname || hostname(), 255),
      cpu: {
        model: clip([cpu?.manufacturer, cpu?.brand].filter(Boolean).join(' '), 256),
        cores: cpu?.cores || 1,
        physicalCores: cpu?.physicalCores || cpu?.cores || 1,
        speedGHz: cpu?.speed ? cpu.speed : null,
      },
      memoryMiB: Math.round(memTotal / 1024 / 1024),
      nics: (Array.isArray(nics) ? nics : [nics])
        .filter((n) => !n.internal)
        .slice(0, 256)
        .map((n) => ({
          name: clip(n.iface, 64),
          mac: clip(n.mac, 64),
          ipv4: n.ip4 ? clip(n.ip4, 64) : null,
          speedMbps: typeof n.speed === 'number' && n.speed > 0 ? n.speed : null,
          virtual: !!n.virtual,
        })),
      disks: disks.slice(0, 256).map((d) => ({
        name: clip(d.device || d.name, 256),
        type: clip(d.type, 64),
        sizeBytes: d.size || 0,
        model: clip([d.vendor, d.name].filter(Boolean).join(' '), 256),
      })),
      system: {
        manufacturer: clip(system?.manufacturer, 256),
        model: clip(system?.model, 256),
        uuid: clip(system?.uuid, 128),
        serial: clip(system?.serial, 256),
      },
      os: { kernel: clip(os?.kernel || release(), 128), distro: clip(os?.distro, 256), arch: clip(os?.arch || osArch(), 32) },
      ramRoot: rootIsInRam(),
    };
  }

  live(): LiveFigures {
    const mem = readMemInfoMiB();
    return {
      load1: Math.round(loadavg()[0]! * 100) / 100,
      memUsedMiB: mem ? Math.round(mem.totalMiB - mem.availableMiB) : null,
      memTotalMiB: mem ? Math.round(mem.totalMiB) : null,
      uptimeS: Math.round(uptime()),
    };
  }

  async inspect(): Promise<unknown> {
    const [staticData, load, mem, temperatures, fs, net, time] = await Promise.all([
      withTimeout(si.getStaticData(), null, 15_000),
      withTimeout(si.currentLoad(), null),
      withTimeout(si.mem(), null),
      withTimeout(si.cpuTemperature(), null),
      withTimeout(si.fsSize(), null),
      withTimeout(si.networkStats(), null),
      Promise.resolve(si.time()),
    ]);
    return { inventory: await this.collect(), static: staticData, load, mem, temperatures, fs, net, time, live: this.live() };
  }
}
