/**
 * Task progress: a task reports how far it got by printing a line on its standard output
 *
 *   PROGRESS 0.42
 *
 * — the word PROGRESS in capitals, blanks, and a fraction from 0 to 1 (a decimal number;
 * `1e-1` and `.5` are accepted, `42%` is not), alone on its line. The agent parses those lines
 * (they stay in the task's stdout too), keeps the latest value per task and sends it to the
 * dispatcher at most every PROGRESS_THROTTLE_MS. A value outside 0..1 is ignored.
 */

/** The agent sends a task's progress at most this often. */
export const PROGRESS_THROTTLE_MS = 500;

/** Lines longer than this cannot be progress lines (bounds the agent's line buffer). */
export const PROGRESS_MAX_LINE = 64;

const PROGRESS_RE = /^PROGRESS[ \t]+([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)[ \t]*\r?$/;

/** The fraction a line reports, or undefined if it is not a (valid) progress line. */
export function parseProgressLine(line: string): number | undefined {
  if (line.length > PROGRESS_MAX_LINE || !line.startsWith('PROGRESS')) return undefined;
  const m = PROGRESS_RE.exec(line);
  if (!m) return undefined;
  const f = Number(m[1]);
  return Number.isFinite(f) && f >= 0 && f <= 1 ? f : undefined;
}

/**
 * Splits a byte stream into lines and reports progress lines. Holds at most
 * PROGRESS_MAX_LINE bytes of a pending line: anything longer is skipped up to its newline.
 */
export class ProgressScanner {
  #pending = '';
  #skipping = false;
  constructor(private readonly onProgress: (fraction: number) => void) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      const end = nl === -1 ? chunk.length : nl;
      if (!this.#skipping) {
        if (this.#pending.length + (end - start) > PROGRESS_MAX_LINE) {
          this.#skipping = true;
          this.#pending = '';
        } else this.#pending += chunk.toString('latin1', start, end);
      }
      if (nl === -1) return;
      if (!this.#skipping) {
        const f = parseProgressLine(this.#pending);
        if (f !== undefined) this.onProgress(f);
      }
      this.#pending = '';
      this.#skipping = false;
      start = nl + 1;
    }
  }
}
