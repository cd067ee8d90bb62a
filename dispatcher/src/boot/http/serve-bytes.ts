/**
 * Writes a boot file held in memory to a raw Node response, below fastify's reply pipeline:
 * conditional requests and one byte range (http-range.ts), then the body — by sendfile(2)
 * from a sealed memfd when the native addon is there (sendfile.ts: no copy through user
 * space, Node's thread free), else as slices of the shared Buffer written round-robin by one
 * scheduler. Resolves when the response is finished, the client went away, or the client
 * read nothing for `idleTimeoutMs` (then the connection is dropped: a stalled reader must not
 * hold a transfer slot).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { BootFile } from '../boot-files.js';
import { contentRange, decideServe, type ServeDecision } from '../http-range.js';
import { SENDFILE_MIN_BYTES, type ZeroCopySender } from './sendfile.js';

export interface ServeResult {
  status: number;
  /** Body bytes the response carries (0 for HEAD, 304, 412, 416). */
  bodyBytes: number;
  /** The body was fully handed to the kernel; false when the client closed first. */
  completed: boolean;
  durationMs: number;
  /** How the body went: 'sendfile' (zero-copy) or 'write' (through Node); undefined without a body. */
  via?: 'sendfile' | 'write';
  /** Why a body ended early (EPIPE, ECONNRESET, ETIMEDOUT: the client read nothing for the idle timeout...). */
  error?: string;
}

export interface ServeOptions {
  contentType?: string;
  /** Send bodies by sendfile when possible (undefined: always through Node). */
  zeroCopy?: ZeroCopySender | undefined;
  /**
   * Drop a body written through Node that makes no progress this long (the zero-copy sender
   * has its own, set when it is made). Undefined: no limit.
   */
  idleTimeoutMs?: number;
}

const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

export function serveBootFile(req: IncomingMessage, res: ServerResponse, file: BootFile, opts: ServeOptions = {}): Promise<ServeResult> {
  const { contentType = 'application/octet-stream', zeroCopy, idleTimeoutMs } = opts;
  const t0 = performance.now();
  const method = req.method ?? 'GET';
  const h = req.headers;
  const decision: ServeDecision = decideServe(
    {
      method,
      range: first(h.range),
      ifRange: first(h['if-range']),
      ifMatch: first(h['if-match']),
      ifNoneMatch: first(h['if-none-match']),
      ifModifiedSince: first(h['if-modified-since']),
      ifUnmodifiedSince: first(h['if-unmodified-since']),
    },
    file,
  );
  const common: Record<string, string | number> = {
    etag: file.etag,
    'last-modified': file.lastModified,
    'accept-ranges': 'bytes',
    // Revalidate every time: the image can be rebuilt under the same URL.
    'cache-control': 'no-cache',
  };
  let body: Buffer | undefined;
  switch (decision.status) {
    case 200:
    case 206: {
      const length = decision.end - decision.start + 1;
      const headers: Record<string, string | number> = { ...common, 'content-type': contentType, 'content-length': length };
      if (decision.status === 206) headers['content-range'] = contentRange(decision, file.size);
      res.writeHead(decision.status, headers);
      body = method === 'HEAD' ? undefined : file.bytes.subarray(decision.start, decision.end + 1);
      break;
    }
    case 304:
      res.writeHead(304, common);
      break;
    case 412:
      res.writeHead(412, { 'content-length': 0 });
      break;
    case 416:
      res.writeHead(416, { 'content-range': contentRange(decision, file.size), 'content-length': 0 });
      break;
  }
  if (body && zeroCopy && body.length >= SENDFILE_MIN_BYTES && zeroCopy.usable(res)) {
    const start = decision.status === 200 || decision.status === 206 ? decision.start : 0;
    return zeroCopy.send(res, file.bytes, start, body.length).then((o) => ({
      status: decision.status,
      bodyBytes: body.length,
      completed: o.ok,
      durationMs: Math.round(performance.now() - t0),
      via: 'sendfile',
      ...(o.error ? { error: o.error } : {}),
    }));
  }
  return new Promise<ServeResult>((resolve) => {
    let done = false;
    let error: string | undefined;
    const settle = (completed: boolean) => {
      if (done) return;
      done = true;
      resolve({
        status: decision.status,
        bodyBytes: body?.length ?? 0,
        completed,
        durationMs: Math.round(performance.now() - t0),
        ...(body ? { via: 'write' as const } : {}),
        ...(error ? { error } : {}),
      });
    };
    // Node emits 'finish' (and writableFinished reads true) even when the client reset the
    // connection mid-body; only the socket, captured now (it is detached by then), tells.
    const socket = res.socket;
    res.once('finish', () => settle(!(socket?.destroyed ?? false)));
    res.once('close', () => settle(false));
    writeInSlices(res, body, WRITE_SLICE_BYTES, idleTimeoutMs, () => (error = 'ETIMEDOUT'));
  });
}

