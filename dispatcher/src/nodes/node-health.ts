/**
 * Self-healing that needs no BMC: nodes drained for what they do, and undrained when they
 * are fine again.
 *
 * - **Health check** (cluster file `healthCheck` / `healthChecks`): the agent runs it at start
 *   and every interval (node-agent/src/health-check.ts) and reports each outcome. A failure
 *   drains the node with reason `health: <first line of output>` and an event carrying the
 *   whole (bounded) output; a pass undrains it again — only if this module drained it, so an
 *   operator's drain (or a suspect drain) stays.
 * - **Suspect** (suspect.ts, cluster file `suspectAfter`): a node whose last K attempts failed
 *   while their jobs succeed elsewhere is drained with the evidence; only the operator's
 *   undrain ends it.
 *
 * Who drained a node, its last health outcome and its suspect evidence are kept in the store,
 * so a dispatcher restart neither forgets a drain of ours nor takes an operator's for one. A
 * node leaving `draining` by any path (undrain, reboot, lost) ends the drain's ownership and
 * its suspect evidence (seen through the node.state events).
 */
import type { Db, Migration } from '../store/database.js';
import type { GroupCommit } from '../store/group-commit.js';
import type { EventLog } from '../events/event-log.js';
import { RateLimitedLog, type Logger } from '../log.js';
import type { NodeControl } from '../agents/control-contract.js';
import type { NodeHealth, SuspectEvidence } from '../api/schemas.js';
import type { NodeRecord, NodeRegistry } from './registry.js';
import type { Mac } from './mac.js';
import { DEFAULT_SUSPECT_AFTER, healthCheckFor, type ClusterFile, type HealthCheckSpec } from './cluster-file.js';
import { SuspectDetector, type AttemptEnd } from './suspect.js';

export const nodeHealthMigrations: Migration[] = [
  {
    name: 'node-health/001-create',
    // drained_by: 'health' | 'suspect' when this module drained the node, else null.
    sql: `CREATE TABLE node_health (
      mac TEXT PRIMARY KEY,
      health TEXT,
      suspect TEXT,
      drained_by TEXT
    ) WITHOUT ROWID;`,
  },
];

/**
 * Reports closer together than this are dropped: an agent sends one per interval (a second at
 * least) and one per welcome, so a faster stream is a broken or hostile agent, and each report
 * may drain or undrain a node and write an event.
 */
export const MIN_REPORT_GAP_MS = 250;

/** A health check's output is kept (and shown) up to this many bytes: its end, where the error usually is. */
export const HEALTH_OUTPUT_BYTES = 4096;

/** One run of the health check, as the agent reports it (protocol `health`). */
export interface HealthReport {
  ok: boolean;
  exitCode: number | null;
  timedOut: boolean;
  output: string;
  durationMs: number;
}

type DrainOwner = 'health' | 'suspect';

interface Entry {
  health?: NodeHealth;
  suspect?: SuspectEvidence;
  drainedBy: DrainOwner | null;
}

export interface NodeHealthDeps {
  db: Db;
  commits: GroupCommit;
  events: EventLog;
  nodes: NodeRegistry;
  log: Logger;
  cluster: ClusterFile;
  now: () => number;
}

/** The first line of a check's output, for a drain reason (the event has the rest). */
export function firstLine(output: string): string {
  const line =
    output
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l.length > 0) ?? '';
  return (line || '(no output)').slice(0, 200);
}

export class NodeHealthMonitor {
  readonly #d: NodeHealthDeps;
  readonly #entries = new Map<Mac, Entry>();
  readonly #detector: SuspectDetector;
  readonly #upsert;
  readonly #rlog: RateLimitedLog;
  /** When each node's last report was taken (memory only). */
  readonly #lastReport = new Map<Mac, number>();
  #control: NodeControl | undefined;

