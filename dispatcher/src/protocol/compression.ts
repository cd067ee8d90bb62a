/**
 * Result compression (seeds/001, "-z option to compress commands and results"): long text
 * fields travel gzip-compressed, short ones plain — compressing a 20-byte stdout costs more
 * than it saves, and the common case (many small results) must stay cheap. WebSocket
 * permessage-deflate stays off for that reason: it would compress every small frame.
 *
 * Whatever arrives compressed comes from a peer that may be hostile (a gzip bomb inflates
 * about 1000:1), so nothing is inflated in one call: `inflateBounded` and `byteCap` stream
 * through zlib (its work runs off the event loop) and stop at a byte cap.
 */
import { createGunzip, gzip } from 'node:zlib';
import { Transform, type TransformCallback } from 'node:stream';
import { promisify } from 'node:util';
import type { WireText } from './messages.js';

const gzipAsync = promisify(gzip);

/** Texts at least this long (UTF-8 bytes) are sent gzip-compressed when that makes them smaller. */
export const COMPRESS_MIN_BYTES = 4096;

/** Packs a text for the wire: plain when short or incompressible, `{ gz }` otherwise. */
export async function packText(text: string): Promise<WireText> {
  if (text.length < COMPRESS_MIN_BYTES / 4 || Buffer.byteLength(text) < COMPRESS_MIN_BYTES) return text;
  const gz = await gzipAsync(Buffer.from(text, 'utf8'), { level: 6 });
  const b64 = gz.toString('base64');
  return b64.length + 10 < text.length ? { gz: b64 } : text;
}

/** Whether a wire text needs decompressing (lets callers keep the fast path synchronous). */
export function isPacked(t: WireText): t is { gz: string } {
  return typeof t !== 'string';
}

/** A stream that inflated past its cap. */
export class InflateLimitError extends Error {
  constructor(
    readonly what: string,
    readonly limit: number,
  ) {
    super(`${what} inflates to more than ${limit} bytes`);
    this.name = 'InflateLimitError';
  }
}

export interface Inflated {
  /** Bytes inflated (at most the cap). */
  bytes: number;
  /** The data went on past the cap; inflating stopped there. */
  over: boolean;
  /** The first `bytes` bytes, when asked to keep them. */
  data?: Buffer;
}

/**
 * Inflates gzip data through zlib's streaming API and stops at `maxBytes` of output: a bomb
 * costs at most the cap (plus one zlib chunk) and never blocks the event loop. Rejects if the
 * data is not gzip. With `keep: false` only counts (checking an outputs tar on arrival).
 */
export function inflateBounded(gz: Buffer, maxBytes: number, opts: { keep: boolean }): Promise<Inflated> {
  return new Promise((resolve, reject) => {
    const z = createGunzip();
    const chunks: Buffer[] = [];
    let bytes = 0;
    let settled = false;
    const finish = (over: boolean) => {
      settled = true;
      resolve({ bytes, over, ...(opts.keep ? { data: Buffer.concat(chunks, bytes) } : {}) });
    };
    z.on('data', (c: Buffer) => {
      if (settled) return;
      const room = maxBytes - bytes;
      if (c.length > room) {
        if (opts.keep && room > 0) chunks.push(c.subarray(0, room));
        bytes = maxBytes;
        z.destroy();
        return finish(true);
      }
      bytes += c.length;
      if (opts.keep) chunks.push(c);
    });
    z.on('end', () => settled || finish(false));
    z.on('error', (err) => {
      if (settled) return;
      settled = true;
      reject(err);
    });
    z.end(gz);
  });
}

/** A pass-through that fails with InflateLimitError once more than `maxBytes` went through it (put after a createGunzip()). */
export function byteCap(maxBytes: number, what: string): Transform {
  let bytes = 0;
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      bytes += chunk.length;
      if (bytes > maxBytes) return cb(new InflateLimitError(what, maxBytes));
      cb(null, chunk);
    },
  });
}

/** Unpacks a wire text; rejects with InflateLimitError beyond `maxBytes` once inflated (a gzip bomb). */
export async function unpackText(t: WireText, maxBytes: number): Promise<string> {
  if (typeof t === 'string') return t;
  const r = await inflateBounded(Buffer.from(t.gz, 'base64'), maxBytes, { keep: true });
  if (r.over) throw new InflateLimitError('text', maxBytes);
  return r.data!.toString('utf8');
}
