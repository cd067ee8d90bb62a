/**
 * The agent hub's counters on /metrics, read at scrape time from its `stats` object
 * (agents/hub.ts HubStats). Registered when the hub is attached to the operator surface.
 */
import type { MetricsRegistry } from './registry.js';
import { AGENTS_CONNECTED } from './names.js';

/** The hub's counters, as far as /metrics needs them (structural: no import of the hub). */
export interface AgentHubCounters {
  connected: number;
  waiting: number;
  tasksSent: number;
  resultsReceived: number;
  acksSent: number;
  messagesIn: number;
  messagesOut: number;
  protocolErrors: number;
  lostNodes: number;
  refused: number;
}

export function registerAgentMetrics(m: MetricsRegistry, stats: () => AgentHubCounters): void {
  if (m.has(AGENTS_CONNECTED)) return; // attached twice (tests)
  m.collect({ name: AGENTS_CONNECTED, help: 'agents connected now', type: 'gauge', collect: () => stats().connected });
  m.collect({
    name: 'lilcluster_agents_waiting',
    help: 'agents with free slots waiting for tasks',
    type: 'gauge',
    collect: () => stats().waiting,
  });
  m.collect({
    name: 'lilcluster_agent_messages_total',
    help: 'agent protocol messages by direction',
    type: 'counter',
    labelNames: ['direction'],
    collect: () => [
      { labels: { direction: 'in' }, value: stats().messagesIn },
      { labels: { direction: 'out' }, value: stats().messagesOut },
    ],
  });
  m.collect({
    name: 'lilcluster_agent_tasks_sent_total',
    help: 'tasks handed to agents',
    type: 'counter',
    collect: () => stats().tasksSent,
  });
  m.collect({
    name: 'lilcluster_agent_results_total',
    help: 'task results received from agents',
    type: 'counter',
    collect: () => stats().resultsReceived,
  });
  m.collect({
    name: 'lilcluster_agent_acks_total',
    help: 'result acknowledgements sent (results durable)',
    type: 'counter',
    collect: () => stats().acksSent,
  });
  m.collect({
    name: 'lilcluster_agent_protocol_errors_total',
    help: 'agent messages rejected (malformed, oversize, out of order)',
    type: 'counter',
    collect: () => stats().protocolErrors,
  });
  m.collect({
    name: 'lilcluster_agents_lost_total',
    help: 'agents declared lost (missed heartbeats or closed connection)',
    type: 'counter',
    collect: () => stats().lostNodes,
  });
  m.collect({
    name: 'lilcluster_agents_refused_total',
    help: 'agent hellos refused (token, enrollment, protocol)',
    type: 'counter',
    collect: () => stats().refused,
  });
}
