/**
 * Memory sizes as people write them (`512M`, `2G`, `1.5GiB`): dispatcherctl's `--mem` and
 * the agent's memory flags share this parser, so both refuse the same things the same way.
 * Units are binary (K = 1024 bytes) and required: a bare number is refused rather than
 * guessed at (MiB? bytes?).
 */

const UNITS: Record<string, number> = { K: 1 / 1024, M: 1, G: 1024, T: 1024 * 1024 };
const SIZE_RE = /^(\d{1,12}(?:\.\d{1,6})?)([KMGT])(?:i?B)?$/i;

/** A size in MiB (rounded up to a whole MiB), or an Error whose message says what is wrong and names `what`. */
export function parseSizeMiB(text: string, what: string): number | Error {
  const t = text.trim();
  const m = SIZE_RE.exec(t);
  if (!m)
    return new Error(`${what}: "${text}" is not a size; write a number and a unit, K, M, G or T (binary: 1G = 1024M), e.g. 512M or 2G`);
  const raw = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (!(raw >= 1)) return new Error(`${what}: "${text}" is less than 1M`);
  const mib = Math.ceil(raw);
  if (mib > 2 ** 30) return new Error(`${what}: "${text}" is more than 1024T`);
  return mib;
}
