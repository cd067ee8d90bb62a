/**
 * The status page on :8080: GET / (plain HTML + one small script + CSS, no framework), the
 * Jupyter-style log-in link (/login?token=... sets the HttpOnly `lc_admin` cookie that
 * requireAdmin accepts, then redirects to /), /logout, and /api/v1/session (am I admin?).
 * Reading the page needs no token; its actions (reboot, drain, approve...) do.
 */
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { Core } from '../core.js';
import { ADMIN_COOKIE, adminTokenOf } from '../http/app.js';
import { tokensEqual } from '../trust/secrets.js';
import { RateLimitedLog } from '../log.js';
import { webAssets, type WebAssets } from './assets.js';

export { ADMIN_COOKIE };
/** The log-in cookie lasts this long (the token itself never expires; rotate it by deleting admin.token). */
export const ADMIN_COOKIE_MAX_AGE_S = 30 * 24 * 3600;

const TYPES: Record<keyof WebAssets, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

// The page loads nothing from elsewhere; inline styles are used for progress bars only.
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

export function webRoutes(core: Core): FastifyPluginAsync {
  return async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const assets = await webAssets();
    const isAdmin = (token: string | undefined) => !!token && tokensEqual(token, core.secrets.adminToken);
    // Someone guessing tokens must not flood the log.
    const noisy = new RateLimitedLog(core.log.child({ svc: 'web' }));

    const serve = (name: keyof WebAssets, reply: FastifyReply) =>
      reply
        .header('content-type', TYPES[name])
        .header('cache-control', 'no-cache')
        .header('x-content-type-options', 'nosniff')
        // same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` with
        // the page's POSTs, and requireAdmin needs the page's origin (the page loads nothing
        // from elsewhere, so its URL goes nowhere else).
        .header('referrer-policy', 'same-origin')
        .header('content-security-policy', CSP)
        .send(assets[name]);

    app.get('/', { schema: { summary: 'the status page', tags: ['web'], hide: true } as object }, async (_req, reply) =>
      serve('index.html', reply),
    );
    app.get(
      '/static/:file',
      { schema: { hide: true, params: Type.Object({ file: Type.String({ maxLength: 64 }) }) } as object },
      async (req, reply) => {
        const file = (req.params as { file: string }).file;
        if (!(file in assets)) return reply.code(404).send({ error: { code: 'DSP_ERR_NOT_FOUND', message: `no file ${file}` } });
        return serve(file as keyof WebAssets, reply);
      },
    );

    app.get(
      '/login',
      {
        schema: {
          summary:
            'log in to the page with the admin token (the link the dispatcher prints at start): sets the lc_admin cookie, redirects to /',
          tags: ['web'],
          querystring: Type.Object({ token: Type.String({ minLength: 1, maxLength: 512 }) }),
        },
      },
      async (req, reply) => {
        // Referrer-Policy: the token is in this URL; do not leak it to the next page.
        reply.header('referrer-policy', 'no-referrer').header('cache-control', 'no-store');
        if (!isAdmin(req.query.token)) {
          noisy.warn(`login:${req.ip}`, { ip: req.ip }, 'web log-in with a wrong token');
          return reply
            .code(401)
            .type('text/html; charset=utf-8')
            .send(
              '<!doctype html><meta charset="utf-8"><title>lilcluster</title><p>Wrong token. Use the log-in link the dispatcher printed when it started, or the token in <code>&lt;data-dir&gt;/admin.token</code>.</p><p><a href="/">Status page (read-only)</a></p>',
            );
        }
        return reply
          .header(
            'set-cookie',
            `${ADMIN_COOKIE}=${encodeURIComponent(req.query.token)}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${ADMIN_COOKIE_MAX_AGE_S}`,
          )
          .redirect('/', 303);
      },
    );

    app.get('/logout', { schema: { summary: 'forget the log-in cookie', tags: ['web'] } as object }, async (_req, reply) =>
      reply.header('set-cookie', `${ADMIN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`).redirect('/', 303),
    );

    app.get(
      '/api/v1/session',
      {
        schema: {
          summary: 'whether this request carries the admin token (bearer or cookie)',
          tags: ['web'],
          response: { 200: Type.Object({ admin: Type.Boolean() }) },
        },
      },
      async (req) => ({ admin: isAdmin(adminTokenOf(req)) }),
    );
  };
}
