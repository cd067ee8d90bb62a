/**
 * The HTTP face of the dispatcher on :8080: boot files and scripts for iPXE, the agent
 * WebSocket, the JSON API under /api/v1 and the web status page. `buildApp` never listens;
 * `main` does. Each area registers as a fastify plugin from its own folder.
 */
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyPluginAsync,
  type FastifyRequest,
  type onRequestAsyncHookHandler,
} from 'fastify';
import { DispatcherError } from '../errors.js';
import type { Core } from '../core.js';
import { RateLimitedLog } from '../log.js';
import { tokensEqual } from '../trust/secrets.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * A route that changes state but checks its own credential instead of the admin token
     * (say which): buildApp refuses any other state-changing route without requireAdmin.
     */
    ownAuth?: string;
  }
}

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

  // Every route that changes state checks the admin token before its body is read (a
  // preHandler runs after the body is read and parsed): refuse to start otherwise.
  app.addHook('onRoute', (route) => {
    const methods = [route.method].flat();
    if (!methods.some((m) => STATE_CHANGING.has(m)) || route.config?.ownAuth) return;
    if (![route.onRequest ?? []].flat().some((h) => ADMIN_HOOKS.has(h as AdminHook)))
      throw new Error(
        `${methods.join(',')} ${route.url} changes state but does not check the admin token on request: add onRequest: requireAdmin(core), or config.ownAuth naming its credential`,
      );
  });

  app.setErrorHandler((err, req, reply) => {
    // A refusal before a big body was read (no token, wrong type): end the connection after
    // the answer rather than read the rest of the body only to throw it away.
    if (!req.raw.readableEnded && unreadBodyIsBig(req)) reply.header('connection', 'close');
    if (err instanceof DispatcherError) return reply.code(err.status).send(err.toJSON());
    const e = err as { statusCode?: number; code?: string; message: string; validation?: unknown };
    if (e.validation || e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || e.statusCode === 400)
      return reply.code(400).send(new DispatcherError('DSP_ERR_BAD_REQUEST', e.message).toJSON());
    if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || e.statusCode === 413)
      return reply
        .code(413)
        .send(new DispatcherError('DSP_ERR_PAYLOAD_TOO_LARGE', `request body larger than ${MAX_BODY_BYTES} bytes`).toJSON());
    if (e.statusCode === 415)
      return reply.code(415).send(new DispatcherError('DSP_ERR_UNSUPPORTED_MEDIA_TYPE', e.message, { hint: `send ${JSON_TYPE}` }).toJSON());
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500)
      return reply.code(e.statusCode).send({ error: { code: 'DSP_ERR_BAD_REQUEST', message: e.message } });
    req.log.error({ err }, 'request failed');
    return reply.code(500).send(new DispatcherError('DSP_ERR_INTERNAL', 'internal error; see the dispatcher log').toJSON());
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send(new DispatcherError('DSP_ERR_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`).toJSON()),
  );

  // The PostgreSQL store away: changes would wait unacknowledged, so they are refused at once.
  const shared = core.shared;
  if (shared)
    app.addHook('onRequest', async (req) => {
      if (STATE_CHANGING.has(req.method) && !shared.durability.available)
        throw new DispatcherError(
          'DSP_ERR_STORE_UNAVAILABLE',
          `the database is unreachable: ${req.method} ${req.url.split('?')[0]} is refused until it returns`,
          {
            hint: 'running tasks go on and their results are kept; try again when PostgreSQL is back (GET /api/v1/leader shows storeAvailable)',
          },
        );
    });

  app.get('/healthz', async () => ({ ok: true, uptimeMs: core.now() - core.startedAt }));

  for (const p of plugins) await app.register(p.plugin);
  return app;
}

/** The log-in cookie the web page's /login link sets (web/routes.ts). */
export const ADMIN_COOKIE = 'lc_admin';
const JSON_TYPE = 'application/json';
const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

type AdminHook = onRequestAsyncHookHandler;
/** The hooks requireAdmin made: what buildApp's route check looks for. */
const ADMIN_HOOKS = new WeakSet<AdminHook>();
/** One refusal log per core: every route's hook shares its rate limit. */
const refusalLogs = new WeakMap<Core, RateLimitedLog>();

/**
 * Routes that change anything, or make an agent act, need the admin token:
 * `Authorization: Bearer <token>`, or the `lc_admin` cookie set by the web log-in link. Wire
 * it as `onRequest`, so a request without the token is refused before its body is read.
 *
 * A browser sends the cookie with requests that other pages make, so a request that
 * authenticates by the cookie must also show it comes from the dispatcher's own page:
 * `Sec-Fetch-Site: same-origin`, or an `Origin` naming this host (the bearer token cannot be
 * sent by another page, so it needs neither). Requests that change state take only the
 * content types in `accepts` (JSON unless the route says otherwise): a cross-origin form or
 * `text/plain` POST, which a browser sends without asking first, is refused with 415.
 */
