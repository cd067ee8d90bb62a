/**
 * Image downloads on a real port, through both body paths: sendfile(2) from the native addon
 * (dist/native/sendfile.node, `make build`) and Node's own writes (the fallback when the addon
 * is missing). Same contract for both: whole files and ranges intact, HEAD without a body,
 * keep-alive (the next request on the same connection), bounded concurrency, a client that
 * hangs up recorded as http.failed. The zero-copy path also ends transfers whose client stops
 * reading, and survives the server closing its connections in the middle.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { Agent, request as httpRequest, type IncomingMessage } from 'node:http';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { createCore, closeCore, type Core } from '../../../dispatcher/src/core.js';
import { resolveConfig } from '../../../dispatcher/src/config.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { buildApp } from '../../../dispatcher/src/http/app.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import { BootFiles } from '../../../dispatcher/src/boot/boot-files.js';
import { bootHttpPlugin, type BootHttp } from '../../../dispatcher/src/boot/http/boot-routes.js';
import { loadSendfile, type ZeroCopySender } from '../../../dispatcher/src/boot/http/sendfile.js';
import { makeBootTree, type BootTree } from '../../lab/boot-tree.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const mac = (s: string) => parseMac(s) as Mac;
/** Short, so the stalled-client case ends quickly. */
const IDLE_TIMEOUT_MS = 600;

function zeroCopySender(): ZeroCopySender {
  const loaded = loadSendfile({ idleTimeoutMs: IDLE_TIMEOUT_MS, env: {} });
  if (!loaded.sender) throw new Error(`the sendfile addon is needed for this test (make build): ${loaded.reason}`);
  return loaded.sender;
}

interface Setup {
  core: Core;
  app: FastifyInstance;
  http: BootHttp;
  tree: BootTree;
  port: number;
}

async function setup(zeroCopy: ZeroCopySender | false): Promise<Setup> {
  // a kernel bigger than loopback socket buffers hold, so hang-ups and stalls interrupt it
  const tree = makeBootTree({ vmlinuz: 40_000_000, 'initrd.img': 9_000_001 });
  const config = resolveConfig({
    dhcp: { mode: 'off' },
    dataDir: join(tree.dir, 'data'),
    imageDir: tree.imageDir,
    pxeDir: tree.pxeDir,
    httpPort: 8080,
  });
  const core = createCore({
    config,
    log: silentLogger(),
    cluster: parseClusterFile('enrollment: auto\n'),
    // The clients below reach the dispatcher on loopback: that is its node network here (boot scripts are served only there).
    network: { name: undefined, ifindex: undefined, address: '127.0.0.1', netmask: '255.255.255.0', mac: undefined },
  });
  const files = new BootFiles({ imageDir: tree.imageDir, pxeDir: tree.pxeDir, log: silentLogger() });
  await files.loadAll();
  const http = bootHttpPlugin(core, { files, maxTransfers: 2, zeroCopy });
  const app = await buildApp(core, [http]);
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { core, app, http, tree, port: (app.server.address() as { port: number }).port };
}

async function teardown(s: Setup | undefined) {
  if (!s) return;
  await s.app.close();
  closeCore(s.core);
}

interface Got {
  status: number;
  headers: IncomingMessage['headers'];
  bytes: Buffer;
  aborted: boolean;
  reusedSocket: boolean;
}

