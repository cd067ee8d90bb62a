/**
 * The agent endpoint on the HTTP port: `GET /api/v1/agent` upgraded to a WebSocket.
 *
 * We take the HTTP server's 'upgrade' event with a `ws` server in noServer mode rather than
 * going through @fastify/websocket: an upgrade then costs no fake ServerResponse and no trip
 * through the router, and the socket options are ours — a hard payload limit a little above
 * the protocol's message limit (oversize messages get a polite error first; beyond, the
 * socket closes with 1009), and permessage-deflate off (small frames; big fields are
 * compressed on their own, protocol/compression.ts). Any other upgrade path is left to other
 * 'upgrade' listeners, or answered 404 when there are none.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { AppPlugin } from '../http/app.js';
import { DispatcherError } from '../errors.js';
import { AGENT_PATH } from '../protocol/messages.js';
import type { AgentHub } from './hub.js';

/** Slack between the protocol's message limit (polite error) and the socket's hard limit (close). */
const HARD_LIMIT_SLACK = 1024 * 1024;

export function agentHubPlugin(hub: AgentHub): AppPlugin {
  return {
    name: 'agents',
    plugin: async (app) => {
      const wss = new WebSocketServer({
        noServer: true,
        maxPayload: hub.maxMessageBytes + HARD_LIMIT_SLACK,
        perMessageDeflate: false,
        clientTracking: false,
      });
      const server = app.server;
      const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
        const path = (req.url ?? '').split('?')[0];
        if (path !== AGENT_PATH) {
          if (server.listenerCount('upgrade') === 1) socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
          return;
        }
        socket.on('error', () => socket.destroy()); // a reset during the handshake is the peer's business
        wss.handleUpgrade(req, socket, head, (ws) => hub.accept(ws, req));
      };
      server.on('upgrade', onUpgrade);
      app.addHook('preClose', async () => {
        server.off('upgrade', onUpgrade);
        await hub.stop();
      });
      // A plain GET (no Upgrade header) gets told what this is.
      app.get(AGENT_PATH, async () => {
        throw new DispatcherError('DSP_ERR_BAD_REQUEST', `${AGENT_PATH} is the node agents' WebSocket endpoint`, {
          hint: 'connect with the node agent (node-agent --dispatcher URL)',
        });
      });
    },
  };
}
