/**
 * The boot timeline API: how far each recent boot of a machine got, stage by stage.
 *
 *   GET /api/v1/boots?mac=52:54:00:12:34:56[&boots=5]
 *   GET /api/v1/boots?node=node3
 *
 * Stages come from core.timeline (DHCP, TFTP, script, kernel, initrd, agent hello), grouped
 * by boot, oldest boot first, each stage with its time since the boot's first stage.
 */
import type { FastifyInstance } from 'fastify';
import { Type, type Static, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Core } from '../../core.js';
import type { AppPlugin } from '../../http/app.js';
import { DispatcherError } from '../../errors.js';
import { parseMac, type Mac } from '../../nodes/mac.js';
import type { BootStageRecord } from '../timeline.js';

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

/** Pure: timeline records (newest boot last) → the API's view. */
export function groupBoots(records: readonly BootStageRecord[]): BootsReply['boots'] {
  const byBoot = new Map<number, BootStageRecord[]>();
  for (const r of records) {
    const list = byBoot.get(r.boot) ?? [];
    list.push(r);
    byBoot.set(r.boot, list);
  }
  return [...byBoot.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([boot, stages]) => {
      const t0 = stages[0]!.ts;
      const last = stages[stages.length - 1]!;
      return {
        boot,
        startedAt: new Date(t0).toISOString(),
        lastStage: last.stage,
        durationMs: last.ts - t0,
        reachedAgent: stages.some((s) => s.stage === 'agent.hello'),
        failures: stages.filter((s) => s.stage === 'tftp.failed' || s.stage === 'http.failed').length,
        stages: stages.map((s) => ({
          stage: s.stage,
          ts: s.ts,
          at: new Date(s.ts).toISOString(),
          sinceStartMs: s.ts - t0,
          detail: s.detail,
        })),
      };
    });
}

export function bootsApiPlugin(core: Core): AppPlugin {
  return {
    name: 'boots-api',
    async plugin(fastify: FastifyInstance) {
      const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
      app.get('/api/v1/boots', { schema: { querystring: BootsQuery, response: { 200: BootsReply } } }, async (req) => {
        const { mac: macText, node: nodeRef, boots } = req.query;
        let mac: Mac | undefined;
        if (macText !== undefined) {
          mac = parseMac(macText);
          if (!mac)
            throw new DispatcherError('DSP_ERR_BAD_REQUEST', `"${macText}" is not a MAC address`, { hint: 'e.g. ?mac=52:54:00:12:34:56' });
        } else if (nodeRef !== undefined) {
          const n = core.nodes.find(nodeRef);
          if (!n)
            throw new DispatcherError('DSP_ERR_NODE_NOT_FOUND', `no node ${nodeRef}`, { hint: 'list them with `dispatcherctl nodes`' });
          mac = n.mac;
        } else {
          throw new DispatcherError('DSP_ERR_BAD_REQUEST', 'give ?mac=<mac> or ?node=<name>');
        }
        const node = core.nodes.byMac(mac);
        return { mac, node: node?.name ?? null, boots: groupBoots(core.timeline.list(mac, boots ?? DEFAULT_BOOTS)) };
      });
    },
  };
}
