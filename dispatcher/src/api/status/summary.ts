/**
 * The cluster summary behind GET /api/v1/status, `dispatcherctl status` and the page's header:
 * nodes by state, task queue (from the dispatch engine's metrics), throughput, store health.
 */
import { NODE_STATES, type StatusView } from '../schemas.js';
import { TASK_STATES } from '../jobs/schemas.js';
import { TASKS_BY_STATE, TASKS_COMPLETED_TOTAL, TASKS_DISPATCHED_TOTAL } from '../../metrics/names.js';
import type { MetricsRegistry } from '../../metrics/registry.js';
import { VERSION } from '../../version.js';
import type { OperatorApi } from '../context.js';

export function statusSummary(api: OperatorApi): StatusView {
  const { core } = api;
  const control = api.control();
  const byState: Record<string, number> = Object.fromEntries(NODE_STATES.map((s) => [s, 0]));
  let pending = 0;
  let connected = 0;
  const list = core.nodes.list();
  for (const n of list) {
    byState[n.state] = (byState[n.state] ?? 0) + 1;
    if (n.enrollment === 'pending') pending++;
    if (control.isConnected(n.mac)) connected++;
  }
  const now = core.now();
  const s = core.commits.stats;
  return {
    version: VERSION,
    startedAt: core.startedAt,
    now,
    uptimeS: Math.round((now - core.startedAt) / 1000),
    network: { interface: core.network.name ?? null, address: core.network.address, dhcp: core.config.dhcp.mode },
    enrollment: core.nodes.policy,
    nodes: { total: list.length, connected, pending, denied: core.nodes.denied().length, byState },
    tasks: taskCounts(core.metrics),
    dispatchedTotal: core.metrics.value(TASKS_DISPATCHED_TOTAL) ?? null,
    throughput: { intervalS: api.throughput.intervalS, points: api.throughput.points() },
    store: {
      commits: s.commits,
      writes: s.writes,
      avgCommitMs: s.commits ? s.totalCommitMs / s.commits : 0,
      lastCommitMs: s.lastCommitMs,
      failure: core.commits.failure?.message ?? null,
    },
    operations: api.operations.running(),
  };
}

/** Tasks by state, when the dispatch engine registered its gauge; null otherwise. */
export function taskCounts(metrics: MetricsRegistry): StatusView['tasks'] {
  if (!metrics.has(TASKS_BY_STATE)) return null;
  const c = Object.fromEntries(TASK_STATES.map((st) => [st, metrics.value(TASKS_BY_STATE, { state: st }) ?? 0]));
  return c as NonNullable<StatusView['tasks']>;
}

/** Cumulative completed tasks: the engine's counter if it has one, else done + failed. */
export function completedTotal(metrics: MetricsRegistry): number | undefined {
  const total = metrics.value(TASKS_COMPLETED_TOTAL);
  if (total !== undefined) return total;
  const t = taskCounts(metrics);
  return t ? t.done + t.failed : undefined;
}
