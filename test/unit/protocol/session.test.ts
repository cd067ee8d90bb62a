import { describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { agentChannel, dispatcherChannel } from '../../../dispatcher/src/protocol/channel.js';
import { encodeFrame, encodeMessage, ProtocolError, TAG_BYTES } from '../../../dispatcher/src/protocol/codec.js';
import {
  deriveSessionKeys,
  newEphemeralKey,
  newNonce,
  parseDispatcherPublicKey,
  signTranscript,
  transcript,
  verifyTranscript,
} from '../../../dispatcher/src/protocol/session.js';
import { rawPublicKey } from '../../../dispatcher/src/trust/secrets.js';
import type { AgentMessage } from '../../../dispatcher/src/protocol/messages.js';

const MAC = '52:54:00:12:34:56';

/** Runs the handshake of session.ts by hand and returns both ends' channels. */
function handshake(identity = generateKeyPairSync('ed25519'), agentTrusts = identity.publicKey) {
  const nonce = newNonce();
  const agentEph = newEphemeralKey();
  const dispEph = newEphemeralKey();
  const sig = signTranscript(identity.privateKey, transcript(nonce, agentEph.publicRaw, dispEph.publicRaw, MAC));
  const verified = verifyTranscript(agentTrusts, transcript(nonce, agentEph.publicRaw, dispEph.publicRaw, MAC), sig);
  const agent = agentChannel();
  const disp = dispatcherChannel();
  agent.establish(deriveSessionKeys(agentEph.privateKey, dispEph.publicRaw, nonce));
  disp.establish(deriveSessionKeys(dispEph.privateKey, agentEph.publicRaw, nonce));
  return { agent, disp, verified, nonce, agentEph, dispEph, sig, identity };
}

const ready: AgentMessage = { type: 'ready', n: 3 };

describe('handshake and sealed frames', () => {
  it('lets both ends derive the same keys: sealed messages pass both ways', () => {
    const { agent, disp, verified } = handshake();
    expect(verified).toBe(true);
    for (let i = 0; i < 5; i++) {
      expect(disp.decode(agent.encode({ type: 'ready', n: i + 1 }))).toEqual({ type: 'ready', n: i + 1 });
      expect(agent.decode(disp.encode({ type: 'heartbeat', ts: i }))).toEqual({ type: 'heartbeat', ts: i });
    }
  });

  it('makes an agent holding another key refuse the welcome', () => {
    const other = generateKeyPairSync('ed25519');
    expect(handshake(undefined, other.publicKey).verified).toBe(false);
  });

  it('binds the signature to the nonce, both ephemeral keys and the MAC', () => {
    const { nonce, agentEph, dispEph, sig, identity } = handshake();
    const ok = (t: Buffer) => verifyTranscript(identity.publicKey, t, sig);
    expect(ok(transcript(nonce, agentEph.publicRaw, dispEph.publicRaw, MAC))).toBe(true);
    expect(ok(transcript(newNonce(), agentEph.publicRaw, dispEph.publicRaw, MAC))).toBe(false); // replayed welcome
    expect(ok(transcript(nonce, newEphemeralKey().publicRaw, dispEph.publicRaw, MAC))).toBe(false); // key swapped in the middle
    expect(ok(transcript(nonce, agentEph.publicRaw, newEphemeralKey().publicRaw, MAC))).toBe(false);
    expect(ok(transcript(nonce, agentEph.publicRaw, dispEph.publicRaw, '52:54:00:12:34:57'))).toBe(false);
    expect(verifyTranscript(identity.publicKey, transcript(nonce, agentEph.publicRaw, dispEph.publicRaw, MAC), 'AAAA')).toBe(false);
  });

  it('rejects a tampered or injected message, and the genuine stream goes on', () => {
    const { agent, disp } = handshake();
    const genuine = agent.encode({ type: 'ready', n: 3 });
    const tampered = Buffer.from(genuine);
    tampered[tampered.length - 2] = '4'.charCodeAt(0); // {"type":"ready","n":4}
    expect(disp.decode(tampered)).toMatchObject({ code: 'unauthenticated' });
    const injected = encodeFrame(encodeMessage({ type: 'ready', n: 9 }), () => Buffer.alloc(TAG_BYTES));
    expect(disp.decode(injected)).toMatchObject({ code: 'unauthenticated' });
    // A rejected frame does not move the receiver's sequence: the genuine frame still verifies.
    expect(disp.decode(genuine)).toEqual({ type: 'ready', n: 3 });
    expect(disp.decode(agent.encode(ready))).toEqual(ready);
  });

  it('rejects a replayed or reordered frame', () => {
    const { agent, disp } = handshake();
    const f1 = agent.encode({ type: 'ready', n: 1 });
    const f2 = agent.encode({ type: 'ready', n: 2 });
    expect(disp.decode(f2)).toMatchObject({ code: 'unauthenticated' }); // out of sequence
    expect(disp.decode(f1)).toEqual({ type: 'ready', n: 1 });
    expect(disp.decode(f1)).toMatchObject({ code: 'unauthenticated' }); // replay
    expect(disp.decode(f2)).toEqual({ type: 'ready', n: 2 });
  });

  it("rejects a frame sealed with another session's key", () => {
    const a = handshake();
    const b = handshake();
    expect(b.disp.decode(a.agent.encode(ready))).toMatchObject({ code: 'unauthenticated' });
  });

  it('rejects plain messages once sealed, except error', () => {
    const { disp } = handshake();
    expect(disp.decode(encodeFrame(encodeMessage(ready)))).toMatchObject({ code: 'unauthenticated', about: 'ready' });
    expect(disp.decode(encodeFrame(encodeMessage({ type: 'error', code: 'untrusted', message: 'x' })))).toMatchObject({ type: 'error' });
  });

  it('rejects sealed frames before the handshake and a sealed hello after it', () => {
    const before = dispatcherChannel();
    expect(before.decode(encodeFrame('{}', () => Buffer.alloc(32)))).toMatchObject({ code: 'out-of-order' });
    const { agent, disp } = handshake();
    const hello = agent.encode({ type: 'ready', n: 1 });
    expect(disp.decode(hello)).toEqual({ type: 'ready', n: 1 });
    const welcome = disp.encode({
      type: 'welcome',
      protocol: 1,
      dispatcherVersion: 'x',
      nodeName: 'n',
      ephemeralKey: Buffer.alloc(32).toString('base64'),
      signature: Buffer.alloc(64).toString('base64'),
      heartbeatMs: 1000,
      missedHeartbeats: 3,
      maxMessageBytes: 4096,
    });
    expect(agent.decode(welcome)).toMatchObject({ code: 'out-of-order', about: 'welcome' });
  });

  it('fuzz: flipping any bit of a sealed frame makes it fail', () => {
    fc.assert(
      fc.property(fc.nat(), fc.integer({ min: 0, max: 7 }), (pos, bit) => {
        const { agent, disp } = handshake();
        const frame = Buffer.from(
          agent.encode({
            type: 'results',
            results: [
              {
                taskId: 1,
                attempt: 1,
                exitCode: 0,
                signal: null,
                timedOut: false,
                error: null,
                startedAt: 1,
                durationMs: 1,
                maxRssKiB: null,
                stdout: 'x',
                stderr: '',
                stdoutTruncated: false,
                stderrTruncated: false,
                outputsTarGzB64: null,
              },
            ],
          }),
        );
        frame[pos % frame.length]! ^= 1 << bit;
        const r = disp.decode(frame);
        expect(r).toBeInstanceOf(ProtocolError);
      }),
      { numRuns: 300 },
    );
  });

  it('reads the dispatcher key as raw base64 (identity.pub) or PEM, and refuses anything else', () => {
    const { publicKey } = generateKeyPairSync('ed25519');
    const b64 = rawPublicKey(publicKey).toString('base64');
    expect(parseDispatcherPublicKey(`${b64}\n`).equals(publicKey)).toBe(true);
    expect(parseDispatcherPublicKey(publicKey.export({ type: 'spki', format: 'pem' }) as string).equals(publicKey)).toBe(true);
    expect(() => parseDispatcherPublicKey('not a key')).toThrow(/base64/);
    expect(() => parseDispatcherPublicKey(Buffer.alloc(31).toString('base64'))).toThrow();
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    expect(() => parseDispatcherPublicKey(rsa)).toThrow(/Ed25519/);
  });
});
