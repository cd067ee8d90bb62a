/**
 * One end of a connection's message stream, without the socket: frames, seals and opens,
 * decodes and validates. Plain until `establish` (handshake), sealed after; once sealed,
 * only an `error` may still arrive plain (a peer that cannot verify us says so in clear).
 * Used by the hub (per agent), the agent and the simulated agents of the benchmark.
 */
import {
  decodeAgentMessage,
  decodeDispatcherMessage,
  decodeFrame,
  encodeFrame,
  encodeMessage,
  ProtocolError,
  DEFAULT_MAX_MESSAGE_BYTES,
} from './codec.js';
import { HANDSHAKE_TYPES, type AgentMessage, type DispatcherMessage } from './messages.js';
import { Opener, Sealer, type SessionKeys } from './session.js';

export class Channel<In extends { type: string }, Out extends { type: string }> {
  #sealer: Sealer | undefined;
  #opener: Opener | undefined;

  constructor(
    private readonly decodeBody: (body: Buffer) => In | ProtocolError,
    private readonly side: 'agent' | 'dispatcher',
    readonly maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES,
  ) {}

  get sealed(): boolean {
    return this.#sealer !== undefined;
  }

  /** Switches to sealed frames both ways with the session's keys. */
  establish(keys: SessionKeys): void {
    const [send, recv] =
      this.side === 'agent' ? [keys.agentToDispatcher, keys.dispatcherToAgent] : [keys.dispatcherToAgent, keys.agentToDispatcher];
    this.#sealer = new Sealer(send);
    this.#opener = new Opener(recv);
  }

  encode(msg: Out): Buffer {
    const sealer = this.#sealer;
    return encodeFrame(encodeMessage(msg as unknown as AgentMessage), sealer ? (b) => sealer.tag(b) : undefined);
  }

  /** A received WebSocket message (binary frame) to a validated message, or why not. */
  decode(data: Buffer | ArrayBuffer | Buffer[], isBinary = true): In | ProtocolError {
    if (!isBinary) return new ProtocolError('malformed', 'text frame: the protocol uses binary frames only');
    const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    const frame = decodeFrame(buf, this.maxMessageBytes);
    if (frame instanceof ProtocolError) return frame;
    if (frame.sealed) {
      if (!this.#opener) return new ProtocolError('out-of-order', 'sealed frame before the handshake completed');
      if (!this.#opener.open(frame.tag!, frame.body))
        return new ProtocolError('unauthenticated', 'message tag does not verify (tampered, injected or out of sequence)');
    }
    const msg = this.decodeBody(frame.body);
    if (msg instanceof ProtocolError) return msg;
    if (!frame.sealed && this.#opener && msg.type !== 'error')
      return new ProtocolError(
        'unauthenticated',
        `plain ${msg.type} message after the handshake: every message must be sealed`,
        undefined,
        msg.type,
      );
    if (frame.sealed && HANDSHAKE_TYPES.has(msg.type) && msg.type !== 'error')
      return new ProtocolError('out-of-order', `${msg.type} after the handshake completed`, undefined, msg.type);
    return msg;
  }
}

/** The dispatcher's end of an agent connection. */
export function dispatcherChannel(maxMessageBytes?: number): Channel<AgentMessage, DispatcherMessage> {
  return new Channel<AgentMessage, DispatcherMessage>(decodeAgentMessage, 'dispatcher', maxMessageBytes);
}

/** The agent's end of its connection. */
export function agentChannel(maxMessageBytes?: number): Channel<DispatcherMessage, AgentMessage> {
  return new Channel<DispatcherMessage, AgentMessage>(decodeDispatcherMessage, 'agent', maxMessageBytes);
}
