/**
 * The leader's side of boot servers per segment (dispatcher/src/boot-server/):
 *
 *   operator (admin token)
 *     GET    /api/v1/boot-servers             every boot server and its state (`dispatcherctl boot-servers`)
 *     POST   /api/v1/boot-servers {name}      registers one; its token is in this answer only
 *     DELETE /api/v1/boot-servers/{name}      removes it; its token stops working
 *   a boot server (its own token, nothing else)
 *     POST /api/v1/boot-server/script         a boot script for a client of its segment (MAC, address)
 *     GET  /api/v1/boot-server/images/{image}/{version}          the version's files and their sha256
 *     GET  /api/v1/boot-server/files/{image}/{version}/{file}    their bytes, to fill its cache
 *     POST /api/v1/boot-server/events         its boot timeline stages (DHCP, TFTP, downloads)
 *     POST /api/v1/boot-server/heartbeat      its state: URL, cache, errors
 *
 * The leader takes a client's MAC and address from a request only on these routes, and only
 * with a registered boot server's token: the boot server checked where the client asks from
 * (its DHCP exchange, as the leader does on its own segment), the leader decides the rest
 * (live session, enrollment, image, token) exactly as for its own clients.
 */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import type { Core } from '../../core.js';
import { requireAdmin, type AppPlugin } from '../../http/app.js';
import { DispatcherError } from '../../errors.js';
import { RateLimitedLog } from '../../log.js';
import { parseMac } from '../../nodes/mac.js';
import { BOOT_STAGES, type BootStage } from '../../boot/timeline.js';
import { startsNewBoot } from '../../boot/record-stage.js';
import { IMAGE_FILES, type BootFileName } from '../../boot/boot-files.js';
import type { BootHttp } from '../../boot/http/boot-routes.js';
import type { ImageFiles } from '../../boot/image-files.js';
import { serveBootFile } from '../../boot/http/serve-bytes.js';
import { plainIPv4 } from '../../boot/client-mac.js';
import { BootServerRegistry } from '../../boot-server/registry.js';
import { FORWARDED_STAGES } from '../../boot-server/forwarder.js';
import { ErrorBody, errorResponses } from '../schemas.js';
import { ADMIN_SECURITY, OPERATOR_BODY_LIMIT } from '../context.js';
import {
  BootEventBatch,
  BootServerAdd,
  BootServerAdded,
  BootServerList,
  BootServerRef,
  BootServerReport,
  HeartbeatAnswer,
  ImageManifest,
  ImageVersionRef,
  ScriptAnswer,
  ScriptRequest,
} from './schemas.js';
import { Type } from '@sinclair/typebox';

/** Largest detail of one forwarded stage (JSON); a larger one is replaced by a note. */
export const MAX_EVENT_DETAIL_BYTES = 2048;
const BOOT_SERVER_SECURITY = [{ bootServerToken: [] }];

declare module 'fastify' {
  interface FastifyRequest {
    /** The registered boot server a request came from (boot-server routes only). */
    bootServer?: string;
  }
}

export interface BootServerRoutes extends AppPlugin {
  registry: BootServerRegistry;
}

