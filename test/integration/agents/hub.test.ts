/**
 * The agent hub against raw protocol clients on a real socket: admission, handshake, bad
 * input (malformed, oversize, out-of-order, tampered), feeding and acknowledgements, liveness,
 * re-adoption and operator commands. The engine is the in-memory fake.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseDispatcherPublicKey } from '../../../dispatcher/src/protocol/session.js';
import { encodeFrame, encodeMessage } from '../../../dispatcher/src/protocol/codec.js';
import { PROTOCOL_VERSION, type WireTaskResult } from '../../../dispatcher/src/protocol/messages.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';
import { DispatcherError } from '../../../dispatcher/src/errors.js';
import { FakeEngine } from './fake-engine.js';
import { RawClient, startHub, waitFor, type TestHub } from './harness.js';
import { readFileSync } from 'node:fs';

const MAC1 = '52:54:00:00:01:01';
const MAC2 = '52:54:00:00:01:02';
const mac = (s: string) => parseMac(s) as Mac;

let hub: TestHub | undefined;
const clients: RawClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.ws.terminate();
  await hub?.stop();
  hub = undefined;
});

/** A successful result as an agent sends it. */
function wireResult(taskId: number, over: Partial<WireTaskResult> = {}): WireTaskResult {
  return {
    taskId,
    attempt: 1,
    exitCode: 0,
    signal: null,
    timedOut: false,
    error: null,
    startedAt: 1,
    durationMs: 1,
    maxRssKiB: null,
    stdout: '',
    stderr: '',
    stdoutTruncated: false,
    stderrTruncated: false,
    outputsTarGzB64: null,
    ...over,
  };
}

async function setup(opts: Parameters<typeof startHub>[1] = {}) {
  const engine = new FakeEngine();
  hub = await startHub(engine, opts);
  return { engine, hub };
}
function client(h: TestHub): RawClient {
  const c = new RawClient(h.wsUrl);
  clients.push(c);
  return c;
}
async function joined(h: TestHub, m = MAC1, opts: Parameters<RawClient['handshake']>[2] = {}) {
  const c = client(h);
  const key = parseDispatcherPublicKey(readFileSync(h.pubKeyFile, 'utf8'));
  const w = await c.handshake(m, { kind: 'enroll', token: h.enrollToken }, { key, ...opts });
  expect(w.type).toBe('welcome');
  return c;
}
const rejectLogs = (h: TestHub) => h.lines.filter((l) => l.msg === 'agent message rejected');

