/**
 * /api/v1/operations: long-running operations the dispatcher runs on its own side (rolling
 * reboot); started by POST, watched by GET (or through the event stream), cancelled by POST .../cancel.
 */
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { requireAdmin } from '../../http/app.js';
import { DispatcherError } from '../../errors.js';
import { ErrorBody, OperationView, RollingRebootRequest, errorResponses } from '../schemas.js';
import { ADMIN_SECURITY, OPERATOR_BODY_LIMIT, type OperatorApi } from '../context.js';

const OperationId = Type.Object({ id: Type.Integer({ minimum: 1 }) });

export function operationRoutes(api: OperatorApi): FastifyPluginAsync {
  return async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const admin = requireAdmin(api.core);
    const { operations } = api;

    app.post(
      '/api/v1/operations/rolling-reboot',
      {
        bodyLimit: OPERATOR_BODY_LIMIT,
        onRequest: admin,
        schema: {
          summary: 'start a rolling reboot: drain, wait for running tasks, reboot, wait until back, a batch of nodes at a time',
          tags: ['operations'],
          security: ADMIN_SECURITY,
          body: RollingRebootRequest,
          response: { 202: OperationView, ...errorResponses },
        },
      },
      async (req, reply) => {
        const b = req.body;
        const op = operations.startRollingReboot({
          ...(b.nodes ? { nodes: b.nodes } : {}),
          ...(b.batch ? { batch: b.batch } : {}),
          ...(b.drainTimeoutS ? { drainTimeoutMs: b.drainTimeoutS * 1000 } : {}),
          ...(b.backTimeoutS ? { backTimeoutMs: b.backTimeoutS * 1000 } : {}),
          ...(b.firmware ? { firmware: true } : {}),
        });
        return reply.code(202).send(op);
      },
    );

    app.get(
      '/api/v1/operations',
      {
        schema: {
          summary: 'running and recent operations',
          tags: ['operations'],
          response: { 200: Type.Object({ operations: Type.Array(OperationView) }) },
        },
      },
      async () => ({ operations: operations.list() }),
    );

    app.get(
      '/api/v1/operations/:id',
      {
        schema: {
          summary: 'one operation and the phase of each of its nodes',
          tags: ['operations'],
          params: OperationId,
          response: { 200: OperationView, 400: ErrorBody, 404: ErrorBody },
        },
      },
      async (req) => {
        const op = operations.get(req.params.id);
        if (!op)
          throw new DispatcherError('DSP_ERR_NOT_FOUND', `no operation #${req.params.id}`, { hint: 'list them: GET /api/v1/operations' });
        return op;
      },
    );

    app.post(
      '/api/v1/operations/:id/cancel',
      {
        bodyLimit: OPERATOR_BODY_LIMIT,
        onRequest: admin,
        schema: {
          summary: 'stop an operation: no new node starts; nodes draining are released; nodes rebooting are still waited for',
          tags: ['operations'],
          security: ADMIN_SECURITY,
          params: OperationId,
          response: { 200: OperationView, ...errorResponses },
        },
      },
      async (req) => operations.cancel(req.params.id),
    );
  };
}
