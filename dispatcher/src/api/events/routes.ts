/**
 * /api/v1/events: the event log (node states, commands, boots, operations, jobs), as a list
 * and as a server-sent event stream (`dispatcherctl events --follow`).
 */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import { ErrorBody, EventList, EventQuery, type ClusterEvent } from '../schemas.js';
import type { OperatorApi } from '../context.js';
import { openSse } from '../streams.js';

/** Events a slow stream client may fall behind by before it is cut off (it reconnects with Last-Event-ID). */
const MAX_BACKLOG_BYTES = 8 * 1024 * 1024;

export function eventRoutes(api: OperatorApi): FastifyPluginAsync {
  return async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { core } = api;

    app.get(
      '/api/v1/events',
      {
        schema: {
          summary: 'recent events, oldest first',
          tags: ['events'],
          querystring: EventQuery,
          response: { 200: EventList, 400: ErrorBody },
        },
      },
      async (req) => {
        const q = req.query;
        const node = q.node ? (core.nodes.find(q.node)?.name ?? q.node) : undefined;
        return {
          events: core.events.list({
            ...(node ? { node } : {}),
            ...(q.kind ? { kind: q.kind } : {}),
            ...(q.after !== undefined ? { afterId: q.after } : {}),
            limit: q.limit ?? 100,
          }),
        };
      },
    );

    app.get(
      '/api/v1/events/stream',
      {
        schema: {
          summary: 'events as they happen (text/event-stream, event name `event`, id = event id)',
          description: 'Resumes after `after` or the Last-Event-ID header, replaying what was missed first.',
          tags: ['events'],
          querystring: Type.Object({
            node: Type.Optional(Type.String({ maxLength: 200 })),
            kind: Type.Optional(Type.String({ maxLength: 100 })),
            after: Type.Optional(Type.Integer({ minimum: 0 })),
          }),
          response: { 200: Type.String({ 'x-content-type': 'text/event-stream', description: 'server-sent events' }), 400: ErrorBody },
        },
      },
      async (req, reply) => {
        const q = req.query;
        const node = q.node ? (core.nodes.find(q.node)?.name ?? q.node) : undefined;
        const lastId = Number(req.headers['last-event-id']);
        const after = q.after ?? (Number.isInteger(lastId) && lastId >= 0 ? lastId : undefined);
        const match = (e: ClusterEvent) => (!node || e.node === node) && (!q.kind || e.kind.startsWith(q.kind));
        const sse = openSse(req, reply);
        api.streams.add(sse);
        sse.onClose(() => api.streams.delete(sse));
        // Subscribe first, then replay what was missed: nothing falls in between; ids dedupe the overlap.
        let sentUpTo = after ?? -1;
        const pending: ClusterEvent[] = [];
        let replaying = after !== undefined;
        const send = (e: ClusterEvent) => {
          if (e.id <= sentUpTo || !match(e)) return;
          sentUpTo = e.id;
          sse.send('event', e, e.id);
          if (reply.raw.writableLength > MAX_BACKLOG_BYTES) sse.close();
        };
        const unsubscribe = core.events.subscribe((e) => (replaying ? pending.push(e) : send(e)));
        sse.onClose(unsubscribe);
        while (replaying && !sse.closed) {
          const batch = core.events.list({
            ...(node ? { node } : {}),
            ...(q.kind ? { kind: q.kind } : {}),
            afterId: sentUpTo,
            limit: 1000,
          });
          for (const e of batch) send(e);
          if (batch.length < 1000) replaying = false;
        }
        replaying = false;
        for (const e of pending) send(e);
      },
    );
  };
}
