/**
 * The operator API over real HTTP: bad input gets a 4xx with a clear message and changes
 * nothing; OpenAPI documents every route (also the other areas'); /metrics is valid
 * Prometheus text; event streams resume where they left off; the live feed pushes changes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDispatcher, testMac, type TestDispatcher } from '../../lab/in-process-dispatcher.js';
import { FakeControl } from '../../lab/fake-control.js';
import { SseParser, type SseMessage } from '../../../dispatcher/src/api/sse.js';
import { waitUntil } from '../../lab/run-ctl.js';

let d: TestDispatcher;
let control: FakeControl;
let auth: Record<string, string>;

beforeAll(async () => {
  d = await startTestDispatcher();
  control = new FakeControl(d.core.nodes);
  d.operator.attachControl(control);
  for (let i = 1; i <= 3; i++) control.connect(testMac(i));
  auth = { authorization: `Bearer ${d.token}` };
}, 60_000);

afterAll(async () => {
  await d?.stop();
});

async function call(method: string, path: string, opts: { headers?: Record<string, string>; body?: string } = {}) {
  const r = await fetch(d.url + path, { method, headers: opts.headers ?? {}, body: opts.body });
  const text = await r.text();
  let json: { error?: { code: string; message: string; hint?: string } } & Record<string, unknown> = {};
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, json, text, headers: r.headers };
}

const snapshot = () => JSON.stringify(d.core.nodes.list().map((n) => [n.name, n.state, n.enrollment, n.labels, n.firstStage]));

describe('bad input changes nothing and gets a clear 4xx', () => {
  const json = { 'content-type': 'application/json' };
  it.each([
    ['malformed JSON', 'POST', '/api/v1/nodes/node1/drain', { ...json }, '{"oops', 400, 'DSP_ERR_BAD_REQUEST'],
    [
      'an oversize body',
      'POST',
      '/api/v1/nodes/node1/drain',
      { ...json },
      JSON.stringify({ pad: 'x'.repeat(70_000) }),
      413,
      'DSP_ERR_PAYLOAD_TOO_LARGE',
    ],
    [
      'an oversize exec',
      'POST',
      '/api/v1/nodes/node1/exec',
      { ...json },
      JSON.stringify({ shell: 'x'.repeat(1_100_000) }),
      413,
      'DSP_ERR_PAYLOAD_TOO_LARGE',
    ],
    ['an unknown node', 'POST', '/api/v1/nodes/node9/reboot', {}, undefined, 404, 'DSP_ERR_NODE_NOT_FOUND'],
    ['an unknown node (settings)', 'PATCH', '/api/v1/nodes/node9', { ...json }, '{"labels":["a"]}', 404, 'DSP_ERR_NODE_NOT_FOUND'],
    ['a node in the wrong state', 'POST', '/api/v1/nodes/node1/undrain', {}, undefined, 409, 'DSP_ERR_NODE_STATE'],
    ['approving an admitted node', 'POST', '/api/v1/nodes/node2/approve', {}, undefined, 409, 'DSP_ERR_NODE_STATE'],
    [
      'exec with both argv and shell',
      'POST',
      '/api/v1/nodes/node1/exec',
      { ...json },
      '{"argv":["a"],"shell":"b"}',
      400,
      'DSP_ERR_BAD_REQUEST',
    ],
    [
      'exec with an unknown field',
      'POST',
      '/api/v1/nodes/node1/exec',
      { ...json },
      '{"argv":["a"],"user":"root"}',
      400,
      'DSP_ERR_BAD_REQUEST',
    ],
    ['a bad first stage', 'PATCH', '/api/v1/nodes/node1', { ...json }, '{"firstStage":"grub.efi"}', 400, 'DSP_ERR_BAD_REQUEST'],
    ['a bad label', 'PATCH', '/api/v1/nodes/node1', { ...json }, '{"labels":["has space"]}', 400, 'DSP_ERR_BAD_REQUEST'],
    [
      'a rolling reboot with a batch of 0',
      'POST',
      '/api/v1/operations/rolling-reboot',
      { ...json },
      '{"batch":0}',
      400,
      'DSP_ERR_BAD_REQUEST',
    ],
    [
      'a rolling reboot of an unknown node',
      'POST',
      '/api/v1/operations/rolling-reboot',
      { ...json },
      '{"nodes":["node1","ghost"]}',
      404,
      'DSP_ERR_NODE_NOT_FOUND',
    ],
    ['an unknown operation', 'GET', '/api/v1/operations/999', {}, undefined, 404, 'DSP_ERR_NOT_FOUND'],
    ['a non-numeric operation id', 'GET', '/api/v1/operations/abc', {}, undefined, 400, 'DSP_ERR_BAD_REQUEST'],
    ['an unknown state filter', 'GET', '/api/v1/nodes?state=sleepy', {}, undefined, 400, 'DSP_ERR_BAD_REQUEST'],
    ['an unknown route', 'GET', '/api/v1/nope', {}, undefined, 404, 'DSP_ERR_NOT_FOUND'],
  ])('%s', async (_what, method, path, headers, body, status, code) => {
    const before = snapshot();
    const sent = control.sent.length;
    const r = await call(method, path, { headers: { ...auth, ...headers }, ...(body !== undefined ? { body } : {}) });
    expect(r.status).toBe(status);
    expect(r.json.error?.code).toBe(code);
    expect(r.json.error?.message.length).toBeGreaterThan(5);
    expect(snapshot()).toBe(before);
    expect(control.sent.length).toBe(sent);
  });

  it('names the offending field', async () => {
    const typo = await call('PATCH', '/api/v1/nodes/node1', {
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{"label":["gpu"]}',
    });
    expect(typo.json.error).toEqual({ code: 'DSP_ERR_BAD_REQUEST', message: 'body.label: unknown field' });
    const batch = await call('POST', '/api/v1/operations/rolling-reboot', {
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{"batch":"two"}',
    });
    expect(batch.json.error?.message).toMatch(/^body\.batch: expected integer/);
    const limit = await call('GET', '/api/v1/events?limit=0');
    expect(limit.json.error?.message).toMatch(/^query\.limit: expected integer to be greater or equal to 1/);
    expect((await call('GET', '/api/v1/events?limit=2')).status).toBe(200);
  });

  it('names the unknown node in the message', async () => {
    const r = await call('GET', '/api/v1/nodes/node9');
    expect(r.json.error).toEqual({
      code: 'DSP_ERR_NODE_NOT_FOUND',
      message: 'no node named "node9"',
      hint: expect.stringContaining('dispatcherctl nodes'),
    });
  });

  it.each([
    ['no token', {}],
    ['a wrong bearer token', { authorization: 'Bearer wrong-token' }],
    ['a wrong cookie', { cookie: 'lc_admin=wrong-token' }],
    ['a token of the right length but wrong', { authorization: `Bearer ${'x'.repeat(32)}` }],
  ])('refuses an action with %s (401) and changes nothing', async (_what, headers) => {
    const before = snapshot();
    for (const [m, p] of [
      ['POST', '/api/v1/nodes/node1/reboot'],
      ['POST', '/api/v1/nodes/node1/drain'],
      ['PATCH', '/api/v1/nodes/node1'],
      ['POST', '/api/v1/operations/rolling-reboot'],
    ] as const) {
      const r = await call(m, p, {
        headers: { ...headers, 'content-type': 'application/json' },
        body: m === 'PATCH' ? '{"labels":["x"]}' : '{}',
      });
      expect(r.status, `${m} ${p}`).toBe(401);
      expect(r.json.error?.code).toBe('DSP_ERR_UNAUTHORIZED');
    }
    expect(snapshot()).toBe(before);
    expect(control.sent.filter((s) => s.cmd.kind === 'reboot')).toHaveLength(0);
  });

  it('accepts the log-in cookie for actions', async () => {
    const login = await fetch(`${d.url}/login?token=${encodeURIComponent(d.token)}`, { redirect: 'manual' });
    expect(login.status).toBe(303);
    expect(login.headers.get('location')).toBe('/');
    const cookie = login.headers.get('set-cookie')!;
    expect(cookie).toMatch(/^lc_admin=[^;]+; Path=\/; HttpOnly; SameSite=Strict/);
    const c = cookie.split(';')[0]!;
    expect((await call('GET', '/api/v1/session', { headers: { cookie: c } })).json).toEqual({ admin: true });
    expect((await call('GET', '/api/v1/session')).json).toEqual({ admin: false });
    // As the page sends it: the browser names the page's origin (requireAdmin needs it with the cookie).
    const r = await call('PATCH', '/api/v1/nodes/node3', {
      headers: { cookie: c, origin: d.url, 'content-type': 'application/json' },
      body: '{"labels":["gpu","bigmem"],"firstStage":"snponly.efi"}',
    });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ name: 'node3', labels: ['gpu', 'bigmem'], firstStage: 'snponly.efi' });
    expect(d.core.events.list({ kind: 'node.settings' }).at(-1)!.message).toBe('node3 settings: labels=gpu,bigmem firstStage=snponly.efi');
  });
});

describe('OpenAPI', () => {
  it("documents every route with its parameters and answers, the other areas' too", async () => {
    const r = await call('GET', '/api/v1/openapi.json');
    expect(r.status).toBe(200);
    const doc = r.json as unknown as {
      openapi: string;
      paths: Record<
        string,
        Record<
          string,
          { parameters?: { name: string; in: string }[]; responses: Record<string, unknown>; security?: unknown; requestBody?: unknown }
        >
      >;
    };
    expect(doc.openapi).toBe('3.1.0');
    const expected: [string, string][] = [
      ['/api/v1/status', 'get'],
      ['/api/v1/nodes', 'get'],
      ['/api/v1/nodes/{node}', 'get'],
      ['/api/v1/nodes/{node}', 'patch'],
      ['/api/v1/nodes/{node}/reboot', 'post'],
      ['/api/v1/nodes/{node}/poweroff', 'post'],
      ['/api/v1/nodes/{node}/drain', 'post'],
      ['/api/v1/nodes/{node}/undrain', 'post'],
      ['/api/v1/nodes/{node}/approve', 'post'],
      ['/api/v1/nodes/{node}/wake', 'post'],
      ['/api/v1/nodes/{node}/inspect', 'get'],
      ['/api/v1/nodes/{node}/exec', 'post'],
      ['/api/v1/events', 'get'],
      ['/api/v1/events/stream', 'get'],
      ['/api/v1/operations/rolling-reboot', 'post'],
      ['/api/v1/operations/{id}', 'get'],
      ['/api/v1/operations/{id}/cancel', 'post'],
      ['/api/v1/stream', 'get'],
      ['/metrics', 'get'],
      ['/api/v1/session', 'get'],
      ['/api/v1/boots', 'get'], // the boot service's, registered after the operator surface
    ];
    for (const [p, m] of expected) expect(doc.paths[p]?.[m], `${m} ${p}`).toBeDefined();
    expect(doc.paths['/api/v1/nodes/{node}/reboot']!.post!.parameters).toEqual([expect.objectContaining({ name: 'node', in: 'path' })]);
    expect(doc.paths['/api/v1/nodes/{node}/reboot']!.post!.security).toBeDefined();
    expect(Object.keys(doc.paths['/api/v1/nodes/{node}/reboot']!.post!.responses)).toEqual(
      expect.arrayContaining(['200', '401', '404', '409']),
    );
    expect(doc.paths['/api/v1/nodes/{node}/exec']!.post!.requestBody).toBeDefined();
    expect(doc.paths['/api/v1/events']!.get!.parameters!.map((x) => x.name)).toEqual(['node', 'kind', 'after', 'limit']);
    for (const [p, ops] of Object.entries(doc.paths)) {
      expect(p).not.toMatch(/:/);
      for (const op of Object.values(ops)) expect(Object.keys(op.responses).length, p).toBeGreaterThan(0);
    }
  });
});

describe('/metrics', () => {
  it('is Prometheus text with nodes by state, store figures and node commands', async () => {
    await call('POST', '/api/v1/nodes/node2/reboot', { headers: auth });
    await waitUntil('node2 back', () => control.isConnected(testMac(2)) && d.core.nodes.byName('node2')!.state === 'ready');
    const r = await call('GET', '/metrics');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const lines = r.text.trimEnd().split('\n');
    for (const l of lines)
      expect(l).toMatch(
        /^(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?[0-9.e+-]+|.* (NaN|\+Inf|-Inf))$/,
      );
    expect(r.text).toContain('lilcluster_nodes{state="ready"} 3');
    expect(r.text).toContain('lilcluster_nodes_connected 3');
    expect(r.text).toMatch(/^lilcluster_store_commits_total [1-9]\d*$/m);
    expect(r.text).toMatch(/^lilcluster_store_commit_seconds_total [\d.e-]+$/m);
    expect(r.text).toContain('lilcluster_node_commands_total{command="reboot",outcome="ok"} 1');
    expect(r.text).toMatch(/^lilcluster_node_command_ack_seconds_count\{command="reboot"\} 1$/m);
    expect(r.text).toMatch(/^process_resident_memory_bytes \d+$/m);
  });
});

async function openStream(path: string, headers: Record<string, string> = {}) {
  const ac = new AbortController();
  const res = await fetch(d.url + path, { headers, signal: ac.signal });
  expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
  const got: SseMessage[] = [];
  const parser = new SseParser();
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  void (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        got.push(...parser.push(decoder.decode(value, { stream: true })));
      }
    } catch {
      /* aborted */
    }
  })();
  return { got, close: () => ac.abort() };
}

