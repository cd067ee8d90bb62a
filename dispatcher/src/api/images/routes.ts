/**
 * /api/v1/images: list the images served (versions, releases, nodes, rollouts); roll one out
 * or back (admin). The rollout itself runs in the dispatcher (images/rollout.ts).
 */
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { requireAdmin } from '../../http/app.js';
import { errorResponses } from '../schemas.js';
import { ADMIN_SECURITY, OPERATOR_BODY_LIMIT, type OperatorApi } from '../context.js';
import { ImageRef, ImageView, RolloutRequest, RolloutView } from './schemas.js';
import { OptionalBody } from '../validation.js';
import type { CatalogImage } from '../../images/catalog.js';

export function imageRoutes(api: OperatorApi): FastifyPluginAsync {
  return async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { core, rollouts } = api;
    const admin = requireAdmin(core);

    const view = (img: CatalogImage): ImageView => {
      const { assignments, releases } = core.images;
      const release = releases.release(img.name);
      const newest = img.versions.at(-1)!;
      return {
        name: img.name,
        dir: img.dir,
        released: release?.version ?? null,
        previous: release?.previous ?? null,
        newest: newest.version,
        versions: img.versions.map((v) => ({
          version: v.version,
          bytes: v.bytes,
          source: v.source,
          health: v.health,
          agentVersion: v.agentVersion,
          hasRoot: v.hasRoot,
          keyStatus: v.keyStatus,
          released: release?.version === v.version,
          newest: v === newest,
        })),
        nodes: core.nodes
          .list()
          .filter((n) => assignments.imageOf(n) === img.name || n.imageVersion?.startsWith(`${img.name}@`))
          .map((n) => {
            const s = assignments.status(n);
            return { name: n.name, state: n.state, running: n.imageVersion, next: s.next, stale: s.stale };
          }),
        rollout: rollouts.get(img.name) ?? null,
      };
    };

    app.get(
      '/api/v1/images',
      {
        schema: {
          summary: 'the images served: versions (newest last), the released one, the nodes on each, a rollout under way',
          tags: ['images'],
          response: { 200: Type.Object({ images: Type.Array(ImageView) }) },
        },
      },
      async () => ({ images: core.images.catalog.list().map(view) }),
    );

    // Rollout and rollback take the same body (a rollback has no canaries: `canary` is unused there).
    const summaries = {
      rollout: "move an image's nodes onto its newest build: canaries first (health-checked), then the rest; a failed canary goes back",
      rollback: 'release the version released before, and reboot the nodes of the image onto it',
    } as const;
    for (const kind of ['rollout', 'rollback'] as const) {
      app.post(
        `/api/v1/images/:image/${kind}`,
        {
          bodyLimit: OPERATOR_BODY_LIMIT,
          onRequest: admin,
          schema: {
            summary: summaries[kind],
            tags: ['images'],
            security: ADMIN_SECURITY,
            params: ImageRef,
            body: OptionalBody(RolloutRequest),
            response: { 202: RolloutView, ...errorResponses },
          },
        },
        async (req, reply) => {
          const b = req.body ?? {};
          const request = {
            ...(b.canary ? { canary: b.canary } : {}),
            ...(b.batch ? { batch: b.batch } : {}),
            ...(b.firmware ? { firmware: true } : {}),
            ...(b.backTimeoutS ? { backTimeoutMs: b.backTimeoutS * 1000 } : {}),
          };
          return reply.code(202).send(rollouts[kind](req.params.image, request));
        },
      );
    }
  };
}
