/**
 * The agent's DispatcherConnection with several dispatchers (a leader and its standbys), over
 * real sockets: a port nobody listens on, a standby answering the upgrade with HTTP 503
 * DSP_ERR_STANDBY naming the leader, and the real hub as the leader.
 */
import { createServer, type Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { parseDispatcherPublicKey } from '../../../dispatcher/src/protocol/session.js';
import { DispatcherConnection } from '../../../node-agent/src/connection.js';
import type { SessionInfo } from '../../../node-agent/src/seams.js';
import { FAKE_INVENTORY } from '../../unit/protocol/fixtures.js';
import { freePort } from '../../lab/ports.js';
import { FakeEngine } from './fake-engine.js';
import { startHub, waitFor, type TestHub } from './harness.js';

let hub: TestHub | undefined;
let conn: DispatcherConnection | undefined;
let standby: Server | undefined;

afterEach(async () => {
  await conn?.stop();
  await hub?.stop();
  await new Promise((r) => (standby ? standby.close(r) : r(undefined)));
  conn = hub = standby = undefined;
});

/** A standby: every request, the agent's upgrade included, gets 503 naming `leader`. */
async function startStandby(leader: string | null): Promise<{ wsUrl: string; hits: () => number }> {
  let hits = 0;
  standby = createServer((_req, res) => {
    hits++;
    res.writeHead(503, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        error: { code: 'DSP_ERR_STANDBY', message: 'this dispatcher is a standby', hint: 'the agents connect to the leader' },
        leader: leader ? { url: leader, epoch: 1 } : null,
      }),
    );
  });
  await new Promise<void>((r) => standby!.listen(0, '127.0.0.1', r));
  const port = (standby.address() as { port: number }).port;
  return { wsUrl: `ws://127.0.0.1:${port}/api/v1/agent`, hits: () => hits };
}

function connect(urls: string[], h: TestHub, lines: string[], onSession: (s: SessionInfo) => void): DispatcherConnection {
  const c = new DispatcherConnection({
    url: urls,
    auth: { kind: 'enroll', token: h.enrollToken },
    mac: '52:54:00:0c:00:01',
    dispatcherKey: parseDispatcherPublicKey(readFileSync(h.pubKeyFile, 'utf8')),
    insecure: false,
    slots: 1,
    agentVersion: '0.0.0-test',
    inventory: async () => FAKE_INVENTORY,
    say: (l) => lines.push(l),
  });
  c.start({
    helloState: () => ({ running: [], undelivered: [] }),
    connected: onSession,
    message: () => {},
    disconnected: (why) => lines.push(`disconnected: ${why}`),
  });
  return c;
}

describe('an agent that knows several dispatchers', () => {
  it('goes from a standby straight to the leader it names, and says whom it talks to', async () => {
    hub = await startHub(new FakeEngine());
    const closed = `ws://127.0.0.1:${await freePort()}/api/v1/agent`;
    const sb = await startStandby(hub.url);
    const lines: string[] = [];
    let session: SessionInfo | undefined;
    const t0 = Date.now();
    // The standby first, then a dead address the leader's hint skips.
    conn = connect([sb.wsUrl, closed, hub.wsUrl], hub, lines, (s) => (session = s));
    await waitFor('the welcome', () => session);
    expect(Date.now() - t0).toBeLessThan(2000); // no back-off: one round, not yet failed
    expect(sb.hits()).toBe(1);
    expect(conn.url).toBe(hub.wsUrl);
    expect(conn.httpBase).toBe(hub.url);
    expect(lines).toContain(
      `dispatcher ${sb.wsUrl} takes no agents (HTTP 503 DSP_ERR_STANDBY this dispatcher is a standby); trying ${hub.wsUrl} (the leader it names)`,
    );
    expect(lines).toContain(`talking to dispatcher ${hub.wsUrl}`);
  });

  it('tries each in turn past refused connections and a standby that knows no leader', async () => {
    hub = await startHub(new FakeEngine());
    const closed = `ws://127.0.0.1:${await freePort()}/api/v1/agent`;
    const sb = await startStandby(null);
    const lines: string[] = [];
    let session: SessionInfo | undefined;
    conn = connect([closed, sb.wsUrl, hub.wsUrl], hub, lines, (s) => (session = s));
    await waitFor('the welcome', () => session);
    expect(sb.hits()).toBe(1);
    expect(lines.find((l) => l.startsWith(`dispatcher ${closed} unreachable (`))).toMatch(/ECONNREFUSED.*; trying ws:/);
    expect(lines).toContain(`talking to dispatcher ${hub.wsUrl}`);
  });
});