export function bootServerRoutes(core: Core, deps: { http: BootHttp; imageFiles: ImageFiles }): BootServerRoutes {
  const registry = new BootServerRegistry(core.db, () => core.config.heartbeatSeconds * 1000, core.now);
  const log = core.log.child({ svc: 'boot-servers' });
  const noisy = new RateLimitedLog(log);

  /** A registered boot server's token, checked before the body is read. */
  const bootServerOnly: onRequestAsyncHookHandler = async (req: FastifyRequest) => {
    const auth = req.headers.authorization;
    const token = auth?.startsWith('Bearer ') ? auth.slice(7).trim() : undefined;
    const name = registry.authenticate(token);
    const ip = plainIPv4(req.ip);
    if (!name) {
      const why = token ? 'not the token of a registered boot server' : 'no boot-server token';
      noisy.warn(
        `refused:${ip}`,
        { ip, url: req.url.split('?')[0]!.slice(0, 200), why },
        'boot-server request refused: forwarded client identity is taken only from a registered boot server',
      );
      throw new DispatcherError('DSP_ERR_BOOT_SERVER_TOKEN', `boot-server route refused: ${why}`, {
        hint: 'dispatcherctl boot-server add NAME makes a boot server and its token',
      });
    }
    req.bootServer = name;
    registry.seen(name, ip);
  };

  const versionOf = (image: string, version: string) => {
    const v = core.images.catalog.version(image, version);
    if (!v)
      throw new DispatcherError('DSP_ERR_IMAGE_NOT_FOUND', `no image version ${image}@${version} on the leader`, {
        hint: 'dispatcherctl images lists the versions served',
      });
    return v;
  };

  async function plugin(fastify: FastifyInstance): Promise<void> {
    const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
    const admin = requireAdmin(core);

    app.get(
      '/api/v1/boot-servers',
      {
        schema: {
          summary: 'every boot server, with its state, address, cache and latest errors',
          tags: ['boot-servers'],
          response: { 200: BootServerList },
        },
      },
      async () => ({ bootServers: registry.list() }),
    );

    app.post(
      '/api/v1/boot-servers',
      {
        bodyLimit: OPERATOR_BODY_LIMIT,
        onRequest: admin,
        schema: {
          summary: 'register a boot server (its token is shown once)',
          tags: ['boot-servers'],
          security: ADMIN_SECURITY,
          body: BootServerAdd,
          response: { 200: BootServerAdded, ...errorResponses },
        },
      },
      async (req) => {
        const r = registry.add(req.body.name);
        if ('error' in r)
          throw new DispatcherError(
            r.error === 'exists' ? 'DSP_ERR_NODE_STATE' : 'DSP_ERR_BAD_REQUEST',
            r.error === 'exists'
              ? `a boot server named ${req.body.name} exists`
              : r.error === 'full'
                ? 'too many boot servers'
                : `"${req.body.name}" is not a boot server name`,
            { hint: r.error === 'exists' ? 'dispatcherctl boot-server remove NAME first to make a new token' : 'a-z, 0-9 and -' },
          );
        core.events.append({ kind: 'boot-server', message: `boot server ${r.name} registered`, data: { name: r.name } });
        return r;
      },
    );

    app.delete(
      '/api/v1/boot-servers/:name',
      {
        onRequest: admin,
        schema: {
          summary: 'remove a boot server: its token stops working',
          tags: ['boot-servers'],
          security: ADMIN_SECURITY,
          params: BootServerRef,
          response: { 200: BootServerRef, ...errorResponses },
        },
      },
      async (req) => {
        if (!registry.remove(req.params.name))
          throw new DispatcherError('DSP_ERR_NOT_FOUND', `no boot server ${req.params.name}`, { hint: 'dispatcherctl boot-servers' });
        core.events.append({ kind: 'boot-server', message: `boot server ${req.params.name} removed`, data: { name: req.params.name } });
        return { name: req.params.name };
      },
    );

    const own = { ownAuth: 'boot-server token (registered with dispatcherctl boot-server add)' };

    app.post(
      '/api/v1/boot-server/script',
      {
        config: own,
        bodyLimit: 4096,
        onRequest: bootServerOnly,
        schema: {
          summary: 'a boot script for a client of a boot server’s segment',
          tags: ['boot-servers'],
          security: BOOT_SERVER_SECURITY,
          body: ScriptRequest,
          response: { 200: ScriptAnswer, 401: ErrorBody, 400: ErrorBody },
        },
      },
      async (req) => {
        const name = req.bootServer!;
        const mac = parseMac(req.body.mac);
        if (!mac) throw new DispatcherError('DSP_ERR_BAD_REQUEST', `"${req.body.mac}" is not a MAC address`);
        const r = await deps.http.issueScript(mac, req.body.ip, { base: req.body.bootUrl, agentUrl: req.body.leaderUrl, via: name });
        registry.countScript(name, plainIPv4(req.ip));
        return { status: r.status, script: r.text, image: r.version ? { image: r.version.image, version: r.version.version } : null };
      },
    );

    app.get(
      '/api/v1/boot-server/images/:image/:version',
      {
        onRequest: bootServerOnly,
        schema: {
          summary: 'an image version’s files and their sha256, as the leader serves them',
          tags: ['boot-servers'],
          security: BOOT_SERVER_SECURITY,
          params: ImageVersionRef,
          response: { 200: ImageManifest, 401: ErrorBody, 404: ErrorBody },
        },
      },
      async (req) => {
        const v = versionOf(req.params.image, req.params.version);
        const served = deps.imageFiles.of(v);
        const files: ImageManifest['files'] = [];
        for (const name of IMAGE_FILES) {
          const f = await served.get(name);
          if (f) files.push({ name, sha256: f.sha256, size: f.size });
        }
        return { image: v.image, version: v.version, files };
      },
    );

    app.get(
      '/api/v1/boot-server/files/:image/:version/:file',
      {
        onRequest: bootServerOnly,
        schema: {
          summary: 'an image version’s file, to fill a boot server’s cache',
          tags: ['boot-servers'],
          security: BOOT_SERVER_SECURITY,
          params: Type.Composite([ImageVersionRef, Type.Object({ file: Type.Union(IMAGE_FILES.map((f) => Type.Literal(f))) })]),
          description: 'The bytes (application/octet-stream), with Range and ETag (the quoted sha256) as for nodes.',
          response: { 401: ErrorBody, 404: ErrorBody },
        },
      },
      async (req, reply) => {
        const v = versionOf(req.params.image, req.params.version);
        const f = await deps.imageFiles.of(v).get(req.params.file as BootFileName);
        if (!f)
          throw new DispatcherError('DSP_ERR_NOT_FOUND', `${req.params.file} of ${v.image}@${v.version} cannot be read on the leader`);
        reply.hijack();
        const r = await serveBootFile(req.raw, reply.raw, f);
        log.info(
          { bootServer: req.bootServer, file: `${v.image}@${v.version}/${f.name}`, bytes: r.bodyBytes, completed: r.completed },
          'file sent to a boot server',
        );
      },
    );

    app.post(
      '/api/v1/boot-server/events',
      {
        config: own,
        bodyLimit: 2 * 1024 * 1024,
        onRequest: bootServerOnly,
        schema: {
          summary: 'boot timeline stages seen on a boot server’s segment',
          tags: ['boot-servers'],
          security: BOOT_SERVER_SECURITY,
          body: BootEventBatch,
          response: { 200: Type.Object({ recorded: Type.Integer(), refused: Type.Integer() }), 401: ErrorBody, 400: ErrorBody },
        },
      },
      async (req) => {
        const name = req.bootServer!;
        let recorded = 0;
        let refused = 0;
        for (const e of req.body.events) {
          const mac = parseMac(e.mac);
          // Only the stages a boot server's own services record; the rest (scripts, hellos) are the leader's.
          if (!mac || !FORWARDED_STAGES.has(e.stage) || !(BOOT_STAGES as readonly string[]).includes(e.stage)) {
            refused++;
            continue;
          }
          const stage = e.stage as BootStage;
          const json = e.detail ? JSON.stringify(e.detail) : '';
          const detail = json.length > MAX_EVENT_DETAIL_BYTES ? { note: 'detail too large' } : (e.detail ?? {});
          const newBoot = e.newBoot || startsNewBoot(stage, core.timeline.latest(mac)?.stage);
          if (stage === 'dhcp.discover' && newBoot) core.nodes.recordBoot(mac, { fromDhcp: true });
          core.timeline.record(mac, stage, { ...detail, bootServer: name }, { newBoot });
          recorded++;
        }
        if (refused)
          noisy.warn(`events:${name}`, { bootServer: name, refused }, 'forwarded boot stages refused: not stages a boot server records');
        registry.countEvents(name, plainIPv4(req.ip), recorded);
        return { recorded, refused };
      },
    );

    app.post(
      '/api/v1/boot-server/heartbeat',
      {
        config: own,
        bodyLimit: 64 * 1024,
        onRequest: bootServerOnly,
        schema: {
          summary: 'a boot server’s state: URL, cache, latest errors',
          tags: ['boot-servers'],
          security: BOOT_SERVER_SECURITY,
          body: BootServerReport,
          response: { 200: HeartbeatAnswer, 401: ErrorBody, 400: ErrorBody },
        },
      },
      async (req) => {
        registry.heartbeat(req.bootServer!, plainIPv4(req.ip), req.body);
        return { heartbeatSeconds: core.config.heartbeatSeconds };
      },
    );
  }

  return { name: 'boot-servers', plugin, registry };
}