describe('agent hub: admission and handshake', () => {
  it('welcomes an agent with the enrollment token, signs the handshake and records the node', async () => {
    const { hub: h } = await setup();
    const c = await joined(h);
    expect(c.lastHandshakeVerified).toBe(true);
    const node = h.core.nodes.byMac(mac(MAC1))!;
    expect(node).toMatchObject({ name: 'node1', state: 'ready', agentVersion: 'test', ip: '127.0.0.1' });
    expect(node.inventory).toMatchObject({ cpu: { cores: 4 } });
    expect(h.core.timeline.list(mac(MAC1)).map((s) => s.stage)).toContain('agent.hello');
    expect(h.hub.isConnected(mac(MAC1))).toBe(true);
    expect(h.hub.connected()).toEqual([MAC1]);
  });

  it('accepts a boot token only for the MAC it was issued to', async () => {
    const { hub: h } = await setup();
    const token = h.core.bootTokens.issue(mac(MAC1));
    expect((await client(h).handshake(MAC1, { kind: 'boot', token })).type).toBe('welcome');
    const other = client(h);
    expect(await other.handshake(MAC2, { kind: 'boot', token })).toMatchObject({ type: 'refused', reason: 'bad-token' });
    await waitFor('close', () => other.closed);
    expect(other.closed!.code).toBe(4003);
    expect(h.core.nodes.byMac(mac(MAC2))).toBeUndefined(); // a stranger leaves no trace
  });

  it('refuses a wrong enrollment token', async () => {
    const { hub: h } = await setup();
    const c = client(h);
    const r = await c.handshake(MAC1, { kind: 'enroll', token: 'wrong-token-wrong-token' });
    expect(r).toMatchObject({ type: 'refused', reason: 'bad-token' });
    expect(h.lines.some((l) => l.msg === 'agent refused' && l.reason === 'bad-token')).toBe(true);
  });

  it('holds a new machine under the approve policy and refuses it under deny', async () => {
    const { hub: h } = await setup({ cluster: { enrollment: 'approve', nodes: [] } });
    const r = await client(h).handshake(MAC1, { kind: 'enroll', token: h.enrollToken });
    expect(r).toMatchObject({ type: 'refused', reason: 'pending', retryAfterMs: 10_000 });
    h.core.nodes.approve('node1');
    expect((await client(h).handshake(MAC1, { kind: 'enroll', token: h.enrollToken })).type).toBe('welcome');
    await hub!.stop();
    hub = (await setup({ cluster: { enrollment: 'deny', nodes: [] } })).hub;
    expect(await client(hub).handshake(MAC1, { kind: 'enroll', token: hub.enrollToken })).toMatchObject({
      type: 'refused',
      reason: 'denied',
    });
  });

  it('closes a connection that never says hello', async () => {
    const { hub: h } = await setup({ hub: { helloTimeoutMs: 300 } });
    const c = client(h);
    await c.opened;
    await waitFor('close', () => c.closed, 3000);
  });

  it('lets a reconnecting agent replace its old connection without declaring the node lost', async () => {
    const { hub: h, engine } = await setup();
    const a = await joined(h);
    // The agent's reconnect presents the session credential its welcome derived (an
    // enrollment token cannot claim a connected MAC).
    const b = client(h);
    expect(
      (
        await b.handshake(
          MAC1,
          { kind: 'session', token: a.reconnect! },
          { key: parseDispatcherPublicKey(readFileSync(h.pubKeyFile, 'utf8')) },
        )
      ).type,
    ).toBe('welcome');
    await waitFor('old connection closed', () => a.closed);
    expect(a.closed!.code).toBe(4000);
    await sleep(100);
    expect(engine.lost).toEqual([]);
    expect(h.hub.isConnected(mac(MAC1))).toBe(true);
    b.send({ type: 'ready', n: 1 });
    engine.add([{}]);
    await b.waitFor('tasks');
  });
});

