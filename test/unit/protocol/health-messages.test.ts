/** The health check's protocol fields: the welcome's `healthCheck` and the agent's `health`; bad ones refused naming the field. */
import { describe, expect, it } from 'vitest';
import { decodeAgentMessage, decodeDispatcherMessage, ProtocolError } from '../../../dispatcher/src/protocol/codec.js';
import { MAX_HEALTH_OUTPUT, PROTOCOL_VERSION } from '../../../dispatcher/src/protocol/messages.js';

const health = { type: 'health', ok: false, exitCode: 1, timedOut: false, output: 'disk full\n', durationMs: 12 };
const welcome = {
  type: 'welcome',
  protocol: PROTOCOL_VERSION,
  dispatcherVersion: '1',
  nodeName: 'node1',
  ephemeralKey: Buffer.alloc(32, 7).toString('base64'),
  signature: Buffer.alloc(64, 9).toString('base64'),
  heartbeatMs: 1000,
  missedHeartbeats: 3,
  maxMessageBytes: 1 << 20,
  healthCheck: { command: ['/usr/bin/check', '-q'], intervalMs: 60_000, timeoutMs: 30_000 },
};

describe('health protocol messages', () => {
  it('decodes a health report and a welcome carrying a check', () => {
    expect(decodeAgentMessage(JSON.stringify(health))).toEqual(health);
    expect(decodeDispatcherMessage(JSON.stringify(welcome))).toEqual(welcome);
    const { healthCheck: _, ...plain } = welcome;
    expect(decodeDispatcherMessage(JSON.stringify(plain))).toEqual(plain);
  });

  it.each([
    ['output over the bound', { ...health, output: 'x'.repeat(MAX_HEALTH_OUTPUT + 1) }, '/output'],
    ['ok as text', { ...health, ok: 'no' }, '/ok'],
    ['an unknown field', { ...health, node: 'node2' }, 'node'],
    ['a negative duration', { ...health, durationMs: -1 }, '/durationMs'],
  ])('refuses a health report with %s, naming the field', (_what, msg, field) => {
    const r = decodeAgentMessage(JSON.stringify(msg));
    expect(r).toBeInstanceOf(ProtocolError);
    expect(`${(r as ProtocolError).field ?? ''} ${(r as ProtocolError).message}`).toContain(field);
  });

  it.each([
    ['an empty argv', { command: [], intervalMs: 60_000, timeoutMs: 1000 }],
    ['a sub-second timeout', { command: 'true', intervalMs: 60_000, timeoutMs: 10 }],
  ])('refuses a welcome whose check has %s', (_what, healthCheck) => {
    expect(decodeDispatcherMessage(JSON.stringify({ ...welcome, healthCheck }))).toBeInstanceOf(ProtocolError);
  });
});
