/**
 * Attacks on boot identity against the real dispatcher process (full DHCP mode) and a real
 * node agent, in network namespaces. Needs root.
 *
 *   ns NODE  10.70.0.x ── veth (node network) ── 10.70.0.1  ns SRV  dispatcher --interface
 *   test process (root ns) 10.71.0.2 ── veth (admin network) ── 10.71.0.1  ns SRV
 *
 * A stranger asks for boot scripts on loopback and on the admin address (404, nothing
 * registered), and on the node network without a DHCP exchange (403); a machine that did its
 * DHCP exchange gets its script from that address only. Its token admits one hello: a replay
 * and a second hello are refused. A hijack of the live node's MAC (script, token, enrollment
 * token) leaves the real agent connected and its task running. A flood of made-up MACs stops
 * at the auto-enrolment cap; `forget` removes a node that is not connected, not one that is.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLab, type Lab, type LabProcess, type Netns } from '../../lab/netns.js';
import { buildProbe, probeDora, removeTempDirs } from '../dhcp/harness.js';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { RawClient } from '../agents/harness.js';
import { AGENT_BIN } from '../../lab/paths.js';
import { parseDispatcherPublicKey } from '../../../dispatcher/src/protocol/session.js';

const isRoot = process.getuid?.() === 0;
const SERVER = '10.70.0.1';
const ADMIN_SRV = '10.71.0.1';
const ADMIN_HOST = '10.71.0.2';
const ROOT_IF = `lcsec${process.pid % 100000}`;
const PXE = { vendorClass: 'PXEClient:Arch:00000:UNDI:002001', clientArch: 0 };
const PER_MINUTE = 6;
/** Fixed, so the agent finds the restarted dispatcher at the same URL (SRV is a fresh namespace). */
const HTTP_PORT = 20_000 + (process.pid % 20_000);

let lab: Lab;
let srv: Netns;
let node: Netns;
let nodeIf: string;
let d: DispatcherProcess;
let port: number;
let adminToken: string;
let agent: LabProcess | undefined;
let dispatcherArgs: string[];
let agentArgs: string[];
const clients: RawClient[] = [];

const apiUrl = (path: string) => `http://${ADMIN_SRV}:${port}${path}`;
async function api<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(apiUrl(path), {
    method,
    headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as T };
}
const nodesByMac = async () =>
  new Map((await api<{ nodes: { name: string; mac: string; state: string }[] }>('GET', '/api/v1/nodes')).body.nodes.map((n) => [n.mac, n]));

/** curl in a namespace, from a given source address: [status, body]. */
async function curlIn(ns: Netns, url: string, from?: string): Promise<[number, string]> {
  const r = await ns.exec('curl', ['-s', '-o', '-', '-w', '\n%{http_code}', ...(from ? ['--interface', from] : []), url], {
    timeoutMs: 15_000,
  });
  const i = r.stdout.lastIndexOf('\n');
  return [Number(r.stdout.slice(i + 1)), r.stdout.slice(0, i)];
}
const tokenOf = (script: string) => /lc\.token=(\S+)/.exec(script)?.[1];

function client(): RawClient {
  const c = new RawClient(`ws://${ADMIN_SRV}:${port}/api/v1/agent`);
  clients.push(c);
  return c;
}
const key = () => parseDispatcherPublicKey(readFileSync(join(d.dataDir, 'identity.pub'), 'utf8'));

/** A DHCP exchange as a PXE ROM from NODE, then the leased address on NODE's interface. */
async function pxeDhcp(macPrefix: string): Promise<{ mac: string; ip: string }> {
  const [r] = await probeDora(node, {
    iface: nodeIf,
    to: { address: '255.255.255.255', port: 67 },
    dora: { count: 1, macPrefix, template: PXE },
  });
  expect(r?.ip).toBeDefined();
  await node.addAddress(nodeIf, `${r!.ip}/24`).catch(() => undefined); // already there: the same lease again
  return { mac: r!.mac, ip: r!.ip! };
}

let real: { mac: string; ip: string; token: string };

