/**
 * A server-sent events parser (WHATWG HTML §9.2.6 "Interpreting an event stream"): feed it
 * text chunks as they arrive, get whole events out. Pure: no sockets, so it is fuzzed alone.
 * With formatSse, the framing of the API's event streams (api/streams.ts writes it,
 * dispatcherctl reads it), so it sits beside the API schema modules and the CLI may import it.
 */

export interface SseMessage {
  /** `event:` field; "message" when absent. */
  event: string;
  data: string;
  /** `id:` field of this event or the last one before it. */
  id: string | undefined;
}

/** Longest buffered line accepted; a peer that never sends a newline cannot grow memory without bound. */
export const MAX_SSE_LINE = 16 * 1024 * 1024;

export class SseParser {
  #buffer = '';
  #event = '';
  #data: string[] = [];
  #lastId: string | undefined;
  #sawCr = false;

  /** Feeds a chunk; returns the events it completed. */
  push(chunk: string): SseMessage[] {
    const out: SseMessage[] = [];
    let text = chunk;
    // A CRLF split across chunks: the LF was already counted as part of the CR line end.
    if (this.#sawCr && text.startsWith('\n')) text = text.slice(1);
    this.#sawCr = false;
    this.#buffer += text;
    let start = 0;
    for (let i = 0; i < this.#buffer.length; i++) {
      const c = this.#buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this.#buffer.slice(start, i);
      if (c === 13) {
        if (i + 1 < this.#buffer.length) {
          if (this.#buffer.charCodeAt(i + 1) === 10) i++;
        } else this.#sawCr = true;
      }
      start = i + 1;
      const ev = this.#line(line);
      if (ev) out.push(ev);
    }
    this.#buffer = this.#buffer.slice(start);
    if (this.#buffer.length > MAX_SSE_LINE) throw new Error(`server-sent event line longer than ${MAX_SSE_LINE} bytes`);
    return out;
  }

  #line(line: string): SseMessage | undefined {
    if (line === '') {
      if (this.#data.length === 0) {
        this.#event = '';
        return undefined;
      }
      const ev: SseMessage = { event: this.#event || 'message', data: this.#data.join('\n'), id: this.#lastId };
      this.#event = '';
      this.#data = [];
      return ev;
    }
    if (line.startsWith(':')) return undefined; // comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.#event = value;
        break;
      case 'data':
        this.#data.push(value);
        break;
      case 'id':
        if (!value.includes('\u0000')) this.#lastId = value;
        break;
      default:
        break; // `retry` and unknown fields: ignored
    }
    return undefined;
  }
}

/** Serializes one event (the server side of the same format). Data lines may not carry CR/LF. */
export function formatSse(ev: { event?: string; data: string; id?: string | number }): string {
  let s = '';
  if (ev.id !== undefined) s += `id: ${String(ev.id).replace(/[\r\n]/g, '')}\n`;
  if (ev.event) s += `event: ${ev.event.replace(/[\r\n]/g, '')}\n`;
  for (const line of ev.data.split(/\r\n|\r|\n/)) s += `data: ${line}\n`;
  return s + '\n';
}
