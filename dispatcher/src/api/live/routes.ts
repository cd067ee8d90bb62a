/** GET /api/v1/stream: the web page's live feed (see feed.ts). */
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { OperatorApi } from '../context.js';
import { openSse } from '../streams.js';

export function liveRoutes(api: OperatorApi): FastifyPluginAsync {
  return async (app) => {
    app.get(
      '/api/v1/stream',
      {
        schema: {
          summary: 'live feed for the status page (text/event-stream)',
          description:
            'First event `snapshot` `{status, nodes, events}`; then `update` `{nodes, removed, events, status?}` with only what changed, ' +
            'at most every 500 ms (nodes are upserted by MAC; `removed` lists MACs).',
          tags: ['status'],
          response: { 200: Type.String({ 'x-content-type': 'text/event-stream', description: 'server-sent events' }) },
        },
      },
      async (req, reply) => {
        const sink = openSse(req, reply);
        api.feed.add({ sink, backlog: () => reply.raw.writableLength });
      },
    );
  };
}
