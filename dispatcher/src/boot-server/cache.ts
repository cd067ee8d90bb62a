/**
 * A boot server's image cache: files named by their sha256 in `<data-dir>/boot-cache/`, filled
 * from the leader, verified before they are served. The leader's manifest says which hash each
 * file of an image version has (image-source.ts); the cache answers "the bytes of this hash",
 * and nothing else:
 *
 *   - a file on disk is hashed when first asked for; bytes that disagree with the hash the
 *     leader gave (a stale or damaged file, a hand-copied one) are refused: logged, counted,
 *     deleted, and fetched again;
 *   - a download is hashed as it arrives and capped at the size the leader gave; one whose
 *     bytes disagree is refused the same way and never reaches the disk under its hash;
 *   - a file that is verified is held in memory (as the leader holds its own, boot-files.ts),
 *     so a storm on the segment reads it once.
 *
 * Concurrent requests for one hash share one fill.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { RateLimitedLog, type Logger } from '../log.js';
import type { BootFile, BootFileName } from '../boot/boot-files.js';

export const CACHE_DIR = 'boot-cache';
/** Downloads tried per fill before the request is answered with an error (each one verified). */
export const FILL_ATTEMPTS = 2;
/** Errors kept for the heartbeat (newest last). */
export const MAX_REPORTED_ERRORS = 20;
/**
 * Verified bytes held in memory at most (least recently asked for go first; they stay on disk
 * and are read and verified again when asked for). Override with the constructor's option.
 */
export const DEFAULT_MEMORY_BYTES = 2 * 1024 ** 3;
const SHA256_RE = /^[0-9a-f]{64}$/;

/** A file the leader says an image version has. */
export interface WantedFile {
  name: BootFileName;
  sha256: string;
  size: number;
  image: string;
  version: string;
}

/** Where fills come from: the leader (leader-client.ts), or a test's stand-in. */
export interface FileOrigin {
  download(file: WantedFile): Promise<AsyncIterable<Uint8Array>>;
}

export type CacheAnswer = { ok: true; file: BootFile } | { ok: false; reason: string };

export interface CacheStats {
  files: number;
  bytes: number;
  /** Files downloaded from the leader and verified. */
  fills: number;
  /** Files refused: on disk or downloaded, their bytes disagreed with the leader's sha256. */
  refused: number;
}

export class ImageCache {
  readonly dir: string;
  readonly #memory = new Map<string, BootFile>();
  readonly #filling = new Map<string, Promise<CacheAnswer>>();
  /** What is on disk under a hash name (verified or not yet), by size. */
  readonly #onDisk = new Map<string, number>();
  readonly #errors: { at: number; message: string }[] = [];
  #fills = 0;
  #refused = 0;
  readonly #noisy: RateLimitedLog;

  constructor(private readonly opts: { dataDir: string; origin: FileOrigin; log: Logger; now?: () => number; memoryBytes?: number }) {
    this.#noisy = new RateLimitedLog(opts.log);
    this.dir = join(opts.dataDir, CACHE_DIR);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    for (const name of readdirSync(this.dir)) {
      const path = join(this.dir, name);
      if (SHA256_RE.test(name)) this.#onDisk.set(name, statSync(path).size);
      else if (name.startsWith('.part-')) void unlink(path).catch(() => undefined); // a fill cut short by a restart
    }
  }

  /** The verified bytes of `want`, from memory, disk or the leader. */
  get(want: WantedFile): Promise<CacheAnswer> {
    if (!SHA256_RE.test(want.sha256)) return Promise.resolve({ ok: false, reason: `"${want.sha256.slice(0, 70)}" is not a sha256` });
    const held = this.#memory.get(want.sha256);
    if (held) {
      // Re-inserted last: the map's order is least recently asked for first.
      this.#memory.delete(want.sha256);
      this.#memory.set(want.sha256, held);
      return Promise.resolve({ ok: true, file: held });
    }
    let filling = this.#filling.get(want.sha256);
    if (!filling) {
      filling = this.#fill(want).finally(() => this.#filling.delete(want.sha256));
      this.#filling.set(want.sha256, filling);
    }
    return filling;
  }

