/**
 * The node registry: every machine the dispatcher has met, keyed by MAC.
 *
 * Names are stable: a MAC listed in the cluster file gets its name from there; any other
 * MAC gets `node<N>` in order of first sight (N = one more than the highest auto number
 * ever given, names from the cluster file skipped), kept across restarts.
 * Enrollment of unknown MACs follows the cluster file's policy: `auto` admits them,
 * `approve` names them but holds them `pending` until `approve`, `deny` does not boot them
 * (they are remembered only in memory, to show the operator who knocked). Registration on
 * first sight is capped (cluster file `autoEnroll`: per minute and in total), so a flood of
 * made-up MACs costs log lines, not rows; `forget` removes a node that is gone for good.
 *
 * State transitions are events (kind `node.state`); who may make which is in states.ts
 * (operator states such as draining hold against activity). The registry holds all nodes in
 * memory; writes go through group commit.
 */
import type { Db, Migration } from '../store/database.js';
import type { GroupCommit } from '../store/group-commit.js';
import type { EventLog } from '../events/event-log.js';
import { DEFAULT_AUTO_ENROLL, type AutoEnrollCaps, type ClusterFile, type EnrollmentPolicy, type FirstStage } from './cluster-file.js';
import { parseMac, type Mac } from './mac.js';
import { helloState, transitionApplies, type TransitionSource } from './states.js';
import type { NodeState } from '../api/schemas.js';
import type { BootedImage } from '../protocol/messages.js';

export const nodeMigrations: Migration[] = [
  {
    name: 'nodes/001-create',
    sql: `CREATE TABLE nodes (
      mac TEXT PRIMARY KEY,
      name TEXT NOT NULL UNIQUE,
      auto_seq INTEGER,
      uuid TEXT,
      labels TEXT NOT NULL DEFAULT '[]',
      fixed_ip TEXT,
      first_stage TEXT,
      from_cluster_file INTEGER NOT NULL DEFAULT 0,
      enrollment TEXT NOT NULL,
      state TEXT NOT NULL,
      state_since INTEGER NOT NULL,
      first_seen INTEGER NOT NULL,
      last_seen INTEGER,
      boot_count INTEGER NOT NULL DEFAULT 0,
      ip TEXT,
      image_version TEXT,
      agent_version TEXT,
      inventory TEXT
    );`,
  },
  {
    // image: the image this node boots (set --image, cluster file); booted_image: what its agent said it booted.
    name: 'nodes/002-images',
    sql: `ALTER TABLE nodes ADD COLUMN image TEXT;
      ALTER TABLE nodes ADD COLUMN booted_image TEXT;`,
  },
];

export type Enrollment = 'admitted' | 'pending';

export interface NodeRecord {
  mac: Mac;
  name: string;
  uuid: string | null;
  labels: string[];
  fixedIp: string | null;
  firstStage: FirstStage | null;
  fromClusterFile: boolean;
  enrollment: Enrollment;
  state: NodeState;
  stateSince: number;
  firstSeen: number;
  lastSeen: number | null;
  bootCount: number;
  ip: string | null;
  /** `name@version` of the image this node booted (from its boot script, then its agent's hello). */
  imageVersion: string | null;
  agentVersion: string | null;
  /** The inventory the agent reported in its hello (systeminformation snapshot). */
  inventory: Record<string, unknown> | null;
  /** The image this node boots, when set for it (cluster file, `set --image`); null: by its labels or the default. */
  image: string | null;
  /** What its agent said it booted, with the image's health check (hello). */
  bootedImage: BootedImage | null;
}

/** What to do with a machine that asks to boot. */
export type AdmitDecision =
  | { kind: 'boot'; node: NodeRecord }
  | { kind: 'pending'; node: NodeRecord }
  | {
      kind: 'deny';
      mac: Mac;
      reason: string /** Refused by the auto-enrolment cap (callers log these under one key). */;
      capped?: boolean;
    };

