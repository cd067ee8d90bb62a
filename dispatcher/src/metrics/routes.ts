/** GET /metrics: every registered figure in Prometheus text format (no token: scrapers read it). */
import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { MetricsRegistry } from './registry.js';
import { PROMETHEUS_CONTENT_TYPE } from './registry.js';

export function metricsRoutes(metrics: MetricsRegistry): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/metrics',
      {
        schema: {
          summary: 'metrics in Prometheus text format: nodes by state, tasks by state, dispatch rate, boot counters, store latency',
          tags: ['metrics'],
          response: { 200: Type.String({ 'x-content-type': 'text/plain; version=0.0.4' }) },
        },
      },
      async (_req, reply) => reply.type(PROMETHEUS_CONTENT_TYPE).send(metrics.render()),
    );
  };
}