function get(
  port: number,
  path: string,
  opts: {
    method?: string;
    headers?: Record<string, string>;
    agent?: Agent;
    onData?: (res: IncomingMessage, got: number, destroy: () => void) => void;
  } = {},
): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: opts.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        let got = 0;
        const done = (aborted: boolean) =>
          resolve({ status: res.statusCode!, headers: res.headers, bytes: Buffer.concat(chunks), aborted, reusedSocket: req.reusedSocket });
        // a paused response never reaches 'end': its 'close' says the server went away
        res.on('close', () => done(!res.complete));
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          got += c.length;
          opts.onData?.(res, got, () => req.destroy());
        });
        res.on('end', () => done(false));
        res.on('error', () => done(true));
        res.on('aborted', () => done(true));
      },
    );
    req.on('error', (e) =>
      /socket hang up|aborted|ECONNRESET/.test(e.message)
        ? resolve({ status: 0, headers: {}, bytes: Buffer.alloc(0), aborted: true, reusedSocket: req.reusedSocket })
        : reject(e),
    );
    req.end();
  });
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe.each([
  { path: 'sendfile (native addon)', zeroCopy: true },
  { path: 'Node writes (no addon)', zeroCopy: false },
])('image downloads through $path', ({ zeroCopy }) => {
  let s: Setup;
  beforeAll(async () => (s = await setup(zeroCopy ? zeroCopySender() : false)));
  afterAll(() => teardown(s));

  it('serves whole files, a range and HEAD intact, and counts the path taken', async () => {
    const whole = await get(s.port, '/image/initrd.img');
    expect(whole.status).toBe(200);
    expect(whole.headers['content-length']).toBe('9000001');
    expect(sha(whole.bytes)).toBe(sha(s.tree.files['initrd.img']!));

    const part = await get(s.port, '/image/vmlinuz', { headers: { range: 'bytes=1000-2999999' } });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe('bytes 1000-2999999/40000000');
    expect(part.bytes.equals(s.tree.files.vmlinuz!.subarray(1000, 3_000_000))).toBe(true);

    const tail = await get(s.port, '/image/vmlinuz', { headers: { range: 'bytes=-100' } });
    expect(tail.bytes.equals(s.tree.files.vmlinuz!.subarray(-100))).toBe(true);

    const head = await get(s.port, '/image/vmlinuz', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe('40000000');
    expect(head.bytes.length).toBe(0);

    await until(() => s.http.counters().completed === 3, 'three completed downloads');
    // the 100-byte tail is below the zero-copy threshold: Node writes it either way
    expect(s.http.counters().sentZeroCopy).toBe(zeroCopy ? 2 : 0);
  });

  it('keeps the connection: kernel, initrd and a script one after another on one socket', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const k = await get(s.port, '/image/vmlinuz?mac=52-54-00-00-00-31', { agent });
      const i = await get(s.port, '/image/initrd.img?mac=52-54-00-00-00-31', { agent });
      const script = await get(s.port, '/boot.ipxe?mac=52:54:00:00:00:31', { agent });
      expect(sha(k.bytes)).toBe(sha(s.tree.files.vmlinuz!));
      expect(sha(i.bytes)).toBe(sha(s.tree.files['initrd.img']!));
      expect(script.bytes.toString().startsWith('#!ipxe\n')).toBe(true);
      expect([k.reusedSocket, i.reusedSocket, script.reusedSocket]).toEqual([false, true, true]);
    } finally {
      agent.destroy();
    }
  });

  it('serves 10 concurrent downloads intact through a bound of 2', async () => {
    const before = s.http.counters().completed;
    const results = await Promise.all(Array.from({ length: 10 }, (_, n) => get(s.port, n % 2 ? '/image/initrd.img' : '/image/vmlinuz')));
    for (const [n, r] of results.entries()) {
      expect(r.status).toBe(200);
      expect(sha(r.bytes)).toBe(sha(n % 2 ? s.tree.files['initrd.img']! : s.tree.files.vmlinuz!));
    }
    await until(() => s.http.counters().completed === before + 10, 'ten more completed downloads');
    expect(s.http.counters()).toMatchObject({ active: 0, queued: 0 });
  });

  it('records http.failed when the client hangs up mid-download, and goes on serving', async () => {
    const m = mac('52:54:00:00:00:32');
    await get(s.port, '/boot.ipxe?mac=52:54:00:00:00:32');
    const failedBefore = s.http.counters().failed;
    const r = await get(s.port, '/image/vmlinuz?mac=52-54-00-00-00-32', {
      onData: (_res, got, destroy) => {
        if (got > 100_000) destroy();
      },
    });
    expect(r.aborted).toBe(true);
    await until(() => s.core.timeline.list(m).some((x) => x.stage === 'http.failed'), 'http.failed on the timeline');
    expect(s.core.timeline.list(m).find((x) => x.stage === 'http.failed')?.detail).toMatchObject({ file: 'vmlinuz', size: 40_000_000 });
    expect(s.http.counters()).toMatchObject({ failed: failedBefore + 1, active: 0 });
    const next = await get(s.port, '/image/initrd.img');
    expect(sha(next.bytes)).toBe(sha(s.tree.files['initrd.img']!));
  });
});

