/**
 * /api/v1/enrollment-tokens: tokens that let an agent on a host that did not PXE-boot join
 * (trust/enroll-tokens.ts). Every route needs the admin token; a created token is shown once.
 */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { requireAdmin } from '../../http/app.js';
import { DispatcherError } from '../../errors.js';
import { parseMac } from '../../nodes/mac.js';
import { ErrorBody, errorResponses } from '../schemas.js';
import { ADMIN_SECURITY, OPERATOR_BODY_LIMIT, type OperatorApi } from '../context.js';
import { EnrollTokenCreate, EnrollTokenCreated, EnrollTokenList, EnrollTokenRef } from './schemas.js';

export function enrollmentRoutes(api: OperatorApi): FastifyPluginAsync {
  return async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { core } = api;
    const admin = requireAdmin(core);

    app.post(
      '/api/v1/enrollment-tokens',
      {
        bodyLimit: OPERATOR_BODY_LIMIT,
        onRequest: admin,
        schema: {
          summary: 'create an enrollment token for a host that did not PXE-boot (shown once)',
          description:
            'It admits one MAC (given, or the first that uses it) until it expires; never the MAC of a node that booted by PXE or is connected.',
          tags: ['enrollment'],
          security: ADMIN_SECURITY,
          body: EnrollTokenCreate,
          response: { 200: EnrollTokenCreated, ...errorResponses },
        },
      },
      async (req) => {
        const mac = req.body.mac === undefined ? null : parseMac(req.body.mac);
        if (mac === undefined) throw new DispatcherError('DSP_ERR_BAD_REQUEST', `"${req.body.mac}" is not a MAC address`);
        if (mac && core.nodes.pxeBooted(mac))
          throw new DispatcherError(
            'DSP_ERR_NODE_STATE',
            `${mac} booted by PXE: its agent proves itself with its boot token, not an enrollment token`,
            { hint: 'forget the node first if the MAC now belongs to a host that does not PXE-boot' },
          );
        let created;
        try {
          created = core.enrollTokens.create({ mac, ...(req.body.expiresSeconds ? { ttlMs: req.body.expiresSeconds * 1000 } : {}) });
        } catch (err) {
          throw new DispatcherError('DSP_ERR_NODE_STATE', (err as Error).message, {
            cause: err,
            hint: 'dispatcherctl enroll-token list; dispatcherctl enroll-token revoke ID',
          });
        }
        core.events.append({
          kind: 'enroll.token',
          message: `enrollment token ${created.info.id} created${mac ? ` for ${mac}` : ''}`,
          data: { id: created.info.id, mac },
        });
        return created;
      },
    );

    app.get(
      '/api/v1/enrollment-tokens',
      {
        onRequest: admin,
        schema: {
          summary: 'list enrollment tokens (never the tokens themselves)',
          tags: ['enrollment'],
          security: ADMIN_SECURITY,
          response: { 200: EnrollTokenList, 401: ErrorBody },
        },
      },
      async () => ({ tokens: core.enrollTokens.list() }),
    );

    app.delete(
      '/api/v1/enrollment-tokens/:id',
      {
        onRequest: admin,
        schema: {
          summary: 'revoke an enrollment token',
          tags: ['enrollment'],
          security: ADMIN_SECURITY,
          params: EnrollTokenRef,
          response: { 200: EnrollTokenRef, ...errorResponses },
        },
      },
      async (req) => {
        if (!core.enrollTokens.revoke(req.params.id))
          throw new DispatcherError('DSP_ERR_NOT_FOUND', `no enrollment token ${req.params.id}`, {
            hint: 'dispatcherctl enroll-token list',
          });
        core.events.append({ kind: 'enroll.token', message: `enrollment token ${req.params.id} revoked`, data: { id: req.params.id } });
        return { id: req.params.id };
      },
    );
  };
}
