/**
 * What the machine is, read from /proc, /sys and /etc only: no child process. The hello waits
 * for this on every boot, and on a node a spawned shell pipeline costs far more than a file
 * read (systeminformation's calls start about thirty of them). The full picture from
 * systeminformation stays available on demand (`dispatcherctl inspect`).
 *
 * Every reader takes the file system's root so tests can point it at a fixture tree.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { arch, availableParallelism, hostname, networkInterfaces, release } from 'node:os';
import type { Inventory } from '../../dispatcher/src/protocol/messages.js';

const clip = (s: unknown, n: number): string => String(s ?? '').slice(0, n);

function readText(root: string, path: string): string | undefined {
  try {
    return readFileSync(join(root, path), 'latin1');
  } catch {
    return undefined;
  }
}
const readLine = (root: string, path: string): string => readText(root, path)?.trim() ?? '';

function list(root: string, path: string): string[] {
  try {
    return readdirSync(join(root, path)).sort();
  } catch {
    return [];
  }
}

export interface CpuFacts {
  model: string;
  /** Logical CPUs listed. */
  cores: number;
  /** Distinct (physical id, core id) pairs, or the logical count when the file lacks them. */
  physicalCores: number;
  speedGHz: number | null;
}

/** Parses /proc/cpuinfo (x86 and arm64 spellings). */
export function parseCpuinfo(text: string): CpuFacts {
  let model = '';
  let mhz: number | undefined;
  let logical = 0;
  const physical = new Set<string>();
  for (const block of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of block.split('\n')) {
      const i = line.indexOf(':');
      if (i > 0) fields.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
    }
    if (!fields.has('processor')) continue;
    logical++;
    model ||= fields.get('model name') ?? fields.get('cpu model') ?? '';
    const m = Number(fields.get('cpu mhz'));
    if (mhz === undefined && Number.isFinite(m) && m > 0) mhz = m;
    const socket = fields.get('physical id');
    const core = fields.get('core id');
    if (socket !== undefined && core !== undefined) physical.add(`${socket}/${core}`);
  }
  return {
    model: model.replace(/\s+/g, ' '),
    cores: logical,
    physicalCores: physical.size || logical,
    speedGHz: mhz === undefined ? null : Math.round(mhz / 10) / 100,
  };
}

/** PRETTY_NAME of an os-release file, else NAME VERSION. */
export function parseOsRelease(text: string): string {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) vars.set(m[1]!, m[2]!.replace(/^(["'])(.*)\1$/, '$2'));
  }
  return vars.get('PRETTY_NAME') ?? [vars.get('NAME'), vars.get('VERSION')].filter(Boolean).join(' ');
}

/** MemTotal of /proc/meminfo, in bytes. */
export function parseMemTotalBytes(text: string): number {
  const m = /^MemTotal:\s+(\d+) kB/m.exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

function readNics(root: string): Inventory['nics'] {
  const addresses = networkInterfaces();
  const nics: Inventory['nics'] = [];
  for (const name of list(root, 'sys/class/net')) {
    if (name === 'lo') continue;
    const dir = `sys/class/net/${name}`;
    const hasDevice = readText(root, `${dir}/device/uevent`) !== undefined || list(root, `${dir}/device`).length > 0;
    const speed = Number(readLine(root, `${dir}/speed`));
    const ipv4 = addresses[name]?.find((a) => a.family === 'IPv4')?.address ?? null;
    nics.push({
      name: clip(name, 64),
      mac: clip(readLine(root, `${dir}/address`), 64),
      ipv4: ipv4 ? clip(ipv4, 64) : null,
      speedMbps: Number.isFinite(speed) && speed > 0 ? speed : null,
      virtual: !hasDevice,
    });
    if (nics.length === 256) break;
  }
  return nics;
}

/** Whole disks: not partitions, loop, ram or device-mapper devices. */
function readDisks(root: string): Inventory['disks'] {
  const disks: Inventory['disks'] = [];
  for (const name of list(root, 'sys/block')) {
    if (/^(loop|ram|zram|dm-|sr|fd)/.test(name)) continue;
    const dir = `sys/block/${name}`;
    const sectors = Number(readLine(root, `${dir}/size`));
    const rotational = readLine(root, `${dir}/queue/rotational`);
    const type = name.startsWith('nvme') ? 'NVMe' : rotational === '0' ? 'SSD' : rotational === '1' ? 'HD' : '';
    const vendor = readLine(root, `${dir}/device/vendor`);
    const model = readLine(root, `${dir}/device/model`);
    disks.push({
      name: clip(`/dev/${name}`, 256),
      type,
      sizeBytes: Number.isFinite(sectors) ? sectors * 512 : 0,
      model: clip([vendor, model].filter(Boolean).join(' '), 256),
    });
    if (disks.length === 256) break;
  }
  return disks;
}

/** Whether / is in RAM: the initramfs's rootfs, or a tmpfs/ramfs (or an overlay on one) the image switched to. */
export function rootIsInRam(mounts: string): boolean {
  let type: string | undefined;
  for (const line of mounts.split('\n')) {
    const f = line.split(' ');
    if (f[1] === '/') type = f[2]; // the last mount on / is the one in use
  }
  return type === 'rootfs' || type === 'tmpfs' || type === 'ramfs';
}

/** The hello's inventory, from files only. */
export function readHardware(root = '/'): Inventory {
  const cpu = parseCpuinfo(readText(root, 'proc/cpuinfo') ?? '');
  const dmi = (f: string) => clip(readLine(root, `sys/class/dmi/id/${f}`), 256);
  const osRelease = readText(root, 'etc/os-release') ?? readText(root, 'usr/lib/os-release');
  const machineArch = arch() === 'x64' ? 'x86_64' : arch() === 'arm64' ? 'aarch64' : arch();
  return {
    hostname: clip(readLine(root, 'proc/sys/kernel/hostname') || hostname(), 255),
    cpu: {
      model: clip(cpu.model, 256),
      cores: cpu.cores || availableParallelism(),
      physicalCores: cpu.physicalCores || cpu.cores || 1,
      speedGHz: cpu.speedGHz,
    },
    memoryMiB: Math.round(parseMemTotalBytes(readText(root, 'proc/meminfo') ?? '') / 1048576),
    nics: readNics(root),
    disks: readDisks(root),
    system: {
      manufacturer: dmi('sys_vendor'),
      model: dmi('product_name'),
      uuid: clip(dmi('product_uuid').toLowerCase(), 128),
      serial: dmi('product_serial'),
    },
    os: {
      kernel: clip(readLine(root, 'proc/sys/kernel/osrelease') || release(), 128),
      distro: clip(osRelease === undefined ? '' : parseOsRelease(osRelease), 256),
      arch: clip(machineArch, 32),
    },
    ramRoot: rootIsInRam(readText(root, 'proc/mounts') ?? ''),
  };
}
