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