/**
 * A raw client that asks for a file, reads a little and then stops reading: its window
 * closes and nothing moves. `resume()` reads on and resolves with how the connection ended.
 */
function stalledDownload(port: number, path: string): Promise<{ resume(): Promise<{ bytes: number }> }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let bytes = 0;
    const ended = new Promise<void>((r) => sock.once('close', () => r()));
    sock.on('error', () => {}); // a reset, once resumed
    sock.once('error', reject);
    sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
    let paused = false;
    sock.on('data', (c: Buffer) => {
      bytes += c.length;
      if (bytes > 100_000 && !paused) {
        paused = true;
        sock.pause();
        resolve({
          resume: async () => {
            sock.resume();
            await ended;
            return { bytes };
          },
        });
      }
    });
  });
}

describe('zero-copy transfers that do not end well', () => {
  let s: Setup;
  beforeAll(async () => (s = await setup(zeroCopySender())));
  afterAll(() => teardown(s));

  it('resets a client that stops reading once the idle timeout passes, and frees its slot', async () => {
    const failedBefore = s.http.counters().failed;
    const t0 = Date.now();
    const client = await stalledDownload(s.port, '/image/vmlinuz');
    await until(() => s.http.counters().failed === failedBefore + 1, 'the stalled download counted as failed', 10_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(IDLE_TIMEOUT_MS);
    expect(s.http.counters()).toMatchObject({ active: 0 });
    // the server reset the connection: reading on ends it, without the rest of the file
    const end = await client.resume();
    expect(end.bytes).toBeLessThan(40_000_000);
  });

  it('survives the server closing every connection in the middle of downloads', async () => {
    const failedBefore = s.http.counters().failed;
    const clients = await Promise.all([stalledDownload(s.port, '/image/vmlinuz'), stalledDownload(s.port, '/image/vmlinuz')]);
    expect(s.http.counters().active).toBe(2);
    s.app.server.closeAllConnections();
    await until(() => s.http.counters().failed === failedBefore + 2, 'both downloads counted as failed');
    expect(s.http.counters()).toMatchObject({ active: 0, queued: 0 });
    for (const c of clients) expect((await c.resume()).bytes).toBeLessThan(40_000_000);
    // the server still answers new connections
    const next = await get(s.port, '/image/initrd.img');
    expect(sha(next.bytes)).toBe(sha(s.tree.files['initrd.img']!));
  });
});

describe('loading the addon', () => {
  it('says why when it is turned off, missing or not the addon', () => {
    expect(loadSendfile({ env: { LC_SENDFILE: '0' } })).toMatchObject({ sender: undefined, reason: 'LC_SENDFILE=0' });
    const missing = loadSendfile({ env: {}, paths: ['/nonexistent/sendfile.node'] });
    expect(missing.sender).toBeUndefined();
    expect(missing.sender === undefined && missing.reason).toMatch(/not built/);
    const tree = makeBootTree({});
    const bogus = join(tree.dir, 'bogus.node');
    writeFileSync(bogus, 'not an ELF object');
    const bad = loadSendfile({ env: {}, paths: [bogus] });
    expect(bad.sender === undefined && bad.reason).toMatch(/cannot load/);
  });

  it('seals each file into its memfd when it loads, before the first download', async () => {
    const sender = zeroCopySender();
    const prepared: number[] = [];
    const prepare = sender.prepare.bind(sender);
    sender.prepare = (bytes: Buffer) => {
      prepared.push(bytes.length);
      return prepare(bytes);
    };
    const s = await setup(sender);
    try {
      // every file of the tree is over the 64 KiB below which Node writes the body itself
      expect(prepared.sort((a, b) => a - b)).toEqual([74_213, 173_792, 1_048_576, 9_000_001, 40_000_000]);
      const got = await get(s.port, '/image/initrd.img');
      expect(got.bytes.length).toBe(9_000_001);
    } finally {
      await teardown(s);
    }
  });

  it('finds the built addon from the sources', () => {
    const loaded = loadSendfile({ env: {} });
    expect(loaded.sender === undefined ? loaded.reason : 'loaded').toBe('loaded');
  });
});
