/**
 * Console lines from hostile bytes: a netconsole datagram (or any stream chunk) becomes at
 * most a few printable lines of bounded length, and a per-source token bucket says how many
 * of them may be kept. Pure: no I/O, no clock of its own.
 *
 * netconsole sends each printk record as it goes to the consoles, cut into datagrams of at
 * most 1000 bytes (MAX_PRINT_CHUNK, drivers/net/netconsole.c): one datagram is usually one
 * line ending in "\n", a longer record arrives as several pieces.
 */

/** Bytes of a datagram looked at; the rest is cut (netconsole never sends more than 1000). */
export const MAX_DATAGRAM_BYTES = 1024;
/** Characters kept of one line (a longer one is cut and marked). */
export const MAX_LINE_CHARS = 1000;
/** Lines kept of one datagram ("\n\n\n…" is not a way to make many rows). */
export const MAX_LINES_PER_DATAGRAM = 16;

export interface ParsedDatagram {
  lines: string[];
  /** The datagram, a line or the number of lines was over its bound. */
  truncated: boolean;
}

/**
 * Splits a datagram into lines: only the first MAX_DATAGRAM_BYTES are read, bytes that are
 * not UTF-8 become U+FFFD, control characters (but tab) are dropped, trailing blanks trimmed,
 * empty lines skipped. Never throws.
 */
export function parseDatagram(data: Uint8Array): ParsedDatagram {
  let truncated = data.length > MAX_DATAGRAM_BYTES;
  const text = Buffer.from(data.buffer, data.byteOffset, Math.min(data.length, MAX_DATAGRAM_BYTES)).toString('utf8');
  const lines: string[] = [];
  for (const raw of text.split(/\r?\n|\r/)) {
    let line = raw.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '').trimEnd();
    if (!line) continue;
    if (line.length > MAX_LINE_CHARS) {
      line = `${line.slice(0, MAX_LINE_CHARS)}…`;
      truncated = true;
    }
    if (lines.length === MAX_LINES_PER_DATAGRAM) {
      truncated = true;
      break;
    }
    lines.push(line);
  }
  return { lines, truncated };
}

/**
 * A token bucket per source: `rate` lines a second on average, bursts up to `burst`. A
 * booting or panicking kernel writes a few hundred lines at once, well inside the burst;
 * a flood past it is dropped and counted, not stored.
 */
export class LineBudget {
  #tokens: number;
  #at: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
    now: number,
  ) {
    this.#tokens = burst;
    this.#at = now;
  }

  /** How many of `wanted` lines may be kept now (the others are over budget). */
  take(wanted: number, now: number): number {
    const elapsed = Math.max(0, now - this.#at);
    this.#at = Math.max(this.#at, now);
    this.#tokens = Math.min(this.burst, this.#tokens + (elapsed * this.rate) / 1000);
    const granted = Math.max(0, Math.min(wanted, Math.floor(this.#tokens)));
    this.#tokens -= granted;
    return granted;
  }
}