describe('agent hub: bad input', () => {
  it('answers garbage, text frames and unknown types with an error and a log line, and keeps serving', async () => {
    const { hub: h } = await setup();
    const c = client(h);
    await c.opened;
    c.sendRaw(Buffer.from([0x42, 1, 2, 3]));
    c.sendRaw('{"type":"hello"}', false);
    c.sendRaw(encodeFrame('{"type":"gimme"}'));
    c.sendRaw(encodeFrame('{"type":"ready","n":'));
    const errors = await c.waitFor('error', 4);
    expect(errors.map((e) => e.code)).toEqual(['malformed', 'malformed', 'unsupported', 'malformed']);
    expect(errors[0]!.message).toMatch(/unknown frame kind 0x42/);
    expect(errors[1]!.message).toMatch(/text frame/);
    expect(errors[2]).toMatchObject({ field: '/type' });
    expect(rejectLogs(h).length).toBeGreaterThanOrEqual(4);
    // Still serving: the same connection can still say hello, and HTTP answers.
    const key = parseDispatcherPublicKey(readFileSync(h.pubKeyFile, 'utf8'));
    expect((await c.handshake(MAC1, { kind: 'enroll', token: h.enrollToken }, { key })).type).toBe('welcome');
    expect((await fetch(`${h.url}/healthz`)).status).toBe(200);
  });

  it('refuses an invalid hello, naming the field', async () => {
    const { hub: h } = await setup();
    const c = client(h);
    await c.opened;
    c.sendRaw(encodeFrame(JSON.stringify({ type: 'hello', protocol: 1, mac: 'nope' })));
    const [err] = await c.waitFor('error');
    expect(err).toMatchObject({ code: 'malformed', about: 'hello' });
    const [ref] = await c.waitFor('refused');
    expect(ref).toMatchObject({ reason: 'malformed' });
    expect(ref!.message).toMatch(new RegExp(`agent protocol ${PROTOCOL_VERSION}`));
  });

  it('answers messages before hello with out-of-order', async () => {
    const { hub: h, engine } = await setup();
    const c = client(h);
    await c.opened;
    c.sendRaw(
      encodeFrame(
        encodeMessage({
          type: 'results',
          results: [wireResult(1)],
        }),
      ),
    );
    c.sendRaw(encodeFrame(encodeMessage({ type: 'ready', n: 1 })));
    const errors = await c.waitFor('error', 2);
    expect(errors.map((e) => [e.code, e.about])).toEqual([
      ['out-of-order', 'results'],
      ['out-of-order', 'ready'],
    ]);
    expect(engine.allResults).toEqual([]);
    expect(rejectLogs(h).some((l) => l.code === 'out-of-order')).toBe(true);
  });

  it('answers a second hello, a plain message after the handshake and a forged tag, and keeps the session', async () => {
    const { hub: h, engine } = await setup();
    const c = await joined(h);
    c.send({ type: 'hello', protocol: 1 } as never); // sealed, but hello is over
    c.sendRaw(encodeFrame(encodeMessage({ type: 'ready', n: 5 }))); // plain
    c.sendRaw(encodeFrame(encodeMessage({ type: 'ready', n: 5 }), () => Buffer.alloc(16))); // forged tag
    const errors = await c.waitFor('error', 3);
    expect(errors.map((e) => e.code)).toEqual(['malformed', 'unauthenticated', 'unauthenticated']);
    // None of the injected ready messages gave credit: no task is handed out.
    engine.add([{}, {}]);
    await sleep(100);
    expect(c.messages('tasks')).toEqual([]);
    c.send({ type: 'ready', n: 1 });
    expect((await c.waitFor('tasks'))[0]!.tasks).toHaveLength(1);
  });

  it('answers an oversize message politely, and closes the socket beyond the hard limit', async () => {
    const { hub: h } = await setup({ hub: { maxMessageBytes: 64 * 1024 } });
    const c = await joined(h);
    c.sendRaw(Buffer.alloc(100 * 1024, 0x20));
    const [err] = await c.waitFor('error');
    expect(err).toMatchObject({ code: 'oversize' });
    expect(err!.message).toMatch(/102400 bytes is larger than the limit of 65536/);
    c.send({ type: 'heartbeat', ts: 1, load1: null, memUsedMiB: null, memTotalMiB: null, uptimeS: null, running: [] }); // session intact
    await sleep(50);
    expect(c.messages('error')).toHaveLength(1);
    c.sendRaw(Buffer.alloc(64 * 1024 + 1024 * 1024 + 10, 0x20));
    await waitFor('close', () => c.closed);
    expect(c.closed!.code).toBe(1009);
    await waitFor('log', () => h.lines.find((l) => l.msg === 'agent connection error' && l.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH'));
    expect((await fetch(`${h.url}/healthz`)).status).toBe(200);
  });

  it('rate-limits its log lines and closes a connection that only sends garbage', async () => {
    const { hub: h } = await setup();
    const c = client(h);
    await c.opened;
    for (let i = 0; i < 150; i++) c.sendRaw(Buffer.from([0x99]));
    await waitFor('close', () => c.closed);
    expect(c.closed!.code).toBe(4002);
    expect(c.messages('error').length).toBe(100);
    expect(rejectLogs(h).length).toBe(10);
  });

  it('tells a plain GET what the endpoint is', async () => {
    const { hub: h } = await setup();
    const res = await fetch(`${h.url}/api/v1/agent`);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: 'DSP_ERR_BAD_REQUEST' } });
  });
});

