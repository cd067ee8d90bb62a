/**
 * Dispatcher configuration: defaults, overridden by a YAML file (`--config`), overridden by
 * command-line flags. Every default is a named constant below.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { DispatcherError } from './errors.js';

export type DhcpMode = 'full' | 'proxy' | 'off';
export type Role = 'dispatcher' | 'boot';

export const DEFAULT_HTTP_PORT = 8080;
export const DEFAULT_DATA_DIR = '/var/lib/lilcluster';
export const DEFAULT_IMAGE_DIR = 'dist/image';
/** The library of named images (`make image IMAGE=<name>` builds dist/images/<name>). */
export const DEFAULT_IMAGES_DIR = 'dist/images';
export const DEFAULT_PXE_DIR = 'pxe/bin';
export const DEFAULT_LEASE_SECONDS = 3600;
/** Kea's default `cache-threshold`: a lease younger than a quarter of its lifetime is confirmed as stored. */
export const DEFAULT_LEASE_CACHE_THRESHOLD = 0.25;
export const DEFAULT_HEARTBEAT_SECONDS = 5;
/** A node is lost after this many heartbeat intervals without a word. */
export const DEFAULT_MISSED_HEARTBEATS = 3;
/** Speculative re-execution: a task is a lagger after k × its job's median duration. */
export const DEFAULT_SPECULATIVE_K = 2;
/** Seconds added to a task's timeout before its lease expires and it is handed out again. */
export const DEFAULT_LEASE_GRACE_SECONDS = 10;
export const DEFAULT_TASK_TIMEOUT_SECONDS = 3600;
/**
 * Caps on what a result may inflate to (protocol/results.ts ResultLimits; README "Limits").
 * The agent sends at most 1 MiB per stream (`--max-output`) and 16 MiB of files under out/.
 */
export const DEFAULT_RESULT_TEXT_MAX_BYTES = 8 * 1024 * 1024;
export const DEFAULT_OUTPUTS_MAX_BYTES = 24 * 1024 * 1024;
export const DEFAULT_OUTPUTS_MAX_INFLATED_BYTES = 64 * 1024 * 1024;
export const DEFAULT_RESULTS_MESSAGE_MAX_INFLATED_BYTES = 128 * 1024 * 1024;
/** A boot-file download that makes no progress this long is dropped (`bootHttpIdleSeconds`). */
export const DEFAULT_BOOT_HTTP_IDLE_SECONDS = 30;
/** Boot-file downloads one client address runs at once; its others wait (`bootHttpPerClient`). */
export const DEFAULT_BOOT_HTTP_PER_CLIENT = 4;
/**
 * Boot-file downloads running at once (`bootHttpMaxTransfers`); more wait in line. A waiting
 * download gets no byte, so on a link slower than the storm it waits for whole transfers to
 * end: the cap is set above a farm's cold storm, as a web server's connection limit would be.
 */
export const DEFAULT_BOOT_HTTP_MAX_TRANSFERS = 1024;

export interface DhcpConfig {
  mode: DhcpMode;
  /** First and last address handed out in full mode. */
  rangeStart?: string;
  rangeEnd?: string;
  /** Defaults to the interface's netmask. */
  netmask?: string;
  /** Option 3; defaults to none (the node network need not route anywhere). */
  router?: string;
  /** Option 6. */
  dns?: string[];
  leaseSeconds: number;
  /**
   * Lease caching (Kea's `cache-threshold`): a client that asks again for the lease it holds
   * while less than this fraction of its lifetime has passed gets the stored lease, with its
   * remaining lifetime, and no write. 0 turns it off.
   */
  leaseCacheThreshold: number;
}

export interface DispatcherConfig {
  /** Network interface of the node network (DHCP and TFTP answer only there). */
  interface?: string;
  /**
   * The dispatcher's address as nodes see it (boot URLs, next-server). Defaults to the
   * interface's first IPv4 address.
   */
  advertiseAddress?: string;
  dhcp: DhcpConfig;
  httpPort: number;
  httpHost: string;
  tftpPort: number;
  /** Set to false to not serve TFTP (for example with `--dhcp off` and another TFTP server). */
  tftp: boolean;
  dataDir: string;
  /** The image named `default`. */
  imageDir: string;
  /** Named images, one folder each (images/catalog.ts). */
  imagesDir: string;
  pxeDir: string;
  clusterFile?: string;
  heartbeatSeconds: number;
  missedHeartbeats: number;
  leaseGraceSeconds: number;
  speculativeK: number;
  /** stdout and stderr of one result together, once inflated (cut there, marked truncated). */
  resultTextMaxBytes: number;
  /** One result's outputs tar as it arrives, gzip-compressed (refused above). */
  outputsMaxBytes: number;
  /** That tar once inflated (refused above; downloads stop there too). */
  outputsMaxInflatedBytes: number;
  /** Everything inflated for one results message (results past it are sent again later). */
  resultsMessageMaxInflatedBytes: number;
  /** Extra kernel command-line arguments for every node. */
  kernelArgs: string;
  /** Seconds without progress after which a boot-file download is dropped (a stalled reader). */
  bootHttpIdleSeconds: number;
  /** Boot-file downloads one client address runs at once (the fair queue's per-client share). */
  bootHttpPerClient: number;
  /** Boot-file downloads running at once; more wait in the fair queue. */
  bootHttpMaxTransfers: number;
  logLevel: string;
  /**
   * `dispatcher` (default): the head machine. `boot`: a boot server of another segment: DHCP,
   * TFTP and image files from a cache it fills from `leader`, boot scripts from the leader
   * (dispatcher/src/boot-server/).
   */
  role: Role;
  /** The leader's URL as this boot server and its segment reach it (`--leader`, role boot). */
  leader?: string;
  /** The boot server's token from `dispatcherctl boot-server add NAME` (default <dataDir>/leader.token). */
  leaderTokenFile?: string;
  /**
   * Where the state lives: unset for the embedded SQLite database in the data dir, or a
   * PostgreSQL connection string (postgres://USER:PASSWORD@HOST:PORT/DB) shared by
   * standby dispatchers (store/postgres/).
   */
  store?: string;
  /** Every dispatcher's URL as nodes reach it (standbys included): agents try them in turn. */
  peers?: string[];
}

