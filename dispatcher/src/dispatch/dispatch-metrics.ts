/**
 * The dispatch engine's metrics, read from its counts when scraped. A name registered
 * already (another engine on the same registry, in tests) is left to its first owner.
 */
import type { MetricsRegistry, Histogram } from '../metrics/registry.js';
import { JOBS_ACTIVE, TASKS_BY_STATE, TASKS_COMPLETED_TOTAL, TASKS_DISPATCHED_TOTAL } from '../metrics/names.js';
import type { DispatchCounters } from './active-jobs.js';
import type { EngineStats } from './read-views.js';

export interface DispatchMetricsSource {
  stats: () => EngineStats;
  counters: DispatchCounters;
  activeJobs: () => number;
}

export interface DispatchMetrics {
  /** The names this engine registered (removed at stop). */
  names: string[];
  /** From results received to results durable (group commit). */
  commitLatency: Histogram | undefined;
}

export function registerDispatchMetrics(m: MetricsRegistry, src: DispatchMetricsSource): DispatchMetrics {
  const out: DispatchMetrics = { names: [], commitLatency: undefined };
  const counters = src.counters;
  const reg = (name: string, fn: () => void) => {
    if (m.has(name)) return;
    fn();
    out.names.push(name);
  };
  reg(TASKS_BY_STATE, () =>
    m.collect({
      name: TASKS_BY_STATE,
      help: 'Tasks by state',
      type: 'gauge',
      labelNames: ['state'],
      collect: () => {
        const s = src.stats();
        return (['queued', 'running', 'done', 'failed', 'cancelled'] as const).map((state) => ({ labels: { state }, value: s[state] }));
      },
    }),
  );
  reg(TASKS_DISPATCHED_TOTAL, () =>
    m.collect({ name: TASKS_DISPATCHED_TOTAL, help: 'Tasks handed to agents', type: 'counter', collect: () => counters.dispatched }),
  );
  reg(TASKS_COMPLETED_TOTAL, () =>
    m.collect({
      name: TASKS_COMPLETED_TOTAL,
      help: 'Tasks finished with a recorded result',
      type: 'counter',
      labelNames: ['outcome'],
      collect: () => [
        { labels: { outcome: 'done' }, value: counters.done },
        { labels: { outcome: 'failed' }, value: counters.failed },
      ],
    }),
  );
  reg(JOBS_ACTIVE, () => m.collect({ name: JOBS_ACTIVE, help: 'Jobs not finished yet', type: 'gauge', collect: () => src.activeJobs() }));
  reg('lilcluster_dispatch_results_dropped_total', () =>
    m.collect({
      name: 'lilcluster_dispatch_results_dropped_total',
      help: 'Results acknowledged but not recorded: duplicate (the task had its result) or stale (not a task the node held)',
      type: 'counter',
      labelNames: ['reason'],
      collect: () => [
        { labels: { reason: 'duplicate' }, value: counters.duplicates },
        { labels: { reason: 'stale' }, value: counters.stale },
      ],
    }),
  );
  reg('lilcluster_dispatch_result_commit_seconds', () => {
    out.commitLatency = m.histogram({
      name: 'lilcluster_dispatch_result_commit_seconds',
      help: 'From results received to results durable (group commit)',
    });
  });
  return out;
}
