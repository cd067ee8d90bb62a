/** /api/v1/images: the images served, their versions and releases, their nodes, rollouts. */
import { Type, type Static } from '@sinclair/typebox';
import { IMAGE_NAME_PATTERN } from '../jobs/schemas.js';

import { Nullable } from '../schemas.js';

export const ImageRef = Type.Object({ image: Type.String({ pattern: IMAGE_NAME_PATTERN, maxLength: 64 }) });

export const RolloutView = Type.Object({
  image: Type.String(),
  kind: Type.Union([Type.Literal('rollout'), Type.Literal('rollback')]),
  from: Type.String({ description: '`name@version`' }),
  to: Type.String(),
  state: Type.Union([
    Type.Literal('canary'),
    Type.Literal('rolling'),
    Type.Literal('done'),
    Type.Literal('failed'),
    Type.Literal('reverting'),
    Type.Literal('reverted'),
  ]),
  message: Type.String(),
  startedAt: Type.Number(),
  finishedAt: Type.Union([Type.Number(), Type.Null()]),
  operations: Type.Array(Type.Integer(), { description: 'the rolling reboots it ran (GET /api/v1/operations/{id})' }),
});
export type RolloutView = Static<typeof RolloutView>;

export const ImageVersionView = Type.Object({
  version: Type.String({ description: 'first 12 hex of the sha256 of its inputs' }),
  bytes: Type.Number({ description: 'downloaded per boot (kernel, initrd, root)' }),
  source: Type.String({ description: '`docker://…`, `packages:…`, `base` (the small default image) or `files`' }),
  health: Nullable(Type.String({ description: 'the health check baked in at build time' })),
  agentVersion: Nullable(Type.String()),
  hasRoot: Type.Boolean(),
  keyStatus: Type.Union([Type.Literal('ours'), Type.Literal('none'), Type.Literal('other')]),
  released: Type.Boolean({ description: 'the version nodes boot' }),
  newest: Type.Boolean({ description: 'the newest build' }),
});

export const ImageView = Type.Object({
  name: Type.String(),
  dir: Type.String(),
  released: Nullable(Type.String({ description: 'the version nodes boot (`rollout` moves it)' })),
  previous: Nullable(Type.String({ description: 'the version released before (`rollback` returns to it)' })),
  newest: Type.String(),
  versions: Type.Array(ImageVersionView, { description: 'oldest first' }),
  nodes: Type.Array(
    Type.Object({
      name: Type.String(),
      state: Type.String(),
      running: Nullable(Type.String({ description: '`name@version` it booted' })),
      next: Nullable(Type.String({ description: '`name@version` its next boot gets' })),
      stale: Type.Boolean({ description: 'it runs an older version than the newest build' }),
    }),
  ),
  rollout: Nullable(RolloutView),
});
export type ImageView = Static<typeof ImageView>;

export const RolloutRequest = Type.Object(
  {
    canary: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'nodes moved and checked first (default 1)' })),
    batch: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'nodes rebooted at once after the canaries (default 1)' })),
    firmware: Type.Optional(Type.Boolean({ description: 'reboot through the firmware, not kexec' })),
    backTimeoutS: Type.Optional(Type.Integer({ minimum: 10, maximum: 86_400 })),
  },
  { additionalProperties: false },
);
