/**
 * The CLI's HTTP client for the dispatcher's JSON API. Every failure becomes a CtlError:
 * the API's own error (code, message, hint) when the dispatcher answered, or a message that
 * says how to reach it when it did not.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CtlError, EXIT, usageError } from './errors.js';
import { SseParser, type SseMessage } from '../api/sse.js';

export const DEFAULT_URL = 'http://127.0.0.1:8080';
export const DEFAULT_DATA_DIR = '/var/lib/lilcluster';
/** Per-request timeout for ordinary calls; streams (exec, events --follow) have none. */
export const DEFAULT_TIMEOUT_MS = 30_000;

export interface Target {
  url: string;
  token: string | undefined;
  /** Where the token came from, or why none was found (for the 401 hint). */
  tokenSource: string;
}

/**
 * The dispatcher URL and admin token: flags first, then the environment
 * (LILCLUSTER_URL, LILCLUSTER_TOKEN, LILCLUSTER_DATA_DIR), then `<data-dir>/admin.token`.
 */
export function resolveTarget(
  flags: { url?: string | undefined; token?: string | undefined; dataDir?: string | undefined },
  env: Record<string, string | undefined>,
): Target {
  const url = flags.url ?? env.LILCLUSTER_URL ?? DEFAULT_URL;
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http');
  } catch {
    throw usageError(`--url ${url}: not an http:// URL`, `e.g. --url ${DEFAULT_URL}`);
  }
  if (flags.token) return { url, token: flags.token, tokenSource: '--token' };
  if (env.LILCLUSTER_TOKEN) return { url, token: env.LILCLUSTER_TOKEN, tokenSource: 'LILCLUSTER_TOKEN' };
  const file = join(flags.dataDir ?? env.LILCLUSTER_DATA_DIR ?? DEFAULT_DATA_DIR, 'admin.token');
  try {
    const token = readFileSync(file, 'utf8').trim();
    if (token) return { url, token, tokenSource: file };
    return { url, token: undefined, tokenSource: `${file} is empty` };
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'EACCES' ? 'permission denied' : 'not found';
    return { url, token: undefined, tokenSource: `${file}: ${why}` };
  }
}

export type Query = Record<string, string | number | boolean | undefined | null>;

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export class ApiClient {
  constructor(
    readonly target: Target,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {}

  get<T>(path: string, query?: Query): Promise<T> {
    return this.request<T>('GET', path, query ? { query } : {});
  }

  post<T>(path: string, body?: unknown, opts: Omit<RequestOptions, 'body'> = {}): Promise<T> {
    return this.request<T>('POST', path, { ...opts, body: body ?? {} });
  }

  patch<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PATCH', path, { body });
  }

  delete<T>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.#send(method, path, opts, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const text = await res.text();
    if (!text) return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new CtlError('CTL_BAD_ANSWER', `the dispatcher answered ${method} ${path} with something that is not JSON`, {
        hint: 'is --url pointing at a lilcluster dispatcher?',
        cause: err,
      });
    }
  }

  /** A streaming answer of JSON lines (application/x-ndjson), one value per line. */
  async *ndjson<T>(method: string, path: string, opts: RequestOptions = {}): AsyncGenerator<T> {
    const res = await this.#send(method, path, opts, undefined);
    let buf = '';
    for await (const chunk of textChunks(res)) {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) yield JSON.parse(line) as T;
      }
    }
    if (buf.trim()) yield JSON.parse(buf) as T;
  }

  /** Server-sent events (text/event-stream) until the server closes or `signal` aborts. */
  async *sse(path: string, opts: RequestOptions & { lastEventId?: string } = {}): AsyncGenerator<SseMessage> {
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (opts.lastEventId) headers['last-event-id'] = opts.lastEventId;
    const res = await this.#send('GET', path, opts, undefined, headers);
    const parser = new SseParser();
    for await (const chunk of textChunks(res)) for (const ev of parser.push(chunk)) yield ev;
  }

  async #send(
    method: string,
    path: string,
    opts: RequestOptions,
    timeoutMs: number | undefined,
    extraHeaders: Record<string, string> = {},
  ): Promise<Response> {
    const url = new URL(path, this.target.url);
    for (const [k, v] of Object.entries(opts.query ?? {}))
      if (v !== undefined && v !== null && v !== false) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: 'application/json', ...extraHeaders };
    if (this.target.token) headers.authorization = `Bearer ${this.target.token}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const signals = [opts.signal, timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined].filter((s): s is AbortSignal => !!s);
    let res: Response;
    try {
      res = await this.fetchImpl(url, { method, headers, body, signal: signals.length ? AbortSignal.any(signals) : null });
    } catch (err) {
      throw this.#unreachable(err, timeoutMs);
    }
    if (!res.ok) throw await this.#apiError(res, method, path);
    return res;
  }

  #unreachable(err: unknown, timeoutMs: number | undefined): CtlError {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    if (e.name === 'AbortError') return new CtlError('CTL_ABORTED', 'interrupted', { exitCode: EXIT.FAILED, cause: err });
    const why =
      e.name === 'TimeoutError'
        ? `no answer within ${Math.round((timeoutMs ?? 0) / 1000)} s`
        : (e.cause?.code ?? e.cause?.message ?? e.message);
    return new CtlError('CTL_UNREACHABLE', `cannot reach the dispatcher at ${this.target.url} (${why})`, {
      exitCode: EXIT.UNREACHABLE,
      hint: 'is the dispatcher running? Point at it with --url URL or LILCLUSTER_URL (default http://127.0.0.1:8080)',
      cause: err,
    });
  }

  async #apiError(res: Response, method: string, path: string): Promise<CtlError> {
    let code = `HTTP_${res.status}`;
    let message = `${method} ${path}: ${res.status} ${res.statusText}`;
    let hint: string | undefined;
    try {
      const body = (await res.json()) as { error?: { code?: string; message?: string; hint?: string } };
      if (body?.error?.message) {
        code = body.error.code ?? code;
        message = body.error.message;
        hint = body.error.hint;
      }
    } catch {
      /* not a JSON error body: keep the status line */
    }
    if (res.status === 401) {
      hint = this.target.token
        ? `the token from ${this.target.tokenSource} was refused; the right one is in <data-dir>/admin.token on the dispatcher`
        : `no admin token (${this.target.tokenSource}): pass --token TOKEN, set LILCLUSTER_TOKEN, or run where <data-dir>/admin.token is readable`;
    }
    return new CtlError(code, message, {
      exitCode: res.status === 401 ? EXIT.UNAUTHORIZED : EXIT.FAILED,
      status: res.status,
      ...(hint ? { hint } : {}),
    });
  }
}

async function* textChunks(res: Response): AsyncGenerator<string> {
  if (!res.body) return;
  const decoder = new TextDecoder();
  const reader = res.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const s = decoder.decode(value, { stream: true });
      if (s) yield s;
    }
    const tail = decoder.decode();
    if (tail) yield tail;
  } finally {
    reader.releaseLock();
  }
}
