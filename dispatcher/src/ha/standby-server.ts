/**
 * What a standby dispatcher serves on its HTTP port while it waits for the leader lock: who
 * leads (`GET /api/v1/leader`, and a page saying so), and a 503 naming the leader for every
 * other request, the agents' WebSocket included (an agent then tries the next dispatcher it
 * knows). It answers no DHCP and no TFTP. It closes when this dispatcher takes the lead.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { DispatcherError } from '../errors.js';
import type { Logger } from '../log.js';
import type { LeaderInfo } from '../store/postgres/leadership.js';
import { leaderView } from './leader-view.js';

export interface StandbyServer {
  setLeader(info: LeaderInfo | undefined): void;
  close(): Promise<void>;
}

export async function startStandbyServer(opts: { host: string; port: number; self: string; log: Logger }): Promise<StandbyServer> {
  let leader: LeaderInfo | undefined;
  const app: FastifyInstance = Fastify({ logger: false, return503OnClosing: true });
  app.get('/api/v1/leader', async () => leaderView('standby', opts.self, 'postgres', leader));
  app.get('/healthz', async () => ({ ok: true, role: 'standby' }));
  app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').send(page(opts.self, leader)));
  app.setNotFoundHandler(async (req, reply) => {
    const err = new DispatcherError(
      'DSP_ERR_STANDBY',
      `${opts.self} is a standby dispatcher: ${req.method} ${req.url.split('?')[0]} goes to the leader`,
      {
        hint: leader?.url
          ? `ask the leader, ${leader.url}`
          : 'no leader is known yet: check that one dispatcher runs with the same --store',
      },
    );
    return reply
      .code(503)
      .header('retry-after', '1')
      .send({ ...err.toJSON(), leader: leader?.url ?? null });
  });
  await app.listen({ port: opts.port, host: opts.host });
  opts.log.info({ port: opts.port }, 'standby: serving who leads until this dispatcher takes the lead');
  return {
    setLeader(info) {
      leader = info;
    },
    close: () => app.close(),
  };
}

function page(self: string, leader: LeaderInfo | undefined): string {
  const who = leader?.url
    ? `The leader is <a href="${escapeHtml(leader.url)}">${escapeHtml(leader.url)}</a> (epoch ${leader.epoch}${leader.since ? `, since ${new Date(leader.since).toISOString()}` : ''}).`
    : 'No leader is known yet.';
  return `<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2"><title>lilcluster — standby</title></head>
<body style="font-family: sans-serif"><h1>lilcluster dispatcher — standby</h1>
<p>${escapeHtml(self)} waits to take over: it answers no DHCP, TFTP or agents until the leader's database session ends.</p>
<p>${who}</p></body></html>`;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
