/**
 * Structured logging. Every service takes a child logger carrying its context
 * (`svc`, `mac`, `node`, `task`); messages are short and fixed, data goes in fields.
 */
import { pino, destination, stdTimeFunctions, type Logger } from 'pino';

export type { Logger };

export interface LogOptions {
  /** pino level; `LOG_LEVEL` in the environment overrides the default `info`. */
  level?: string;
  /** Write to this file descriptor (default stdout). */
  fd?: number;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL ?? 'info';
  return pino({ level, base: undefined, timestamp: stdTimeFunctions.isoTime }, destination({ fd: opts.fd ?? 1, sync: false }));
}

/** A logger that drops everything: for tests and benchmarks that only want the numbers. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * Rate-limited logging for hostile or noisy input (malformed packets, unknown MACs):
 * at most `perInterval` lines per key per interval; the suppressed count is reported
 * with the next line that gets through.
 */
export class RateLimitedLog {
  readonly #seen = new Map<string, { windowStart: number; count: number; suppressed: number }>();
  constructor(
    private readonly log: Logger,
    private readonly perInterval = 10,
    private readonly intervalMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  warn(key: string, fields: Record<string, unknown>, msg: string): void {
    this.#emit('warn', key, fields, msg);
  }
  debug(key: string, fields: Record<string, unknown>, msg: string): void {
    this.#emit('debug', key, fields, msg);
  }

  #emit(level: 'warn' | 'debug', key: string, fields: Record<string, unknown>, msg: string): void {
    const t = this.now();
    let entry = this.#seen.get(key);
    if (!entry || t - entry.windowStart >= this.intervalMs) {
      const suppressed = entry?.suppressed ?? 0;
      entry = { windowStart: t, count: 0, suppressed: 0 };
      this.#seen.set(key, entry);
      if (suppressed > 0) fields = { ...fields, suppressed };
      if (this.#seen.size > 10_000) this.#seen.clear(); // bound memory under a flood of distinct keys
    }
    if (entry.count++ < this.perInterval) this.log[level](fields, msg);
    else entry.suppressed++;
  }
}
