/** GET /api/v1/status: the cluster at a glance. */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { DeniedList, StatusView } from '../schemas.js';
import type { OperatorApi } from '../context.js';
import { statusSummary } from './summary.js';

export function statusRoutes(api: OperatorApi): FastifyPluginAsync {
  return async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    app.get(
      '/api/v1/status',
      {
        schema: {
          summary: 'the cluster at a glance: nodes by state, task queue, throughput, store, running operations',
          tags: ['status'],
          response: { 200: StatusView },
        },
      },
      async () => statusSummary(api),
    );
    app.get(
      '/api/v1/denied',
      {
        schema: {
          summary: 'unknown machines refused under `enrollment: deny` since the dispatcher started (who knocked, how often)',
          tags: ['nodes'],
          response: { 200: DeniedList },
        },
      },
      async () => ({ machines: api.core.nodes.denied() }),
    );
  };
}
