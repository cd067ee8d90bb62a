/**
 * The operator surface, assembled: the JSON API (/api/v1: status, nodes, events, operations,
 * live feed, OpenAPI), /metrics, the web page, node actions, rolling reboots and the node
 * watchdog. server.ts creates it first (its OpenAPI collector must see every route), then
 * attaches the agent hub once that exists: `surface.attachControl(hub)`.
 */
import type { AppPlugin } from '../http/app.js';
import type { Core } from '../core.js';
import type { NodeControl } from '../agents/control-contract.js';
import { NodeActions, NO_AGENTS } from '../nodes/actions.js';
import { Operations } from '../nodes/rolling-reboot.js';
import { NodeWatchdog, MIN_RECONNECT_GRACE_MS } from '../nodes/watchdog.js';
import type { WakeOptions } from '../nodes/wol.js';
import { openApiPlugin } from './openapi.js';
import { strictValidatorCompiler } from './validation.js';
import { ThroughputSampler } from './status/throughput.js';
import { completedTotal, statusSummary } from './status/summary.js';
import { LiveFeed } from './live/feed.js';
import { nodeView } from './nodes/view.js';
import { powerStatesOf } from '../power/power-state.js';
import { nodeRoutes } from './nodes/routes.js';
import { eventRoutes } from './events/routes.js';
import { statusRoutes } from './status/routes.js';
import { operationRoutes } from './operations/routes.js';
import { imageRoutes } from './images/routes.js';
import { Rollouts } from '../images/rollout.js';
import { liveRoutes } from './live/routes.js';
import { enrollmentRoutes } from './enrollment/routes.js';
import { powerRoutes } from './power/routes.js';
import { consoleRoutes } from './console/routes.js';
import { metricsRoutes } from '../metrics/routes.js';
import { registerCoreMetrics } from '../metrics/core-metrics.js';
import { registerAgentMetrics, type AgentHubCounters } from '../metrics/agent-metrics.js';
import { webRoutes } from '../web/routes.js';
import type { OperatorApi } from './context.js';
import type { NodeRecord } from '../nodes/registry.js';
import type { PlannedKexec } from '../boot/kexec-plan.js';

export interface OperatorSurface {
  /** In this order, before every other plugin. */
  plugins: AppPlugin[];
  api: OperatorApi;
  /**
   * Plugs in the agent hub: node control, live figures, drain flags; and its counters on
   * /metrics when it has them (`stats`).
   */
  attachControl(control: NodeControl & { stats?: AgentHubCounters }): void;
  /** Plugs in kexec plans (the boot services, once HTTP listens): reboots then skip the firmware. */
  attachKexec(planner: (n: NodeRecord) => Promise<PlannedKexec>): void;
  stop(): Promise<void>;
}

export interface OperatorSurfaceOptions {
  /** Wake-on-LAN overrides (tests send to a local port). */
  wake?: WakeOptions;
  /** Rolling reboot timing (tests). */
  pollMs?: number;
  drainSettleMs?: number;
}

export function createOperatorSurface(core: Core, opts: OperatorSurfaceOptions = {}): OperatorSurface {
  let control: NodeControl = NO_AGENTS;
  const getControl = () => control;
  let kexec: ((n: NodeRecord) => Promise<PlannedKexec>) | undefined;
  const log = core.log.child({ svc: 'operator' });
  const actions = new NodeActions({
    nodes: core.nodes,
    events: core.events,
    log,
    control: getControl,
    wakeTarget: () => ({ ifindex: core.network.ifindex, address: core.network.address, netmask: core.network.netmask }),
    ...(opts.wake ? { wakeOptions: opts.wake } : {}),
    now: core.now,
    kexec: () => kexec,
    timeline: core.timeline,
  });
  const operations = new Operations({
    actions,
    nodes: core.nodes,
    events: core.events,
    log,
    now: core.now,
    ...(opts.pollMs ? { pollMs: opts.pollMs } : {}),
    ...(opts.drainSettleMs !== undefined ? { drainSettleMs: opts.drainSettleMs } : {}),
  });
  const throughput = new ThroughputSampler(() => completedTotal(core.metrics), core.now);
  const api: OperatorApi = {
    core,
    actions,
    operations,
    rollouts: new Rollouts(core, operations, getControl),
    control: getControl,
    throughput,
    feed: undefined as unknown as LiveFeed,
    streams: new Set(),
  };
  api.feed = new LiveFeed({
    nodes: () => {
      const src = {
        control: getControl(),
        timeline: core.timeline,
        images: core.images.assignments,
        health: core.nodeHealth,
        power: powerStatesOf(core),
      };
      return core.nodes.list().map((n) => nodeView(n, src));
    },
    summary: () => statusSummary(api),
    recentEvents: (n) => core.events.recent(n),
    subscribeEvents: (fn) => core.events.subscribe(fn),
    now: core.now,
  });
  const watchdog = new NodeWatchdog(core.nodes, getControl, core.now, {
    reconnectGraceMs: Math.max(MIN_RECONNECT_GRACE_MS, (core.config.missedHeartbeats + 2) * core.config.heartbeatSeconds * 1000),
  });
  const unregisterMetrics = registerCoreMetrics(core, { control: getControl, feedClients: () => api.feed.clients });
  throughput.start();
  watchdog.start();

  return {
    plugins: [
      { name: 'openapi', plugin: openApiPlugin() },
      {
        name: 'operator-api',
        plugin: async (app) => {
          app.setValidatorCompiler(strictValidatorCompiler);
          // Answers are built field by field from our own types; the response schemas document
          // them. Plain JSON.stringify beats fast-json-stringify here: its anyOf (every nullable
          // field) is validated value by value, which made a 1,000-node list cost several times more.
          app.setSerializerCompiler(() => (data) => JSON.stringify(data));
          await app.register(statusRoutes(api));
          await app.register(nodeRoutes(api));
          await app.register(eventRoutes(api));
          await app.register(operationRoutes(api));
          await app.register(imageRoutes(api));
          await app.register(liveRoutes(api));
          await app.register(enrollmentRoutes(api));
          await app.register(powerRoutes(api));
          await app.register(consoleRoutes(api));
        },
      },
      { name: 'metrics', plugin: metricsRoutes(core.metrics) },
      { name: 'web', plugin: webRoutes(core) },
    ],
    api,
    attachKexec(planner) {
      kexec = planner;
    },
    attachControl(c) {
      control = c;
      if (c.stats) registerAgentMetrics(core.metrics, () => c.stats!);
    },
    async stop() {
      watchdog.stop();
      throughput.stop();
      api.feed.stop();
      for (const s of api.streams) s.close();
      await operations.stop();
      unregisterMetrics();
    },
  };
}
