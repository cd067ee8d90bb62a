/**
 * Which dispatcher the agent tries next when it knows several (a leader and its standbys on one
 * PostgreSQL: only the leader takes agents; a standby answers the WebSocket upgrade with HTTP 503,
 * code DSP_ERR_STANDBY, naming the leader). Pure: no sockets, no timers; connection.ts asks.
 *
 * The agent stays with the dispatcher it last talked to. When an attempt fails it tries the next
 * one at once, or the leader a standby named (once per round, so two standbys naming each other
 * cannot spin it; only a leader in the agent's own list, so a stray answer cannot send it
 * elsewhere). Only after a whole round failed does it wait its back-off, as an agent with one
 * dispatcher does after each failure; no longer than a standby's Retry-After, when one answered
 * in that round (a takeover is under way: the standby leads within seconds).
 */

/** How much of a refusal's body is read (a standby's answer is a few hundred bytes). */
export const MAX_REFUSAL_BODY_BYTES = 16 * 1024;
export const STANDBY_CODE = 'DSP_ERR_STANDBY';

export interface NextDispatcher {
  /** The agent WebSocket URL to try next. */
  url: string;
  /** Wait the back-off first: every dispatcher failed this round. */
  backoff: boolean;
  /** The URL is the leader a standby named. */
  followed: boolean;
  /** With `backoff`: wait no longer than this (the shortest Retry-After a standby gave this round). */
  capMs?: number;
}

export class DispatcherRotation {
  readonly urls: readonly string[];
  #i = 0;
  #tried = 0;
  #followed = false;
  #retryAfterMs: number | undefined;

  constructor(urls: readonly string[]) {
    if (urls.length === 0) throw new Error('DispatcherRotation: no dispatcher URL');
    this.urls = urls;
  }

  get current(): string {
    return this.urls[this.#i]!;
  }

  /** A connection was established: rounds start again from this dispatcher. */
  connected(): void {
    this.#tried = 0;
    this.#followed = false;
    this.#retryAfterMs = undefined;
  }

  /** An established connection ended: the same dispatcher first, after the back-off. */
  lost(): NextDispatcher {
    this.connected();
    return { url: this.current, backoff: true, followed: false };
  }

  /** An attempt failed (unreachable, refused, a standby: `leader` is whom it named, `retryAfterMs` when to ask again). */
  failed(leader?: string, retryAfterMs?: number): NextDispatcher {
    this.#tried++;
    if (retryAfterMs !== undefined) this.#retryAfterMs = Math.min(this.#retryAfterMs ?? retryAfterMs, retryAfterMs);
    const j = leader === undefined ? -1 : this.indexOf(leader);
    if (j >= 0 && j !== this.#i && !this.#followed) {
      this.#followed = true;
      this.#i = j;
      return { url: this.current, backoff: false, followed: true };
    }
    this.#i = (this.#i + 1) % this.urls.length;
    if (this.#tried < this.urls.length) return { url: this.current, backoff: false, followed: false };
    const capMs = this.#retryAfterMs;
    this.connected();
    return { url: this.current, backoff: true, followed: false, ...(capMs !== undefined ? { capMs } : {}) };
  }

  /** The position of a dispatcher given by any of its URLs (http://h:p, ws://h:p/...), else -1. */
  indexOf(url: string): number {
    const key = endpointKey(url);
    return key === undefined ? -1 : this.urls.findIndex((u) => endpointKey(u) === key);
  }
}

/** `http://host:port` of an agent WebSocket URL (for task inputs: they come from the same dispatcher). */
export function httpBaseOf(wsUrl: string): string {
  const u = new URL(wsUrl);
  return `${u.protocol === 'wss:' || u.protocol === 'https:' ? 'https' : 'http'}://${u.host}`;
}

/** Scheme family and host:port: the same dispatcher whether named by its http:// or ws:// URL. */
function endpointKey(url: string): string | undefined {
  try {
    const u = new URL(url);
    const secure = u.protocol === 'https:' || u.protocol === 'wss:';
    if (!secure && u.protocol !== 'http:' && u.protocol !== 'ws:') return undefined;
    const port = u.port || (secure ? '443' : '80');
    return `${secure ? 's' : ''}://${u.hostname}:${port}`;
  } catch {
    return undefined;
  }
}

/** A Retry-After header in seconds (the only form a dispatcher sends) → ms, bounded; else undefined. */
export function retryAfterMs(header: string | undefined, minMs: number, maxMs: number): number | undefined {
  if (header === undefined || !/^\d{1,6}$/.test(header.trim())) return undefined;
  return Math.min(maxMs, Math.max(minMs, Number(header.trim()) * 1000));
}

export interface Refusal {
  /** One line for the agent's console: status, code, message. */
  why: string;
  /** The body said DSP_ERR_STANDBY. */
  standby: boolean;
  /** The leader the standby named, when it knows one. */
  leader?: string;
}

/**
 * An HTTP answer to the WebSocket upgrade (a standby's 503, a proxy's 502, a 404...): read as
 * the API's error body `{"error":{"code","message","hint",...}}` when it is one; the leader is
 * taken from `error.leader` or `leader` (a URL, or `{url}`). Anything else is just the status.
 */
export function describeRefusal(status: number, body: string): Refusal {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return { why: `HTTP ${status}`, standby: false };
  }
  const obj = record(parsed);
  const err = record(obj?.error) ?? obj;
  const code = typeof err?.code === 'string' ? err.code.slice(0, 64) : undefined;
  const message = typeof err?.message === 'string' ? err.message.replace(/[\x00-\x1f\x7f]+/g, ' ').slice(0, 200) : undefined;
  const leader = leaderUrl(err?.leader) ?? leaderUrl(obj?.leader);
  const standby = code === STANDBY_CODE;
  const why = [`HTTP ${status}`, code, message].filter(Boolean).join(' ');
  return { why, standby, ...(leader ? { leader } : {}) };
}

function leaderUrl(v: unknown): string | undefined {
  const text = typeof v === 'string' ? v : record(v)?.url;
  if (typeof text !== 'string' || text.length > 512) return undefined;
  try {
    const u = new URL(text);
    return ['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol) ? text : undefined;
  } catch {
    return undefined;
  }
}

function record(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}
