/**
 * The cluster definition file (YAML): known machines and what to do with unknown ones.
 *
 *   enrollment: auto          # auto | approve | deny — policy for MACs not listed below
 *   autoEnroll:               # caps on machines registered on first sight (auto and approve)
 *     perMinute: 60
 *     total: 1024             # nodes not from this file, counted over the registry
 *   bootTokenMinutes: 10      # how long a boot script's token admits its agent's hello
 *   image: default            # the image nodes boot unless a line below says otherwise
 *   labelImages:              # per label group: the first of a node's labels listed here wins
 *     gpu: ml
 *   onDemand:                 # off unless given: move idle nodes to images queued tasks need
 *     images: [default, ml]   # images nodes may be moved between
 *     keep: {default: 1}      # at least this many nodes stay on an image
 *   nodes:
 *     - name: node1
 *       mac: 52:54:00:00:00:01
 *       labels: [gpu, bigmem]
 *       ip: 10.42.0.11        # optional fixed address (a DHCP reservation)
 *       firstStage: snponly.efi   # optional: UEFI first stage for NICs that need SNP-only iPXE
 *       image: ml             # optional: this node's image (over labelImages and image)
 *       bmc: {type: ipmi, address: 10.1.0.11, user: admin, passwordFile: /etc/lilcluster/bmc.pw}
 *                             # ipmi: its serial console is captured by Serial-over-LAN unless sol: false
 *   bmcs:                     # BMCs per label group, for nodes without their own bmc: (first match wins)
 *     - labels: [rack1]
 *       type: redfish         # ipmi (ipmitool, IPMI over LAN) | redfish (HTTPS)
 *       address: 10.1.0.{n}:443   # {n}: the number ending the node's name; {name}: the name
 *       user: admin
 *       passwordFile: /etc/lilcluster/rack1.pw   # first line; mode 0600 or 0400, else refused
 *       ca: /etc/lilcluster/bmc-ca.pem           # redfish: CA of the BMC's certificate; or verify: false
 *   healthCheck:              # run by every agent at start and every interval; a failure drains the node
 *     command: [/usr/local/bin/node-check]   # argv, or one /bin/sh -c string
 *     intervalSeconds: 60
 *     timeoutSeconds: 30      # killed then, and counted as a failure
 *   healthChecks:             # per label group, over healthCheck (first match wins)
 *     - labels: [gpu]
 *       command: nvidia-smi -L
 *   suspectAfter: 5           # drain a node after this many failed tasks in a row (0: never)
 *   healing: {lostAfterSeconds: 120, maxCyclesPerHour: 3}   # power-cycle lost nodes through their BMCs (power/policy-config.ts)
 *   powerPolicy: {idleOffSeconds: 600, minOn: 1}             # power idle nodes off, on for the queue (power/policy-config.ts)
 *
 * In the spirit of the design notes' "cluster definition" (seeds/000), minus users and
 * passwords: nodes are RAM-booted and trust comes from boot tokens, not logins.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { DispatcherError } from '../errors.js';
import { parseMac, type Mac } from './mac.js';
import { IMAGE_NAME_RE } from '../images/catalog.js';
import { checkPasswordFile, type BmcGroup, type BmcSpec } from '../power/bmc.js';
import { parseHealing, parsePowerPolicy, type HealingPolicy, type PowerPolicy } from '../power/policy-config.js';

export type EnrollmentPolicy = 'auto' | 'approve' | 'deny';
export type FirstStage = 'ipxe.efi' | 'snponly.efi';

export interface ClusterNodeSpec {
  name: string;
  mac: Mac;
  labels: string[];
  ip?: string;
  firstStage?: FirstStage;
  image?: string;
  /** Its BMC (power/): over any `bmcs` group. */
  bmc?: BmcSpec;
}

export interface AutoEnrollCaps {
  /** New machines registered per minute at most; beyond, they are refused until the minute passes. */
  perMinute: number;
  /** Machines registered on first sight (not from the cluster file) at most; `dispatcherctl forget` frees room. */
  total: number;
}

