/**
 * HTTP conditional and range requests for the boot files, pure (RFC 9110 §13 and §14):
 * request headers and the file's size, entity tag and date in, the status and byte range to
 * send out. One range at most: a multi-range request gets the whole file (§14.2 lets a
 * server ignore Range), which is what firmware and iPXE handle best anyway.
 */

export interface Representation {
  size: number;
  /** Strong entity tag, quoted. */
  etag: string;
  /** Last-Modified as an HTTP date (whole seconds). */
  lastModified: string;
}

export interface RequestConditions {
  method: string;
  range?: string | undefined;
  ifRange?: string | undefined;
  ifMatch?: string | undefined;
  ifNoneMatch?: string | undefined;
  ifModifiedSince?: string | undefined;
  ifUnmodifiedSince?: string | undefined;
}

export type ServeDecision =
  | { status: 200; start: 0; end: number }
  | { status: 206; start: number; end: number }
  | { status: 304 }
  | { status: 412 }
  | { status: 416 };

export type ByteRange = { kind: 'none' } | { kind: 'range'; start: number; end: number } | { kind: 'unsatisfiable' };

/**
 * Parses `Range: bytes=...` against a size (RFC 9110 §14.1.2). `end` is inclusive.
 * Invalid syntax or several ranges → `none` (serve the whole file, §14.2).
 */
export function parseRange(header: string | undefined, size: number): ByteRange {
  if (header === undefined) return { kind: 'none' };
  const m = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  if (!m) return { kind: 'none' };
  const specs = m[1]!
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (specs.length !== 1) return { kind: 'none' };
  const spec = /^(\d*)-(\d*)$/.exec(specs[0]!);
  if (!spec || (spec[1] === '' && spec[2] === '')) return { kind: 'none' };
  if (spec[1]!.length > 15 || spec[2]!.length > 15) return { kind: 'none' };
  if (spec[1] === '') {
    // suffix-range: the last N bytes; N = 0 can never be satisfied (§14.1.3).
    const n = Number(spec[2]);
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'range', start: Math.max(0, size - n), end: size - 1 };
  }
  const first = Number(spec[1]);
  if (spec[2] !== '' && Number(spec[2]) < first) return { kind: 'none' }; // invalid: ignored, not unsatisfiable (§14.1.1)
  if (first >= size) return { kind: 'unsatisfiable' };
  const last = spec[2] === '' ? size - 1 : Math.min(Number(spec[2]), size - 1);
  return { kind: 'range', start: first, end: last };
}

/** RFC 9110 §13.2.2: the order in which preconditions are evaluated, then Range. */
export function decideServe(req: RequestConditions, rep: Representation): ServeDecision {
  const full = { status: 200 as const, start: 0 as const, end: rep.size - 1 };
  if (req.ifMatch !== undefined) {
    if (!etagListMatches(req.ifMatch, rep.etag, 'strong')) return { status: 412 };
  } else if (req.ifUnmodifiedSince !== undefined) {
    const since = httpDate(req.ifUnmodifiedSince);
    if (since !== undefined && httpDate(rep.lastModified)! > since) return { status: 412 };
  }
  const safe = req.method === 'GET' || req.method === 'HEAD';
  if (req.ifNoneMatch !== undefined) {
    if (etagListMatches(req.ifNoneMatch, rep.etag, 'weak')) return safe ? { status: 304 } : { status: 412 };
  } else if (req.ifModifiedSince !== undefined && safe) {
    const since = httpDate(req.ifModifiedSince);
    if (since !== undefined && httpDate(rep.lastModified)! <= since) return { status: 304 };
  }
  if (req.method !== 'GET' || req.range === undefined) return full;
  if (req.ifRange !== undefined && !ifRangeMatches(req.ifRange, rep)) return full;
  const r = parseRange(req.range, rep.size);
  if (r.kind === 'none') return full;
  if (r.kind === 'unsatisfiable') return { status: 416 };
  return { status: 206, start: r.start, end: r.end };
}

/** `If-Range`: a strong entity tag that matches exactly, or the exact Last-Modified date (§13.1.5). */
function ifRangeMatches(value: string, rep: Representation): boolean {
  const v = value.trim();
  if (v.startsWith('"') || v.startsWith('W/')) return v === rep.etag;
  const d = httpDate(v);
  return d !== undefined && d === httpDate(rep.lastModified);
}

/** `*` or a comma-separated list of entity tags (§13.1.1/§13.1.2); weak comparison ignores `W/`. */
export function etagListMatches(list: string, etag: string, comparison: 'strong' | 'weak'): boolean {
  const trimmed = list.trim();
  if (trimmed === '*') return true;
  for (const raw of trimmed.split(',')) {
    let tag = raw.trim();
    if (tag.startsWith('W/')) {
      if (comparison === 'strong') continue;
      tag = tag.slice(2);
    }
    if (tag === etag) return true;
  }
  return false;
}

function httpDate(s: string): number | undefined {
  const t = Date.parse(s);
  return Number.isFinite(t) ? Math.floor(t / 1000) : undefined;
}

/** `Content-Range` of a 206 (`bytes 0-99/1000`) or a 416 (`bytes *\/1000`). */
export function contentRange(decision: { status: 206; start: number; end: number } | { status: 416 }, size: number): string {
  return decision.status === 206 ? `bytes ${decision.start}-${decision.end}/${size}` : `bytes */${size}`;
}
