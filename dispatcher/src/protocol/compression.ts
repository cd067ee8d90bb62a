/**
 * Result compression (seeds/001, "-z option to compress commands and results"): long text
 * fields travel gzip-compressed, short ones plain — compressing a 20-byte stdout costs more
 * than it saves, and the common case (many small results) must stay cheap. WebSocket
 * permessage-deflate stays off for that reason: it would compress every small frame.
 */
import { gzip, gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import type { WireText } from './messages.js';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

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

/**
 * Unpacks a wire text. `maxBytes` bounds the decompressed size (a hostile peer may send a
 * gzip bomb): beyond it, the promise rejects.
 */
export async function unpackText(t: WireText, maxBytes: number): Promise<string> {
  if (typeof t === 'string') return t;
  const out = await gunzipAsync(Buffer.from(t.gz, 'base64'), { maxOutputLength: maxBytes });
  return out.toString('utf8');
}