export interface ClusterFile {
  enrollment: EnrollmentPolicy;
  /** Default DEFAULT_AUTO_ENROLL. */
  autoEnroll?: AutoEnrollCaps;
  /** How long a boot script's token admits its agent's hello; default DEFAULT_BOOT_TOKEN_MINUTES. */
  bootTokenMinutes?: number;
  /** The image of nodes nothing else places (default `default`: the --image folder). */
  image?: string;
  /** Label → image; a node takes the image of the first of its labels listed here. */
  labelImages?: Record<string, string>;
  /** On-demand images (images/on-demand.ts); absent: off. */
  onDemand?: OnDemandPolicy;
  /** BMCs per label group, for nodes without their own `bmc`; the first group one of a node's labels is in wins. */
  bmcs?: BmcGroup[];
  /** Self-healing through BMCs (power/healing.ts; fields in power/policy-config.ts); absent: off. */
  healing?: HealingPolicy;
  /** Power driven by the queue (power/queue-power.ts; fields in power/policy-config.ts); absent: off. */
  powerPolicy?: PowerPolicy;
  /** The agents' health check (nodes/node-health.ts); absent: none. */
  healthCheck?: HealthCheckSpec;
  /** Health checks per label group, over `healthCheck`; the first group one of a node's labels is in wins. */
  healthChecks?: HealthCheckGroup[];
  /** Failed tasks in a row that drain a node as suspect (default DEFAULT_SUSPECT_AFTER; 0: never). */
  suspectAfter?: number;
  nodes: ClusterNodeSpec[];
}

export interface OnDemandPolicy {
  /** Images nodes may be moved between. */
  images: string[];
  /** Image → nodes kept on it at least. */
  keep: Record<string, number>;
}

/** A command the agent runs at start and every interval: exit 0 passes; anything else, or its timeout, fails. */
export interface HealthCheckSpec {
  command: string[] | string;
  intervalSeconds: number;
  timeoutSeconds: number;
}

export interface HealthCheckGroup extends HealthCheckSpec {
  labels: string[];
}

/** Health check timing when the cluster file gives none (set intervalSeconds, timeoutSeconds). */
export const DEFAULT_HEALTH_INTERVAL_SECONDS = 60;
export const DEFAULT_HEALTH_TIMEOUT_SECONDS = 30;
/** Failed tasks in a row before a node is drained as suspect (set suspectAfter; 0 turns it off). */
export const DEFAULT_SUSPECT_AFTER = 5;
/** Its evidence lists every failure of the streak: this many at most. */
export const MAX_SUSPECT_AFTER = 100;

/** The health check of a node with these labels: its label group's, else the cluster-wide one, else none. */
export function healthCheckFor(cluster: ClusterFile, labels: readonly string[]): HealthCheckSpec | undefined {
  const g = cluster.healthChecks?.find((h) => h.labels.some((l) => labels.includes(l)));
  if (g) return { command: g.command, intervalSeconds: g.intervalSeconds, timeoutSeconds: g.timeoutSeconds };
  return cluster.healthCheck;
}

/** Auto-enrolment caps when the cluster file names none: a storm of real machines fits, a script's flood does not. */
export const DEFAULT_AUTO_ENROLL: AutoEnrollCaps = { perMinute: 60, total: 1024 };
export const DEFAULT_BOOT_TOKEN_MINUTES = 10;

export const EMPTY_CLUSTER: ClusterFile = { enrollment: 'auto', nodes: [] };

const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const IPV4_RE = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

export function loadClusterFile(path: string): ClusterFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new DispatcherError('DSP_ERR_CONFIG', `cannot read cluster file ${path}`, { cause: err, hint: 'check the --cluster path' });
  }
  const cluster = parseClusterFile(text, path);
  // The password files must exist and be private now: a wrong one is found at start, not at the first power call.
  const bmcs: [string, BmcSpec][] = [
    ...cluster.nodes.flatMap((n, i): [string, BmcSpec][] => (n.bmc ? [[`nodes[${i}].bmc.passwordFile`, n.bmc]] : [])),
    ...(cluster.bmcs ?? []).map((g, i): [string, BmcSpec] => [`bmcs[${i}].passwordFile`, g]),
  ];
  for (const [field, b] of bmcs) {
    const why = checkPasswordFile(b.passwordFile);
    if (why)
      throw new DispatcherError('DSP_ERR_CONFIG', `${path}: ${field}: ${why}`, { hint: 'the password on its first line, mode 0600' });
  }
  return cluster;
}

