/**
 * A boot server's calls to its leader, each with the boot server's token (`Authorization:
 * Bearer lcb_…`, made by `dispatcherctl boot-server add NAME`) under /api/v1/boot-server/.
 * Every answer is checked against its schema before use: the leader is trusted with boots,
 * not with the shape of what comes over the wire.
 */
import type { TSchema, Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { DispatcherError } from '../errors.js';
import {
  HeartbeatAnswer,
  ImageManifest,
  ScriptAnswer,
  type BootEventBatch,
  type BootServerReport,
  type ScriptRequest,
} from '../api/boot-servers/schemas.js';
import type { FileOrigin, WantedFile } from './cache.js';

/** How long a JSON call to the leader may take. */
export const LEADER_CALL_TIMEOUT_MS = 10_000;
/** A download that makes no progress this long is abandoned (and tried again). */
export const LEADER_DOWNLOAD_IDLE_MS = 30_000;

export class LeaderClient implements FileOrigin {
  constructor(
    /** `http://host:port` of the leader, as this boot server reaches it. */
    readonly url: string,
    private readonly token: string,
  ) {}

  script(req: ScriptRequest): Promise<ScriptAnswer> {
    return this.#json('POST', '/api/v1/boot-server/script', ScriptAnswer, req);
  }

  manifest(image: string, version: string): Promise<ImageManifest> {
    return this.#json('GET', `/api/v1/boot-server/images/${encodeURIComponent(image)}/${encodeURIComponent(version)}`, ImageManifest);
  }

  heartbeat(report: BootServerReport): Promise<HeartbeatAnswer> {
    return this.#json('POST', '/api/v1/boot-server/heartbeat', HeartbeatAnswer, report);
  }

  async events(batch: BootEventBatch): Promise<void> {
    await this.#call('POST', '/api/v1/boot-server/events', batch, AbortSignal.timeout(LEADER_CALL_TIMEOUT_MS));
  }

  async download(file: WantedFile): Promise<AsyncIterable<Uint8Array>> {
    const ac = new AbortController();
    const res = await this.#call(
      'GET',
      `/api/v1/boot-server/files/${encodeURIComponent(file.image)}/${encodeURIComponent(file.version)}/${encodeURIComponent(file.name)}`,
      undefined,
      ac.signal,
    );
    if (!res.body) throw new Error('the leader sent no body');
    return idleBounded(res.body, ac, LEADER_DOWNLOAD_IDLE_MS);
  }

  async #json<S extends TSchema>(method: string, path: string, schema: S, body?: unknown): Promise<Static<S>> {
    const res = await this.#call(method, path, body, AbortSignal.timeout(LEADER_CALL_TIMEOUT_MS));
    const data: unknown = await res.json();
    if (!Value.Check(schema, data)) {
      const e = Value.Errors(schema, data).First();
      throw new DispatcherError(
        'DSP_ERR_LEADER',
        `the leader's answer to ${method} ${path} is malformed at ${e?.path || '/'}: ${e?.message}`,
      );
    }
    return data;
  }

  async #call(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      const why = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      throw new DispatcherError('DSP_ERR_LEADER', `the leader at ${this.url} cannot be reached: ${why}`, {
        cause: err,
        hint: 'check --leader and the route from this segment to the leader',
      });
    }
    if (res.ok) return res;
    const text = await res.text().catch(() => '');
    let detail: { code?: string; message?: string; hint?: string } = {};
    try {
      detail = (JSON.parse(text) as { error?: typeof detail }).error ?? {};
    } catch {
      /* not a JSON error body */
    }
    if (res.status === 401)
      throw new DispatcherError(
        'DSP_ERR_BOOT_SERVER_TOKEN',
        `the leader refused this boot server's token: ${detail.message ?? res.status}`,
        {
          hint: 'dispatcherctl boot-server add NAME on the leader makes one; pass it with --leader-token-file',
        },
      );
    throw new DispatcherError(
      'DSP_ERR_LEADER',
      `the leader answered ${method} ${path} with ${res.status}: ${detail.message ?? text.slice(0, 200)}`,
      {
        ...(detail.hint ? { hint: detail.hint } : {}),
      },
    );
  }
}

/** The body's chunks, aborting the request when none arrives for `idleMs`. */
async function* idleBounded(body: ReadableStream<Uint8Array>, ac: AbortController, idleMs: number): AsyncIterable<Uint8Array> {
  let timer = setTimeout(() => ac.abort(new Error(`no bytes for ${idleMs} ms`)), idleMs);
  try {
    for await (const chunk of body) {
      clearTimeout(timer);
      timer = setTimeout(() => ac.abort(new Error(`no bytes for ${idleMs} ms`)), idleMs);
      yield chunk;
    }
  } finally {
    clearTimeout(timer);
  }
}
