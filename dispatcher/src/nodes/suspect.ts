/**
 * Black-hole detection: a broken node (a missing library, a full tmpfs, a bad DIMM) fails its
 * tasks fastest, so with pull it asks for the most work and fails a whole queue. A node is
 * *suspect* once its last K attempts all failed while every job among them has had a task
 * succeed on another node: the jobs work, the node does not. Pure: attempts in, verdicts out;
 * node-health.ts drains the node and records the evidence.
 *
 * A failure is an attempt that ran and said no: a non-zero exit, or a start the node could
 * not make (`cannot start …`, a refused task root). Timeouts, signals and cancellations are
 * not counted: a slow or killed task says nothing about the node.
 */
import type { Mac } from './mac.js';
import type { SuspectEvidence } from '../api/schemas.js';

/** An attempt that ended on a node, as the result recorder saw it. */
export interface AttemptEnd {
  mac: Mac;
  taskId: number;
  attempt: number;
  jobId: number;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  error: string | null;
}

/** Jobs whose successes are remembered (the oldest are forgotten first). */
const MAX_JOBS = 4096;
/** Nodes remembered per job as having succeeded (enough to say "elsewhere"). */
const MAX_NODES_PER_JOB = 4;

type Verdict = 'ok' | 'failed' | 'neutral';

export function verdictOf(e: AttemptEnd): Verdict {
  if (e.timedOut || e.signal !== null) return 'neutral';
  if (e.error !== null) return e.error.startsWith('cancelled') ? 'neutral' : 'failed';
  if (e.exitCode === null) return 'neutral';
  return e.exitCode === 0 ? 'ok' : 'failed';
}

export class SuspectDetector {
  /** Per node, its failures since its last success (the last K kept). */
  readonly #streaks = new Map<Mac, AttemptEnd[]>();
  /** Per job, nodes on which one of its tasks succeeded (insertion order: oldest job first). */
  readonly #succeeded = new Map<number, Set<Mac>>();
  /** Nodes already judged suspect (until reset). */
  readonly #flagged = new Set<Mac>();

  /** `after`: failures in a row that make a node suspect; 0 turns detection off. */
  constructor(readonly after: number) {}

  /**
   * An attempt ended. Returns the nodes it makes suspect with their evidence: the node itself
   * (its K-th failure in a row), or others whose streak this success elsewhere confirms.
   */
  observe(e: AttemptEnd, now: number): { mac: Mac; evidence: SuspectEvidence }[] {
    if (this.after <= 0) return [];
    const v = verdictOf(e);
    if (v === 'neutral') return [];
    if (v === 'ok') {
      this.#streaks.delete(e.mac);
      let s = this.#succeeded.get(e.jobId);
      if (!s) {
        s = new Set();
        this.#succeeded.set(e.jobId, s);
        if (this.#succeeded.size > MAX_JOBS) this.#succeeded.delete(this.#succeeded.keys().next().value!);
      }
      if (s.size < MAX_NODES_PER_JOB) s.add(e.mac);
      // Fast failures come before the others' first success: that success may confirm them.
      const out: { mac: Mac; evidence: SuspectEvidence }[] = [];
      for (const [mac, streak] of this.#streaks)
        if (mac !== e.mac && streak.some((f) => f.jobId === e.jobId)) {
          const ev = this.#judge(mac, now);
          if (ev) out.push({ mac, evidence: ev });
        }
      return out;
    }
    let streak = this.#streaks.get(e.mac);
    if (!streak) {
      streak = [];
      this.#streaks.set(e.mac, streak);
    }
    streak.push(e);
    if (streak.length > this.after) streak.shift();
    const ev = this.#judge(e.mac, now);
    return ev ? [{ mac: e.mac, evidence: ev }] : [];
  }

  /** The node was undrained (or forgotten): it starts with a clean slate. */
  reset(mac: Mac): void {
    this.#streaks.delete(mac);
    this.#flagged.delete(mac);
  }

  #judge(mac: Mac, now: number): SuspectEvidence | undefined {
    if (this.#flagged.has(mac)) return undefined;
    const streak = this.#streaks.get(mac) ?? [];
    if (streak.length < this.after) return undefined;
    const elsewhere = new Map<number, Mac[]>();
    for (const f of streak) {
      const others = [...(this.#succeeded.get(f.jobId) ?? [])].filter((m) => m !== mac);
      if (others.length === 0) return undefined; // that job fails everywhere so far: no evidence against the node
      elsewhere.set(f.jobId, others);
    }
    this.#flagged.add(mac);
    return {
      at: now,
      failures: streak.map((f) => ({
        taskId: f.taskId,
        attempt: f.attempt,
        jobId: f.jobId,
        exitCode: f.exitCode,
        ...(f.error !== null ? { error: f.error.slice(0, 200) } : {}),
      })),
      succeededElsewhere: [...elsewhere].map(([jobId, macs]) => ({ jobId, nodes: macs })),
    };
  }
}