const BMC_FIELDS = ['type', 'address', 'user', 'passwordFile', 'ca', 'verify', 'sol'];
const BMC_ADDRESS_RE = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.{}-]{1,253})(:\d{1,5})?$/;

/** A `bmc` mapping (per node) or a `bmcs` entry (per label group, `labels` and a pattern address). */
function parseBmc(field: string, raw: unknown, fail: (field: string, why: string) => never, group: boolean): BmcSpec | BmcGroup {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    return fail(field, 'expected a mapping (type, address, user, passwordFile)');
  const b = raw as Record<string, unknown>;
  for (const k of Object.keys(b)) if (!BMC_FIELDS.includes(k) && !(group && k === 'labels')) fail(`${field}.${k}`, 'unknown field');
  if (b.type !== 'ipmi' && b.type !== 'redfish') fail(`${field}.type`, 'must be ipmi or redfish');
  const address = b.address;
  if (typeof address !== 'string' || !BMC_ADDRESS_RE.test(address)) fail(`${field}.address`, 'must be host or host:port');
  const a = address as string;
  if (!group && /[{}]/.test(a)) fail(`${field}.address`, '{n} and {name} are for bmcs: groups');
  if (group && /[{}]/.test(a.replaceAll('{n}', '').replaceAll('{name}', '')))
    fail(`${field}.address`, 'only {n} and {name} may be in braces');
  const port = /:(\d+)$/.exec(a)?.[1];
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) fail(`${field}.address`, 'port must be 1 to 65535');
  if (typeof b.user !== 'string' || !/^[\x21-\x7e]{1,64}$/.test(b.user))
    fail(`${field}.user`, 'must be a user name (1 to 64 printable characters, no spaces)');
  if (typeof b.passwordFile !== 'string' || !b.passwordFile.startsWith('/')) fail(`${field}.passwordFile`, 'must be an absolute path');
  if (b.ca !== undefined && (typeof b.ca !== 'string' || !b.ca.startsWith('/')))
    fail(`${field}.ca`, 'must be an absolute path to a PEM file');
  if (b.verify !== undefined && typeof b.verify !== 'boolean') fail(`${field}.verify`, 'must be true or false');
  if (b.type === 'ipmi' && (b.ca !== undefined || b.verify !== undefined))
    fail(`${field}.${b.ca !== undefined ? 'ca' : 'verify'}`, 'only for redfish (IPMI has no certificates)');
  if (b.ca !== undefined && b.verify === false) fail(`${field}.verify`, 'give ca or verify: false, not both');
  if (b.sol !== undefined && typeof b.sol !== 'boolean') fail(`${field}.sol`, 'must be true or false');
  if (b.sol !== undefined && b.type !== 'ipmi') fail(`${field}.sol`, 'only for ipmi (Redfish has no standard serial stream)');
  const spec: BmcSpec = {
    type: b.type as BmcSpec['type'],
    address: a,
    user: b.user as string,
    passwordFile: b.passwordFile as string,
    ...(b.ca !== undefined ? { ca: b.ca as string } : {}),
    ...(b.verify !== undefined ? { verify: b.verify as boolean } : {}),
    ...(b.sol !== undefined ? { sol: b.sol as boolean } : {}),
  };
  if (!group) return spec;
  const labels = b.labels;
  if (!Array.isArray(labels) || !labels.length || labels.some((l) => typeof l !== 'string'))
    fail(`${field}.labels`, 'must be a list of labels');
  return { labels: labels as string[], ...spec };
}

/** The cluster file's top-level keys of self-healing and queue-driven power (power/policy-config.ts). */
const POWER_KEYS = ['healing', 'powerPolicy'];

