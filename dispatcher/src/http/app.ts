/**
 * The HTTP face of the dispatcher on :8080: boot files and scripts for iPXE, the agent
 * WebSocket, the JSON API under /api/v1 and the web status page. `buildApp` never listens;
 * `main` does. Each area registers as a fastify plugin from its own folder.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync, type FastifyRequest } from 'fastify';
import { DispatcherError } from '../errors.js';
import type { Core } from '../core.js';
import { tokensEqual } from '../trust/secrets.js';

/** Largest JSON body accepted by the API (submissions of big sweeps go as files in chunks). */
export const MAX_BODY_BYTES = 64 * 1024 * 1024;

export interface AppPlugin {
  name: string;
  plugin: FastifyPluginAsync;
}

export async function buildApp(core: Core, plugins: AppPlugin[] = []): Promise<FastifyInstance> {
  const app: FastifyInstance = Fastify({
    loggerInstance: core.log.child({ svc: 'http' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: MAX_BODY_BYTES,
    keepAliveTimeout: 65_000,
    return503OnClosing: true,
  });

  app.setErrorHandler((err, req, reply) => {
    if (err instanceof DispatcherError) return reply.code(err.status).send(err.toJSON());
    const e = err as { statusCode?: number; code?: string; message: string; validation?: unknown };
    if (e.validation || e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || (e.statusCode === 400))
      return reply.code(400).send(new DispatcherError('DSP_ERR_BAD_REQUEST', e.message).toJSON());
    if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || e.statusCode === 413)
      return reply.code(413).send(new DispatcherError('DSP_ERR_PAYLOAD_TOO_LARGE', `request body larger than ${MAX_BODY_BYTES} bytes`).toJSON());
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500)
      return reply.code(e.statusCode).send({ error: { code: 'DSP_ERR_BAD_REQUEST', message: e.message } });
    req.log.error({ err }, 'request failed');
    return reply.code(500).send(new DispatcherError('DSP_ERR_INTERNAL', 'internal error; see the dispatcher log').toJSON());
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send(new DispatcherError('DSP_ERR_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`).toJSON()),
  );

  app.get('/healthz', async () => ({ ok: true, uptimeMs: core.now() - core.startedAt }));

  for (const p of plugins) await app.register(p.plugin);
  return app;
}

/**
 * Routes that change anything need the admin token: `Authorization: Bearer <token>`, or the
 * `lc_admin` cookie set by the web log-in link.
 */
export function requireAdmin(core: Core) {
  return async (req: FastifyRequest): Promise<void> => {
    const token = adminTokenOf(req);
    if (!token || !tokensEqual(token, core.secrets.adminToken))
      throw new DispatcherError('DSP_ERR_UNAUTHORIZED', token ? 'wrong admin token' : 'this action needs the admin token', {
        hint: 'pass --token or set LILCLUSTER_TOKEN; the token is in <data-dir>/admin.token',
      });
  };
}

export function adminTokenOf(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice(7).trim();
  const cookie = req.headers.cookie;
  if (cookie) for (const part of cookie.split(';')) {
    const [k, v] = part.trim().split('=');
    if (k === 'lc_admin' && v) return decodeURIComponent(v);
  }
  return undefined;
}
