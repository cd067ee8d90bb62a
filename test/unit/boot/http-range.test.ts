import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decideServe, etagListMatches, parseRange, type Representation } from '../../../dispatcher/src/boot/http-range.js';

const rep: Representation = { size: 1000, etag: '"abc"', lastModified: 'Mon, 23 Nov 2026 10:00:00 GMT' };

describe('Range header (RFC 9110 §14.1.2)', () => {
  it.each([
    ['absent', undefined, { kind: 'none' }],
    ['a single range', 'bytes=0-99', { kind: 'range', start: 0, end: 99 }],
    ['an open range', 'bytes=900-', { kind: 'range', start: 900, end: 999 }],
    ['a range past the end (clamped)', 'bytes=990-5000', { kind: 'range', start: 990, end: 999 }],
    ['a suffix range', 'bytes=-100', { kind: 'range', start: 900, end: 999 }],
    ['a suffix longer than the file', 'bytes=-5000', { kind: 'range', start: 0, end: 999 }],
    ['upper-case unit and spaces', 'BYTES = 10-19', { kind: 'range', start: 10, end: 19 }],
    ['a start at the size', 'bytes=1000-', { kind: 'unsatisfiable' }],
    ['a start past the size', 'bytes=2000-3000', { kind: 'unsatisfiable' }],
    ['an empty suffix', 'bytes=-0', { kind: 'unsatisfiable' }],
    ['several ranges (served whole)', 'bytes=0-1,5-6', { kind: 'none' }],
    ['last before first (invalid, ignored)', 'bytes=50-10', { kind: 'none' }],
    ['another unit', 'items=0-1', { kind: 'none' }],
    ['garbage', 'bytes=abc', { kind: 'none' }],
    ['a lone dash', 'bytes=-', { kind: 'none' }],
    ['huge numbers', 'bytes=99999999999999999999-', { kind: 'none' }],
  ])('%s', (_n, header, want) => {
    expect(parseRange(header, 1000)).toEqual(want);
  });

  it('always yields a range inside the file, or none, or unsatisfiable', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.tuple(fc.nat(), fc.nat()).map(([a, b]) => `bytes=${a}-${b}`),
          fc.nat().map((n) => `bytes=-${n}`),
        ),
        fc.nat({ max: 1e9 }),
        (h, size) => {
          const r = parseRange(h, size);
          if (r.kind === 'range') {
            expect(r.start).toBeGreaterThanOrEqual(0);
            expect(r.end).toBeLessThan(size);
            expect(r.start).toBeLessThanOrEqual(r.end);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe('conditional requests (RFC 9110 §13.2.2)', () => {
  it.each([
    ['a plain GET', { method: 'GET' }, { status: 200, start: 0, end: 999 }],
    ['a ranged GET', { method: 'GET', range: 'bytes=0-9' }, { status: 206, start: 0, end: 9 }],
    ['an unsatisfiable range', { method: 'GET', range: 'bytes=5000-' }, { status: 416 }],
    ['a ranged HEAD (Range applies to GET only)', { method: 'HEAD', range: 'bytes=0-9' }, { status: 200, start: 0, end: 999 }],
    ['If-None-Match with the current tag', { method: 'GET', ifNoneMatch: '"abc"' }, { status: 304 }],
    ['If-None-Match with a weak form of the tag', { method: 'GET', ifNoneMatch: '"x", W/"abc"' }, { status: 304 }],
    ['If-None-Match: *', { method: 'HEAD', ifNoneMatch: '*' }, { status: 304 }],
    ['If-None-Match with another tag', { method: 'GET', ifNoneMatch: '"old"' }, { status: 200, start: 0, end: 999 }],
    [
      'If-None-Match wins over If-Modified-Since',
      { method: 'GET', ifNoneMatch: '"old"', ifModifiedSince: 'Tue, 24 Nov 2026 10:00:00 GMT' },
      { status: 200, start: 0, end: 999 },
    ],
    ['If-Modified-Since not older than the file', { method: 'GET', ifModifiedSince: 'Mon, 23 Nov 2026 10:00:00 GMT' }, { status: 304 }],
    [
      'If-Modified-Since older than the file',
      { method: 'GET', ifModifiedSince: 'Sun, 22 Nov 2026 10:00:00 GMT' },
      { status: 200, start: 0, end: 999 },
    ],
    ['If-Match with another tag', { method: 'GET', ifMatch: '"old"' }, { status: 412 }],
    ['If-Match with a weak tag (strong comparison)', { method: 'GET', ifMatch: 'W/"abc"' }, { status: 412 }],
    ['If-Match with the tag', { method: 'GET', ifMatch: '"abc"', range: 'bytes=1-1' }, { status: 206, start: 1, end: 1 }],
    ['If-Unmodified-Since before the file changed', { method: 'GET', ifUnmodifiedSince: 'Sun, 22 Nov 2026 10:00:00 GMT' }, { status: 412 }],
    ['If-Range with the current tag', { method: 'GET', range: 'bytes=10-', ifRange: '"abc"' }, { status: 206, start: 10, end: 999 }],
    ['If-Range with an old tag (whole file)', { method: 'GET', range: 'bytes=10-', ifRange: '"old"' }, { status: 200, start: 0, end: 999 }],
    [
      'If-Range with a weak tag (never matches)',
      { method: 'GET', range: 'bytes=10-', ifRange: 'W/"abc"' },
      { status: 200, start: 0, end: 999 },
    ],
    [
      'If-Range with the exact date',
      { method: 'GET', range: 'bytes=10-', ifRange: 'Mon, 23 Nov 2026 10:00:00 GMT' },
      { status: 206, start: 10, end: 999 },
    ],
    [
      'If-Range with another date',
      { method: 'GET', range: 'bytes=10-', ifRange: 'Mon, 23 Nov 2026 09:00:00 GMT' },
      { status: 200, start: 0, end: 999 },
    ],
  ])('%s', (_n, req, want) => {
    expect(decideServe(req, rep)).toEqual(want);
  });

  it('serves an empty file whole', () => {
    expect(decideServe({ method: 'GET' }, { ...rep, size: 0 })).toEqual({ status: 200, start: 0, end: -1 });
    expect(decideServe({ method: 'GET', range: 'bytes=0-' }, { ...rep, size: 0 })).toEqual({ status: 416 });
  });

  it('never throws on any header values', () => {
    const h = fc.option(fc.string({ maxLength: 40 }), { nil: undefined });
    fc.assert(
      fc.property(
        fc.constantFrom('GET', 'HEAD', 'POST'),
        h,
        h,
        h,
        h,
        h,
        h,
        (method, range, ifRange, ifMatch, ifNoneMatch, ifModifiedSince, ifUnmodifiedSince) => {
          const d = decideServe({ method, range, ifRange, ifMatch, ifNoneMatch, ifModifiedSince, ifUnmodifiedSince }, rep);
          expect([200, 206, 304, 412, 416]).toContain(d.status);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('matches entity-tag lists', () => {
    expect(etagListMatches(' "a" , "abc" ', '"abc"', 'strong')).toBe(true);
    expect(etagListMatches('W/"abc"', '"abc"', 'strong')).toBe(false);
    expect(etagListMatches('abc', '"abc"', 'weak')).toBe(false);
  });
});