/** The cluster file's top-level keys of health checks and suspect detection. */
const HEALTH_KEYS = ['healthCheck', 'healthChecks', 'suspectAfter'];
const HEALTH_FIELDS = ['command', 'intervalSeconds', 'timeoutSeconds'];
/** Bounds of a health check (the protocol's exec bounds; a day between runs at most). */
const MAX_HEALTH_ARGS = 4096;
const MAX_HEALTH_ARG_CHARS = 65_536;
const MAX_HEALTH_INTERVAL_SECONDS = 86_400;
const MAX_HEALTH_TIMEOUT_SECONDS = 3600;

/** `healthCheck` (cluster-wide) or a `healthChecks` entry (per label group, with `labels`). */
function parseHealthCheck(field: string, raw: unknown, fail: (field: string, why: string) => never, group: boolean): HealthCheckGroup {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    return fail(field, `expected a mapping (${group ? 'labels, ' : ''}command, intervalSeconds, timeoutSeconds)`);
  const h = raw as Record<string, unknown>;
  for (const k of Object.keys(h)) if (!HEALTH_FIELDS.includes(k) && !(group && k === 'labels')) fail(`${field}.${k}`, 'unknown field');
  const c = h.command;
  const argv =
    Array.isArray(c) &&
    c.length > 0 &&
    c.length <= MAX_HEALTH_ARGS &&
    c.every((a) => typeof a === 'string' && a.length <= MAX_HEALTH_ARG_CHARS) &&
    (c[0] as string).length > 0;
  const line = typeof c === 'string' && c.trim().length > 0 && c.length <= MAX_HEALTH_ARG_CHARS;
  if (!argv && !line) fail(`${field}.command`, 'must be a list of arguments (program first, not empty) or a /bin/sh -c string, not empty');
  const seconds = (k: string, dflt: number, max: number): number => {
    const v = h[k] ?? dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 1 || v > max)
      fail(`${field}.${k}`, `must be a number of seconds from 1 to ${max}`);
    return v as number;
  };
  const intervalSeconds = seconds('intervalSeconds', DEFAULT_HEALTH_INTERVAL_SECONDS, MAX_HEALTH_INTERVAL_SECONDS);
  const timeoutSeconds = seconds('timeoutSeconds', Math.min(DEFAULT_HEALTH_TIMEOUT_SECONDS, intervalSeconds), MAX_HEALTH_TIMEOUT_SECONDS);
  if (timeoutSeconds > intervalSeconds)
    fail(`${field}.timeoutSeconds`, `must not exceed intervalSeconds (${intervalSeconds}): a check runs once per interval`);
  const labels = h.labels;
  if (group && (!Array.isArray(labels) || !labels.length || labels.some((l) => typeof l !== 'string')))
    fail(`${field}.labels`, 'must be a list of labels');
  return { labels: group ? (labels as string[]) : [], command: c as string[] | string, intervalSeconds, timeoutSeconds };
}