  stats(): CacheStats {
    let bytes = 0;
    for (const size of this.#onDisk.values()) bytes += size;
    return { files: this.#onDisk.size, bytes, fills: this.#fills, refused: this.#refused };
  }

  /** The latest errors, newest last (heartbeat). */
  errors(): { at: number; message: string }[] {
    return [...this.#errors];
  }

  /** Records an error for the heartbeat and logs it (rate-limited per kind of message). */
  noteError(message: string, fields: Record<string, unknown>): void {
    this.#errors.push({ at: (this.opts.now ?? Date.now)(), message: message.slice(0, 1000) });
    if (this.#errors.length > MAX_REPORTED_ERRORS) this.#errors.shift();
    this.#noisy.warn(message.slice(0, 60), fields, message);
  }

  async #fill(want: WantedFile): Promise<CacheAnswer> {
    const path = join(this.dir, want.sha256);
    const label = `${want.image}@${want.version}/${want.name}`;
    const fromDisk = await readFile(path).catch(() => undefined);
    if (fromDisk) {
      const sha256 = sha256Of(fromDisk);
      if (sha256 === want.sha256) return { ok: true, file: await this.#hold(want, fromDisk, path) };
      this.#refused++;
      this.noteError(`cached ${label} disagrees with the leader's sha256: refused (not served), fetching it again`, {
        file: label,
        path,
        want: want.sha256,
        got: sha256,
      });
      this.#onDisk.delete(want.sha256);
      await unlink(path).catch(() => undefined);
    }
    let reason = '';
    for (let attempt = 1; attempt <= FILL_ATTEMPTS; attempt++) {
      const r = await this.#download(want, path, label);
      if (r.ok) return r;
      reason = r.reason;
    }
    return { ok: false, reason };
  }

  async #download(want: WantedFile, path: string, label: string): Promise<CacheAnswer> {
    const part = join(this.dir, `.part-${want.sha256.slice(0, 16)}-${randomBytes(4).toString('hex')}`);
    const hash = createHash('sha256');
    const chunks: Buffer[] = [];
    let size = 0;
    const fh = await open(part, 'wx', 0o600);
    try {
      for await (const chunk of await this.opts.origin.download(want)) {
        size += chunk.byteLength;
        if (size > want.size) throw new Error(`more than the ${want.size} bytes the leader's manifest gives`);
        const b = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        hash.update(b);
        chunks.push(b);
        await fh.write(b);
      }
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => undefined);
      await unlink(part).catch(() => undefined);
      const reason = `cannot fetch ${label} from the leader: ${(err as Error).message}`;
      this.noteError(reason, { file: label });
      return { ok: false, reason };
    }
    await fh.close();
    const sha256 = hash.digest('hex');
    if (sha256 !== want.sha256 || size !== want.size) {
      this.#refused++;
      await unlink(part).catch(() => undefined);
      const reason = `${label} from the leader disagrees with its manifest's sha256 (${size} bytes, sha256 ${sha256.slice(0, 16)}…, want ${want.sha256.slice(0, 16)}…): refused`;
      this.noteError(reason, { file: label, want: want.sha256, got: sha256, size, wantSize: want.size });
      return { ok: false, reason };
    }
    await rename(part, path);
    this.#fills++;
    this.opts.log.info({ file: label, bytes: size, sha256: sha256.slice(0, 16) }, 'cache filled from the leader');
    return { ok: true, file: await this.#hold(want, Buffer.concat(chunks, size), path) };
  }

  async #hold(want: WantedFile, bytes: Buffer, path: string): Promise<BootFile> {
    const mtimeMs = (await stat(path)).mtimeMs;
    this.#onDisk.set(want.sha256, bytes.length);
    const file: BootFile = {
      name: want.name,
      bytes,
      size: bytes.length,
      etag: `"${want.sha256}"`,
      sha256: want.sha256,
      mtimeMs,
      lastModified: new Date(Math.floor(mtimeMs / 1000) * 1000).toUTCString(),
    };
    this.#memory.set(want.sha256, file);
    let held = 0;
    for (const f of this.#memory.values()) held += f.size;
    const cap = this.opts.memoryBytes ?? DEFAULT_MEMORY_BYTES;
    for (const [sha, f] of this.#memory) {
      if (held <= cap || sha === want.sha256) break;
      this.#memory.delete(sha);
      held -= f.size;
    }
    return file;
  }
}

function sha256Of(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}
