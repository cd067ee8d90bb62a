/**
 * WAL checkpoints off the event loop. SQLite's automatic checkpoint runs inside the COMMIT
 * that crosses `wal_autocheckpoint`, on the committing thread — the event loop here — and
 * copies the WAL's pages into the database file and fsyncs both: tens to hundreds of
 * milliseconds during which DHCP, TFTP, boot scripts and agents wait (a DHCP ACK that waits
 * past the client's retry is a lost exchange). So the dispatcher's connection turns automatic
 * checkpoints off, and a worker thread with its own connection to the same file runs PASSIVE
 * checkpoints every CHECK_MS. A passive checkpoint never blocks the writer or readers; it
 * copies what no reader still needs, and the writer rewinds the WAL to its start when it
 * finds all of it copied. Under relentless writes that moment may not come (a commit lands
 * while each checkpoint runs), so past MAX_WAL_FRAMES the dispatcher's connection runs one
 * checkpoint itself, on the event loop: a rare stall instead of an unbounded file.
 * Durability is not involved: a commit is durable once its WAL frames are synced
 * (group-commit.ts), whenever they are copied.
 *
 * If the worker cannot start or fails, the connection goes back to automatic checkpoints.
 */
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import type { Db } from './database.js';
import type { Logger } from '../log.js';

/** How often the worker checkpoints (an idle WAL costs one cheap no-op). */
export const CHECK_MS = 500;
/** WAL size (frames of one page) past which the connection checkpoints and rewinds it itself. */
export const MAX_WAL_FRAMES = 16_384;
/** Pages the connection checkpoints on its own when the worker is not running (SQLite's automatic checkpoint). */
export const AUTO_CHECKPOINT_PAGES = 4000;

export interface CheckpointStats {
  checkpoints: number;
  /** Frames copied into the database by the worker, in all. */
  framesCopied: number;
  lastMs: number;
  totalMs: number;
  /** Checkpoints the dispatcher's connection ran itself because the WAL passed MAX_WAL_FRAMES. */
  forced: number;
  running: boolean;
}

export interface CheckpointerOptions {
  checkMs?: number;
  /** The SQLite driver module the worker loads (default: better-sqlite3, as the dispatcher's). */
  driver?: string;
  maxWalFrames?: number;
}

/** Messages from the worker. */
type FromWorker = { kind: 'done'; frames: number; log: number; ms: number } | { kind: 'error'; message: string };

// Runs in the worker (CommonJS, eval): its own connection, a passive checkpoint per tick.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file);
db.pragma('busy_timeout = 1000');
db.pragma('synchronous = NORMAL');
let copied = 0;
const timer = setInterval(() => {
  try {
    const t0 = performance.now();
    const [r] = db.pragma('wal_checkpoint(PASSIVE)');
    // r.log: frames in the WAL; r.checkpointed: frames copied so far. Report only progress.
    const frames = r.checkpointed >= copied ? r.checkpointed - copied : r.checkpointed;
    copied = r.checkpointed;
    if (frames > 0) parentPort.postMessage({ kind: 'done', frames, log: r.log, ms: performance.now() - t0 });
  } catch (err) {
    parentPort.postMessage({ kind: 'error', message: String(err && err.message || err) });
  }
}, workerData.checkMs);
parentPort.on('message', (m) => {
  if (m === 'stop') { clearInterval(timer); try { db.close(); } catch {} parentPort.close(); }
});
`;

export class Checkpointer {
  readonly stats: CheckpointStats = { checkpoints: 0, framesCopied: 0, lastMs: 0, totalMs: 0, forced: 0, running: false };
  #worker: Worker | undefined;
  readonly #maxWalFrames: number;

  /** Starts checkpointing `db` (a file database in WAL mode) from a worker thread. */
  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    opts: CheckpointerOptions = {},
  ) {
    this.#maxWalFrames = opts.maxWalFrames ?? MAX_WAL_FRAMES;
    if (db.memory) return;
    let worker: Worker;
    try {
      const driver = opts.driver ?? createRequire(import.meta.url).resolve('better-sqlite3');
      worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { driver, file: db.name, checkMs: opts.checkMs ?? CHECK_MS } });
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'WAL checkpoints stay on the event loop: the checkpoint worker did not start');
      return;
    }
    this.#worker = worker;
    worker.unref(); // never keeps the process alive
    db.pragma('wal_autocheckpoint = 0');
    this.stats.running = true;
    worker.on('message', (m: FromWorker) => {
      if (m.kind === 'done') {
        this.stats.checkpoints++;
        this.stats.framesCopied += m.frames;
        this.stats.lastMs = m.ms;
        this.stats.totalMs += m.ms;
        if (m.log > this.#maxWalFrames) this.#rewind(m.log);
      } else this.log.warn({ err: m.message }, 'WAL checkpoint failed (retried at the next tick)');
    });
    worker.on('error', (err) => this.#fallBack(`checkpoint worker failed: ${err.message}`));
    worker.on('exit', (code) => {
      if (this.#worker === worker && code !== 0) this.#fallBack(`checkpoint worker exited with code ${code}`);
    });
  }

  /** Stops the worker (it closes its connection); the dispatcher's connection checkpoints at its own close. */
  stop(): void {
    const w = this.#worker;
    if (!w) return;
    this.#worker = undefined;
    this.stats.running = false;
    w.postMessage('stop');
  }

  #rewind(frames: number): void {
    try {
      const t0 = performance.now();
      this.db.pragma('wal_checkpoint(RESTART)');
      this.stats.forced++;
      this.log.info(
        { frames, ms: Math.round(performance.now() - t0) },
        'WAL checkpointed on the event loop: it grew past its bound under steady writes',
      );
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'WAL checkpoint failed (retried when the WAL grows again)');
    }
  }

  #fallBack(why: string): void {
    if (!this.#worker) return;
    this.#worker = undefined;
    this.stats.running = false;
    this.log.warn({ why }, 'WAL checkpoints back on the event loop');
    try {
      if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${AUTO_CHECKPOINT_PAGES}`);
    } catch {
      /* the store is closing */
    }
  }
}