export function requireAdmin(core: Core, opts: { accepts?: readonly string[] } = {}): AdminHook {
  const accepts = opts.accepts ?? [JSON_TYPE];
  let log = refusalLogs.get(core);
  if (!log) {
    log = new RateLimitedLog(core.log.child({ svc: 'http' }));
    refusalLogs.set(core, log);
  }
  const refuse = (req: FastifyRequest, err: DispatcherError): never => {
    log.warn(
      `refused:${req.ip}`,
      { ip: req.ip, method: req.method, url: req.url.split('?')[0]!.slice(0, 200), code: err.code, why: err.message },
      'admin request refused',
    );
    throw err;
  };
  const hook: AdminHook = async (req) => {
    const cred = adminCredentialOf(req);
    if (!cred || !tokensEqual(cred.token, core.secrets.adminToken))
      refuse(
        req,
        new DispatcherError('DSP_ERR_UNAUTHORIZED', cred ? 'wrong admin token' : 'this action needs the admin token', {
          hint: 'pass --token or set LILCLUSTER_TOKEN; the token is in <data-dir>/admin.token',
        }),
      );
    if (cred!.via === 'cookie') {
      const why = crossOriginProblem(req);
      if (why)
        refuse(
          req,
          new DispatcherError(
            'DSP_ERR_FORBIDDEN',
            `refused a request authenticated by the log-in cookie that does not come from this dispatcher's page: ${why}`,
            {
              hint: 'from a script or another tool, send the token as Authorization: Bearer <token>',
            },
          ),
        );
    }
    if (STATE_CHANGING.has(req.method)) {
      const what = unacceptedBody(req, accepts);
      if (what)
        refuse(
          req,
          new DispatcherError('DSP_ERR_UNSUPPORTED_MEDIA_TYPE', `${what} is not accepted here: send ${accepts.join(' or ')}`, {
            hint: `set content-type: ${accepts[0]}`,
          }),
        );
    }
  };
  ADMIN_HOOKS.add(hook);
  return hook;
}

/** Why a cookie-authenticated request may not be the dispatcher's own page, or undefined. */
function crossOriginProblem(req: FastifyRequest): string | undefined {
  // Set by the browser, not by scripts; absent over plain HTTP (not a secure context).
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined) return site === 'same-origin' ? undefined : `Sec-Fetch-Site is ${String(site).slice(0, 40)}, not same-origin`;
  const origin = req.headers.origin;
  if (origin === undefined) return 'it carries neither Origin nor Sec-Fetch-Site';
  const host = hostOf(`http://${req.headers.host ?? ''}`);
  const from = hostOf(origin);
  if (from === undefined || !/^https?:$/.test(new URL(origin).protocol))
    return `Origin ${origin.slice(0, 100)} is not a page of this dispatcher`;
  return from === host ? undefined : `Origin ${origin.slice(0, 100)} is not this dispatcher (${String(req.headers.host).slice(0, 100)})`;
}

function hostOf(url: string): string | undefined {
  try {
    return new URL(url).host;
  } catch {
    return undefined;
  }
}

/** Bodies up to this size are read and dropped after a refusal, keeping the connection. */
const DRAIN_BODY_BYTES = 64 * 1024;

function unreadBodyIsBig(req: FastifyRequest): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  return Number(req.headers['content-length'] ?? 0) > DRAIN_BODY_BYTES;
}

/** What is wrong with a state-changing request's body type, or undefined. */
function unacceptedBody(req: FastifyRequest, accepts: readonly string[]): string | undefined {
  const raw = req.headers['content-type'];
  if (raw === undefined) {
    const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    return hasBody ? 'a body without a content-type' : undefined;
  }
  const type = raw.split(';')[0]!.trim().toLowerCase();
  return accepts.includes(type) ? undefined : `content-type ${type.slice(0, 100) || '(empty)'}`;
}

/** The admin token a request carries and how; a malformed cookie counts as none. */
export function adminCredentialOf(req: FastifyRequest): { token: string; via: 'bearer' | 'cookie' } | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) {
    const token = auth.slice(7).trim();
    return token ? { token, via: 'bearer' } : undefined;
  }
  const cookie = req.headers.cookie;
  if (cookie)
    for (const part of cookie.split(';')) {
      const eq = part.indexOf('=');
      if (eq < 0 || part.slice(0, eq).trim() !== ADMIN_COOKIE) continue;
      const token = decodeCookie(part.slice(eq + 1).trim());
      if (token) return { token, via: 'cookie' };
    }
  return undefined;
}

export function adminTokenOf(req: FastifyRequest): string | undefined {
  return adminCredentialOf(req)?.token;
}

function decodeCookie(value: string): string | undefined {
  try {
    return decodeURIComponent(value);
  } catch {
    return undefined; // bad percent-encoding: not a token we issued
  }
}
