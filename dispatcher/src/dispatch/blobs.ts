/**
 * Content-addressed blobs in the data dir (`blobs/<sha256>.tar`): the inputs tars of jobs.
 * A blob is durable (file and directory fsynced) before `put` resolves, so a job that names
 * it can be acknowledged.
 */
import { createReadStream, existsSync, mkdirSync, statSync, type ReadStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DispatcherError } from '../errors.js';

/** Largest inputs tar accepted (they are unpacked into each task's work dir, in RAM on nodes). */
export const MAX_BLOB_BYTES = 1024 * 1024 * 1024;

const ID_RE = /^[0-9a-f]{64}$/;

/** A second home for blobs that other dispatchers can read (the PostgreSQL store's). */
export interface BlobReplica {
  /** Copies the blob at `path`; resolves once it is durable there. */
  put(id: string, path: string): Promise<void>;
  /** Writes the blob to `path` (atomically); false when the replica does not have it. */
  fetch(id: string, path: string): Promise<boolean>;
}

export class BlobStore {
  constructor(
    readonly dir: string,
    private readonly replica?: BlobReplica,
  ) {
    mkdirSync(dir, { recursive: true });
  }

  path(id: string): string {
    if (!ID_RE.test(id)) throw new DispatcherError('DSP_ERR_BAD_REQUEST', `not a blob id: ${id.slice(0, 80)}`);
    return join(this.dir, `${id}.tar`);
  }

  has(id: string): boolean {
    return ID_RE.test(id) && existsSync(this.path(id));
  }

  size(id: string): number {
    return statSync(this.path(id)).size;
  }

  read(id: string): ReadStream {
    return createReadStream(this.path(id));
  }

  /** Whether the blob is here, fetched from the replica when it is only there (uploaded to another dispatcher). */
  async fetch(id: string): Promise<boolean> {
    if (this.has(id)) return true;
    if (!this.replica || !ID_RE.test(id)) return false;
    try {
      return await this.replica.fetch(id, this.path(id));
    } catch (err) {
      throw new DispatcherError(
        'DSP_ERR_STORE_UNAVAILABLE',
        `cannot read inputs ${id.slice(0, 12)}… from the database: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  /** Stores a stream; resolves with its id (sha256, hex) once it is on disk for good. */
  async put(source: AsyncIterable<Uint8Array | string>, maxBytes = MAX_BLOB_BYTES): Promise<{ id: string; bytes: number }> {
    const tmp = join(this.dir, `.upload-${process.pid}-${randomBytes(6).toString('hex')}`);
    const hash = createHash('sha256');
    let bytes = 0;
    let fh;
    try {
      fh = await open(tmp, 'wx', 0o600);
      for await (const chunk of source) {
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        bytes += buf.length;
        if (bytes > maxBytes) throw new DispatcherError('DSP_ERR_PAYLOAD_TOO_LARGE', `inputs larger than ${maxBytes} bytes`);
        hash.update(buf);
        await fh.write(buf);
      }
      await fh.sync();
      await fh.close();
      fh = undefined;
      const id = hash.digest('hex');
      await rename(tmp, this.path(id));
      await syncDir(this.dir);
      await this.replica?.put(id, this.path(id));
      return { id, bytes };
    } catch (err) {
      await fh?.close().catch(() => {});
      await rm(tmp, { force: true }).catch(() => {});
      if (err instanceof DispatcherError) throw err;
      throw new DispatcherError('DSP_ERR_STORE', `cannot store the upload in ${this.dir}: ${(err as Error).message}`, {
        hint: 'check free space and permissions of the data dir',
        cause: err,
      });
    }
  }
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
