/**
 * The boot timeline's API schemas (GET /api/v1/boots): how far each recent boot of a machine
 * got, stage by stage. Imported by the route (routes.ts) and by dispatcherctl's boot-log.
 */
import { Type, type Static } from '@sinclair/typebox';

/** Boots returned when `boots` is not given, and the most that may be asked for. */
export const DEFAULT_BOOTS = 5;
export const MAX_BOOTS = 50;

export const BootsQuery = Type.Object(
  {
    mac: Type.Optional(Type.String({ maxLength: 64, description: 'MAC address, any usual spelling' })),
    node: Type.Optional(Type.String({ maxLength: 128, description: 'node name (or MAC, or system UUID)' })),
    boots: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_BOOTS, default: DEFAULT_BOOTS })),
  },
  { additionalProperties: false },
);

export const BootStageView = Type.Object({
  stage: Type.String(),
  /** Unix time, ms. */
  ts: Type.Integer(),
  at: Type.String({ description: 'ISO 8601' }),
  /** ms since the first stage of this boot. */
  sinceStartMs: Type.Integer(),
  detail: Type.Union([Type.Object({}, { additionalProperties: true }), Type.Null()]),
});

export const BootView = Type.Object({
  boot: Type.Integer({ description: 'boot number of this MAC: 1, 2, ...' }),
  startedAt: Type.String(),
  lastStage: Type.String(),
  /** ms from the first to the last stage recorded. */
  durationMs: Type.Integer(),
  /** The agent said hello: the machine booted all the way. */
  reachedAgent: Type.Boolean(),
  failures: Type.Integer({ description: 'tftp.failed and http.failed stages' }),
  stages: Type.Array(BootStageView),
});

export const BootsReply = Type.Object({
  mac: Type.String(),
  node: Type.Union([Type.String(), Type.Null()]),
  boots: Type.Array(BootView),
});
export type BootsReply = Static<typeof BootsReply>;
export type BootView = Static<typeof BootView>;