export function defaultConfig(): DispatcherConfig {
  return {
    dhcp: { mode: 'full', leaseSeconds: DEFAULT_LEASE_SECONDS, leaseCacheThreshold: DEFAULT_LEASE_CACHE_THRESHOLD },
    httpPort: DEFAULT_HTTP_PORT,
    httpHost: '0.0.0.0',
    tftpPort: 69,
    tftp: true,
    dataDir: DEFAULT_DATA_DIR,
    imageDir: DEFAULT_IMAGE_DIR,
    imagesDir: DEFAULT_IMAGES_DIR,
    pxeDir: DEFAULT_PXE_DIR,
    heartbeatSeconds: DEFAULT_HEARTBEAT_SECONDS,
    missedHeartbeats: DEFAULT_MISSED_HEARTBEATS,
    leaseGraceSeconds: DEFAULT_LEASE_GRACE_SECONDS,
    speculativeK: DEFAULT_SPECULATIVE_K,
    resultTextMaxBytes: DEFAULT_RESULT_TEXT_MAX_BYTES,
    outputsMaxBytes: DEFAULT_OUTPUTS_MAX_BYTES,
    outputsMaxInflatedBytes: DEFAULT_OUTPUTS_MAX_INFLATED_BYTES,
    resultsMessageMaxInflatedBytes: DEFAULT_RESULTS_MESSAGE_MAX_INFLATED_BYTES,
    kernelArgs: '',
    bootHttpIdleSeconds: DEFAULT_BOOT_HTTP_IDLE_SECONDS,
    bootHttpPerClient: DEFAULT_BOOT_HTTP_PER_CLIENT,
    bootHttpMaxTransfers: DEFAULT_BOOT_HTTP_MAX_TRANSFERS,
    logLevel: 'info',
    role: 'dispatcher',
  };
}

/** A partial configuration as written in YAML or given by flags. */
export type ConfigOverrides = Partial<Omit<DispatcherConfig, 'dhcp'>> & { dhcp?: Partial<DhcpConfig> };

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

