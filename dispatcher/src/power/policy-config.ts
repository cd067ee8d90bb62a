/**
 * The cluster file's `healing` (self-healing through BMCs, power/healing.ts) and `powerPolicy`
 * (power driven by the queue, power/queue-policy.ts), parsed strictly: every refusal names
 * its field. Both are off unless given.
 *
 *   healing:
 *     lostAfterSeconds: 120     # a node lost this long is power-cycled through its BMC
 *     maxCyclesPerHour: 3       # the dispatcher's own cycles per node (operator commands are not counted)
 *     panic: true               # a kernel panic on its netconsole/serial log cycles it at once
 *     groups:                   # per label group (first match wins); unset fields are the top level's
 *       - labels: [rack1]
 *         lostAfterSeconds: 60
 *   powerPolicy:
 *     idleOffSeconds: 600       # at the top level: a group of its own, the nodes in no listed group
 *     minOn: 1                  # nodes of the group kept on, idle or not
 *     bootTimeoutSeconds: 600   # a node powered on must say hello within this, else tried again, then `unreachable`
 *     groups:
 *       - labels: [gpu]
 *         idleOffSeconds: 300
 *         minOn: 0
 */
export interface HealingRule {
  lostAfterSeconds: number;
  maxCyclesPerHour: number;
  panic: boolean;
}

export interface HealingPolicy extends HealingRule {
  groups: (HealingRule & { labels: string[] })[];
}

export interface PowerRule {
  idleOffSeconds: number;
  minOn: number;
  bootTimeoutSeconds: number;
}

/** One group of the power policy: `labels` null is the top level's group (every node in no listed group). */
export interface PowerGroup extends PowerRule {
  labels: string[] | null;
  /** How events and the dry-run view name it: `labels gpu,bigmem` or `all other nodes`. */
  name: string;
}

export interface PowerPolicy {
  /** Listed groups first, then the top level's when it gives idleOffSeconds. */
  groups: PowerGroup[];
}

export const DEFAULT_LOST_AFTER_SECONDS = 120;
export const DEFAULT_MAX_CYCLES_PER_HOUR = 3;
export const DEFAULT_BOOT_TIMEOUT_SECONDS = 600;
/** Times above a week are a typo, not a policy. */
const MAX_SECONDS = 7 * 24 * 3600;

type Fail = (field: string, why: string) => never;

function mapping(field: string, raw: unknown, fail: Fail): Record<string, unknown> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return fail(field, 'expected a mapping');
  return raw as Record<string, unknown>;
}

function seconds(field: string, v: unknown, fail: Fail): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > MAX_SECONDS)
    fail(field, `must be a number of seconds above 0, at most ${MAX_SECONDS}`);
  return v as number;
}

function whole(field: string, v: unknown, min: number, fail: Fail): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > 1_000_000) fail(field, `must be a whole number ≥ ${min}`);
  return v as number;
}

function labelList(field: string, v: unknown, fail: Fail): string[] {
  if (!Array.isArray(v) || v.length === 0 || v.some((l) => typeof l !== 'string' || !l)) fail(field, 'must be a list of labels');
  return v as string[];
}

function groupList(field: string, v: unknown, fail: Fail): Record<string, unknown>[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) fail(field, 'expected a list of {labels, ...}');
  return (v as unknown[]).map((g, i) => mapping(`${field}[${i}]`, g, fail));
}

function onlyKeys(field: string, m: Record<string, unknown>, keys: readonly string[], fail: Fail): void {
  for (const k of Object.keys(m)) if (!keys.includes(k)) fail(`${field}.${k}`, 'unknown field');
}

const HEALING_KEYS = ['lostAfterSeconds', 'maxCyclesPerHour', 'panic'] as const;

export function parseHealing(raw: unknown, fail: Fail): HealingPolicy {
  const top = mapping('healing', raw, fail);
  onlyKeys('healing', top, [...HEALING_KEYS, 'groups'], fail);
  const rule = (at: string, m: Record<string, unknown>, base: HealingRule): HealingRule => {
    if (m.panic !== undefined && typeof m.panic !== 'boolean') fail(`${at}.panic`, 'must be true or false');
    return {
      lostAfterSeconds:
        m.lostAfterSeconds === undefined ? base.lostAfterSeconds : seconds(`${at}.lostAfterSeconds`, m.lostAfterSeconds, fail),
      maxCyclesPerHour:
        m.maxCyclesPerHour === undefined ? base.maxCyclesPerHour : whole(`${at}.maxCyclesPerHour`, m.maxCyclesPerHour, 1, fail),
      panic: m.panic === undefined ? base.panic : (m.panic as boolean),
    };
  };
  const global = rule('healing', top, {
    lostAfterSeconds: DEFAULT_LOST_AFTER_SECONDS,
    maxCyclesPerHour: DEFAULT_MAX_CYCLES_PER_HOUR,
    panic: true,
  });
  const groups = groupList('healing.groups', top.groups, fail).map((g, i) => {
    const at = `healing.groups[${i}]`;
    onlyKeys(at, g, [...HEALING_KEYS, 'labels'], fail);
    return { labels: labelList(`${at}.labels`, g.labels, fail), ...rule(at, g, global) };
  });
  return { ...global, groups };
}

