/**
 * The agent message codec under hostile bytes (issue 11, point 7): random and mutated
 * frames, random JSON under every message type, hostile shapes (deep nesting, __proto__,
 * huge strings), through the pure decoders, a sealed Channel at each end and the agent's
 * task-batch salvage (node-agent/src/task-batch.ts). Each gives a message or a
 * ProtocolError — never an exception of another kind, never a hang, never a changed
 * Object.prototype — and a salvaged batch holds only assignments that validate.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { agentChannel, dispatcherChannel, type Channel } from '../../../dispatcher/src/protocol/channel.js';
import {
  decodeAgentMessage,
  decodeDispatcherMessage,
  decodeFrame,
  encodeFrame,
  encodeMessage,
  ProtocolError,
} from '../../../dispatcher/src/protocol/codec.js';
import {
  AGENT_MESSAGES,
  DISPATCHER_MESSAGES,
  PROTOCOL_VERSION,
  TaskAssignment,
  type AgentMessage,
  type DispatcherMessage,
} from '../../../dispatcher/src/protocol/messages.js';
import { deriveSessionKeys, newEphemeralKey, newNonce } from '../../../dispatcher/src/protocol/session.js';
import { agentInboundChannel, decodeForAgent, type AgentInbound } from '../../../node-agent/src/task-batch.js';
import { FAKE_INVENTORY } from '../protocol/fixtures.js';

const KEY = Buffer.alloc(32, 7).toString('base64');
const SHA = 'ab'.repeat(32);
const assignment = {
  taskId: 7,
  jobId: 3,
  attempt: 1,
  command: ['echo', 'hi'],
  env: { X: '1' },
  cwd: null,
  stdinB64: null,
  inputsPath: '/in',
  inputsSha256: SHA,
  timeoutMs: 1000,
};
const SAMPLES: (AgentMessage | DispatcherMessage)[] = [
  {
    type: 'hello',
    protocol: PROTOCOL_VERSION,
    agentVersion: '1',
    mac: '52:54:00:12:34:56',
    auth: { kind: 'boot', token: 't' },
    nonce: KEY,
    ephemeralKey: KEY,
    slots: 2,
    inventory: FAKE_INVENTORY,
    running: [],
    undelivered: [],
  },
  { type: 'ready', n: 4 },
  { type: 'progress', items: [{ taskId: 1, attempt: 1, fraction: 0.5 }] },
  {
    type: 'results',
    results: [
      {
        taskId: 7,
        attempt: 1,
        exitCode: 0,
        signal: null,
        timedOut: false,
        error: null,
        startedAt: 1,
        durationMs: 2,
        maxRssKiB: null,
        stdout: 'ok',
        stderr: { gz: 'H4sIAAAAAAAAA8vPBwCrpJ1kAQAAAA==' },
        stdoutTruncated: false,
        stderrTruncated: false,
        outputsTarGzB64: null,
      },
    ],
  },
  { type: 'tasks', tasks: [assignment, { ...assignment, taskId: 8, command: 'echo $X', inputsPath: null, inputsSha256: null }] },
  { type: 'cancel', refs: [{ taskId: 7, attempt: 1 }], reason: 'x', report: true },
  { type: 'control', id: 1, command: { kind: 'exec', command: ['true'] } },
  { type: 'error', code: 'malformed', message: 'm', about: 'tasks' },
];
const TYPES = [
  ...new Set([
    ...Object.keys(AGENT_MESSAGES),
    ...Object.keys(DISPATCHER_MESSAGES),
    'tasks-partial',
    'constructor',
    '__proto__',
    'toString',
  ]),
];
const checkAssignment = TypeCompiler.Compile(TaskAssignment);

/** Runs a decoder and checks what it gave: a ProtocolError, or an object with a string type. */
function outcome<T>(decode: () => T): T {
  let r: T;
  try {
    r = decode();
  } catch (err) {
    throw new Error(`decoder threw instead of returning a ProtocolError: ${(err as Error)?.stack ?? String(err)}`);
  }
  if (!(r instanceof ProtocolError)) expect(typeof (r as { type?: unknown }).type).toBe('string');
  return r;
}

function decodeAll(body: Buffer): void {
  outcome(() => decodeAgentMessage(body));
  outcome(() => decodeDispatcherMessage(body));
  const salvaged = outcome(() => decodeForAgent(body));
  if (!(salvaged instanceof ProtocolError) && salvaged.type === 'tasks-partial') {
    for (const t of salvaged.tasks) expect(checkAssignment.Check(t)).toBe(true);
    for (const r of salvaged.refused)
      expect(Number.isSafeInteger(r.taskId) && Number.isSafeInteger(r.attempt) && r.attempt >= 1).toBe(true);
    if (salvaged.total !== null) expect(salvaged.tasks.length + salvaged.refused.length).toBeLessThanOrEqual(salvaged.total);
  }
}

function sealedPair(): {
  agent: Channel<AgentInbound, AgentMessage>;
  disp: Channel<AgentMessage, DispatcherMessage>;
  agentSide: Channel<DispatcherMessage, AgentMessage>;
} {
  const nonce = newNonce();
  const a = newEphemeralKey();
  const d = newEphemeralKey();
  const agent = agentInboundChannel();
  const agentSide = agentChannel();
  const disp = dispatcherChannel();
  agent.establish(deriveSessionKeys(a.privateKey, d.publicRaw, nonce));
  agentSide.establish(deriveSessionKeys(a.privateKey, d.publicRaw, nonce));
  disp.establish(deriveSessionKeys(d.privateKey, a.publicRaw, nonce));
  return { agent, disp, agentSide };
}

