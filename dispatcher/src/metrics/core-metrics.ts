/**
 * The operator surface's own figures on /metrics: nodes by state, the store's commits and
 * their latency, node commands and their acknowledgement time, live-feed clients, and the
 * process (memory, CPU, event-loop delay). Other areas register theirs (see registry.ts).
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Core } from '../core.js';
import type { NodeControl } from '../agents/control-contract.js';
import { NODE_STATES } from '../api/schemas.js';
import { NODES_BY_STATE } from './names.js';
import { VERSION } from '../version.js';

export interface CoreMetricsSources {
  control: () => NodeControl;
  feedClients: () => number;
}

/** Registers the figures and returns a function that unregisters what needs stopping. */
export function registerCoreMetrics(core: Core, src: CoreMetricsSources): () => void {
  const m = core.metrics;
  m.collect({
    name: 'lilcluster_info',
    help: 'dispatcher version',
    type: 'gauge',
    labelNames: ['version'],
    collect: () => [{ labels: { version: VERSION }, value: 1 }],
  });
  m.collect({
    name: NODES_BY_STATE,
    help: 'nodes by state',
    type: 'gauge',
    labelNames: ['state'],
    collect: () => {
      const counts = new Map<string, number>(NODE_STATES.map((s) => [s, 0]));
      for (const n of core.nodes.list()) counts.set(n.state, (counts.get(n.state) ?? 0) + 1);
      return [...counts].map(([state, value]) => ({ labels: { state }, value }));
    },
  });
  m.collect({
    name: 'lilcluster_nodes_pending',
    help: 'nodes waiting for approval',
    type: 'gauge',
    collect: () => core.nodes.list().filter((n) => n.enrollment === 'pending').length,
  });
  m.collect({
    name: 'lilcluster_nodes_connected',
    help: 'nodes whose agent is connected',
    type: 'gauge',
    collect: () => src.control().connected().length,
  });
  m.collect({
    name: 'lilcluster_store_commits_total',
    help: 'store transactions committed (group commit)',
    type: 'counter',
    collect: () => core.commits.stats.commits,
  });
  m.collect({
    name: 'lilcluster_store_writes_total',
    help: 'writes committed in those transactions',
    type: 'counter',
    collect: () => core.commits.stats.writes,
  });
  m.collect({
    name: 'lilcluster_store_commit_seconds_total',
    help: 'time spent committing on the event loop (the fsync is counted apart); divide by commits for the mean',
    type: 'counter',
    collect: () => core.commits.stats.totalCommitMs / 1000,
  });
  m.collect({
    name: 'lilcluster_store_last_commit_seconds',
    help: 'duration of the last commit',
    type: 'gauge',
    collect: () => core.commits.stats.lastCommitMs / 1000,
  });
  m.collect({
    name: 'lilcluster_store_wal_syncs_total',
    help: 'fsyncs of the WAL that made commits durable (threadpool, off the event loop)',
    type: 'counter',
    collect: () => core.commits.stats.syncs,
  });
  m.collect({
    name: 'lilcluster_store_wal_sync_seconds_total',
    help: 'time spent in those fsyncs',
    type: 'counter',
    collect: () => core.commits.stats.totalSyncMs / 1000,
  });
  m.collect({
    name: 'lilcluster_store_checkpoints_total',
    help: 'WAL checkpoints by the checkpoint worker',
    type: 'counter',
    collect: () => core.checkpointer.stats.checkpoints,
  });
  m.collect({
    name: 'lilcluster_store_checkpoint_seconds_total',
    help: 'time the checkpoint worker spent checkpointing',
    type: 'counter',
    collect: () => core.checkpointer.stats.totalMs / 1000,
  });
  m.collect({
    name: 'lilcluster_store_failing',
    help: '1 while the store cannot be written',
    type: 'gauge',
    collect: () => (core.commits.failure ? 1 : 0),
  });
  const shared = core.shared;
  if (shared) {
    m.collect({
      name: 'lilcluster_store_postgres_available',
      help: '1 while the leader holds its PostgreSQL session (0: changes are refused until it returns)',
      type: 'gauge',
      collect: () => (shared.durability.available ? 1 : 0),
    });
    m.collect({
      name: 'lilcluster_store_postgres_batches_total',
      help: 'transactions that shipped committed changes to PostgreSQL',
      type: 'counter',
      collect: () => shared.durability.stats.batches,
    });
    m.collect({
      name: 'lilcluster_store_postgres_rows_total',
      help: 'rows those transactions wrote or deleted',
      type: 'counter',
      collect: () => shared.durability.stats.rows,
    });
    m.collect({
      name: 'lilcluster_store_postgres_ship_seconds_total',
      help: 'time spent shipping (on the leader session; off the event loop but in series)',
      type: 'counter',
      collect: () => shared.durability.stats.totalShipMs / 1000,
    });
    m.collect({
      name: 'lilcluster_store_postgres_failures_total',
      help: 'ships that failed (the database away); their rows went with the next',
      type: 'counter',
      collect: () => shared.durability.stats.failures,
    });
    m.collect({
      name: 'lilcluster_leader_epoch',
      help: 'the takeover count of this store when this dispatcher took the lead',
      type: 'gauge',
      collect: () => shared.leadership.epoch,
    });
  }
  m.collect({
    name: 'lilcluster_web_clients',
    help: 'status pages connected to the live feed',
    type: 'gauge',
    collect: () => src.feedClients(),
  });

  const events = m.counter({ name: 'lilcluster_events_total', help: 'events recorded, by kind', labelNames: ['kind'] });
  const commands = m.counter({
    name: 'lilcluster_node_commands_total',
    help: 'operator commands to nodes, by command and outcome',
    labelNames: ['command', 'outcome'],
  });
  const ack = m.histogram({
    name: 'lilcluster_node_command_ack_seconds',
    help: 'time from sending a command to the agent until its acknowledgement',
    labelNames: ['command'],
  });
  const unsubscribe = core.events.subscribe((e) => {
    events.inc({ kind: e.kind });
    if (e.kind === 'node.command' && e.data) {
      const command = String(e.data.command ?? 'unknown');
      commands.inc({ command, outcome: e.data.ok ? 'ok' : 'failed' });
      if (typeof e.data.ackMs === 'number') ack.observe(e.data.ackMs / 1000, { command });
    }
  });

  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  m.collect({
    name: 'process_resident_memory_bytes',
    help: 'resident memory size',
    type: 'gauge',
    collect: () => process.memoryUsage.rss(),
  });
  m.collect({
    name: 'process_cpu_seconds_total',
    help: 'user and system CPU time',
    type: 'counter',
    collect: () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1e6;
    },
  });
  m.collect({
    name: 'process_start_time_seconds',
    help: 'start time, Unix seconds',
    type: 'gauge',
    collect: () => Math.round(core.startedAt / 1000),
  });
  m.collect({
    name: 'nodejs_eventloop_delay_seconds',
    help: 'event-loop delay percentiles since the last scrape',
    type: 'gauge',
    labelNames: ['quantile'],
    collect: () => {
      const r = [0.5, 0.99].map((q) => ({ labels: { quantile: q }, value: loop.percentile(q * 100) / 1e9 }));
      loop.reset();
      return r;
    },
  });
  return () => {
    unsubscribe();
    loop.disable();
  };
}
