/**
 * The boot server's cache (dispatcher/src/boot-server/cache.ts) on a real temp dir, with a
 * stand-in leader: bytes served only once they hash to what the leader's manifest says; a
 * stale file on disk and a download that disagrees are refused, said in the log and in the
 * heartbeat's errors, and never served.
 */
import { describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { ImageCache, CACHE_DIR, FILL_ATTEMPTS, type FileOrigin, type WantedFile } from '../../../dispatcher/src/boot-server/cache.js';
import { tempDir } from '../agent/temp-dirs.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const good = randomBytes(200_000);

/** A leader that serves `bytes` (in chunks) for every file, counting downloads. */
function leaderServing(bytes: () => Buffer): FileOrigin & { downloads: number } {
  return {
    downloads: 0,
    async download() {
      this.downloads++;
      const b = bytes();
      return (async function* () {
        for (let i = 0; i < b.length; i += 65_536) yield b.subarray(i, i + 65_536);
      })();
    },
  };
}

/** A logger whose lines the test reads. */
function capture(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  return { log, lines };
}

const want = (b: Buffer): WantedFile => ({ name: 'vmlinuz', sha256: sha(b), size: b.length, image: 'default', version: 'abcdefabcdef' });

describe('the boot server cache', () => {
  it('fills from the leader, verifies, and serves later requests from memory', async () => {
    const dataDir = tempDir('lc-cache-');
    const leader = leaderServing(() => good);
    const { log } = capture();
    const cache = new ImageCache({ dataDir, origin: leader, log });
    const [a, b] = await Promise.all([cache.get(want(good)), cache.get(want(good))]);
    expect(a.ok && b.ok).toBe(true);
    expect(a.ok && sha(a.file.bytes)).toBe(sha(good));
    expect(a.ok && a.file.etag).toBe(`"${sha(good)}"`);
    expect(await cache.get(want(good))).toMatchObject({ ok: true });
    expect(leader.downloads).toBe(1); // concurrent requests shared one fill; the third came from memory
    expect(readFileSync(join(dataDir, CACHE_DIR, sha(good))).equals(good)).toBe(true);
    expect(cache.stats()).toEqual({ files: 1, bytes: good.length, fills: 1, refused: 0 });
  });

  it('refuses a stale file on disk, says so, and fetches the leader’s bytes again', async () => {
    const dataDir = tempDir('lc-cache-');
    mkdirSync(join(dataDir, CACHE_DIR));
    writeFileSync(join(dataDir, CACHE_DIR, sha(good)), 'an older build\n');
    const leader = leaderServing(() => good);
    const { log, lines } = capture();
    const cache = new ImageCache({ dataDir, origin: leader, log });
    expect(cache.stats().files).toBe(1); // counted, not yet trusted
    const r = await cache.get(want(good));
    expect(r.ok && sha(r.file.bytes)).toBe(sha(good));
    expect(leader.downloads).toBe(1);
    const refusal = lines.find((l) => String(l.msg).includes("disagrees with the leader's sha256"));
    expect(refusal).toMatchObject({
      level: 40,
      file: 'default@abcdefabcdef/vmlinuz',
      want: sha(good),
      got: sha(Buffer.from('an older build\n')),
    });
    expect(cache.stats()).toMatchObject({ refused: 1, fills: 1 });
    expect(cache.errors()[0]!.message).toMatch(/cached default@abcdefabcdef\/vmlinuz disagrees with the leader's sha256: refused/);
  });

  it.each([
    ['other bytes of the same size', () => randomBytes(good.length)],
    ['more bytes than the manifest gives', () => Buffer.concat([good, Buffer.from('x')])],
    ['fewer bytes', () => good.subarray(0, 1000)],
  ])('never serves a download with %s: refused, nothing kept under the hash', async (_, bytes) => {
    const dataDir = tempDir('lc-cache-');
    const leader = leaderServing(bytes);
    const { log, lines } = capture();
    const cache = new ImageCache({ dataDir, origin: leader, log });
    const r = await cache.get(want(good));
    expect(r.ok).toBe(false);
    expect(leader.downloads).toBe(FILL_ATTEMPTS);
    expect(existsSync(join(dataDir, CACHE_DIR, sha(good)))).toBe(false);
    expect(readdirSync(join(dataDir, CACHE_DIR))).toEqual([]); // no partial file left either
    expect(lines.some((l) => l.level === 40)).toBe(true);
    expect(cache.stats().files).toBe(0);
  });

  it('answers a failed download with the reason, and fills on a later request', async () => {
    const dataDir = tempDir('lc-cache-');
    let down = true;
    const leader: FileOrigin = {
      async download() {
        if (down) throw new Error('connect ECONNREFUSED');
        return (async function* () {
          yield good;
        })();
      },
    };
    const cache = new ImageCache({ dataDir, origin: leader, log: capture().log });
    const r = await cache.get(want(good));
    expect(r).toEqual({ ok: false, reason: 'cannot fetch default@abcdefabcdef/vmlinuz from the leader: connect ECONNREFUSED' });
    down = false;
    expect(await cache.get(want(good))).toMatchObject({ ok: true });
  });

  it('keeps at most its memory bound, and verifies a file read back from disk again', async () => {
    const dataDir = tempDir('lc-cache-');
    const other = randomBytes(150_000);
    const files = new Map([
      [sha(good), good],
      [sha(other), other],
    ]);
    const leader: FileOrigin & { downloads: number } = {
      downloads: 0,
      async download(w) {
        this.downloads++;
        const b = files.get(w.sha256)!;
        return (async function* () {
          yield b;
        })();
      },
    };
    const { log, lines } = capture();
    const cache = new ImageCache({ dataDir, origin: leader, log, memoryBytes: 300_000 });
    await cache.get(want(good));
    await cache.get({ ...want(other), name: 'initrd.img' }); // \`good\` leaves memory
    writeFileSync(join(dataDir, CACHE_DIR, sha(good)), Buffer.alloc(good.length)); // damaged on disk meanwhile
    const r = await cache.get(want(good));
    expect(r.ok && sha(r.file.bytes)).toBe(sha(good));
    expect(leader.downloads).toBe(3);
    expect(lines.some((l) => String(l.msg).includes("disagrees with the leader's sha256"))).toBe(true);
  });

  it('refuses a hash that is not a sha256 without touching the disk', async () => {
    const cache = new ImageCache({ dataDir: tempDir('lc-cache-'), origin: leaderServing(() => good), log: capture().log });
    expect(await cache.get({ ...want(good), sha256: '../../etc/passwd' })).toMatchObject({ ok: false });
  });
});
