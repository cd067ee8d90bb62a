/**
 * OpenAPI 3.1 document of the dispatcher's HTTP API at GET /api/v1/openapi.json, generated
 * from the route schemas (TypeBox produces JSON Schema, which OpenAPI 3.1 takes as is).
 *
 * The collector is an `onRoute` hook on the root instance, so it must be registered before
 * every other plugin (it is the first of the operator surface's plugins in server.ts). Route
 * schemas may carry `summary`, `description`, `tags` and `security: [{ adminToken: [] }]`;
 * fastify ignores those keys, this document uses them.
 */
import type { FastifyInstance, FastifyPluginAsync, RouteOptions } from 'fastify';
import { VERSION } from '../version.js';

export const OPENAPI_PATH = '/api/v1/openapi.json';

interface RouteSchema {
  summary?: string;
  description?: string;
  tags?: string[];
  security?: Record<string, string[]>[];
  hide?: boolean;
  params?: JsonSchema;
  querystring?: JsonSchema;
  body?: JsonSchema;
  response?: Record<string, JsonSchema>;
}
type JsonSchema = Record<string, unknown>;

type Operation = Record<string, unknown>;

/** Turns the collected routes into an OpenAPI document. */
export function buildOpenApi(routes: readonly RouteOptions[]): Record<string, unknown> {
  const paths: Record<string, Record<string, Operation>> = {};
  for (const r of routes) {
    const methods = (Array.isArray(r.method) ? r.method : [r.method])
      .map((m) => m.toLowerCase())
      .filter((m) => m !== 'head' && m !== 'options');
    const schema = (r.schema ?? {}) as RouteSchema;
    if (schema.hide || r.url === OPENAPI_PATH || !methods.length) continue;
    const path = toOpenApiPath(r.url);
    const op: Operation = {};
    if (schema.summary) op.summary = schema.summary;
    if (schema.description) op.description = schema.description;
    if (schema.tags) op.tags = schema.tags;
    if (schema.security) op.security = schema.security;
    const parameters = [...paramsOf(schema.params, 'path', r.url), ...paramsOf(schema.querystring, 'query', r.url)];
    if (parameters.length) op.parameters = parameters;
    if (schema.body) op.requestBody = { required: true, content: { 'application/json': { schema: clean(schema.body) } } };
    op.responses = responsesOf(schema.response);
    paths[path] ??= {};
    for (const m of methods) paths[path]![m] = op;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'lilcluster dispatcher API',
      version: VERSION,
      description:
        'Versioned JSON API of the dispatcher (/api/v1). Calls that change anything need the admin token: `Authorization: Bearer <token>` ' +
        '(the token is <data-dir>/admin.token) or the `lc_admin` cookie set by the log-in link. Errors are `{ "error": { "code", "message", "hint" } }`.',
    },
    components: {
      securitySchemes: {
        adminToken: { type: 'http', scheme: 'bearer', description: 'the admin token from <data-dir>/admin.token' },
        adminCookie: { type: 'apiKey', in: 'cookie', name: 'lc_admin', description: 'set by GET /login?token=...' },
        bootServerToken: { type: 'http', scheme: 'bearer', description: 'a boot server’s token (dispatcherctl boot-server add NAME)' },
      },
    },
    paths: Object.fromEntries(Object.entries(paths).sort(([a], [b]) => a.localeCompare(b))),
  };
}

/** `/api/v1/nodes/:node/reboot` → `/api/v1/nodes/{node}/reboot`; `*` → `{path}`. */
export function toOpenApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}').replace(/\*$/, '{path}');
}

function paramsOf(schema: JsonSchema | undefined, where: 'path' | 'query', url: string): Operation[] {
  if (where === 'path' && !schema) {
    // Path parameters without a schema still belong in the document.
    return [...url.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
  }
  const props = (schema?.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((schema?.required as string[] | undefined) ?? []);
  return Object.entries(props).map(([name, s]) => ({
    name,
    in: where,
    required: where === 'path' || required.has(name),
    ...(typeof s.description === 'string' ? { description: s.description } : {}),
    schema: clean(s),
  }));
}

function responsesOf(response: Record<string, JsonSchema> | undefined): Record<string, unknown> {
  if (!response) return { 200: { description: 'OK' } };
  const out: Record<string, unknown> = {};
  for (const [code, s] of Object.entries(response)) {
    const contentType = typeof s['x-content-type'] === 'string' ? (s['x-content-type'] as string) : 'application/json';
    out[code] = {
      description: typeof s.description === 'string' ? s.description : describeStatus(code),
      content: { [contentType]: { schema: clean(s) } },
    };
  }
  return out;
}

function describeStatus(code: string): string {
  const known: Record<string, string> = {
    '200': 'OK',
    '201': 'created',
    '202': 'accepted, runs on',
    '204': 'no content',
    '400': 'malformed request',
    '401': 'missing or wrong admin token',
    '404': 'not found',
    '409': 'the node or object is not in a state that allows this',
    '413': 'request body too large',
    '504': 'the node did not answer in time',
  };
  return known[code] ?? 'answer';
}

/** A JSON copy of a TypeBox schema (its symbol keys dropped). */
function clean(s: JsonSchema): JsonSchema {
  return JSON.parse(JSON.stringify(s)) as JsonSchema;
}

/**
 * The collector: a plugin that escapes encapsulation (like fastify-plugin) so its onRoute
 * hook sees the routes of every plugin registered after it.
 */
export function openApiPlugin(): FastifyPluginAsync {
  const routes: RouteOptions[] = [];
  let doc: Record<string, unknown> | undefined;
  const plugin: FastifyPluginAsync = async (app: FastifyInstance) => {
    app.addHook('onRoute', (r) => {
      routes.push(r);
      doc = undefined;
    });
    app.get(OPENAPI_PATH, { schema: { hide: true } as object }, async () => (doc ??= buildOpenApi(routes)));
  };
  (plugin as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;
  return plugin;
}
