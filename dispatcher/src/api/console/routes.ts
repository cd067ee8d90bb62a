/**
 * /api/v1/nodes/{node}/console: a node's captured console lines (kernel messages by
 * netconsole, serial by Serial-over-LAN), as a list and as a server-sent event stream
 * (`dispatcherctl console NODE --follow`). They outlive the node: a dead node's panic stays
 * readable here.
 */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { Type } from '@sinclair/typebox';
import { ErrorBody, NodeRef } from '../schemas.js';
import type { OperatorApi } from '../context.js';
import { openSse } from '../streams.js';
import { consoleLogOf, type ConsoleLine, type ConsoleSource } from '../../console/store.js';
import { DispatcherError } from '../../errors.js';
import { ConsoleReply, type ConsoleLineView } from './schemas.js';

/** Lines a slow stream client may fall behind by before it is cut off (it resumes with Last-Event-ID). */
const MAX_BACKLOG_BYTES = 4 * 1024 * 1024;
export const DEFAULT_CONSOLE_LIMIT = 200;
export const MAX_CONSOLE_LIMIT = 10_000;

const ConsoleQuery = Type.Object(
  {
    kernel: Type.Optional(Type.Boolean({ description: 'only kernel lines (netconsole)' })),
    serial: Type.Optional(Type.Boolean({ description: 'only serial console lines (Serial-over-LAN)' })),
    after: Type.Optional(Type.Integer({ minimum: 0, description: 'only lines with a larger id' })),
    limit: Type.Optional(
      Type.Integer({ minimum: 1, maximum: MAX_CONSOLE_LIMIT, description: `the last N lines (default ${DEFAULT_CONSOLE_LIMIT})` }),
    ),
  },
  { additionalProperties: false },
);

const view = (l: ConsoleLine): ConsoleLineView => ({ id: l.id, ts: l.ts, source: l.source, text: l.text });

/** The one source asked for (kernel or serial), or undefined for all of them. */
function sourceOf(q: { kernel?: boolean | undefined; serial?: boolean | undefined }): ConsoleSource | undefined {
  if (q.kernel && q.serial)
    throw new DispatcherError('DSP_ERR_BAD_REQUEST', 'kernel and serial: give one of them, or neither for all sources', {
      hint: 'dispatcherctl console NODE shows all sources; --kernel or --serial one of them',
    });
  return q.kernel ? 'kernel' : q.serial ? 'serial' : undefined;
}

export function consoleRoutes(api: OperatorApi): FastifyPluginAsync {
  return async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { core, actions } = api;
    const store = consoleLogOf(core.db);

    app.get(
      '/api/v1/nodes/:node/console',
      {
        schema: {
          summary: "a node's last console lines, oldest first (kernel by netconsole, serial by SOL)",
          tags: ['nodes'],
          params: NodeRef,
          querystring: ConsoleQuery,
          response: { 200: ConsoleReply, 400: ErrorBody, 404: ErrorBody },
        },
      },
      async (req) => {
        const n = actions.resolve(req.params.node);
        store.flush();
        const q = req.query;
        const lines = store.list({
          mac: n.mac,
          source: sourceOf(q),
          afterId: q.after,
          limit: q.limit ?? DEFAULT_CONSOLE_LIMIT,
        });
        return { node: n.name, mac: n.mac, lines: lines.map(view), stored: { ...store.usage(n.mac), ...store.limits } };
      },
    );

    app.get(
      '/api/v1/nodes/:node/console/stream',
      {
        schema: {
          summary: "a node's console lines as they arrive (text/event-stream, event name `line`, id = line id)",
          description: 'Resumes after `after` or the Last-Event-ID header, replaying what is still stored first.',
          tags: ['nodes'],
          params: NodeRef,
          querystring: Type.Omit(ConsoleQuery, ['limit']),
          response: {
            200: Type.String({ 'x-content-type': 'text/event-stream', description: 'server-sent events' }),
            400: ErrorBody,
            404: ErrorBody,
          },
        },
      },
      async (req, reply) => {
        const n = actions.resolve(req.params.node);
        const q = req.query;
        const source = sourceOf(q);
        const lastId = Number(req.headers['last-event-id']);
        let sentUpTo = q.after ?? (Number.isInteger(lastId) && lastId >= 0 ? lastId : Number.MAX_SAFE_INTEGER);
        const match = (l: ConsoleLine) => l.mac === n.mac && (!source || l.source === source);
        const sse = openSse(req, reply);
        api.streams.add(sse);
        sse.onClose(() => api.streams.delete(sse));
        const send = (l: ConsoleLine) => {
          if (l.id <= sentUpTo || !match(l)) return;
          sentUpTo = l.id;
          sse.send('line', view(l), l.id);
          if (reply.raw.writableLength > MAX_BACKLOG_BYTES) sse.close();
        };
        // Without `after`, only new lines; with it, what is stored past it first. Lines are
        // stored and published in the same turn, so a replay here cannot miss any.
        store.flush();
        if (sentUpTo === Number.MAX_SAFE_INTEGER) sentUpTo = store.list({ mac: n.mac, limit: 1 }).at(-1)?.id ?? 0;
        else for (const l of store.list({ mac: n.mac, source, afterId: sentUpTo, limit: MAX_CONSOLE_LIMIT })) send(l);
        const unsubscribe = store.subscribe((batch) => {
          for (const l of batch) send(l);
        });
        sse.onClose(unsubscribe);
      },
    );
  };
}
