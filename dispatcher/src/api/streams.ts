/**
 * Long-lived answers on fastify: server-sent events (the page's live feed, `events --follow`)
 * and JSON lines (exec output). Both take the raw response over from fastify (`hijack`) once
 * every check has passed, so errors before that point are ordinary JSON error answers.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { formatSse } from './sse.js';

/** A comment line this often keeps proxies and browsers from closing an idle stream. */
export const SSE_KEEPALIVE_MS = 15_000;
/** What EventSource waits before reconnecting (the `retry:` field). */
export const SSE_RETRY_MS = 2_000;

export interface SseSink {
  send(event: string, data: unknown, id?: number | string): boolean;
  /** Whether the client has gone. */
  readonly closed: boolean;
  onClose(fn: () => void): void;
  close(): void;
}

// Only the response's 'close' tells that the client went: since Node 16 the request's fires
// as soon as its body has been read.
export function openSse(_req: FastifyRequest, reply: FastifyReply): SseSink {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write(`retry: ${SSE_RETRY_MS}\n\n`);
  res.socket?.setNoDelay(true);
  let closed = false;
  const closers: (() => void)[] = [];
  const keepalive = setInterval(() => res.write(': keep-alive\n\n'), SSE_KEEPALIVE_MS);
  keepalive.unref();
  const cleanup = () => {
    if (closed) return;
    closed = true;
    clearInterval(keepalive);
    for (const f of closers) f();
  };
  res.on('close', cleanup);
  res.on('error', cleanup);
  return {
    send(event, data, id) {
      if (closed) return false;
      return res.write(formatSse({ event, data: JSON.stringify(data), ...(id !== undefined ? { id } : {}) }));
    },
    get closed() {
      return closed;
    },
    onClose(fn) {
      if (closed) fn();
      else closers.push(fn);
    },
    close() {
      cleanup();
      res.end();
    },
  };
}

export interface NdjsonSink {
  write(value: unknown): void;
  readonly closed: boolean;
  end(): void;
}

export function openNdjson(_req: FastifyRequest, reply: FastifyReply): NdjsonSink {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
  res.socket?.setNoDelay(true);
  let closed = false;
  res.on('close', () => (closed = true));
  return {
    write(value) {
      if (!closed) res.write(JSON.stringify(value) + '\n');
    },
    get closed() {
      return closed;
    },
    end() {
      if (!closed) res.end();
      closed = true;
    },
  };
}
