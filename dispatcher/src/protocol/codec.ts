/**
 * The protocol's pure codec: bytes in, a validated message (or a ProtocolError naming the
 * field) out, and back. No sockets, clocks or loggers: this is what the fuzzer hits.
 *
 * Wire format: every message is one binary WebSocket frame
 *
 *   byte 0        frame kind: 0x00 plain (handshake), 0x01 sealed
 *   bytes 1..16   sealed only: truncated HMAC-SHA256 tag (session.ts)
 *   rest          the message as UTF-8 JSON, `type` first
 *
 * Validation is schema-driven: the `type` field picks the message's schema, compiled once
 * with TypeCompiler (no interpretation of the schema per message); an invalid message gives
 * the first failing field's JSON pointer (`/results/3/exitCode`).
 */
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { TSchema } from '@sinclair/typebox';
import { AGENT_MESSAGES, DISPATCHER_MESSAGES, type AgentMessage, type DispatcherMessage, type ProtocolErrorCode } from './messages.js';

export const FRAME_PLAIN = 0x00;
export const FRAME_SEALED = 0x01;
export const TAG_BYTES = 16;

/**
 * Default largest message accepted (a results batch with outputs tars). The WebSocket
 * server's hard limit sits a little above it, so an oversize message normally gets a
 * polite `error` reply; beyond the hard limit the socket is closed (1009).
 */
export const DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024;

/** A message the codec or channel refused: a value, never thrown. */
export class ProtocolError {
  constructor(
    readonly code: ProtocolErrorCode,
    readonly message: string,
    /** JSON pointer of the offending field, when one is to blame. */
    readonly field?: string,
    /** The message's `type`, when it could be read. */
    readonly about?: string,
  ) {}
}

export interface Frame {
  sealed: boolean;
  /** The HMAC tag of a sealed frame. */
  tag: Buffer | null;
  /** The JSON body. */
  body: Buffer;
}

/** Splits a frame into kind, tag and body; refuses empty, unknown-kind, truncated and oversize frames. */
export function decodeFrame(data: Buffer, maxBytes = DEFAULT_MAX_MESSAGE_BYTES): Frame | ProtocolError {
  if (data.length > maxBytes)
    return new ProtocolError('oversize', `message of ${data.length} bytes is larger than the limit of ${maxBytes} bytes`);
  if (data.length < 1) return new ProtocolError('malformed', 'empty frame (0 bytes)');
  const kind = data[0];
  if (kind === FRAME_PLAIN) return { sealed: false, tag: null, body: data.subarray(1) };
  if (kind === FRAME_SEALED) {
    if (data.length < 1 + TAG_BYTES)
      return new ProtocolError('malformed', `sealed frame of ${data.length} bytes is shorter than its ${1 + TAG_BYTES}-byte header`);
    return { sealed: true, tag: data.subarray(1, 1 + TAG_BYTES), body: data.subarray(1 + TAG_BYTES) };
  }
  return new ProtocolError('malformed', `unknown frame kind 0x${kind!.toString(16).padStart(2, '0')} (expected 0x00 plain or 0x01 sealed)`);
}

/**
 * Builds a frame around a JSON body. `tagOf` (the session's sealer) computes the tag over the
 * body bytes; without it the frame is plain. One allocation: the body is written in place.
 */
export function encodeFrame(json: string, tagOf?: (body: Buffer) => Buffer): Buffer {
  const header = tagOf ? 1 + TAG_BYTES : 1;
  const len = Buffer.byteLength(json);
  const frame = Buffer.allocUnsafe(header + len);
  frame.write(json, header, 'utf8');
  if (tagOf) {
    frame[0] = FRAME_SEALED;
    tagOf(frame.subarray(header)).copy(frame, 1, 0, TAG_BYTES);
  } else frame[0] = FRAME_PLAIN;
  return frame;
}

type Schemas = Readonly<Record<string, TSchema>>;

/** A decoder for one direction: JSON parse, then the schema named by `type`. */
function makeDecoder<M>(schemas: Schemas): (body: Buffer | string) => M | ProtocolError {
  const checks = new Map<string, TypeCheck<TSchema>>();
  const checkFor = (type: string): TypeCheck<TSchema> | undefined => {
    let c = checks.get(type);
    if (!c && Object.hasOwn(schemas, type)) {
      c = TypeCompiler.Compile(schemas[type]!);
      checks.set(type, c);
    }
    return c;
  };
  const known = Object.keys(schemas).join(', ');
  return (body) => {
    let value: unknown;
    try {
      value = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'));
    } catch (err) {
      return new ProtocolError('malformed', `not JSON: ${(err as Error).message}`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      return new ProtocolError('malformed', 'a message must be a JSON object', '');
    const type = (value as { type?: unknown }).type;
    if (typeof type !== 'string') return new ProtocolError('malformed', '/type: missing or not a string', '/type');
    const check = checkFor(type);
    if (!check)
      return new ProtocolError(
        'unsupported',
        `/type: unknown message type "${type.slice(0, 64)}" (known: ${known})`,
        '/type',
        type.slice(0, 64),
      );
    if (check.Check(value)) return value as M;
    const first = check.Errors(value).First();
    const field = first?.path || '';
    return new ProtocolError(
      'malformed',
      `invalid ${type} message: ${field || '(message)'}: ${first?.message ?? 'does not match its schema'}`,
      field,
      type,
    );
  };
}

/** Decodes a message sent by an agent (what the dispatcher receives). */
export const decodeAgentMessage: (body: Buffer | string) => AgentMessage | ProtocolError = makeDecoder<AgentMessage>(AGENT_MESSAGES);

/** Decodes a message sent by the dispatcher (what the agent receives). */
export const decodeDispatcherMessage: (body: Buffer | string) => DispatcherMessage | ProtocolError =
  makeDecoder<DispatcherMessage>(DISPATCHER_MESSAGES);

/** Serializes a message to its JSON body (the frame is added by encodeFrame / Channel). */
export function encodeMessage(msg: AgentMessage | DispatcherMessage): string {
  return JSON.stringify(msg);
}
