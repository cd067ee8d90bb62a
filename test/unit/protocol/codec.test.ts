import { describe, expect, expectTypeOf, it } from 'vitest';
import fc from 'fast-check';
import {
  decodeAgentMessage,
  decodeDispatcherMessage,
  decodeFrame,
  encodeFrame,
  encodeMessage,
  FRAME_PLAIN,
  FRAME_SEALED,
  ProtocolError,
  TAG_BYTES,
} from '../../../dispatcher/src/protocol/codec.js';
import {
  PROTOCOL_VERSION,
  type AgentMessage,
  type DispatcherMessage,
  type TaskAssignment as WireAssignment,
  type ControlCommand as WireControl,
} from '../../../dispatcher/src/protocol/messages.js';
import type { TaskAssignment, TaskResult } from '../../../dispatcher/src/protocol/messages.js';
import type { ControlCommand } from '../../../dispatcher/src/agents/control-contract.js';
import { FAKE_INVENTORY } from './fixtures.js';

const KEY = Buffer.alloc(32, 7).toString('base64');
const SIG = Buffer.alloc(64, 9).toString('base64');

const result: TaskResult = {
  taskId: 7,
  attempt: 1,
  exitCode: 0,
  signal: null,
  timedOut: false,
  error: null,
  startedAt: 1_700_000_000_000,
  durationMs: 12,
  maxRssKiB: 2048,
  stdout: 'ok\n',
  stderr: '',
  stdoutTruncated: false,
  stderrTruncated: false,
  outputsTarGzB64: null,
};
const assignment: TaskAssignment = {
  taskId: 7,
  jobId: 3,
  attempt: 1,
  command: ['echo', 'hi'],
  env: { X: '1' },
  cwd: null,
  stdinB64: null,
  inputsPath: null,
  inputsSha256: null,
  timeoutMs: 1000,
};

const agentMessages: AgentMessage[] = [
  {
    type: 'hello',
    protocol: PROTOCOL_VERSION,
    agentVersion: '1.0',
    mac: '52:54:00:12:34:56',
    auth: { kind: 'boot', token: 'tok' },
    nonce: KEY,
    ephemeralKey: KEY,
    slots: 4,
    inventory: FAKE_INVENTORY,
    running: [{ taskId: 1, attempt: 2, startedAt: 5, progress: 0.5 }],
    undelivered: [{ taskId: 3, attempt: 1 }],
  },
  { type: 'heartbeat', ts: 1, load1: 0.5, memUsedMiB: 100, memTotalMiB: 1000, uptimeS: 10, running: [] },
  { type: 'ready', n: 8 },
  { type: 'progress', items: [{ taskId: 1, attempt: 1, fraction: 0.42 }] },
  {
    type: 'results',
    results: [result, { ...result, taskId: 8, stdout: { gz: 'H4sIAAAAAAAAA8vPBwCrpJ1kAQAAAA==' }, exitCode: null, signal: 'SIGKILL' }],
  },
  { type: 'results', results: [result], ready: 2 },
  { type: 'control-ack', id: 1, ok: false, error: 'nope' },
  { type: 'control-output', id: 1, stream: 'stderr', data: 'x' },
  { type: 'control-done', id: 1, ok: true, result: { exitCode: 0 } },
  { type: 'error', code: 'malformed', message: 'bad', field: '/x', about: 'tasks' },
];
const dispatcherMessages: DispatcherMessage[] = [
  {
    type: 'welcome',
    protocol: 1,
    dispatcherVersion: '1',
    nodeName: 'node1',
    ephemeralKey: KEY,
    signature: SIG,
    heartbeatMs: 5000,
    missedHeartbeats: 3,
    maxMessageBytes: 1 << 20,
  },
  { type: 'refused', reason: 'pending', message: 'wait', retryAfterMs: 10_000 },
  { type: 'heartbeat', ts: 5 },
  {
    type: 'tasks',
    tasks: [
      assignment,
      { ...assignment, taskId: 8, command: 'echo $X', stdinB64: 'aGk=', cwd: 'sub', inputsPath: '/api/v1/tasks/8/inputs' },
    ],
  },
  { type: 'ack', refs: [{ taskId: 7, attempt: 1 }] },
  { type: 'cancel', refs: [{ taskId: 7, attempt: 2 }], reason: 'other copy won', report: false },
  { type: 'control', id: 3, command: { kind: 'exec', command: ['uname', '-a'], timeoutMs: 1000 } },
  { type: 'control', id: 4, command: { kind: 'cancel', taskId: 7 } },
  { type: 'error', code: 'oversize', message: 'too big' },
];

