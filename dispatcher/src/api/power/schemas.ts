/** /api/v1/nodes/{node}/power: a node's power through its BMC. */
import { Type, type Static } from '@sinclair/typebox';
import { Nullable } from '../schemas.js';

export const PowerRequest = Type.Object(
  {
    action: Type.Union([Type.Literal('on'), Type.Literal('off'), Type.Literal('cycle'), Type.Literal('reset')], {
      description: 'on, off (hard), cycle (off then on), reset (hard reset without power loss)',
    }),
  },
  { additionalProperties: false },
);
export type PowerRequest = Static<typeof PowerRequest>;

export const PowerView = Type.Object({
  node: Type.String(),
  bmc: Type.String({ description: 'type and address of the BMC (never its credentials)' }),
  action: Type.Union([Type.Literal('status'), Type.Literal('on'), Type.Literal('off'), Type.Literal('cycle'), Type.Literal('reset')]),
  /** Read (status) or asked for (on, off); null after cycle and reset. */
  power: Nullable(Type.Union([Type.Literal('on'), Type.Literal('off'), Type.Literal('unknown')])),
  message: Type.String(),
});
export type PowerView = Static<typeof PowerView>;

const PowerAction = Type.Union([Type.Literal('on'), Type.Literal('off'), Type.Literal('unreachable'), Type.Literal('hold')]);

/** GET /api/v1/power/policy: what the queue's power policy would do now (a dry run: nothing is done). */
export const PowerPolicyView = Type.Object({
  enabled: Type.Boolean({ description: 'the cluster file has a powerPolicy' }),
  at: Type.Number({ description: 'unix ms' }),
  queued: Type.Integer({ description: 'tasks waiting for a node' }),
  groups: Type.Array(
    Type.Object({
      name: Type.String(),
      labels: Nullable(Type.Array(Type.String(), { description: 'null: every node in no listed group' })),
      idleOffSeconds: Type.Number(),
      minOn: Type.Integer(),
      bootTimeoutSeconds: Type.Number(),
    }),
  ),
  decisions: Type.Array(
    Type.Object({
      node: Type.String(),
      group: Nullable(Type.String()),
      action: PowerAction,
      reason: Type.String(),
      via: Type.Optional(Type.Union([Type.Literal('bmc'), Type.Literal('wol'), Type.Literal('agent')])),
      attempt: Type.Optional(Type.Integer()),
    }),
  ),
});
export type PowerPolicyView = Static<typeof PowerPolicyView>;