describe('event streams', () => {
  it('replays what was missed after Last-Event-ID, then follows', async () => {
    const a = d.core.events.append({ kind: 'test.a', message: 'first' });
    d.core.events.append({ kind: 'test.a', message: 'second' });
    const s = await openStream('/api/v1/events/stream?kind=test.', { 'last-event-id': String(a.id) });
    await waitUntil('the replay', () => s.got.length >= 1);
    d.core.events.append({ kind: 'test.a', message: 'third' });
    d.core.events.append({ kind: 'other', message: 'filtered out' });
    await waitUntil('the live one', () => s.got.length >= 2);
    await new Promise((r) => setTimeout(r, 100));
    s.close();
    expect(s.got.map((m) => [m.event, (JSON.parse(m.data) as { message: string }).message])).toEqual([
      ['event', 'second'],
      ['event', 'third'],
    ]);
    expect(Number(s.got[1]!.id)).toBeGreaterThan(a.id);
  });

  it('the page feed starts with a snapshot and pushes a state change', async () => {
    const s = await openStream('/api/v1/stream');
    await waitUntil('the snapshot', () => s.got.length >= 1);
    expect(s.got[0]!.event).toBe('snapshot');
    expect((JSON.parse(s.got[0]!.data) as { nodes: unknown[] }).nodes).toHaveLength(3);
    d.core.nodes.setState(testMac(1), 'lost', 'test', { by: 'operator' });
    const u = await waitUntil('the update', () =>
      s.got.find(
        (m) =>
          m.event === 'update' &&
          (JSON.parse(m.data) as { nodes: { name: string; state: string }[] }).nodes.some((n) => n.name === 'node1' && n.state === 'lost'),
      ),
    );
    expect((JSON.parse(u.data) as { status?: { nodes: { byState: Record<string, number> } } }).status?.nodes.byState.lost).toBe(1);
    s.close();
    d.core.nodes.setState(testMac(1), 'ready', 'test', { by: 'operator' });
  });
});

describe('enrollment: deny', () => {
  it('lists the refused machines and counts them in the status', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'lc-op-deny-'));
    writeFileSync(join(dir, 'cluster.yaml'), 'enrollment: deny\n');
    const dd = await startTestDispatcher({ clusterFile: join(dir, 'cluster.yaml') });
    try {
      for (let i = 0; i < 3; i++) await (await fetch(`${dd.url}/boot.ipxe?mac=${testMac(9)}`)).text();
      const denied = (await (await fetch(`${dd.url}/api/v1/denied`)).json()) as { machines: { mac: string; count: number }[] };
      expect(denied.machines).toEqual([expect.objectContaining({ mac: testMac(9), count: 3 })]);
      const s = (await (await fetch(`${dd.url}/api/v1/status`)).json()) as { nodes: { total: number; denied: number } };
      expect(s.nodes).toMatchObject({ total: 0, denied: 1 });
    } finally {
      await dd.stop();
    }
  });
});