/** Validates a cluster file; errors name the field (`nodes[2].mac`). */
export function parseClusterFile(text: string, source = 'cluster file'): ClusterFile {
  const fail = (field: string, why: string): never => {
    throw new DispatcherError('DSP_ERR_CONFIG', `${source}: ${field}: ${why}`);
  };
  let doc: unknown;
  try {
    doc = parseYaml(text) ?? {};
  } catch (err) {
    throw new DispatcherError('DSP_ERR_CONFIG', `${source}: not valid YAML: ${(err as Error).message}`, { cause: err });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return fail('(top)', 'expected a mapping');
  const d = doc as Record<string, unknown>;
  for (const k of Object.keys(d))
    if (
      ![
        'enrollment',
        'autoEnroll',
        'bootTokenMinutes',
        'image',
        'labelImages',
        'onDemand',
        'bmcs',
        'nodes',
        ...HEALTH_KEYS,
        ...POWER_KEYS,
      ].includes(k)
    )
      fail(k, 'unknown field');
  const imageName = (field: string, v: unknown): string => {
    if (typeof v !== 'string' || !IMAGE_NAME_RE.test(v))
      fail(field, 'must be an image name (a-z, 0-9, . _ -), as in make image IMAGE=<name>');
    return v as string;
  };
  const image = d.image === undefined ? undefined : imageName('image', d.image);
  let labelImages: Record<string, string> | undefined;
  if (d.labelImages !== undefined) {
    if (typeof d.labelImages !== 'object' || d.labelImages === null || Array.isArray(d.labelImages))
      fail('labelImages', 'expected a mapping of label to image name');
    labelImages = {};
    for (const [label, v] of Object.entries(d.labelImages as Record<string, unknown>))
      labelImages[label] = imageName(`labelImages.${label}`, v);
  }
  const enrollment = (d.enrollment ?? 'auto') as EnrollmentPolicy;
  if (!['auto', 'approve', 'deny'].includes(enrollment)) fail('enrollment', 'must be auto, approve or deny');
  const rawCaps = d.autoEnroll ?? {};
  const given = {
    ...(d.autoEnroll !== undefined ? { autoEnroll: true } : {}),
    ...(d.bootTokenMinutes !== undefined ? { bootTokenMinutes: true } : {}),
  };
  if (typeof rawCaps !== 'object' || rawCaps === null || Array.isArray(rawCaps))
    return fail('autoEnroll', 'expected a mapping (perMinute, total)');
  const caps = rawCaps as Record<string, unknown>;
  for (const k of Object.keys(caps)) if (k !== 'perMinute' && k !== 'total') fail(`autoEnroll.${k}`, 'unknown field');
  const count = (field: string, v: unknown, dflt: number): number => {
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
      fail(field, 'must be a whole number ≥ 0 (0: no machine is registered on first sight)');
    return v as number;
  };
  const autoEnroll = {
    perMinute: count('autoEnroll.perMinute', caps.perMinute, DEFAULT_AUTO_ENROLL.perMinute),
    total: count('autoEnroll.total', caps.total, DEFAULT_AUTO_ENROLL.total),
  };
  const bootTokenMinutes = d.bootTokenMinutes ?? DEFAULT_BOOT_TOKEN_MINUTES;
  if (typeof bootTokenMinutes !== 'number' || !(bootTokenMinutes > 0) || bootTokenMinutes > 24 * 60)
    fail('bootTokenMinutes', 'must be a number of minutes above 0, at most 1440');
  let onDemand: OnDemandPolicy | undefined;
  if (d.onDemand !== undefined) {
    const o = d.onDemand as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) return fail('onDemand', 'expected a mapping (images, keep)');
    for (const k of Object.keys(o)) if (k !== 'images' && k !== 'keep') fail(`onDemand.${k}`, 'unknown field');
    if (!Array.isArray(o.images) || o.images.length < 2) fail('onDemand.images', 'expected a list of at least two image names');
    const images = (o.images as unknown[]).map((v, i) => imageName(`onDemand.images[${i}]`, v));
    const keep: Record<string, number> = {};
    const rawKeep = o.keep ?? {};
    if (typeof rawKeep !== 'object' || rawKeep === null || Array.isArray(rawKeep))
      fail('onDemand.keep', 'expected a mapping of image to a count');
    for (const [img, v] of Object.entries(rawKeep as Record<string, unknown>)) {
      if (!images.includes(img)) fail(`onDemand.keep.${img}`, 'not one of onDemand.images');
      keep[img] = count(`onDemand.keep.${img}`, v, 0);
    }
    onDemand = { images, keep };
  }
  const rawNodes = d.nodes ?? [];
  if (!Array.isArray(rawNodes)) return fail('nodes', 'expected a list');
  const names = new Set<string>();
  const macs = new Set<string>();
  const nodes = rawNodes.map((raw, i): ClusterNodeSpec => {
    const at = `nodes[${i}]`;
    if (typeof raw !== 'object' || raw === null) return fail(at, 'expected a mapping');
    const n = raw as Record<string, unknown>;
    for (const k of Object.keys(n))
      if (!['name', 'mac', 'labels', 'ip', 'firstStage', 'image', 'bmc'].includes(k)) fail(`${at}.${k}`, 'unknown field');
    if (typeof n.name !== 'string' || !NAME_RE.test(n.name)) fail(`${at}.name`, 'must be a host name (a-z, 0-9, -)');
    const mac = typeof n.mac === 'string' ? parseMac(n.mac) : undefined;
    if (!mac) return fail(`${at}.mac`, 'must be a MAC address like 52:54:00:12:34:56');
    if (names.has(n.name as string)) fail(`${at}.name`, `duplicate name ${n.name}`);
    if (macs.has(mac)) fail(`${at}.mac`, `duplicate MAC ${mac}`);
    names.add(n.name as string);
    macs.add(mac);
    const labels = n.labels ?? [];
    if (!Array.isArray(labels) || labels.some((l) => typeof l !== 'string')) fail(`${at}.labels`, 'must be a list of strings');
    if (n.ip !== undefined && (typeof n.ip !== 'string' || !IPV4_RE.test(n.ip))) fail(`${at}.ip`, 'must be an IPv4 address');
    if (n.firstStage !== undefined && n.firstStage !== 'ipxe.efi' && n.firstStage !== 'snponly.efi')
      fail(`${at}.firstStage`, 'must be ipxe.efi or snponly.efi');
    return {
      name: n.name as string,
      mac,
      labels: labels as string[],
      ...(n.ip ? { ip: n.ip as string } : {}),
      ...(n.firstStage ? { firstStage: n.firstStage as FirstStage } : {}),
      ...(n.image !== undefined ? { image: imageName(`${at}.image`, n.image) } : {}),
      ...(n.bmc !== undefined ? { bmc: parseBmc(`${at}.bmc`, n.bmc, fail, false) } : {}),
    };
  });
  let bmcs: BmcGroup[] | undefined;
  if (d.bmcs !== undefined) {
    if (!Array.isArray(d.bmcs)) fail('bmcs', 'expected a list of {labels, type, address, user, passwordFile}');
    bmcs = (d.bmcs as unknown[]).map((g, i) => parseBmc(`bmcs[${i}]`, g, fail, true) as BmcGroup);
  }
  const healthCheck = d.healthCheck === undefined ? undefined : parseHealthCheck('healthCheck', d.healthCheck, fail, false);
  if (d.healthChecks !== undefined && !Array.isArray(d.healthChecks))
    fail('healthChecks', 'expected a list of {labels, command, intervalSeconds, timeoutSeconds}');
  const healthChecks = (d.healthChecks as unknown[] | undefined)?.map((g, i) => parseHealthCheck(`healthChecks[${i}]`, g, fail, true));
  if (
    d.suspectAfter !== undefined &&
    (typeof d.suspectAfter !== 'number' || !Number.isInteger(d.suspectAfter) || d.suspectAfter < 0 || d.suspectAfter > MAX_SUSPECT_AFTER)
  )
    fail('suspectAfter', `must be a whole number of failed tasks in a row, 0 to ${MAX_SUSPECT_AFTER} (0: never drain a node as suspect)`);
  const healing = d.healing === undefined ? undefined : parseHealing(d.healing, fail);
  const powerPolicy = d.powerPolicy === undefined ? undefined : parsePowerPolicy(d.powerPolicy, nodes, fail);
  return {
    enrollment,
    ...(healing ? { healing } : {}),
    ...(powerPolicy ? { powerPolicy } : {}),
    ...(healthCheck
      ? {
          healthCheck: {
            command: healthCheck.command,
            intervalSeconds: healthCheck.intervalSeconds,
            timeoutSeconds: healthCheck.timeoutSeconds,
          },
        }
      : {}),
    ...(healthChecks ? { healthChecks } : {}),
    ...(d.suspectAfter !== undefined ? { suspectAfter: d.suspectAfter as number } : {}),
    ...(bmcs ? { bmcs } : {}),
    ...(given.autoEnroll ? { autoEnroll } : {}),
    ...(given.bootTokenMinutes ? { bootTokenMinutes: bootTokenMinutes as number } : {}),
    ...(image ? { image } : {}),
    ...(labelImages ? { labelImages } : {}),
    ...(onDemand ? { onDemand } : {}),
    nodes,
  };
}