describe('protocol codec', () => {
  it('keeps the wire types in step with the engine and control contracts', () => {
    expectTypeOf<WireAssignment>().toEqualTypeOf<TaskAssignment>();
    expectTypeOf<WireControl>().toEqualTypeOf<ControlCommand>();
  });

  it.each(agentMessages.map((m, i) => [`${m.type}#${i}`, m] as const))('round-trips the agent message %s through a frame', (_t, msg) => {
    const frame = encodeFrame(encodeMessage(msg));
    const f = decodeFrame(frame);
    expect(f).not.toBeInstanceOf(ProtocolError);
    expect(decodeAgentMessage((f as { body: Buffer }).body)).toEqual(msg);
  });

  it.each(dispatcherMessages.map((m, i) => [`${m.type}#${i}`, m] as const))('round-trips the dispatcher message %s', (_t, msg) => {
    expect(decodeDispatcherMessage(encodeMessage(msg))).toEqual(msg);
  });

  const bad: [string, unknown, string, string][] = [
    ['a non-object', [1, 2], 'malformed', ''],
    ['a missing type', { n: 1 }, 'malformed', '/type'],
    ['an unknown type', { type: 'gimme' }, 'unsupported', '/type'],
    ['a dispatcher-only type from an agent', { type: 'tasks', tasks: [] }, 'unsupported', '/type'],
    ['ready with n = 0', { type: 'ready', n: 0 }, 'malformed', '/n'],
    ['ready with a string n', { type: 'ready', n: '3' }, 'malformed', '/n'],
    ['an unknown field', { type: 'ready', n: 1, extra: true }, 'malformed', '/extra'],
    ['a negative exit code type', { type: 'results', results: [{ ...result, exitCode: 1.5 }] }, 'malformed', '/results/0/exitCode'],
    [
      'a progress fraction above 1',
      { type: 'progress', items: [{ taskId: 1, attempt: 1, fraction: 1.5 }] },
      'malformed',
      '/items/0/fraction',
    ],
    ['an empty results batch', { type: 'results', results: [] }, 'malformed', '/results'],
    ['a hello with a bad MAC', { ...agentMessages[0], mac: 'zz:54:00:12:34:56' }, 'malformed', '/mac'],
    ['a hello with a short nonce', { ...agentMessages[0], nonce: 'AAAA' }, 'malformed', '/nonce'],
    ['attempt 0', { type: 'results', results: [{ ...result, attempt: 0 }] }, 'malformed', '/results/0/attempt'],
  ];
  it.each(bad)('refuses %s, naming the field', (_what, value, code, field) => {
    const r = decodeAgentMessage(JSON.stringify(value));
    expect(r).toBeInstanceOf(ProtocolError);
    expect((r as ProtocolError).code).toBe(code);
    expect((r as ProtocolError).field).toBe(field);
    if (field) expect((r as ProtocolError).message).toContain(field);
  });

  it('refuses text that is not JSON', () => {
    const r = decodeAgentMessage('{"type": "ready", ');
    expect(r).toMatchObject({ code: 'malformed' });
    expect((r as ProtocolError).message).toMatch(/not JSON/);
  });

  it.each([
    ['an empty frame', Buffer.alloc(0), 'malformed', /empty/],
    ['an unknown frame kind', Buffer.from([7, 0x7b, 0x7d]), 'malformed', /unknown frame kind 0x07/],
    ['a sealed frame shorter than its tag', Buffer.from([FRAME_SEALED, 1, 2, 3]), 'malformed', /shorter/],
    ['an oversize frame', Buffer.alloc(2000, 0x20), 'oversize', /2000 bytes .* limit of 1000/],
  ])('refuses %s', (_w, frame, code, re) => {
    const r = decodeFrame(frame, 1000);
    expect(r).toBeInstanceOf(ProtocolError);
    expect(r).toMatchObject({ code });
    expect((r as ProtocolError).message).toMatch(re);
  });

  it('frames bodies with the tag the sealer computes', () => {
    const frame = encodeFrame('{"type":"ready","n":1}', () => Buffer.alloc(32, 0xab));
    expect(frame[0]).toBe(FRAME_SEALED);
    expect(frame.subarray(1, 1 + TAG_BYTES)).toEqual(Buffer.alloc(TAG_BYTES, 0xab));
    expect(frame.subarray(1 + TAG_BYTES).toString()).toBe('{"type":"ready","n":1}');
    expect(encodeFrame('{}')[0]).toBe(FRAME_PLAIN);
  });

  const decodeAny = (bytes: Uint8Array) => {
    const f = decodeFrame(Buffer.from(bytes));
    if (f instanceof ProtocolError) return f;
    return [decodeAgentMessage(f.body), decodeDispatcherMessage(f.body)];
  };
  const isMessageOrError = (r: unknown) =>
    r instanceof ProtocolError || (typeof r === 'object' && r !== null && typeof (r as { type?: unknown }).type === 'string');

  it('fuzz: random bytes decode to a message or a ProtocolError, never an exception', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        const r = decodeAny(bytes);
        for (const x of Array.isArray(r) ? r : [r]) expect(isMessageOrError(x)).toBe(true);
      }),
      // 500 runs: random bytes almost never make a frame header and JSON, so more runs repeat
      // the same early refusal; mutated valid frames (below) explore the decoder.
      { numRuns: 500 },
    );
  });

  it('fuzz: mutated valid frames decode to a message or a ProtocolError', () => {
    const frames = [...agentMessages, ...dispatcherMessages].map((m) => encodeFrame(encodeMessage(m as AgentMessage)));
    fc.assert(
      fc.property(
        fc.constantFrom(...frames),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.option(fc.nat(), { nil: undefined }),
        (frame, flips, cut) => {
          const b = Buffer.from(frame);
          for (const [pos, v] of flips) b[pos % b.length] = v;
          const r = decodeAny(cut === undefined ? b : b.subarray(0, cut % (b.length + 1)));
          for (const x of Array.isArray(r) ? r : [r]) expect(isMessageOrError(x)).toBe(true);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('fuzz: any JSON value decodes to a message or a ProtocolError', () => {
    fc.assert(
      fc.property(
        fc.jsonValue(),
        fc.constantFrom('ready', 'results', 'hello', 'progress', 'control-done', 'error'),
        fc.boolean(),
        (v, type, withType) => {
          const value = withType && typeof v === 'object' && v !== null && !Array.isArray(v) ? { ...v, type } : v;
          const r = decodeAgentMessage(JSON.stringify(value) ?? 'null');
          expect(isMessageOrError(r)).toBe(true);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('fuzz: generated task batches round-trip exactly', () => {
    const str = fc.string({ maxLength: 40 });
    const task = fc.record({
      taskId: fc.nat(),
      jobId: fc.nat(),
      attempt: fc.integer({ min: 1, max: 99 }),
      command: fc.oneof(fc.array(str, { minLength: 1, maxLength: 5 }), fc.string({ minLength: 1, maxLength: 80 })),
      env: fc.dictionary(
        fc.string({ maxLength: 10 }).filter((k) => k !== '__proto__'),
        str,
        { maxKeys: 4 },
      ),
      cwd: fc.option(str, { nil: null }),
      stdinB64: fc.option(fc.base64String({ maxLength: 40 }), { nil: null }),
      inputsPath: fc.option(str, { nil: null }),
      inputsSha256: fc.option(fc.stringMatching(/^[0-9a-f]{64}$/), { nil: null }),
      timeoutMs: fc.integer({ min: 1, max: 2 ** 31 }),
    });
    fc.assert(
      fc.property(fc.array(task, { minLength: 1, maxLength: 20 }), (tasks) => {
        const msg: DispatcherMessage = { type: 'tasks', tasks };
        const f = decodeFrame(encodeFrame(encodeMessage(msg))) as { body: Buffer };
        expect(decodeDispatcherMessage(f.body)).toEqual(msg);
      }),
      { numRuns: 500 },
    );
  });
});