/**
 * How image bodies are written during a boot storm. Over a fast link the kernel takes a
 * whole image-sized write at once, so a body written in one go holds the event loop for the full
 * copy; with a hundred downloads a turn of the loop takes hundreds of milliseconds, and
 * libuv accepts one new connection per turn, so boot scripts and TFTP ACKs queue for
 * seconds. Instead, all downloads share one scheduler: each turn writes at most
 * TURN_BUDGET_BYTES in total, WRITE_SLICE_BYTES per connection, round-robin, and a
 * connection gets its next slice only once its previous one is in the kernel.
 * LC_HTTP_TURN_BUDGET and LC_HTTP_WRITE_SLICE override (tuning and benchmarks).
 */
export const TURN_BUDGET_BYTES = Number(process.env.LC_HTTP_TURN_BUDGET ?? 4 * 1024 * 1024);
export const WRITE_SLICE_BYTES = Number(process.env.LC_HTTP_WRITE_SLICE ?? 256 * 1024);

interface WriteJob {
  res: ServerResponse;
  body: Buffer;
  offset: number;
  closed: boolean;
  /** Armed while a slice waits for the kernel to take it; refreshed by each slice taken. */
  idle: NodeJS.Timeout | undefined;
}

class WriteScheduler {
  readonly #ready: WriteJob[] = [];
  #scheduled = false;

  add(res: ServerResponse, body: Buffer, idleTimeoutMs: number | undefined, onIdle: () => void): void {
    const job: WriteJob = { res, body, offset: 0, closed: false, idle: undefined };
    if (idleTimeoutMs !== undefined && idleTimeoutMs > 0)
      job.idle = setTimeout(() => {
        onIdle();
        res.destroy();
      }, idleTimeoutMs).unref();
    res.once('finish', () => clearTimeout(job.idle));
    res.once('close', () => {
      job.closed = true;
      clearTimeout(job.idle);
    });
    this.#ready.push(job);
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#turn());
  }

  #turn(): void {
    this.#scheduled = false;
    let budget = TURN_BUDGET_BYTES;
    // Only the jobs ready at the start of the turn: one whose slice completes at once goes
    // to the back of the line for the next turn.
    for (let n = this.#ready.length; n > 0 && budget > 0; n--) {
      const job = this.#ready.shift()!;
      if (job.closed) continue;
      const end = Math.min(job.offset + WRITE_SLICE_BYTES, job.body.length);
      const chunk = job.body.subarray(job.offset, end);
      budget -= chunk.length;
      job.offset = end;
      if (end >= job.body.length) {
        job.res.end(chunk);
        continue;
      }
      job.res.write(chunk, (err) => {
        if (err || job.closed) return;
        job.idle?.refresh();
        this.#ready.push(job);
        this.#schedule();
      });
    }
    if (this.#ready.length > 0) this.#schedule();
  }
}

const scheduler = new WriteScheduler();

function writeInSlices(
  res: ServerResponse,
  body: Buffer | undefined,
  slice: number,
  idleTimeoutMs: number | undefined,
  onIdle: () => void,
): void {
  if (!body || slice <= 0 || body.length <= slice) return void res.end(body);
  scheduler.add(res, body, idleTimeoutMs, onIdle);
}
