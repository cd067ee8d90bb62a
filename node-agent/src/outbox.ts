/**
 * The real Reporter: finished results wait here until the dispatcher acknowledges them —
 * in memory, and on disk under the work dir so they also survive a restart of the agent
 * itself (on the RAM image, until the machine reboots).
 *
 * A result goes to disk only if it is still unacknowledged PERSIST_AFTER_MS after it was
 * added: normally the acknowledgement comes within milliseconds and nothing is written at
 * all (no file work per task at a thousand tasks a second); when the dispatcher is away, the
 * waiting results are written in one file per batch (`outbox/<n>.json`), removed once all of
 * them are acknowledged. An agent killed less than PERSIST_AFTER_MS after a task ended loses
 * that result; the dispatcher then runs the task again when its lease expires.
 */
import { mkdirSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskResult } from '../../dispatcher/src/protocol/messages.js';
import type { TaskRef } from '../../dispatcher/src/protocol/messages.js';
import type { Reporter } from './seams.js';

const keyOf = (r: TaskRef): string => `${r.taskId}:${r.attempt}`;

/** Unacknowledged results are written to disk after this long. */
export const PERSIST_AFTER_MS = 1000;

export class Outbox implements Reporter {
  readonly #results = new Map<string, TaskResult>();
  readonly #fileOf = new Map<string, string>();
  readonly #pendingIn = new Map<string, Set<string>>();
  /** Results not yet on disk, with the time they were added (insertion order = age order). */
  readonly #unsaved = new Map<string, { result: TaskResult; at: number }>();
  #timer: NodeJS.Timeout | undefined;
  #nextFile = 1;
  #diskOk: boolean;

  /** `dir`: where result files go (created), or null for memory only. */
  constructor(
    private readonly dir: string | null,
    private readonly say: (line: string) => void = () => {},
    private readonly persistAfterMs = PERSIST_AFTER_MS,
  ) {
    this.#diskOk = dir !== null;
    if (!dir) return;
    try {
      mkdirSync(dir, { recursive: true });
      for (const name of readdirSync(dir).sort(byNumber)) {
        if (!/^\d+\.json$/.test(name)) continue;
        this.#nextFile = Math.max(this.#nextFile, parseInt(name, 10) + 1);
        let list: TaskResult[];
        try {
          list = JSON.parse(readFileSync(join(dir, name), 'utf8')) as TaskResult[];
        } catch {
          unlinkSync(join(dir, name)); // a torn write from a crash: those results were never complete
          continue;
        }
        const keys = new Set<string>();
        for (const r of list) {
          const k = keyOf(r);
          this.#results.set(k, r);
          this.#fileOf.set(k, name);
          keys.add(k);
        }
        this.#pendingIn.set(name, keys);
      }
    } catch (err) {
      this.#diskOk = false;
      say(`results will be kept in memory only: ${(err as Error).message}`);
    }
  }

  get size(): number {
    return this.#results.size;
  }

  add(result: TaskResult): void {
    const k = keyOf(result);
    this.#results.set(k, result);
    if (!this.#diskOk) return;
    this.#unsaved.set(k, { result, at: Date.now() });
    this.#timer ??= setTimeout(() => this.#persistOld(), this.persistAfterMs).unref();
  }

  acknowledge(refs: readonly TaskRef[]): void {
    for (const ref of refs) {
      const k = keyOf(ref);
      if (!this.#results.delete(k)) continue;
      this.#unsaved.delete(k);
      const file = this.#fileOf.get(k);
      if (!file) continue;
      this.#fileOf.delete(k);
      const keys = this.#pendingIn.get(file);
      keys?.delete(k);
      if (keys && keys.size === 0) {
        this.#pendingIn.delete(file);
        unlink(join(this.dir!, file)).catch(() => {});
      }
    }
  }

  unacknowledged(): TaskResult[] {
    return [...this.#results.values()];
  }

  /** Writes the results that have waited long enough; comes back for the younger ones. */
  #persistOld(): void {
    this.#timer = undefined;
    const now = Date.now();
    const batch: TaskResult[] = [];
    for (const [k, u] of this.#unsaved) {
      if (now - u.at < this.persistAfterMs) break; // the rest are younger
      batch.push(u.result);
      this.#unsaved.delete(k);
    }
    if (batch.length && this.#diskOk) this.#writeBatch(batch);
    const oldest = this.#unsaved.values().next().value;
    if (oldest) this.#timer = setTimeout(() => this.#persistOld(), Math.max(1, this.persistAfterMs - (now - oldest.at))).unref();
  }

  #writeBatch(batch: TaskResult[]): void {
    const name = `${this.#nextFile++}.json`;
    const keys = new Set(batch.map(keyOf));
    for (const k of keys) this.#fileOf.set(k, name);
    this.#pendingIn.set(name, keys);
    writeFile(join(this.dir!, name), JSON.stringify(batch)).then(
      () => {
        // Acknowledged while being written: remove it now.
        if (!this.#pendingIn.has(name)) return unlink(join(this.dir!, name)).catch(() => {});
      },
      (err: Error) => {
        this.#diskOk = false;
        this.say(`cannot write results to ${this.dir}: ${err.message}; keeping them in memory only`);
      },
    );
  }
}

function byNumber(a: string, b: string): number {
  return parseInt(a, 10) - parseInt(b, 10);
}
