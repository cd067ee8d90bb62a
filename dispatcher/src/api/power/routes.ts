/**
 * /api/v1/nodes/{node}/power: read or change a node's power through its BMC (power/). Both
 * need the admin token (reading logs in to the BMC). Answers name the BMC by type and
 * address only; its credentials stay in their files.
 */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { requireAdmin } from '../../http/app.js';
import { ErrorBody, NodeRef, errorResponses } from '../schemas.js';
import { ADMIN_SECURITY, OPERATOR_BODY_LIMIT, type OperatorApi } from '../context.js';
import { PowerRequest, PowerView } from './schemas.js';
import { powerServiceOf, type PowerOp } from '../../power/service.js';
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