/** Waits for a condition (sync or async), polling. */
async function waitFor(what: string, cond: () => unknown, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.runIf(isRoot)('boot identity', () => {
  beforeAll(async () => {
    await buildProbe();
    lab = await createLab('sec');
    srv = await lab.namespace('srv');
    node = await lab.namespace('node');
    const [s, n] = await lab.veth({ ns: srv, address: `${SERVER}/24` }, { ns: node, name: 'n0', address: '10.70.0.2/24' });
    nodeIf = n.name;
    // The admin network: the test process reaches the API there, as an operator would.
    execFileSync('ip', ['link', 'add', ROOT_IF, 'type', 'veth', 'peer', 'name', 'adm0', 'netns', srv.name]);
    execFileSync('ip', ['addr', 'add', `${ADMIN_HOST}/24`, 'dev', ROOT_IF]);
    execFileSync('ip', ['link', 'set', ROOT_IF, 'up']);
    await srv.exec('ip', ['addr', 'add', `${ADMIN_SRV}/24`, 'dev', 'adm0']);
    await srv.exec('ip', ['link', 'set', 'adm0', 'up']);
    const dataDir = mkdtempSync(join(tmpdir(), 'lc-sec-'));
    writeFileSync(join(dataDir, 'cluster.yaml'), `enrollment: auto\nautoEnroll: { perMinute: ${PER_MINUTE}, total: 50 }\n`);
    dispatcherArgs = [
      '--interface',
      s.name,
      '--dhcp',
      'full',
      '--range',
      '10.70.0.100-10.70.0.199',
      '--no-tftp',
      '--heartbeat',
      '1',
      '--cluster',
      join(dataDir, 'cluster.yaml'),
      '--http-port',
      String(HTTP_PORT),
    ];
    d = await startDispatcher({ ns: srv, tftp: true, logLevel: 'debug', dataDir, args: dispatcherArgs });
    port = d.logs.find((l) => l.msg === 'dispatcher started')!.httpPort as number;
    expect(port).toBe(HTTP_PORT);
    adminToken = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) c.ws.terminate();
    await agent?.stop();
    await d?.stop();
    await lab?.cleanup(); // deletes SRV, and with it both ends of the admin veth
    removeTempDirs();
  });

  it('answers a stranger on loopback or on the admin address 404, and registers nothing', async () => {
    const [onLoopback] = await curlIn(srv, `http://127.0.0.1:${port}/boot.ipxe?mac=52:54:00:66:00:01`);
    expect(onLoopback).toBe(404);
    const fromAdmin = await fetch(apiUrl('/boot.ipxe?mac=52:54:00:66:00:02'));
    expect(fromAdmin.status).toBe(404);
    expect(await fromAdmin.text()).not.toMatch(/lc\.token=/);
    const nodes = await nodesByMac();
    expect(nodes.has('52:54:00:66:00:01') || nodes.has('52:54:00:66:00:02')).toBe(false);
    expect(d.logs.some((l) => l.msg === 'boot script asked for off the node network: 404' && l.ip === ADMIN_HOST)).toBe(true);
  });

  it('serves the node network only from the address the MAC used in its DHCP exchange', async () => {
    const [noDhcp, body] = await curlIn(node, `http://${SERVER}:${port}/boot.ipxe?mac=52:54:00:66:00:03`, '10.70.0.2');
    expect(noDhcp).toBe(403);
    expect(tokenOf(body)).toBeUndefined();
    const booted = await pxeDhcp('52:54:00:67');
    const [elsewhere] = await curlIn(node, `http://${SERVER}:${port}/boot.ipxe?mac=${booted.mac}`, '10.70.0.2');
    expect(elsewhere).toBe(403);
    const [ok, script] = await curlIn(node, `http://${SERVER}:${port}/boot.ipxe?mac=${booted.mac}`, booted.ip);
    expect(ok).toBe(200);
    real = { ...booted, token: tokenOf(script)! };
    expect(real.token).toBeDefined();
  });

  it('admits one hello per boot token: a replay and a second hello are refused', async () => {
    const first = client();
    const w = await first.handshake(real.mac, { kind: 'boot', token: real.token }, { key: key() });
    expect(w.type).toBe('welcome');
    first.ws.close();
    await waitFor('first connection closed', () => first.closed);
    const again = client();
    expect(await again.handshake(real.mac, { kind: 'boot', token: real.token })).toMatchObject({
      type: 'refused',
      reason: 'bad-token',
      message: expect.stringMatching(/already used/),
    });
  });

  it('leaves a live node connected and its task running when a stranger claims its MAC', async () => {
    // The real machine boots again (new DHCP-seen address is the same), gets a token and runs the real agent with it.
    const [ok, script] = await curlIn(node, `http://${SERVER}:${port}/boot.ipxe?mac=${real.mac}`, real.ip);
    expect(ok).toBe(200);
    const token = tokenOf(script)!;
    const work = mkdtempSync(join(tmpdir(), 'lc-sec-agent-'));
    agentArgs = [
      AGENT_BIN,
      '--dispatcher',
      `http://${SERVER}:${port}`,
      '--token',
      token,
      '--mac',
      real.mac,
      '--dispatcher-key',
      join(d.dataDir, 'identity.pub'),
      '--work-dir',
      work,
      '--slots',
      '1',
    ];
    agent = node.spawn(process.execPath, agentArgs);
    await waitFor('agent welcomed', async () => (await nodesByMac()).get(real.mac)?.state === 'ready', 20_000);
    const marker = join(work, 'done');
    const job = await api<{ id: number }>('POST', '/api/v1/jobs', { command: ['sh', '-c', `sleep 3; touch ${marker}`] });
    expect(job.status).toBe(201);
    await waitFor('task running', async () => (await nodesByMac()).get(real.mac)?.state === 'busy', 10_000);

    // 1. A new boot script for its MAC, even from its DHCP address: a retry script, no token.
    const [status, hijack] = await curlIn(node, `http://${SERVER}:${port}/boot.ipxe?mac=${real.mac}`, real.ip);
    expect(status).toBe(200);
    expect(tokenOf(hijack)).toBeUndefined();
    expect(hijack).toMatch(/its node is connected/);
    // 2. The token the agent used, replayed.
    expect(await client().handshake(real.mac, { kind: 'boot', token })).toMatchObject({ type: 'refused', reason: 'bad-token' });
    // 3. The data dir's enrollment token, for the PXE-booted, connected MAC.
    const enroll = readFileSync(join(d.dataDir, 'enroll.token'), 'utf8').trim();
    expect(await client().handshake(real.mac, { kind: 'enroll', token: enroll })).toMatchObject({
      type: 'refused',
      reason: 'denied',
      message: expect.stringMatching(/cannot claim/),
    });
    // 4. A created enrollment token for that MAC cannot even be made.
    expect((await api('POST', '/api/v1/enrollment-tokens', { mac: real.mac })).status).toBe(409);

    await waitFor(
      'task done on the real agent',
      async () => (await api<{ state: string }>('GET', `/api/v1/jobs/${job.body.id}`)).body.state === 'done',
      20_000,
    );
    expect(readFileSync(marker, 'utf8')).toBe('');
    const n = (await nodesByMac()).get(real.mac)!;
    expect(['ready', 'busy']).toContain(n.state);
    expect(agent.output()).not.toMatch(/refused by the dispatcher/);
  });

  it('lets the agent reconnect to a restarted dispatcher with its session credential (its boot token is spent)', async () => {
    const before = agent!.output().length;
    await d.stop();
    d = await startDispatcher({ ns: srv, tftp: true, logLevel: 'debug', dataDir: d.dataDir, args: dispatcherArgs });
    // Meanwhile a stranger does a DHCP exchange as the node's MAC and asks for its script: the
    // node was up before the restart, so it is given the time to come back (no token, no revocation).
    await pxeDhcp('52:54:00:67');
    const [, early] = await curlIn(node, `http://${SERVER}:${port}/boot.ipxe?mac=${real.mac}`, real.ip);
    expect(tokenOf(early)).toBeUndefined();
    await waitFor('agent back', () => agent!.output().slice(before).includes('connected to the dispatcher'), 20_000);
    expect(agent!.output().slice(before)).not.toMatch(/refused/);
    expect(d.logs.some((l) => l.msg === 'agent welcomed' && l.auth === 'session' && l.mac === real.mac)).toBe(true);
    // The stranger's DHCP exchange did not mark the live node booting either.
    expect((await nodesByMac()).get(real.mac)?.state).toMatch(/ready|busy/);
  });

  it('lets a restarted agent process reconnect with the credential kept in its work dir', async () => {
    await agent!.stop();
    await waitFor('node lost', async () => (await nodesByMac()).get(real.mac)?.state === 'lost');
    agent = node.spawn(process.execPath, agentArgs); // the same spent boot token on its command line
    await waitFor('agent back', () => agent!.output().includes('connected to the dispatcher'), 20_000);
    expect(agent.output()).not.toMatch(/refused/);
  });

  it('registers made-up MACs only up to the auto-enrolment cap, and logs the refusals rate-limited', async () => {
    const before = (await nodesByMac()).size;
    await probeDora(node, {
      iface: nodeIf,
      to: { address: '255.255.255.255', port: 67 },
      dora: { count: 40, macPrefix: '02:66:66:00', template: PXE, timeoutMs: 4_000 },
    });
    const after = await nodesByMac();
    expect(after.size - before).toBeLessThanOrEqual(PER_MINUTE);
    const capLines = d.logs.filter((l) => l.msg === 'boot request refused: auto-enrolment cap');
    expect(capLines.length).toBeGreaterThan(0);
    expect(capLines.length).toBeLessThanOrEqual(10);
    expect(after.get(real.mac)?.state).toMatch(/ready|busy/);
  });

  it('forgets a node that is not connected with its lease and boot stages, and refuses to forget a connected one', async () => {
    expect((await api<{ error: { code: string } }>('DELETE', `/api/v1/nodes/${real.mac}`)).body.error.code).toBe('DSP_ERR_NODE_STATE');
    const victim = [...(await nodesByMac()).values()].find((n) => n.mac.startsWith('02:66:66:00'))!;
    expect(d.query('SELECT ip FROM dhcp_leases WHERE mac = ?', victim.mac).length).toBe(1);
    const r = await api<{ message: string }>('DELETE', `/api/v1/nodes/${victim.name}`);
    expect(r.status).toBe(200);
    expect((await nodesByMac()).has(victim.mac)).toBe(false);
    await waitFor(
      'rows gone',
      () =>
        d.query('SELECT 1 FROM dhcp_leases WHERE mac = ?', victim.mac).length === 0 &&
        d.query('SELECT 1 FROM boot_stages WHERE mac = ?', victim.mac).length === 0,
    );
    expect((await api('DELETE', `/api/v1/nodes/${victim.mac}`)).status).toBe(404);
    // Without the admin token: refused.
    expect((await fetch(apiUrl(`/api/v1/nodes/${real.mac}`), { method: 'DELETE' })).status).toBe(401);
  });
});
