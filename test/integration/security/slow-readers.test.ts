/**
 * 128 slow readers of the kernel against a real dispatcher process: each asks for the image,
 * reads a little and stops reading, from eight addresses other than the honest client's. A
 * normal download is timed on the idle server and again while they hold their connections
 * (it must stay within 2×), and the stalled readers are dropped by the idle timeout (set
 * short by the config file here). Both body paths: sendfile (the native addon) and Node's
 * own writes (LC_SENDFILE=0).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { makeBootTree, type BootTree } from '../../lab/boot-tree.js';

const SLOW_READERS = 128;
/** The slow readers' addresses (loopback: all of 127/8 reaches the dispatcher). */
const SLOW_FROM = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 2}`);
/** Larger than what loopback socket buffers hold, so a reader that stops does stall the transfer. */
const KERNEL_BYTES = 48 * 1024 * 1024;
/** Longer than the loaded measurement takes, so the readers hold their connections throughout it. */
const IDLE_SECONDS = 4;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One whole download from 127.0.0.1: its time and its bytes' digest. */
function download(port: number): Promise<{ ms: number; sha: string }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/image/vmlinuz', agent: false }, (res) => {
      const hash = createHash('sha256');
      res.on('data', (c: Buffer) => hash.update(c));
      res.on('end', () =>
        res.statusCode === 200
          ? resolve({ ms: performance.now() - t0, sha: hash.digest('hex') })
          : reject(new Error(`status ${res.statusCode}`)),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function median(n: number, f: () => Promise<number>): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) xs.push(await f());
  return xs.sort((a, b) => a - b)[Math.floor(n / 2)]!;
}

interface SlowReader {
  sock: Socket;
  bytes: number;
  closed: boolean;
  /** Reads on to the end (it stops after its first bytes until then). */
  readOn(): void;
}

/** Asks for the kernel, reads until it has a few bytes, then stops reading. */
function slowReader(port: number, from: string): SlowReader {
  const sock = connect({ port, host: '127.0.0.1', localAddress: from });
  let stall = true;
  const r: SlowReader = {
    sock,
    bytes: 0,
    closed: false,
    readOn: () => {
      stall = false;
      sock.resume();
    },
  };
  sock.on('error', () => {});
  sock.on('close', () => (r.closed = true));
  sock.write('GET /image/vmlinuz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
  sock.on('data', (c: Buffer) => {
    r.bytes += c.length;
    if (stall) sock.pause();
  });
  return r;
}

async function downloads(d: DispatcherProcess): Promise<{ active: number; queued: number; failed: number }> {
  const text = await (await fetch(`${d.url}/metrics`)).text();
  const v = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    active: v(/^lilcluster_http_boot_downloads\{state="active"\} (\d+)/m),
    queued: v(/^lilcluster_http_boot_downloads\{state="queued"\} (\d+)/m),
    failed: v(/^lilcluster_http_boot_requests_total\{kind="file",outcome="failed"\} (\d+)/m),
  };
}

describe.each([
  ['sendfile (native addon)', {}],
  ['Node writes (LC_SENDFILE=0)', { LC_SENDFILE: '0' }],
])('128 slow readers of the kernel, through %s', (_via, env) => {
  let tree: BootTree;
  let d: DispatcherProcess;
  beforeAll(async () => {
    tree = makeBootTree({ vmlinuz: KERNEL_BYTES, 'initrd.img': 1_000_000 });
    const config = join(tree.dir, 'dispatcher.yaml');
    writeFileSync(config, `bootHttpIdleSeconds: ${IDLE_SECONDS}\n`);
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      d = await startDispatcher({ args: ['--image', tree.imageDir, '--pxe-dir', tree.pxeDir, '--config', config] });
    } finally {
      process.env = saved;
    }
  }, 30_000);
  afterAll(() => d?.stop());

  it('do not slow a normal download past 2× its idle time, and are dropped by the idle timeout', async () => {
    const want = sha(tree.files.vmlinuz!);
    expect((await download(d.port)).sha).toBe(want);
    const idleMs = await median(5, async () => (await download(d.port)).ms);

    const readers = Array.from({ length: SLOW_READERS }, (_, i) => slowReader(d.port, SLOW_FROM[i % SLOW_FROM.length]!));
    // Every one of them is in: a few reading per address, the others waiting in their line.
    await until(async () => {
      const c = await downloads(d);
      return c.active + c.queued === SLOW_READERS && readers.filter((r) => r.bytes > 0).length >= c.active;
    }, 'the slow readers to hold their connections');
    const held = await downloads(d);

    const loaded: number[] = [];
    const loadedMs = await median(3, async () => {
      const r = await download(d.port);
      expect(r.sha).toBe(want);
      loaded.push(r.ms);
      return r.ms;
    });
    console.log(
      `[${_via}] normal download of ${KERNEL_BYTES >> 20} MiB: idle server ${idleMs.toFixed(0)} ms (median of 5); with ${SLOW_READERS} slow readers holding connections (${held.active} active, ${held.queued} queued) ${loadedMs.toFixed(0)} ms (median of 3: ${loaded.map((x) => x.toFixed(0)).join(', ')}), ×${(loadedMs / idleMs).toFixed(2)}`,
    );
    // Measured while they held on: not one was dropped meanwhile (which would free its slot).
    expect((await downloads(d)).failed).toBe(held.failed);
    expect(loadedMs).toBeLessThanOrEqual(2 * idleMs);

    // The idle timeout drops the stalled ones, a few per address at a time, until none is left.
    const before = held.failed;
    await until(
      async () => {
        const c = await downloads(d);
        return c.active === 0 && c.queued === 0;
      },
      'every slow reader to be dropped',
      60_000,
    );
    expect((await downloads(d)).failed - before).toBe(SLOW_READERS);
    // Reading on, each finds its connection ended short of the whole kernel.
    for (const r of readers) r.readOn();
    await until(() => readers.every((r) => r.closed), 'the slow readers to see their connections closed');
    expect(readers.filter((r) => r.bytes >= KERNEL_BYTES)).toEqual([]);
    expect((await download(d.port)).sha).toBe(want);
  }, 120_000);
});