  constructor(deps: NodeHealthDeps) {
    this.#d = deps;
    this.#rlog = new RateLimitedLog(deps.log);
    this.#detector = new SuspectDetector(deps.cluster.suspectAfter ?? DEFAULT_SUSPECT_AFTER);
    this.#upsert = deps.db.prepare(
      `INSERT INTO node_health (mac, health, suspect, drained_by) VALUES (?, ?, ?, ?)
       ON CONFLICT(mac) DO UPDATE SET health = excluded.health, suspect = excluded.suspect, drained_by = excluded.drained_by`,
    );
    const rows = deps.db.prepare('SELECT * FROM node_health').all() as {
      mac: string;
      health: string | null;
      suspect: string | null;
      drained_by: string | null;
    }[];
    for (const r of rows)
      this.#entries.set(r.mac as Mac, {
        ...(r.health ? { health: JSON.parse(r.health) as NodeHealth } : {}),
        ...(r.suspect ? { suspect: JSON.parse(r.suspect) as SuspectEvidence } : {}),
        drainedBy: r.drained_by === 'health' || r.drained_by === 'suspect' ? r.drained_by : null,
      });
    // A node that leaves draining, by whatever path, is no longer drained by us.
    deps.events.subscribe((e) => {
      if (e.kind !== 'node.state' || !e.node || (e.data as { from?: string } | null)?.from !== 'draining') return;
      const n = deps.nodes.byName(e.node);
      if (n) this.#leftDraining(n.mac);
    });
    deps.nodes.onForget((mac) => {
      this.#entries.delete(mac);
      this.#lastReport.delete(mac);
      this.#detector.reset(mac);
      return deps.commits.run(() => deps.db.prepare('DELETE FROM node_health WHERE mac = ?').run(mac)).then(() => {});
    });
  }

  /** The agent hub (created after the core). */
  attach(control: NodeControl): void {
    this.#control = control;
  }

  /** The health check this node's agent runs, if any. */
  checkFor(n: NodeRecord): HealthCheckSpec | undefined {
    return healthCheckFor(this.#d.cluster, n.labels);
  }

  /** What the node view shows. */
  view(mac: Mac): { health?: NodeHealth; suspect?: SuspectEvidence } {
    const e = this.#entries.get(mac);
    if (!e) return {};
    return { ...(e.health ? { health: e.health } : {}), ...(e.suspect ? { suspect: e.suspect } : {}) };
  }

  /** An agent reported a run of its health check. */
  report(mac: Mac, r: HealthReport): void {
    const n = this.#d.nodes.byMac(mac);
    if (!n) return;
    if (!this.checkFor(n)) {
      // Not asked for: an agent cannot drain its node with a check the cluster file does not give it.
      this.#rlog.warn(`${mac}|health-unasked`, { mac, node: n.name }, 'health report from a node without a health check dropped');
      return;
    }
    const now = this.#d.now();
    const last = this.#lastReport.get(mac);
    if (last !== undefined && now - last < MIN_REPORT_GAP_MS) {
      this.#rlog.warn(`${mac}|health-flood`, { mac, node: n.name, gapMs: now - last }, 'health reports too close together dropped');
      return;
    }
    this.#lastReport.set(mac, now);
    const e = this.#entry(mac);
    const output = boundOutput(r.output);
    const changed = !e.health || e.health.ok !== r.ok || (!r.ok && e.health.output !== output);
    const wasOk = e.health?.ok ?? true;
    e.health = { ok: r.ok, output, at: changed ? now : e.health!.at, checkedAt: now };
    if (r.ok) {
      if (!wasOk)
        this.#d.events.append({
          kind: 'node.health',
          node: n.name,
          message: `${n.name} health check passes again`,
          data: { ok: true, exitCode: r.exitCode, durationMs: r.durationMs },
        });
      if (e.drainedBy === 'health' && n.state === 'draining') this.#undrain(n, e);
    } else {
      if (changed) {
        this.#d.events.append({
          kind: 'node.health',
          node: n.name,
          message: `${n.name} health check failed: ${firstLine(output)}`,
          data: { ok: false, exitCode: r.exitCode, timedOut: r.timedOut, durationMs: r.durationMs, output },
        });
        this.#d.log.warn(
          { node: n.name, mac, exitCode: r.exitCode, timedOut: r.timedOut, first: firstLine(output) },
          'health check failed',
        );
      }
      this.#drain(n, e, 'health', `health: ${firstLine(output)}`);
    }
    if (changed) this.#persist(mac, e);
  }

  /** An attempt ended on a node (the result recorder): feeds the suspect detector. */
  attemptEnded(a: AttemptEnd): void {
    const now = this.#d.now();
    for (const { mac, evidence } of this.#detector.observe(a, now)) {
      const n = this.#d.nodes.byMac(mac);
      if (!n) continue;
      const named: SuspectEvidence = {
        ...evidence,
        succeededElsewhere: evidence.succeededElsewhere.map((s) => ({
          jobId: s.jobId,
          nodes: s.nodes.map((m) => this.#d.nodes.byMac(m as Mac)?.name ?? m),
        })),
      };
      const e = this.#entry(mac);
      const exits = [...new Set(named.failures.map((f) => (f.exitCode !== null ? `exit ${f.exitCode}` : (f.error ?? 'error'))))];
      const jobs = named.succeededElsewhere.map((s) => `job ${s.jobId} on ${s.nodes.join(', ')}`).join('; ');
      const summary = `${named.failures.length} tasks in a row failed here (${exits.join(', ').slice(0, 120)}) while their jobs succeeded elsewhere (${jobs})`;
      this.#d.events.append({
        kind: 'node.suspect',
        node: n.name,
        message: `${n.name} is suspect: ${summary}`.slice(0, 500),
        data: { ...named },
      });
      this.#d.log.warn({ node: n.name, mac, failures: named.failures.length }, 'node suspect');
      if (n.state !== 'ready' && n.state !== 'busy' && n.state !== 'draining') {
        this.#detector.reset(mac); // gone meanwhile: nothing to drain
        continue;
      }
      e.suspect = named;
      this.#drain(n, e, 'suspect', `suspect: ${summary}`.slice(0, 300));
      this.#persist(mac, e);
    }
  }

  #drain(n: NodeRecord, e: Entry, by: DrainOwner, reason: string): void {
    if (n.state === 'draining') return; // drained already (by the operator, or by us): its owner stays
    if (n.state !== 'ready' && n.state !== 'busy') return;
    // The state first, so its event carries our reason (the hub's own transition is then a no-op).
    this.#d.nodes.setState(n.mac, 'draining', reason, { by: 'operator' });
    this.#control?.setDraining(n.mac, true);
    e.drainedBy = by;
    this.#persist(n.mac, e);
  }

  #undrain(n: NodeRecord, e: Entry): void {
    const control = this.#control;
    const connected = control?.isConnected(n.mac) ?? false;
    const running = control?.liveStatus(n.mac)?.running.length ?? 0;
    e.drainedBy = null;
    this.#d.nodes.setState(n.mac, !connected ? 'lost' : running ? 'busy' : 'ready', 'health check passes again', { by: 'operator' });
    control?.setDraining(n.mac, false);
    this.#persist(n.mac, e);
  }

  #leftDraining(mac: Mac): void {
    this.#detector.reset(mac);
    const e = this.#entries.get(mac);
    if (!e || (e.drainedBy === null && !e.suspect)) return;
    e.drainedBy = null;
    delete e.suspect;
    this.#persist(mac, e);
  }

  #entry(mac: Mac): Entry {
    let e = this.#entries.get(mac);
    if (!e) {
      e = { drainedBy: null };
      this.#entries.set(mac, e);
    }
    return e;
  }

  #persist(mac: Mac, e: Entry): void {
    const args = [
      mac,
      e.health ? JSON.stringify({ ok: e.health.ok, output: e.health.output, at: e.health.at }) : null,
      e.suspect ? JSON.stringify(e.suspect) : null,
      e.drainedBy,
    ];
    this.#d.commits
      .run(() => this.#upsert.run(args))
      .catch(() => {
        /* reported through GroupCommit.failure; the state stays in memory */
      });
  }
}

/** The last HEALTH_OUTPUT_BYTES of a text, cut on a character boundary. */
export function boundOutput(text: string, max = HEALTH_OUTPUT_BYTES): string {
  const buf = Buffer.from(text, 'utf8');
  if (buf.length <= max) return text;
  let start = buf.length - max;
  while (start < buf.length && (buf[start]! & 0xc0) === 0x80) start++; // not in the middle of a character
  return buf.subarray(start).toString('utf8');
}
