/**
 * /api/v1/nodes: list and show nodes; act on one (reboot, poweroff, drain, undrain, approve,
 * wake, inspect, exec, settings). Actions, inspect included, need the admin token.
 */
import { Type } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { requireAdmin } from '../../http/app.js';
import { DispatcherError } from '../../errors.js';
import {
  ActionResult,
  ErrorBody,
  ExecRequest,
  InspectResult,
  NodeDetail,
  NodeList,
  NodeListQuery,
  NodeRef,
  Nullable,
  errorResponses,
  type ExecLine,
} from '../schemas.js';
import { ADMIN_SECURITY, EXEC_BODY_LIMIT, OPERATOR_BODY_LIMIT, type OperatorApi } from '../context.js';
import { nodeDetail, nodeView } from './view.js';
import { forgetNode } from '../../nodes/forget.js';
import { IMAGE_NAME_PATTERN } from '../jobs/schemas.js';
import { OptionalBody } from '../validation.js';
import { memoryRefusal } from '../../boot/memory-fit.js';
import { openNdjson } from '../streams.js';
import type { NodeRecord } from '../../nodes/registry.js';
import { powerServiceOf } from '../../power/service.js';
import { powerStatesOf } from '../../power/power-state.js';
import { afterPower } from '../power/routes.js';

const SIMPLE_ACTIONS = {
  reboot:
    'reboot the node through its agent into the image and version it boots next: by kexec where it can (no firmware, no PXE), else the firmware (body {"firmware": true} forces it); {"hard": true}: a power cycle through its BMC, whatever its agent; running tasks go back to the queue, a rolling reboot drains first',
  poweroff: 'power the node off through its agent',
  drain: 'let running tasks finish and hand the node no new ones',
  undrain: 'hand tasks to a drained node again',
  approve: 'admit a node waiting for approval (enrollment: approve)',
  wake: 'send a Wake-on-LAN magic packet to a node that is off',
} as const;
type SimpleAction = keyof typeof SIMPLE_ACTIONS;