describe('agent hub: tasks, results and liveness', () => {
  it('hands out tasks against credit and feeds a waiting agent when tasks arrive', async () => {
    const { hub: h, engine } = await setup();
    const c = await joined(h);
    engine.add([{}, {}, {}, {}, {}]);
    c.send({ type: 'ready', n: 3 });
    const [batch] = await c.waitFor('tasks');
    expect(batch!.tasks.map((t) => t.taskId)).toEqual([1, 2, 3]);
    expect(h.core.nodes.byMac(mac(MAC1))!.state).toBe('busy');
    c.send({ type: 'ready', n: 4 });
    await c.waitFor('tasks', 2);
    expect(c.messages('tasks')[1]!.tasks.map((t) => t.taskId)).toEqual([4, 5]);
    await waitFor('waiting', () => h.hub.stats.waiting === 1);
    expect(h.hub.stats).toMatchObject({ connected: 1, waiting: 1, tasksSent: 5 });
    engine.add([{}, {}, {}]); // 2 credits left: fed at once
    await c.waitFor('tasks', 3);
    expect(c.messages('tasks')[2]!.tasks.map((t) => t.taskId)).toEqual([6, 7]);
    expect(h.hub.stats.waiting).toBe(0);
    c.close();
    await waitFor('gone', () => h.hub.stats.connected === 0);
  });

  it('acknowledges results only once the engine has made them durable', async () => {
    const { hub: h, engine } = await setup();
    engine.commitDelayMs = 400;
    const c = await joined(h);
    engine.add([{}]);
    c.send({ type: 'ready', n: 1 });
    const [t] = (await c.waitFor('tasks'))[0]!.tasks;
    const sentAt = Date.now();
    c.send({
      type: 'results',
      results: [
        {
          taskId: t!.taskId,
          attempt: 1,
          exitCode: 0,
          signal: null,
          timedOut: false,
          error: null,
          startedAt: 1,
          durationMs: 1,
          maxRssKiB: 5,
          stdout: { gz: '' },
          stderr: 'x'.repeat(10),
          stdoutTruncated: false,
          stderrTruncated: false,
          outputsTarGzB64: null,
        },
      ],
    });
    const [ack] = await c.waitFor('ack');
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(380);
    expect(ack!.refs).toEqual([{ taskId: t!.taskId, attempt: 1 }]);
    expect(engine.results.get(t!.taskId)).toMatchObject({
      stdout: '',
      stdoutTruncated: true,
      error: expect.stringMatching(/stdout could not be decompressed/),
    });
  });

  it('takes a ready riding on a results message', async () => {
    const { hub: h, engine } = await setup();
    const c = await joined(h);
    engine.add([{}, {}, {}]);
    c.send({ type: 'ready', n: 1 });
    const [t] = (await c.waitFor('tasks'))[0]!.tasks;
    c.send({
      type: 'results',
      ready: 2,
      results: [wireResult(t!.taskId)],
    });
    await c.waitFor('ack');
    const batches = await c.waitFor('tasks', 2);
    expect(batches[1]!.tasks.map((x) => x.taskId)).toEqual([2, 3]);
  });

  it('does not acknowledge results the engine could not record, and says so', async () => {
    const { hub: h, engine } = await setup();
    engine.failCommits = true;
    const c = await joined(h);
    engine.add([{}]);
    c.send({ type: 'ready', n: 1 });
    const [t] = (await c.waitFor('tasks'))[0]!.tasks;
    c.send({
      type: 'results',
      results: [wireResult(t!.taskId)],
    });
    const [err] = await c.waitFor('error');
    expect(err).toMatchObject({ code: 'unavailable', about: 'results' });
    await sleep(50);
    expect(c.messages('ack')).toEqual([]);
  });

  it('passes progress to the engine and heartbeats to the live status', async () => {
    const { hub: h, engine } = await setup();
    const c = await joined(h);
    c.send({
      type: 'heartbeat',
      ts: 1,
      load1: 1.5,
      memUsedMiB: 300,
      memTotalMiB: 8192,
      uptimeS: 99,
      running: [{ taskId: 4, attempt: 1, startedAt: 5, progress: null }],
    });
    c.send({ type: 'progress', items: [{ taskId: 4, attempt: 1, fraction: 0.42 }] });
    await waitFor('progress', () => engine.progressLog.length === 1);
    expect(engine.progressLog[0]).toEqual({ mac: MAC1, ref: { taskId: 4, attempt: 1 }, fraction: 0.42 });
    expect(h.hub.liveStatus(mac(MAC1))).toMatchObject({
      load1: 1.5,
      memUsedMiB: 300,
      uptimeS: 99,
      slots: 2,
      running: [{ taskId: 4, progress: 0.42 }],
    });
    expect(h.hub.liveStatus(mac(MAC2))).toBeUndefined();
  });

  it('declares a silent node lost within the missed heartbeats and requeues its tasks', async () => {
    const { hub: h, engine } = await setup({ heartbeatSeconds: 0.3 });
    const c = await joined(h);
    engine.add([{}]);
    c.send({ type: 'ready', n: 1 });
    await c.waitFor('tasks');
    const lastSent = Date.now();
    await waitFor('lost', () => engine.lost.length === 1, 5000);
    const after = engine.lost[0]!.at - lastSent;
    expect(after).toBeGreaterThan(600);
    expect(after).toBeLessThanOrEqual(900 + 60);
    expect(engine.queue.map((t) => [t.taskId, t.attempt])).toEqual([[1, 2]]);
    expect(h.core.nodes.byMac(mac(MAC1))!.state).toBe('lost');
    await waitFor('close', () => c.closed);
    expect(c.messages('heartbeat').length).toBeGreaterThanOrEqual(2); // the dispatcher's own heartbeats
  });

  it('keeps a node that talks, and declares one lost at once when its connection closes', async () => {
    const { hub: h, engine } = await setup({ heartbeatSeconds: 0.3 });
    const c = await joined(h);
    const beat = setInterval(
      () => c.send({ type: 'heartbeat', ts: Date.now(), load1: null, memUsedMiB: null, memTotalMiB: null, uptimeS: null, running: [] }),
      300,
    );
    await sleep(1500);
    clearInterval(beat);
    expect(engine.lost).toEqual([]);
    const t0 = Date.now();
    c.close();
    await waitFor('lost', () => engine.lost.length === 1);
    expect(engine.lost[0]!.at - t0).toBeLessThan(200);
    expect(h.core.nodes.byMac(mac(MAC1))!.state).toBe('lost');
  });

  it('re-adopts the tasks the engine still leases to a reconnecting node and cancels the others', async () => {
    const { hub: h, engine } = await setup();
    engine.add([{}, {}]);
    engine.takeTasks({ mac: mac(MAC1), name: 'node1', labels: [], cores: 1, memoryMiB: 1 }, 1); // task 1 leased to MAC1
    const c = await joined(h, MAC1, {
      running: [
        { taskId: 1, attempt: 1 },
        { taskId: 2, attempt: 1 },
      ],
      undelivered: [{ taskId: 9, attempt: 1 }],
    });
    const [cancel] = await c.waitFor('cancel');
    expect(cancel).toMatchObject({ refs: [{ taskId: 2, attempt: 1 }], report: false });
    expect(h.core.nodes.byMac(mac(MAC1))!.state).toBe('busy');
  });

  it('stops feeding a draining node and resumes when the drain ends', async () => {
    const { hub: h, engine } = await setup();
    const c = await joined(h);
    h.hub.setDraining(mac(MAC1), true);
    expect(h.hub.isDraining(mac(MAC1))).toBe(true);
    expect(h.core.nodes.byMac(mac(MAC1))!.state).toBe('draining');
    engine.add([{}]);
    c.send({ type: 'ready', n: 1 });
    await sleep(150);
    expect(c.messages('tasks')).toEqual([]);
    h.hub.setDraining(mac(MAC1), false);
    await c.waitFor('tasks');
  });

  it("passes the engine's cancels to the node", async () => {
    const { hub: h, engine } = await setup();
    const c = await joined(h);
    engine.cancel(mac(MAC1), { taskId: 3, attempt: 2 }, 'the other copy won');
    const [m] = await c.waitFor('cancel');
    expect(m).toEqual({ type: 'cancel', refs: [{ taskId: 3, attempt: 2 }], reason: 'the other copy won', report: false });
  });

  it('closes agent connections when the dispatcher stops, without declaring nodes lost', async () => {
    const { hub: h, engine } = await setup();
    const c = await joined(h);
    await h.stop();
    hub = undefined;
    await waitFor('close', () => c.closed);
    expect(c.closed!.code).toBe(1001);
    expect(engine.lost).toEqual([]);
  });
});

