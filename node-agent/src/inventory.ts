/**
 * The real Inventory: what the machine is (sent once in hello) and how it is doing (every
 * heartbeat), both from file reads only (hardware.ts, /proc/meminfo); a full snapshot from
 * systeminformation on demand (inspect), each call bounded in time so a missing tool
 * (dmidecode, lsblk) cannot hold it up.
 */
import { readFileSync } from 'node:fs';
import { loadavg, uptime } from 'node:os';
import type { Inventory as InventoryInfo } from '../../dispatcher/src/protocol/messages.js';
import type { Inventory, LiveFigures } from './seams.js';
import { readHardware } from './hardware.js';

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
    this.#cached ??= Promise.resolve().then(() => readHardware());
    return this.#cached;
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
    // Loaded on first use: the module is large and the hello does not need it.
    const { default: si } = await import('systeminformation');
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