export function nodeRoutes(api: OperatorApi): FastifyPluginAsync {
  return async (plain) => {
    const app = plain.withTypeProvider<TypeBoxTypeProvider>();
    const { core, actions } = api;
    const admin = requireAdmin(core);
    const sources = () => ({
      control: api.control(),
      timeline: core.timeline,
      images: core.images.assignments,
      health: core.nodeHealth,
      power: powerStatesOf(core),
    });

    app.get(
      '/api/v1/nodes',
      {
        schema: {
          summary: 'list nodes with their state, addresses, image, hardware, load and running tasks',
          tags: ['nodes'],
          querystring: NodeListQuery,
          response: { 200: NodeList, 400: ErrorBody },
        },
      },
      async (req) => {
        const src = sources();
        let list = core.nodes.list();
        if (req.query.state) list = list.filter((n) => n.state === req.query.state);
        if (req.query.label) list = list.filter((n) => n.labels.includes(req.query.label!));
        return { nodes: list.map((n) => nodeView(n, src)) };
      },
    );

    app.get(
      '/api/v1/nodes/:node',
      {
        schema: {
          summary: 'one node: its record, live figures, inventory and last inspect snapshot',
          tags: ['nodes'],
          params: NodeRef,
          response: { 200: NodeDetail, ...errorResponses },
        },
      },
      async (req) => {
        const n = actions.resolve(req.params.node);
        return nodeDetail(n, sources(), actions.lastInspect(n));
      },
    );

    // It makes the agent act, so it needs the token. GET for the CLI; POST for the page, whose
    // browser then sends its Origin (the cookie needs it).
    app.route({
      method: ['GET', 'POST'],
      url: '/api/v1/nodes/:node/inspect',
      onRequest: admin,
      schema: {
        summary: "ask the node's agent for a full snapshot now (hardware, OS, load, memory, temperatures)",
        tags: ['nodes'],
        security: ADMIN_SECURITY,
        params: NodeRef,
        response: { 200: InspectResult, ...errorResponses, 504: ErrorBody },
      },
      handler: async (req) => actions.inspect(req.params.node),
    });

    for (const action of Object.keys(SIMPLE_ACTIONS) as SimpleAction[]) {
      app.post(
        `/api/v1/nodes/:node/${action}`,
        {
          bodyLimit: OPERATOR_BODY_LIMIT,
          onRequest: admin,
          schema: {
            summary: SIMPLE_ACTIONS[action],
            tags: ['nodes'],
            security: ADMIN_SECURITY,
            params: NodeRef,
            ...(action === 'reboot'
              ? {
                  body: OptionalBody(
                    Type.Object(
                      { firmware: Type.Optional(Type.Boolean()), hard: Type.Optional(Type.Boolean()) },
                      { additionalProperties: false },
                    ),
                  ),
                }
              : {}),
            response: {
              200: ActionResult,
              ...errorResponses,
              ...(action === 'reboot' ? { 502: ErrorBody, 503: ErrorBody } : {}),
              504: ErrorBody,
            },
          },
        },
        async (req) => {
          const body = req.body as { firmware?: boolean; hard?: boolean } | undefined;
          if (action === 'reboot' && body?.hard) return hardReboot(req.params.node);
          return runAction(action, req.params.node, body?.firmware === true);
        },
      );
    }

    app.patch(
      '/api/v1/nodes/:node',
      {
        bodyLimit: OPERATOR_BODY_LIMIT,
        onRequest: admin,
        schema: {
          summary:
            'change per-node settings: labels, UEFI first stage (snponly.efi for NICs that need it), fixed address, image (from its next boot)',
          description: 'For a node listed in the cluster file, the file wins again at the next start.',
          tags: ['nodes'],
          security: ADMIN_SECURITY,
          params: NodeRef,
          body: Type.Object(
            {
              labels: Type.Optional(Type.Array(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' }), { maxItems: 64 })),
              firstStage: Type.Optional(Nullable(Type.Union([Type.Literal('ipxe.efi'), Type.Literal('snponly.efi')]))),
              fixedIp: Type.Optional(
                Nullable(
                  Type.String({
                    pattern: '^(25[0-5]|2[0-4]\\d|1?\\d?\\d)(\\.(25[0-5]|2[0-4]\\d|1?\\d?\\d)){3}$',
                    description: 'IPv4 address',
                  }),
                ),
              ),
              image: Type.Optional(
                Nullable(
                  Type.String({
                    pattern: IMAGE_NAME_PATTERN,
                    maxLength: 64,
                    description: 'the image it boots from its next boot (null: by its labels, else the default)',
                  }),
                ),
              ),
            },
            { additionalProperties: false },
          ),
          response: { 200: NodeDetail, ...errorResponses },
        },
      },
      async (req) => {
        const n = actions.resolve(req.params.node);
        const b = req.body;
        if (b.image && !core.images.catalog.get(b.image))
          throw new DispatcherError('DSP_ERR_IMAGE_NOT_FOUND', `no image named "${b.image}" is built`, {
            hint: `dispatcherctl images lists them; build it with make image IMAGE=${b.image} FROM=... (or PACKAGES=...)`,
          });
        if (b.image) {
          const next = core.images.assignments.versionFor(b.image, core.images.releases.pinOf(n.mac));
          const tooBig = next.ok ? memoryRefusal(next.version, n, core.config.kernelArgs) : null;
          if (tooBig) throw new DispatcherError('DSP_ERR_NODE_STATE', tooBig, { hint: "dispatcherctl images shows each version's size" });
        }
        core.nodes.updateSettings(n.mac, {
          ...(b.image !== undefined ? { image: b.image } : {}),
          ...(b.labels !== undefined ? { labels: b.labels } : {}),
          ...(b.firstStage !== undefined ? { firstStage: b.firstStage } : {}),
          ...(b.fixedIp !== undefined ? { fixedIp: b.fixedIp } : {}),
        });
        return nodeDetail(n, sources(), actions.lastInspect(n));
      },
    );

    app.delete(
      '/api/v1/nodes/:node',
      {
        onRequest: admin,
        schema: {
          summary: 'forget a node that is not connected: its record, DHCP lease, boot stages, tokens and session credentials',
          description:
            'A forgotten machine that boots again is a new machine under the enrollment policy; one listed in the cluster file comes back at the next start.',
          tags: ['nodes'],
          security: ADMIN_SECURITY,
          params: NodeRef,
          response: { 200: ActionResult, ...errorResponses },
        },
      },
      async (req) => {
        const n = await forgetNode(core, api.control(), req.params.node);
        return { node: n.name, action: 'forget', state: n.state, ackMs: null, message: `${n.name} (${n.mac}) forgotten` };
      },
    );

    app.post(
      '/api/v1/nodes/:node/exec',
      {
        bodyLimit: EXEC_BODY_LIMIT,
        onRequest: admin,
        schema: {
          summary: 'run a command on the node now, outside the task queue, and stream its output',
          description:
            'The answer is application/x-ndjson, one object a line: `{"type":"started"}`, then `{"type":"output","stream":"stdout"|"stderr","data":...}` ' +
            'as the command writes, then `{"type":"exit","exitCode","signal","durationMs"}` — or `{"type":"error","error":{...}}` if it fails midway.',
          tags: ['nodes'],
          security: ADMIN_SECURITY,
          params: NodeRef,
          body: ExecRequest,
          response: {
            200: Type.Object(
              { type: Type.String() },
              { additionalProperties: true, 'x-content-type': 'application/x-ndjson', description: 'JSON lines' },
            ),
            ...errorResponses,
          },
        },
      },
      async (req, reply) => {
        const { argv, shell } = req.body;
        if ((argv === undefined) === (shell === undefined))
          throw new DispatcherError('DSP_ERR_BAD_REQUEST', 'give exactly one of argv (an array) or shell (a string)', {
            hint: '{"argv": ["uname", "-a"]} or {"shell": "dmesg | tail"}',
          });
        const n: NodeRecord = actions.execTarget(req.params.node);
        const out = openNdjson(req, reply);
        out.write({ type: 'started', node: n.name, ackMs: null } satisfies ExecLine);
        try {
          const r = await actions.exec(n, argv ?? shell!, req.body.timeoutMs, (stream, data) =>
            out.write({ type: 'output', stream, data } satisfies ExecLine),
          );
          out.write({ type: 'exit', exitCode: r.exitCode, signal: r.signal, durationMs: r.durationMs } satisfies ExecLine);
        } catch (err) {
          const e = err instanceof DispatcherError ? err : new DispatcherError('DSP_ERR_INTERNAL', (err as Error).message);
          out.write({ type: 'error', error: e.toJSON().error } satisfies ExecLine);
        }
        out.end();
      },
    );

    /** A power cycle through the node's BMC: for a node whose agent is gone or hung. */
    async function hardReboot(ref: string) {
      const n = actions.resolve(ref);
      const r = await powerServiceOf(core).run(n, 'cycle');
      afterPower(api, n, 'cycle');
      const message = r.power === 'on' ? `it was off: powered on through the ${r.bmc}` : `power cycled through the ${r.bmc}`;
      return { node: n.name, action: 'reboot', state: n.state, ackMs: null, message };
    }

    function runAction(action: SimpleAction, ref: string, firmware: boolean) {
      switch (action) {
        case 'reboot':
          return actions.reboot(ref, firmware ? { firmware } : {});
        case 'poweroff':
          return actions.poweroff(ref);
        case 'drain':
          return actions.drain(ref);
        case 'undrain':
          return actions.undrain(ref);
        case 'approve':
          return actions.approve(ref);
        case 'wake':
          return actions.wake(ref);
      }
    }
  };
}