describe('agent hub: node control', () => {
  it('sends commands and resolves on acknowledgement or completion, streaming exec output', async () => {
    const { hub: h } = await setup();
    const c = await joined(h);
    c.ws.on('message', () => {
      for (const m of c.messages('control')) {
        if ((m as { answered?: boolean }).answered) continue;
        (m as { answered?: boolean }).answered = true;
        c.send({
          type: 'control-ack',
          id: m.id,
          ok: m.command.kind !== 'poweroff',
          ...(m.command.kind === 'poweroff' ? { error: 'needs --allow-power' } : {}),
        });
        if (m.command.kind === 'exec') {
          c.send({ type: 'control-output', id: m.id, stream: 'stdout', data: 'hi\n' });
          c.send({ type: 'control-done', id: m.id, ok: true, result: { exitCode: 0, signal: null, durationMs: 2 } });
        }
        if (m.command.kind === 'inspect') c.send({ type: 'control-done', id: m.id, ok: true, result: { cpu: 'x' } });
      }
    });
    const reboot = await h.hub.send(mac(MAC1), { kind: 'reboot' });
    expect(reboot.ok).toBe(true);
    expect(reboot.ackMs).toBeGreaterThan(0);
    expect(await h.hub.send(mac(MAC1), { kind: 'poweroff' })).toMatchObject({ ok: false, error: 'needs --allow-power' });
    const out: string[] = [];
    expect(await h.hub.send(mac(MAC1), { kind: 'exec', command: 'echo hi' }, { onOutput: (s, d) => out.push(`${s}:${d}`) })).toMatchObject({
      ok: true,
      result: { exitCode: 0 },
    });
    expect(out).toEqual(['stdout:hi\n']);
    expect(await h.hub.send(mac(MAC1), { kind: 'inspect' })).toMatchObject({ ok: true, result: { cpu: 'x' } });
    // The node acknowledged a reboot: when its connection drops, it is rebooting, not lost.
    c.close();
    await waitFor('state', () => h.core.nodes.byMac(mac(MAC1))!.state === 'rebooting');
  });

  it('rejects commands to an absent node, and times out a silent one', async () => {
    const { hub: h } = await setup();
    await expect(h.hub.send(mac(MAC2), { kind: 'inspect' })).rejects.toMatchObject({ code: 'DSP_ERR_NODE_OFFLINE' });
    await joined(h);
    const err = await h.hub.send(mac(MAC1), { kind: 'inspect' }, { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DispatcherError);
    expect(err).toMatchObject({ code: 'DSP_ERR_TIMEOUT' });
  });
});