export interface UnknownMachine {
  mac: Mac;
  firstSeen: number;
  lastSeen: number;
  count: number;
}

export class NodeRegistry {
  readonly #byMac = new Map<Mac, NodeRecord>();
  readonly #byName = new Map<string, NodeRecord>();
  #sorted: NodeRecord[] | undefined;
  readonly #denied = new Map<Mac, UnknownMachine>();
  #policy: EnrollmentPolicy;
  #maxAutoSeq = 0;
  readonly #caps: AutoEnrollCaps;
  /** Registrations on first sight in the last minute (times), for the per-minute cap. */
  #recent: number[] = [];
  readonly #forgetListeners = new Set<(mac: Mac) => Promise<void> | void>();
  readonly #stmts;

  constructor(
    db: Db,
    private readonly commits: GroupCommit,
    private readonly events: EventLog,
    cluster: ClusterFile,
    private readonly now: () => number = Date.now,
  ) {
    this.#policy = cluster.enrollment;
    this.#caps = cluster.autoEnroll ?? DEFAULT_AUTO_ENROLL;
    this.#stmts = {
      remove: db.prepare('DELETE FROM nodes WHERE mac = ?'),
      upsert: db.prepare(`INSERT INTO nodes (mac, name, auto_seq, uuid, labels, fixed_ip, first_stage, from_cluster_file, enrollment,
          state, state_since, first_seen, last_seen, boot_count, ip, image_version, agent_version, inventory, image, booted_image)
        VALUES (@mac, @name, @autoSeq, @uuid, @labels, @fixedIp, @firstStage, @fromClusterFile, @enrollment,
          @state, @stateSince, @firstSeen, @lastSeen, @bootCount, @ip, @imageVersion, @agentVersion, @inventory, @image, @bootedImage)
        ON CONFLICT(mac) DO UPDATE SET name=excluded.name, auto_seq=excluded.auto_seq, uuid=excluded.uuid, labels=excluded.labels,
          fixed_ip=excluded.fixed_ip, first_stage=excluded.first_stage, from_cluster_file=excluded.from_cluster_file,
          enrollment=excluded.enrollment, state=excluded.state, state_since=excluded.state_since, last_seen=excluded.last_seen,
          boot_count=excluded.boot_count, ip=excluded.ip, image_version=excluded.image_version,
          agent_version=excluded.agent_version, inventory=excluded.inventory, image=excluded.image,
          booted_image=excluded.booted_image`),
    };
    const rows = db.prepare('SELECT * FROM nodes').all() as NodeRow[];
    for (const r of rows) {
      const n = fromRow(r);
      this.#index(n);
      if (r.auto_seq !== null && r.auto_seq > this.#maxAutoSeq) this.#maxAutoSeq = r.auto_seq;
    }
    this.#applyClusterFile(cluster);
  }

  get policy(): EnrollmentPolicy {
    return this.#policy;
  }

  /** Every node, sorted by name (node2 before node10). */
  list(): NodeRecord[] {
    // Sorted once per change of the node set or names, not per call: the API lists 1,000 nodes often.
    this.#sorted ??= [...this.#byMac.values()].sort(byName);
    return this.#sorted.slice();
  }

  get size(): number {
    return this.#byMac.size;
  }

  byMac(mac: Mac): NodeRecord | undefined {
    return this.#byMac.get(mac);
  }

  byName(name: string): NodeRecord | undefined {
    return this.#byName.get(name);
  }