const POWER_KEYS = ['idleOffSeconds', 'minOn', 'bootTimeoutSeconds'] as const;

/**
 * `nodes`: the cluster file's nodes, to refuse a group whose minOn exceeds its members there
 * (the top level's group is checked only when the file lists nodes: machines enrolled on
 * first sight are not known at start).
 */
export function parsePowerPolicy(raw: unknown, nodes: readonly { name: string; labels: readonly string[] }[], fail: Fail): PowerPolicy {
  const top = mapping('powerPolicy', raw, fail);
  onlyKeys('powerPolicy', top, [...POWER_KEYS, 'groups'], fail);
  const base = {
    idleOffSeconds: top.idleOffSeconds === undefined ? undefined : seconds('powerPolicy.idleOffSeconds', top.idleOffSeconds, fail),
    minOn: top.minOn === undefined ? 0 : whole('powerPolicy.minOn', top.minOn, 0, fail),
    bootTimeoutSeconds:
      top.bootTimeoutSeconds === undefined
        ? DEFAULT_BOOT_TIMEOUT_SECONDS
        : seconds('powerPolicy.bootTimeoutSeconds', top.bootTimeoutSeconds, fail),
  };
  const groups: PowerGroup[] = [];
  const claimed = new Set<string>();
  groupList('powerPolicy.groups', top.groups, fail).forEach((g, i) => {
    const at = `powerPolicy.groups[${i}]`;
    onlyKeys(at, g, [...POWER_KEYS, 'labels'], fail);
    const labels = labelList(`${at}.labels`, g.labels, fail);
    const idle = g.idleOffSeconds === undefined ? base.idleOffSeconds : seconds(`${at}.idleOffSeconds`, g.idleOffSeconds, fail);
    if (idle === undefined) fail(`${at}.idleOffSeconds`, 'missing (here or at powerPolicy.idleOffSeconds)');
    const minOn = g.minOn === undefined ? base.minOn : whole(`${at}.minOn`, g.minOn, 0, fail);
    const members = nodes.filter((n) => !claimed.has(n.name) && n.labels.some((l) => labels.includes(l)));
    for (const n of members) claimed.add(n.name);
    if (minOn > members.length)
      fail(
        `${at}.minOn`,
        `${minOn} exceeds the group: the cluster file has ${members.length} node(s) with label ${labels.join(' or ')} (not in an earlier group)`,
      );
    groups.push({
      labels,
      name: `labels ${labels.join(',')}`,
      idleOffSeconds: idle as number,
      minOn,
      bootTimeoutSeconds:
        g.bootTimeoutSeconds === undefined ? base.bootTimeoutSeconds : seconds(`${at}.bootTimeoutSeconds`, g.bootTimeoutSeconds, fail),
    });
  });
  if (base.idleOffSeconds !== undefined) {
    const rest = nodes.filter((n) => !claimed.has(n.name)).length;
    if (nodes.length > 0 && base.minOn > rest)
      fail('powerPolicy.minOn', `${base.minOn} exceeds the group: the cluster file has ${rest} node(s) in no listed group`);
    groups.push({
      labels: null,
      name: groups.length ? 'all other nodes' : 'all nodes',
      idleOffSeconds: base.idleOffSeconds,
      minOn: base.minOn,
      bootTimeoutSeconds: base.bootTimeoutSeconds,
    });
  } else if (groups.length === 0) fail('powerPolicy', 'give idleOffSeconds (every node) or groups (per label group)');
  return { groups };
}

/** The first group one of the node's labels is in, else the top level's group (labels null), else none. */
export function groupOf<G extends { labels: string[] | null }>(groups: readonly G[], labels: readonly string[]): G | undefined {
  return groups.find((g) => g.labels === null || g.labels.some((l) => labels.includes(l)));
}

/** The healing rule of a node: its group's, else the top level's. */
export function healingRuleOf(policy: HealingPolicy, labels: readonly string[]): HealingRule {
  return policy.groups.find((g) => g.labels.some((l) => labels.includes(l))) ?? policy;
}
