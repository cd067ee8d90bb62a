/**
 * Who leads, as `GET /api/v1/leader` answers on every dispatcher: the leader itself, and
 * each standby (which names the leader it waits behind). Agents, keepalived's check script
 * and operators read it.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { LeaderInfo } from '../store/postgres/leadership.js';

export const LeaderViewSchema = Type.Object({
  role: Type.Union([Type.Literal('leader'), Type.Literal('standby')]),
  /** This dispatcher's URL. */
  self: Type.String(),
  store: Type.Union([Type.Literal('sqlite'), Type.Literal('postgres')]),
  leader: Type.Union([
    Type.Object({
      url: Type.Union([Type.String(), Type.Null()]),
      epoch: Type.Number(),
      since: Type.Union([Type.Number(), Type.Null()]),
      host: Type.Union([Type.String(), Type.Null()]),
      pid: Type.Union([Type.Number(), Type.Null()]),
    }),
    Type.Null(),
  ]),
  /** The leader: whether its changes reach the database now (false while it is away). */
  storeAvailable: Type.Optional(Type.Boolean()),
});
export type LeaderView = Static<typeof LeaderViewSchema>;

export function leaderView(role: LeaderView['role'], self: string, store: LeaderView['store'], leader: LeaderInfo | undefined): LeaderView {
  return { role, self, store, leader: leader ?? null };
}
