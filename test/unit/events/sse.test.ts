import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SseParser, formatSse, type SseMessage } from '../../../dispatcher/src/api/sse.js';

function parseAll(chunks: string[]): SseMessage[] {
  const p = new SseParser();
  return chunks.flatMap((c) => p.push(c));
}

describe('server-sent events codec', () => {
  it('reads events, ids, multi-line data and comments (WHATWG §9.2.6)', () => {
    const text = ': keep-alive\n\nretry: 2000\n\nid: 7\nevent: event\ndata: {"a":1}\n\ndata: line one\ndata: line two\n\n';
    expect(parseAll([text])).toEqual([
      { event: 'event', data: '{"a":1}', id: '7' },
      { event: 'message', data: 'line one\nline two', id: '7' },
    ]);
  });

  it('accepts CRLF and CR line ends, even split across chunks', () => {
    expect(parseAll(['data: a\r', '\n\r', '\ndata: b\r\r'])).toEqual([
      { event: 'message', data: 'a', id: undefined },
      { event: 'message', data: 'b', id: undefined },
    ]);
  });

  it('gives the same events however the stream is cut into chunks', () => {
    const events = fc.array(fc.record({ event: fc.constantFrom('event', 'update', 'snapshot'), data: fc.json(), id: fc.nat() }), {
      maxLength: 8,
    });
    fc.assert(
      fc.property(events, fc.array(fc.nat(), { maxLength: 10 }), (evs, cuts) => {
        const text = evs.map((e) => formatSse(e)).join('');
        const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
        const chunks: string[] = [];
        let at = 0;
        for (const p of points) {
          chunks.push(text.slice(at, p));
          at = p;
        }
        chunks.push(text.slice(at));
        const got = parseAll(chunks);
        expect(got.map((g) => ({ event: g.event, data: g.data, id: Number(g.id) }))).toEqual(
          evs.map((e) => ({ event: e.event, data: e.data.replace(/\r\n|\r/g, '\n'), id: e.id })),
        );
      }),
    );
  });

  it('never throws on arbitrary text', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ maxLength: 200 })), (chunks) => {
        const out = parseAll(chunks);
        expect(Array.isArray(out)).toBe(true);
      }),
    );
  });
});
