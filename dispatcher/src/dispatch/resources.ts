/**
 * A submission's per-task request against the nodes the cluster knows: a request larger than
 * every one of them could ever run would wait forever, so it is refused at submission, naming
 * the field. What a node can run is what its agent said it hands out (its hello's
 * `resources`, kept with its inventory), else its inventory's cores and memory; a node that
 * never said how many GPUs it has is not known to lack them.
 */
import type { ResourcesRequest } from '../api/jobs/schemas.js';

export interface KnownNode {
  name: string;
  cores: number | null;
  memMiB: number | null;
  gpus: number | null;
}

export interface RequestTooLarge {
  /** The submission's field (`resources.memoryMiB`). */
  field: string;
  /** The dispatcherctl flag. */
  flag: string;
  message: string;
}

const FIELDS = [
  { key: 'cores', node: 'cores', flag: '--cores', unit: (n: number) => `${n} core${n === 1 ? '' : 's'}` },
  { key: 'memoryMiB', node: 'memMiB', flag: '--mem', unit: (n: number) => `${n} MiB` },
  { key: 'gpus', node: 'gpus', flag: '--gpus', unit: (n: number) => `${n} GPU${n === 1 ? '' : 's'}` },
] as const;

/** The first field of `req` that no known node can hand out, or null (also when no node is known). */
export function requestTooLarge(req: ResourcesRequest | undefined, nodes: readonly KnownNode[]): RequestTooLarge | null {
  if (!req || nodes.length === 0) return null;
  for (const f of FIELDS) {
    const want = req[f.key];
    if (typeof want !== 'number' || !(want > 0)) continue; // absent, or refused by the schema with its field named
    let best: KnownNode | undefined;
    let unknown = false;
    for (const n of nodes) {
      const have = n[f.node];
      if (have === null) unknown = true;
      else if (!best || have > best[f.node]!) best = n;
    }
    if (unknown || !best || best[f.node]! >= want) continue;
    const have = best[f.node]!;
    return {
      field: `resources.${f.key}`,
      flag: f.flag,
      message: `resources.${f.key}: ${f.unit(want)} per task is more than any node can give a task (the most: ${f.unit(have)}, on ${best.name})`,
    };
  }
  return null;
}

/** What a registry node can run, from its stored inventory (and the `resources` its agent's hello added to it). */
export function knownNode(name: string, inventory: Record<string, unknown> | null): KnownNode {
  const inv = (inventory ?? {}) as { cpu?: { cores?: unknown }; memoryMiB?: unknown; resources?: Record<string, unknown> };
  const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const r = inv.resources;
  return {
    name,
    cores: num(r?.cores) ?? num(inv.cpu?.cores),
    memMiB: num(r?.memMiB) ?? num(inv.memoryMiB),
    gpus: num(r?.gpus),
  };
}
