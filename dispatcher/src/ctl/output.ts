/**
 * Human output for `dispatcherctl`: aligned tables and short forms of times, durations and
 * sizes. (`--json` output is the API's own JSON, printed as is.)
 */

export interface Column<T> {
  header: string;
  /** The cell's text; null/undefined print as `-`. */
  value: (row: T) => string | number | null | undefined;
  /** Right-align (numbers). */
  right?: boolean;
}

/** Renders rows as a table with a header line, columns separated by two spaces. */
export function table<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const cells = rows.map((r) => columns.map((c) => cell(c.value(r))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i]!.length)));
  const fmt = (values: string[]) =>
    values
      .map((v, i) => (columns[i]!.right ? v.padStart(widths[i]!) : i === values.length - 1 ? v : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [fmt(columns.map((c) => c.header)), ...cells.map(fmt)].join('\n') + '\n';
}

/** `key: value` lines, keys aligned. */
export function keyValues(pairs: readonly [string, string | number | null | undefined][]): string {
  const w = Math.max(0, ...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${(k + ':').padEnd(w + 1)}  ${cell(v)}`).join('\n') + '\n';
}

function cell(v: string | number | null | undefined): string {
  if (v === null || v === undefined || v === '') return '-';
  return String(v).replace(/[\r\n\t]+/g, ' ');
}

/** `3s`, `5m`, `2h10m`, `4d3h`. */
export function formatDuration(ms: number | null | undefined): string | null {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return null;
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${s % 60 ? `${s % 60}s` : ''}`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${m % 60 ? `${m % 60}m` : ''}`;
  const d = Math.floor(h / 24);
  return `${d}d${h % 24 ? `${h % 24}h` : ''}`;
}

/** `12s ago` for a past Unix time in ms, relative to `now`. */
export function formatAgo(ts: number | null | undefined, now: number): string | null {
  if (ts === null || ts === undefined) return null;
  const d = formatDuration(now - ts);
  return d === null ? null : `${d} ago`;
}

/** Milliseconds with a sensible precision: `0.4ms`, `12ms`, `1.3s`. */
export function formatMs(ms: number | null | undefined): string | null {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return null;
  if (ms < 1) return `${ms.toFixed(1)}ms`;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  return `${(ms / 1000).toFixed(1)}s`;
}

/** `512 MiB`, `15.5 GiB`. */
export function formatMiB(mib: number | null | undefined): string | null {
  if (mib === null || mib === undefined || !Number.isFinite(mib)) return null;
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${Math.round(mib)} MiB`;
}

export function formatBytes(bytes: number | null | undefined): string | null {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) return null;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  for (; v >= 1024 && i < units.length - 1; i++) v /= 1024;
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** Local time of day for today's events, else date and time: `14:03:27`, `2025-11-20 14:03:27`. */
export function formatTime(ts: number, now: number): string {
  const d = new Date(ts);
  const pad = (n: number) => String(n).padStart(2, '0');
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const today = new Date(now);
  if (d.toDateString() === today.toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}
