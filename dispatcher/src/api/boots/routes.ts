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
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Core } from '../../core.js';
import type { AppPlugin } from '../../http/app.js';
import { DispatcherError } from '../../errors.js';
import { parseMac, type Mac } from '../../nodes/mac.js';
import type { BootStageRecord } from '../../boot/timeline.js';
import { BootsQuery, BootsReply, DEFAULT_BOOTS } from './schemas.js';

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