  /** Finds a node by name, MAC (any usual spelling) or system UUID. */
  find(ref: string): NodeRecord | undefined {
    const byName = this.#byName.get(ref);
    if (byName) return byName;
    const mac = parseMac(ref);
    if (mac) return this.#byMac.get(mac);
    const lower = ref.toLowerCase();
    for (const n of this.#byMac.values()) if (n.uuid && n.uuid.toLowerCase() === lower) return n;
    return undefined;
  }

  /** Machines refused under the `deny` policy, for the operator to see. */
  denied(): UnknownMachine[] {
    return [...this.#denied.values()];
  }

  /**
   * A machine asks to boot (DHCP, boot script) or to join (agent hello). Registers it on
   * first sight under the enrollment policy and says whether it may boot. `enrolled`: the
   * machine proved an enrollment token, so the auto-enrolment caps (meant for strangers) do
   * not apply.
   */
  admit(mac: Mac, opts: { enrolled?: boolean } = {}): AdmitDecision {
    const known = this.#byMac.get(mac);
    if (known) return known.enrollment === 'pending' ? { kind: 'pending', node: known } : { kind: 'boot', node: known };
    if (this.#policy === 'deny') {
      const t = this.now();
      const seen = this.#denied.get(mac) ?? { mac, firstSeen: t, lastSeen: t, count: 0 };
      seen.lastSeen = t;
      seen.count++;
      if (this.#denied.size < 10_000 || this.#denied.has(mac)) this.#denied.set(mac, seen);
      return { kind: 'deny', mac, reason: 'unknown MAC and the cluster file says enrollment: deny' };
    }
    const capped = opts.enrolled ? undefined : this.#capReached();
    if (capped) return { kind: 'deny', mac, reason: capped, capped: true };
    const node = this.#create(mac, this.#policy === 'approve' ? 'pending' : 'admitted');
    this.events.append({
      kind: 'node.new',
      node: node.name,
      message: `new machine ${mac} named ${node.name}${node.enrollment === 'pending' ? ' (waiting for approval)' : ''}`,
      data: { mac },
    });
    return node.enrollment === 'pending' ? { kind: 'pending', node } : { kind: 'boot', node };
  }

  /** Why a new machine may not be registered now (autoEnroll caps); undefined when it may. */
  #capReached(): string | undefined {
    const t = this.now();
    let auto = 0;
    for (const n of this.#byMac.values()) if (!n.fromClusterFile) auto++;
    if (auto >= this.#caps.total)
      return `auto-enrolment cap reached: ${auto} machines registered on first sight (cluster file autoEnroll.total ${this.#caps.total}); dispatcherctl forget NODE frees room`;
    this.#recent = this.#recent.filter((x) => t - x < 60_000);
    if (this.#recent.length >= this.#caps.perMinute)
      return `auto-enrolment cap reached: ${this.#recent.length} new machines in the last minute (cluster file autoEnroll.perMinute ${this.#caps.perMinute}); ask again later`;
    this.#recent.push(t);
    return undefined;
  }

  /** Services that keep something of a node (leases, boot stages, tokens) drop it when it is forgotten. */
  onForget(listener: (mac: Mac) => Promise<void> | void): () => void {
    this.#forgetListeners.add(listener);
    return () => this.#forgetListeners.delete(listener);
  }

  /** Whether the machine ever booted from us by PXE (DHCP or boot script): an enrollment token cannot claim it. */
  pxeBooted(mac: Mac): boolean {
    return (this.#byMac.get(mac)?.bootCount ?? 0) > 0;
  }

  /**
   * Removes a node from the registry for good (the caller checks it is not connected and
   * drops what other modules keep of it). Resolves once the removal is durable.
   */
  async forget(mac: Mac): Promise<NodeRecord | undefined> {
    const n = this.#byMac.get(mac);
    if (!n) return undefined;
    this.#byMac.delete(mac);
    if (this.#byName.get(n.name) === n) this.#byName.delete(n.name);
    this.#sorted = undefined;
    this.#denied.delete(mac);
    // Through group commit, after any upsert of this node still queued there.
    await this.commits.run(() => this.#stmts.remove.run(mac));
    await Promise.all([...this.#forgetListeners].map((l) => l(mac)));
    this.events.append({
      kind: 'node.forgotten',
      node: n.name,
      message: `${n.name} (${mac}) forgotten${n.fromClusterFile ? ' (the cluster file lists it: it comes back at the next start)' : ''}`,
      data: { mac },
    });
    return n;
  }

  approve(name: string): NodeRecord | undefined {
    const n = this.#byName.get(name);
    if (!n) return undefined;
    if (n.enrollment !== 'admitted') {
      n.enrollment = 'admitted';
      this.#persist(n);
      this.events.append({ kind: 'node.approved', node: n.name, message: `${n.name} approved` });
    }
    return n;
  }

  /**
   * Moves a node to a new state and records the transition as an event. Activity (the hub,
   * DHCP, boot routes: the default) does not override the operator's states; see states.ts.
   * Returns the node, in whatever state it is now.
   */
  setState(mac: Mac, state: NodeState, reason?: string, opts: { by?: TransitionSource } = {}): NodeRecord | undefined {
    const n = this.#byMac.get(mac);
    if (!n) return undefined;
    if (!transitionApplies(n.state, state, opts.by ?? 'activity')) return n;
    const from = n.state;
    n.state = state;
    n.stateSince = this.now();
    this.#persist(n);
    this.events.append({
      kind: 'node.state',
      node: n.name,
      message: `${n.name} ${from} → ${state}${reason ? `: ${reason}` : ''}`,
      data: { from, to: state, ...(reason ? { reason } : {}) },
    });
    return n;
  }

  /**
   * A new boot began (DHCP from the firmware, or boot script served). `imageVersion`: the
   * version of the RAM image this boot is given (from its manifest), shown per node.
   * `fromDhcp`: PXE is unauthenticated, so a DHCP exchange alone does not move a node whose
   * agent is up (ready, busy, draining) to booting: anyone can send one with its MAC. If the
   * machine really rebooted, the hub declares it lost and its boot script marks it booting.
   */
  recordBoot(mac: Mac, info: { imageVersion?: string | null; fromDhcp?: boolean } = {}): NodeRecord | undefined {
    const n = this.#byMac.get(mac);
    if (!n) return undefined;
    if (info.imageVersion !== undefined) n.imageVersion = info.imageVersion;
    n.bootCount++;
    n.lastSeen = this.now();
    this.#persist(n);
    if (info.fromDhcp && (n.state === 'ready' || n.state === 'busy' || n.state === 'draining')) return n;
    this.setState(mac, 'booting', `boot #${n.bootCount}`);
    return n;
  }

  /** The agent said hello: remember what it told us about the machine. */
  recordHello(
    mac: Mac,
    info: {
      uuid?: string | null;
      ip?: string | null;
      imageVersion?: string | null;
      agentVersion?: string | null;
      inventory?: Record<string, unknown> | null;
      bootedImage?: BootedImage | null;
    },
  ): NodeRecord | undefined {
    const n = this.#byMac.get(mac);
    if (!n) return undefined;
    if (info.uuid !== undefined) n.uuid = info.uuid;
    if (info.ip !== undefined) n.ip = info.ip;
    if (info.imageVersion !== undefined) n.imageVersion = info.imageVersion;
    if (info.agentVersion !== undefined) n.agentVersion = info.agentVersion;
    if (info.inventory !== undefined) n.inventory = info.inventory;
    if (info.bootedImage !== undefined) {
      n.bootedImage = info.bootedImage;
      if (info.bootedImage) n.imageVersion = `${info.bootedImage.name}@${info.bootedImage.version}`;
    }
    n.lastSeen = this.now();
    this.#persist(n);
    // A hello means the machine is up: it ends booting, rebooting, lost and off.
    const next = helloState(n.state);
    if (next) this.setState(mac, next, 'agent hello', { by: 'operator' });
    return n;
  }

  /**
   * Per-node settings the operator may change at run time. For a node listed in the cluster
   * file, the file wins again at the next start.
   */
  updateSettings(
    mac: Mac,
    settings: { labels?: string[]; firstStage?: FirstStage | null; fixedIp?: string | null; image?: string | null },
  ): NodeRecord | undefined {
    const n = this.#byMac.get(mac);
    if (!n) return undefined;
    const changed: string[] = [];
    if (settings.labels !== undefined && JSON.stringify(settings.labels) !== JSON.stringify(n.labels)) {
      n.labels = [...settings.labels];
      changed.push(`labels=${settings.labels.join(',') || '(none)'}`);
    }
    if (settings.firstStage !== undefined && settings.firstStage !== n.firstStage) {
      n.firstStage = settings.firstStage;
      changed.push(`firstStage=${settings.firstStage ?? 'default'}`);
    }
    if (settings.fixedIp !== undefined && settings.fixedIp !== n.fixedIp) {
      n.fixedIp = settings.fixedIp;
      changed.push(`fixedIp=${settings.fixedIp ?? 'none'}`);
    }
    if (settings.image !== undefined && settings.image !== n.image) {
      n.image = settings.image;
      changed.push(`image=${settings.image ?? '(by labels)'} (next boot)`);
    }
    if (changed.length) {
      this.#persist(n);
      this.events.append({
        kind: 'node.settings',
        node: n.name,
        message: `${n.name} settings: ${changed.join(' ')}`,
        data: { ...settings },
      });
    }
    return n;
  }

  /** Last sign of life (heartbeat); kept in memory only, persisted with the next change. */
  touch(mac: Mac): void {
    const n = this.#byMac.get(mac);
    if (n) n.lastSeen = this.now();
  }

  setIp(mac: Mac, ip: string): void {
    const n = this.#byMac.get(mac);
    if (n && n.ip !== ip) {
      n.ip = ip;
      this.#persist(n);
    }
  }

  #create(mac: Mac, enrollment: Enrollment): NodeRecord {
    let seq = this.#maxAutoSeq;
    let name: string;
    do name = `node${++seq}`;
    while (this.#byName.has(name));
    this.#maxAutoSeq = seq;
    const t = this.now();
    const n: NodeRecord = {
      mac,
      name,
      uuid: null,
      labels: [],
      fixedIp: null,
      firstStage: null,
      fromClusterFile: false,
      enrollment,
      state: 'booting',
      stateSince: t,
      firstSeen: t,
      lastSeen: t,
      bootCount: 0,
      ip: null,
      imageVersion: null,
      agentVersion: null,
      inventory: null,
      image: null,
      bootedImage: null,
    };
    this.#index(n);
    this.#persist(n, seq);
    return n;
  }

  #applyClusterFile(cluster: ClusterFile): void {
    for (const spec of cluster.nodes) {
      let n = this.#byMac.get(spec.mac);
      const holder = this.#byName.get(spec.name);
      if (holder && holder.mac !== spec.mac) {
        // An auto-named machine already holds this name: the cluster file wins, the other gets a fresh auto name.
        this.#byName.delete(holder.name);
        let seq = this.#maxAutoSeq;
        let fresh: string;
        do fresh = `node${++seq}`;
        while (this.#byName.has(fresh) || cluster.nodes.some((s) => s.name === fresh));
        this.#maxAutoSeq = seq;
        this.events.append({
          kind: 'node.renamed',
          node: fresh,
          message: `${holder.name} (${holder.mac}) renamed ${fresh}: the cluster file gives its name to ${spec.mac}`,
        });
        holder.name = fresh;
        this.#byName.set(fresh, holder);
        this.#sorted = undefined;
        this.#persistNow(holder, seq);
      }
      if (!n) {
        const t = this.now();
        n = {
          mac: spec.mac,
          name: spec.name,
          uuid: null,
          labels: [],
          fixedIp: null,
          firstStage: null,
          fromClusterFile: true,
          enrollment: 'admitted',
          state: 'off',
          stateSince: t,
          firstSeen: t,
          lastSeen: null,
          bootCount: 0,
          ip: null,
          imageVersion: null,
          agentVersion: null,
          inventory: null,
          image: null,
          bootedImage: null,
        };
      } else if (n.name !== spec.name) {
        this.#byName.delete(n.name);
      }
      n.name = spec.name;
      n.labels = spec.labels;
      n.fixedIp = spec.ip ?? null;
      n.firstStage = spec.firstStage ?? null;
      n.image = spec.image ?? null;
      n.fromClusterFile = true;
      n.enrollment = 'admitted';
      this.#index(n);
      this.#persistNow(n, null);
    }
  }

  #index(n: NodeRecord): void {
    this.#sorted = undefined;
    this.#byMac.set(n.mac, n);
    this.#byName.set(n.name, n);
  }

  #params(n: NodeRecord, autoSeq: number | null | undefined) {
    return {
      mac: n.mac,
      name: n.name,
      autoSeq: autoSeq ?? autoSeqOf(n),
      uuid: n.uuid,
      labels: JSON.stringify(n.labels),
      fixedIp: n.fixedIp,
      firstStage: n.firstStage,
      fromClusterFile: n.fromClusterFile ? 1 : 0,
      enrollment: n.enrollment,
      state: n.state,
      stateSince: n.stateSince,
      firstSeen: n.firstSeen,
      lastSeen: n.lastSeen,
      bootCount: n.bootCount,
      ip: n.ip,
      imageVersion: n.imageVersion,
      agentVersion: n.agentVersion,
      inventory: n.inventory ? JSON.stringify(n.inventory) : null,
      image: n.image,
      bootedImage: n.bootedImage ? JSON.stringify(n.bootedImage) : null,
    };
  }

  #persist(n: NodeRecord, autoSeq?: number | null): void {
    const p = this.#params(n, autoSeq);
    this.commits
      .run(() => this.#stmts.upsert.run(p))
      .catch(() => {
        /* reported through GroupCommit.failure */
      });
  }

  #persistNow(n: NodeRecord, autoSeq: number | null): void {
    this.#stmts.upsert.run(this.#params(n, autoSeq));
  }
}

function autoSeqOf(n: NodeRecord): number | null {
  const m = /^node(\d+)$/.exec(n.name);
  return !n.fromClusterFile && m ? Number(m[1]) : null;
}

// One collator for every comparison: localeCompare with options builds one per call (slow).
const NAME_ORDER = new Intl.Collator(undefined, { numeric: true });
function byName(a: NodeRecord, b: NodeRecord): number {
  return NAME_ORDER.compare(a.name, b.name);
}

interface NodeRow {
  mac: string;
  name: string;
  auto_seq: number | null;
  uuid: string | null;
  labels: string;
  fixed_ip: string | null;
  first_stage: string | null;
  from_cluster_file: number;
  enrollment: string;
  state: string;
  state_since: number;
  first_seen: number;
  last_seen: number | null;
  boot_count: number;
  ip: string | null;
  image_version: string | null;
  agent_version: string | null;
  inventory: string | null;
  image: string | null;
  booted_image: string | null;
}

function fromRow(r: NodeRow): NodeRecord {
  return {
    mac: r.mac as Mac,
    name: r.name,
    uuid: r.uuid,
    labels: JSON.parse(r.labels) as string[],
    fixedIp: r.fixed_ip,
    firstStage: r.first_stage as FirstStage | null,
    fromClusterFile: r.from_cluster_file === 1,
    enrollment: r.enrollment as Enrollment,
    state: r.state as NodeState,
    stateSince: r.state_since,
    firstSeen: r.first_seen,
    lastSeen: r.last_seen,
    bootCount: r.boot_count,
    ip: r.ip,
    imageVersion: r.image_version,
    agentVersion: r.agent_version,
    inventory: r.inventory ? (JSON.parse(r.inventory) as Record<string, unknown>) : null,
    image: r.image,
    bootedImage: r.booted_image ? (JSON.parse(r.booted_image) as BootedImage) : null,
  };
}
