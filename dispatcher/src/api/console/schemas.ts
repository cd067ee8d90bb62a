/** The console API's answers (api/console/routes.ts), shared with `dispatcherctl console`. */
import { Type, type Static } from '@sinclair/typebox';

export const ConsoleLineView = Type.Object({
  id: Type.Integer({ description: 'increasing, never reused: pass as `after` to resume' }),
  ts: Type.Integer({ description: 'when the dispatcher received it, ms since the epoch' }),
  source: Type.Union([Type.Literal('kernel'), Type.Literal('serial')], {
    description: 'kernel: netconsole; serial: the serial console by Serial-over-LAN',
  }),
  text: Type.String(),
});
export type ConsoleLineView = Static<typeof ConsoleLineView>;

export const ConsoleReply = Type.Object({
  node: Type.String(),
  mac: Type.String(),
  lines: Type.Array(ConsoleLineView),
  /** What the node's lines take in the store now, and the caps past which the oldest go. */
  stored: Type.Object({ lines: Type.Integer(), bytes: Type.Integer(), maxLines: Type.Integer(), maxBytes: Type.Integer() }),
});
export type ConsoleReply = Static<typeof ConsoleReply>;
