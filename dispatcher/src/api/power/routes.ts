/**
 * /api/v1/nodes/{node}/power: read or change a node's power through its BMC (power/). Both
 * need the admin token (reading logs in to the BMC). Answers name the BMC by type and
 * address only; its credentials stay in their files.
 * /api/v1/power/policy: what the queue's power policy would do now (power/queue-power.ts).
 */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { requireAdmin } from '../../http/app.js';
import { ErrorBody, NodeRef, errorResponses } from '../schemas.js';
import { ADMIN_SECURITY, OPERATOR_BODY_LIMIT, type OperatorApi } from '../context.js';
import { PowerPolicyView, PowerRequest, PowerView } from './schemas.js';
import { powerServiceOf, type PowerOp } from '../../power/service.js';
import { queuePowerOf } from '../../power/queue-power.js';
import type { NodeRecord } from '../../nodes/registry.js';

export function powerRoutes(api: OperatorApi): FastifyPluginAsync {
  return async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { core, actions } = api;
    const admin = requireAdmin(core);
    const power = powerServiceOf(core);
    const bmcErrors = { ...errorResponses, 502: ErrorBody, 503: ErrorBody, 504: ErrorBody };

    app.get(
      '/api/v1/nodes/:node/power',
      {
        onRequest: admin,
        schema: {
          summary: "ask the node's BMC (cluster file: bmc, or a bmcs group) whether the node is powered on",
          tags: ['power'],
          security: ADMIN_SECURITY,
          params: NodeRef,
          response: { 200: PowerView, ...bmcErrors },
        },
      },
      async (req): Promise<PowerView> => power.run(actions.resolve(req.params.node), 'status'),
    );

    app.post(
      '/api/v1/nodes/:node/power',
      {
        bodyLimit: OPERATOR_BODY_LIMIT,
        onRequest: admin,
        schema: {
          summary: "power the node on, off, cycle or reset it through its BMC, whatever its agent's state",
          description:
            'Each call is a `node.power` event with its outcome. A BMC that failed is not called again for a while (back-off, doubling up to 5 min): such a call is refused with DSP_ERR_BMC_BACKOFF.',
          tags: ['power'],
          security: ADMIN_SECURITY,
          params: NodeRef,
          body: PowerRequest,
          response: { 200: PowerView, ...bmcErrors },
        },
      },
      async (req): Promise<PowerView> => {
        const n = actions.resolve(req.params.node);
        const r = await power.run(n, req.body.action);
        afterPower(api, n, req.body.action);
        return r;
      },
    );

    app.get(
      '/api/v1/power/policy',
      {
        schema: {
          summary: "what the queue's power policy (cluster file powerPolicy) would do now, node by node, with its reasons",
          description: 'A dry run: nothing is powered on or off. Without a powerPolicy, `enabled` is false and the lists are empty.',
          tags: ['power'],
          response: { 200: PowerPolicyView },
        },
      },
      async (): Promise<PowerPolicyView> => {
        const q = queuePowerOf(core);
        const groups = (core.cluster.powerPolicy?.groups ?? []).map((g) => ({
          name: g.name,
          labels: g.labels,
          idleOffSeconds: g.idleOffSeconds,
          minOn: g.minOn,
          bootTimeoutSeconds: g.bootTimeoutSeconds,
        }));
        if (!q) return { enabled: false, at: core.now(), queued: 0, groups, decisions: [] };
        const plan = q.plan();
        return {
          enabled: true,
          at: plan.at,
          queued: plan.queued,
          groups,
          decisions: plan.decisions.map((d) => ({
            node: d.node,
            group: d.group,
            action: d.kind,
            reason: d.reason,
            ...(d.kind === 'on' || d.kind === 'off' ? { via: d.via } : {}),
            ...(d.kind === 'on' ? { attempt: d.attempt } : {}),
          })),
        };
      },
    );
  };
}

/**
 * The node's state after a power action its BMC carried out, as after the agent's: off, or
 * rebooting (until it boots again). Its agent's connection then closes without the node
 * counting as lost.
 */
export function afterPower(api: OperatorApi, n: NodeRecord, op: PowerOp): void {
  if (op === 'off') {
    api.control().setDraining(n.mac, false);
    api.core.nodes.setState(n.mac, 'off', 'powered off through its BMC', { by: 'operator' });
  } else if (op === 'cycle' || op === 'reset')
    api.core.nodes.setState(n.mac, 'rebooting', `power ${op} through its BMC`, { by: 'operator' });
}