export function loadConfigFile(path: string): ConfigOverrides {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, 'utf8')) ?? {};
  } catch (err) {
    throw new DispatcherError('DSP_ERR_CONFIG', `cannot read config file ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw new DispatcherError('DSP_ERR_CONFIG', `${path}: expected a mapping`);
  return doc as ConfigOverrides;
}

/** Parses `A-B` (`10.0.0.100-10.0.0.200`). */
export function parseRange(text: string): { rangeStart: string; rangeEnd: string } {
  const [a, b, ...rest] = text.split('-').map((s) => s.trim());
  if (!a || !b || rest.length || !IPV4_RE.test(a) || !IPV4_RE.test(b))
    throw new DispatcherError('DSP_ERR_CONFIG', `--range ${text}: expected FIRST-LAST, e.g. 10.42.0.100-10.42.0.199`);
  return { rangeStart: a, rangeEnd: b };
}

const KNOWN_KEYS = new Set(
  Object.keys(defaultConfig()).concat(['interface', 'advertiseAddress', 'clusterFile', 'leader', 'leaderTokenFile', 'store', 'peers']),
);
const KNOWN_DHCP_KEYS = new Set([
  'mode',
  'rangeStart',
  'rangeEnd',
  'range',
  'netmask',
  'router',
  'dns',
  'leaseSeconds',
  'leaseCacheThreshold',
]);

/** Merges layers (later wins) and validates; errors name the field. */
export function resolveConfig(...layers: ConfigOverrides[]): DispatcherConfig {
  const cfg = defaultConfig();
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) {
      if (v === undefined) continue;
      if (!KNOWN_KEYS.has(k)) throw new DispatcherError('DSP_ERR_CONFIG', `unknown configuration key "${k}"`);
      if (k === 'dhcp') {
        for (const [dk, dv] of Object.entries(v as Record<string, unknown>)) {
          if (dv === undefined) continue;
          if (!KNOWN_DHCP_KEYS.has(dk)) throw new DispatcherError('DSP_ERR_CONFIG', `unknown configuration key "dhcp.${dk}"`);
          if (dk === 'range') Object.assign(cfg.dhcp, parseRange(String(dv)));
          else (cfg.dhcp as unknown as Record<string, unknown>)[dk] = dv;
        }
      } else (cfg as unknown as Record<string, unknown>)[k] = v;
    }
  }
  validate(cfg);
  return cfg;
}

function validate(cfg: DispatcherConfig): void {
  const bad = (field: string, why: string): never => {
    throw new DispatcherError('DSP_ERR_CONFIG', `${field}: ${why}`);
  };
  if (!['full', 'proxy', 'off'].includes(cfg.dhcp.mode)) bad('dhcp.mode', 'must be full, proxy or off');
  for (const f of ['rangeStart', 'rangeEnd', 'netmask', 'router'] as const) {
    const v = cfg.dhcp[f];
    if (v !== undefined && !IPV4_RE.test(v)) bad(`dhcp.${f}`, `"${v}" is not an IPv4 address`);
  }
  if (cfg.advertiseAddress !== undefined && !IPV4_RE.test(cfg.advertiseAddress)) bad('advertiseAddress', 'not an IPv4 address');
  for (const f of ['httpPort', 'tftpPort'] as const) {
    const v = cfg[f];
    if (!Number.isInteger(v) || v < 0 || v > 65535) bad(f, 'must be a port number 0-65535');
  }
  for (const f of ['heartbeatSeconds', 'missedHeartbeats', 'leaseGraceSeconds', 'speculativeK', 'bootHttpIdleSeconds'] as const) {
    if (typeof cfg[f] !== 'number' || !(cfg[f] > 0)) bad(f, 'must be a positive number');
  }
  for (const f of ['bootHttpPerClient', 'bootHttpMaxTransfers'] as const) {
    if (!Number.isInteger(cfg[f]) || cfg[f] < 1) bad(f, 'must be an integer ≥ 1');
  }
  for (const f of ['resultTextMaxBytes', 'outputsMaxBytes', 'outputsMaxInflatedBytes', 'resultsMessageMaxInflatedBytes'] as const) {
    if (!Number.isSafeInteger(cfg[f]) || cfg[f] < 1024) bad(f, 'must be a whole number of bytes, at least 1024');
  }
  if (!Number.isInteger(cfg.dhcp.leaseSeconds) || cfg.dhcp.leaseSeconds < 60) bad('dhcp.leaseSeconds', 'must be an integer ≥ 60');
  const cache = cfg.dhcp.leaseCacheThreshold;
  if (typeof cache !== 'number' || !(cache >= 0 && cache < 1)) bad('dhcp.leaseCacheThreshold', 'must be a number from 0 (off) to below 1');
  if (cfg.dhcp.mode === 'full' && !cfg.interface)
    throw new DispatcherError(
      'DSP_ERR_NO_INTERFACE',
      'full DHCP mode needs --interface: a DHCP server must answer only on the node network',
      {
        hint: 'pass --interface IF (the NIC of the node network), or --dhcp proxy / --dhcp off beside an existing DHCP server',
      },
    );
  if ((cfg.dhcp.rangeStart === undefined) !== (cfg.dhcp.rangeEnd === undefined)) bad('dhcp.range', 'give both ends of the range');
  if (cfg.peers !== undefined) {
    if (!Array.isArray(cfg.peers)) bad('peers', 'a list of URLs, e.g. [http://10.42.0.2:8080, http://10.42.0.3:8080]');
    for (const p of cfg.peers) {
      let ok = false;
      try {
        ok = ['http:', 'https:'].includes(new URL(String(p)).protocol);
      } catch {
        /* said below */
      }
      if (!ok) bad('peers', `"${String(p).slice(0, 100)}" is not an http:// URL`);
    }
  }
  if (cfg.store !== undefined && typeof cfg.store !== 'string') bad('store', 'a postgres:// connection string');
  if (cfg.role !== 'dispatcher' && cfg.role !== 'boot') bad('role', 'must be dispatcher or boot');
  if (cfg.role === 'boot' && cfg.leader === undefined)
    throw new DispatcherError('DSP_ERR_CONFIG', 'role boot needs --leader URL: the dispatcher this boot server serves', {
      hint: 'dispatcher --role boot --leader http://LEADER:8080 --interface IF',
    });
  if (cfg.leader !== undefined && !/^https?:\/\/[^/?#\s]+$/.test(cfg.leader))
    bad('leader', `"${String(cfg.leader).slice(0, 100)}" is not a URL like http://10.42.0.1:8080 (scheme, host, port; no path)`);
  if (cfg.leader !== undefined && cfg.role !== 'boot') bad('leader', 'only a boot server (role boot) has a leader');
}