describe('agent message codec: fuzzing (fast-check)', () => {
  it('random bytes give a message or a ProtocolError, as a frame and as a body', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        const buf = Buffer.from(bytes);
        const f = decodeFrame(buf); // a Frame or a ProtocolError; a throw fails the property
        if (!(f instanceof ProtocolError)) decodeAll(f.body);
        decodeAll(buf);
        const { agent, disp } = sealedPair();
        outcome(() => agent.decode(buf));
        outcome(() => disp.decode(buf));
      }),
      { numRuns: 300 },
    );
  });

  it('mutated valid messages (flips, cuts, splices) give a message or a ProtocolError', () => {
    const bodies = SAMPLES.map((m) => Buffer.from(encodeMessage(m)));
    fc.assert(
      fc.property(
        fc.constantFrom(...bodies),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
        fc.option(fc.nat(), { nil: undefined }),
        fc.option(
          fc.tuple(fc.nat(), fc.constantFrom('"', '{', '}', '[', ']', ',', ':', '\\', '\\u0000', 'null', '-1', '1e999', '"__proto__"')),
          { nil: undefined },
        ),
        (body, flips, cut, splice) => {
          let b = Buffer.from(body);
          for (const [pos, v] of flips) b[pos % b.length] = v;
          if (cut !== undefined) b = b.subarray(0, cut % (b.length + 1));
          if (splice) {
            const at = splice[0] % (b.length + 1);
            b = Buffer.concat([b.subarray(0, at), Buffer.from(splice[1]), b.subarray(at)]);
          }
          decodeAll(b);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('any JSON under any message type gives a message or a ProtocolError; a salvaged batch holds only valid assignments', () => {
    const task = fc.oneof(
      fc.constant(assignment),
      fc
        .record({
          taskId: fc.oneof(fc.nat(), fc.double(), fc.string()),
          attempt: fc.oneof(fc.integer({ min: -2, max: 3 }), fc.constant(null)),
          timeoutMs: fc.oneof(fc.nat(), fc.double()),
        })
        .map((over) => ({ ...assignment, ...over })),
      fc.jsonValue({ maxDepth: 3 }),
    );
    fc.assert(
      fc.property(
        fc.constantFrom(...TYPES),
        fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }),
        fc.array(task, { maxLength: 6 }),
        (type, extra, tasks) => {
          decodeAll(Buffer.from(JSON.stringify({ type, ...extra })));
          decodeAll(Buffer.from(JSON.stringify({ type: 'tasks', tasks })));
          decodeAll(Buffer.from(JSON.stringify({ ...extra, type })));
        },
      ),
      { numRuns: 400 },
    );
  });

  it('sealed frames a peer sends mutated give a ProtocolError, never a throw', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...SAMPLES.filter((m) => ['ready', 'results', 'progress', 'tasks', 'cancel', 'control'].includes(m.type))),
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        (msg, pos, v) => {
          const { agent, disp, agentSide } = sealedPair();
          const toAgent = ['tasks', 'cancel', 'control'].includes(msg.type);
          const frame = Buffer.from(toAgent ? disp.encode(msg as DispatcherMessage) : agentSide.encode(msg as AgentMessage));
          const before = frame[pos % frame.length];
          frame[pos % frame.length] = v;
          const r = outcome(() => (toAgent ? agent.decode(frame) : disp.decode(frame)));
          if (before !== v) expect(r).toBeInstanceOf(ProtocolError);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('agent message codec: hostile shapes', () => {
  it.each<[string, string]>([
    ['deep nesting in a free-form field', `{"type":"control-done","id":1,"ok":true,"result":${'['.repeat(100_000)}${']'.repeat(100_000)}}`],
    ['deep nesting where a task goes', `{"type":"tasks","tasks":[${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)}]}`],
    ['unclosed deep nesting', `{"type":"tasks","tasks":${'['.repeat(200_000)}`],
    ['a __proto__ key', `{"type":"tasks","__proto__":{"polluted":1},"tasks":[{"__proto__":{"polluted":1},"taskId":1,"attempt":1}]}`],
    ['a constructor type', `{"type":"constructor"}`],
    ['a 4 MiB string', `{"type":"ready","n":"${'x'.repeat(4 << 20)}"}`],
    ['a batch over the limit', `{"type":"tasks","tasks":[${Array.from({ length: 10_001 }, () => '1').join(',')}]}`],
  ])('%s gives a message or a ProtocolError', (_what, text) => {
    const body = Buffer.from(text);
    const start = process.hrtime.bigint();
    decodeAll(body);
    decodeAll(encodeFrame(text).subarray(1));
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // Linear work on a few MiB, not a hang: generous for a loaded 2-core machine.
    expect(Number(process.hrtime.bigint() - start) / 1e6).toBeLessThan(5_000);
  });

  it('salvages a batch with one bad assignment: the valid ones kept, the bad one refused by its ref', () => {
    const bad = { ...assignment, taskId: 9, timeoutMs: 0 };
    const r = decodeForAgent(JSON.stringify({ type: 'tasks', tasks: [assignment, bad, { nonsense: true }] }));
    expect(r).toMatchObject({
      type: 'tasks-partial',
      tasks: [assignment],
      refused: [{ taskId: 9, attempt: 1, reason: expect.stringMatching(/timeoutMs/) }],
      total: 3,
    });
  });
});
