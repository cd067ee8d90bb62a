/**
 * The real Reporter: finished results wait here until the dispatcher acknowledges them —
 * in memory, and on disk under the work dir so they also survive a restart of the agent
 * itself (on the RAM image, until the machine reboots). Results finished in the same tick
 * share one file (`outbox/<n>.json`), removed once all of them are acknowledged: one write
 * per batch, not per task.
 */
import { mkdirSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskResult } from '../../dispatcher/src/dispatch/contract.js';
import type { TaskRef } from '../../dispatcher/src/protocol/messages.js';
import type { Reporter } from './seams.js';

const keyOf = (r: TaskRef): string => `${r.taskId}:${r.attempt}`;

export class Outbox implements Reporter {
  readonly #results = new Map<string, TaskResult>();
  readonly #fileOf = new Map<string, string>();
  readonly #pendingIn = new Map<string, Set<string>>();
  #batch: TaskResult[] = [];
  #nextFile = 1;
  #diskOk: boolean;

  /** `dir`: where result files go (created), or null for memory only. */
  constructor(
    private readonly dir: string | null,
    private readonly say: (line: string) => void = () => {},
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
    this.#results.set(keyOf(result), result);
    if (!this.#diskOk) return;
    if (this.#batch.length === 0) setImmediate(() => this.#writeBatch());
    this.#batch.push(result);
  }

  acknowledge(refs: readonly TaskRef[]): void {
    for (const ref of refs) {
      const k = keyOf(ref);
      if (!this.#results.delete(k)) continue;
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

  #writeBatch(): void {
    const batch = this.#batch.filter((r) => this.#results.has(keyOf(r))); // some may be acknowledged already
    this.#batch = [];
    if (batch.length === 0) return;
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
