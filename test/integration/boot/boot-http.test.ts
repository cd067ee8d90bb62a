/**
 * HTTP boot routes on the real fastify app (inject, and a real port for transfers): boot
 * scripts per MAC with verifiable tokens, refused and unidentified machines, image files
 * with Range/ETag/HEAD, the boot timeline API, and fuzzed query/path parsing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
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
import { bootsApiPlugin } from '../../../dispatcher/src/api/boots/routes.js';
import { makeBootTree, type BootTree } from '../../lab/boot-tree.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const mac = (s: string) => parseMac(s) as Mac;
const MAC1 = mac('52:54:00:12:34:56');

interface Setup {
  core: Core;
  app: FastifyInstance;
  http: BootHttp;
  tree: BootTree;
}

async function setup(
  clusterYaml = 'enrollment: auto\n',
  opts: { maxTransfers?: number; missing?: string[]; kernelArgs?: string; sizes?: Record<string, number> } = {},
): Promise<Setup> {
  const sizes: Record<string, number> = { vmlinuz: 2_000_000, 'initrd.img': 6_000_000, ...opts.sizes };
  for (const m of opts.missing ?? []) sizes[m] = -1;
  const tree = makeBootTree(sizes);
  const config = resolveConfig({
    dhcp: { mode: 'off' },
    dataDir: join(tree.dir, 'data'),
    imageDir: tree.imageDir,
    pxeDir: tree.pxeDir,
    httpPort: 8080,
    kernelArgs: opts.kernelArgs ?? 'quiet',
  });
  const core = createCore({
    config,
    log: silentLogger(),
    cluster: parseClusterFile(clusterYaml),
    network: { name: undefined, ifindex: undefined, address: '10.42.0.1', netmask: '255.255.255.0', mac: undefined },
  });
  const files = new BootFiles({ imageDir: tree.imageDir, pxeDir: tree.pxeDir, log: silentLogger() });
  await files.loadAll();
  // inject() requests carry no socket address: they stand for requests on the node network
  // (the address check itself is tested on real sockets in test/integration/security/boot-identity.test.ts).
  const nodeNetwork = { admits: (local: string | undefined) => local === undefined };
  const http = bootHttpPlugin(core, { files, nodeNetwork, ...(opts.maxTransfers ? { maxTransfers: opts.maxTransfers } : {}) });
  const app = await buildApp(core, [http, bootsApiPlugin(core)]);
  return { core, app, http, tree };
}

async function teardown(s: Setup | undefined) {
  if (!s) return;
  await s.app.close();
  closeCore(s.core);
}

const tokenOf = (script: string) => /lc\.token=(\S+)/.exec(script)?.[1];

describe('boot script', () => {
  let s: Setup;
  beforeAll(async () => (s = await setup()));
  afterAll(() => teardown(s));

  it('is an iPXE script for that MAC, with a token the dispatcher can verify', async () => {
    const r = await s.app.inject({ url: '/boot.ipxe?mac=52:54:00:12:34:56' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/plain/);
    expect(r.headers['cache-control']).toBe('no-store');
    expect(r.body.startsWith('#!ipxe\n')).toBe(true);
    // The image and version it boots: a folder without a manifest is versioned by its bytes.
    const version = /lc\.image=default@([0-9a-f]{12}) /.exec(r.body)?.[1];
    expect(version).toBeDefined();
    expect(r.body).toContain(`kernel --name vmlinuz http://10.42.0.1:8080/image/default/${version}/vmlinuz?mac=52-54-00-12-34-56 `);
    expect(r.body).toContain(`initrd --name initrd.img http://10.42.0.1:8080/image/default/${version}/initrd.img?mac=52-54-00-12-34-56 `);
    const initrd = await s.app.inject({ url: `/image/default/${version}/initrd.img` });
    expect(initrd.statusCode).toBe(200);
    expect(Buffer.compare(initrd.rawPayload, s.tree.files['initrd.img']!)).toBe(0);
    for (const bad of [
      `/image/default/${'0'.repeat(12)}/vmlinuz`,
      `/image/default/${version}/manifest.json`,
      `/image/Nope/${version}/vmlinuz`,
      `/image/default/..%2f..%2fetc/passwd`,
    ])
      expect((await s.app.inject({ url: bad })).statusCode, bad).toBe(404);
    expect(r.body).toContain('lc.dispatcher=http://10.42.0.1:8080 ');
    expect(r.body).toContain(' initrd=initrd.img ');
    expect(r.body).toContain(' console=tty0 console=ttyS0,115200 quiet ');
    const token = tokenOf(r.body)!;
    expect(s.core.bootTokens.verify(MAC1, token)).toBe(true);
    expect(s.core.bootTokens.verify(mac('52:54:00:12:34:57'), token)).toBe(false);
  });

  it('issues a fresh token per boot; the newest is the valid one', async () => {
    const a = tokenOf((await s.app.inject({ url: '/boot.ipxe?mac=52-54-00-12-34-56' })).body)!;
    const b = tokenOf((await s.app.inject({ url: '/boot/525400123456.ipxe' })).body)!;
    expect(a).not.toBe(b);
    expect(s.core.bootTokens.verify(MAC1, b)).toBe(true);
    expect(s.core.bootTokens.verify(MAC1, a)).toBe(false);
  });

  it('registers the machine and records the script on its boot timeline', async () => {
    await s.app.inject({ url: '/boot.ipxe?mac=52:54:00:00:00:77' });
    const node = s.core.nodes.byMac(mac('52:54:00:00:00:77'));
    expect(node).toMatchObject({ state: 'booting' });
    expect(node!.bootCount).toBeGreaterThanOrEqual(1);
    const stages = s.core.timeline.list(mac('52:54:00:00:00:77'));
    expect(stages.at(-1)).toMatchObject({ stage: 'http.script', detail: { node: node!.name } });
  });

  it.each([
    ['no MAC', '/boot.ipxe', /carries no MAC address/],
    ['a malformed MAC', '/boot.ipxe?mac=zz:54:00:12:34:56', /is not a MAC address/],
    ['a MAC in a bad path', '/boot/not-a-mac', /is not a MAC address/],
  ])('tells a machine with %s why, and retries with its MAC filled in by iPXE', async (_n, url, why) => {
    const r = await s.app.inject({ url });
    expect(r.statusCode).toBe(200);
    expect(r.body.startsWith('#!ipxe\n')).toBe(true);
    expect(r.body).toMatch(why);
    expect(r.body).toMatch(/^sleep \d+$/m);
    expect(r.body).toContain('chain --autofree http://10.42.0.1:8080/boot.ipxe?mac=${mac:hexhyp}');
    expect(r.body).not.toMatch(/^kernel /m);
  });

  it('answers HEAD of a script with 404 rather than issuing (and revoking) a token', async () => {
    const before = tokenOf((await s.app.inject({ url: '/boot.ipxe?mac=52:54:00:12:34:56' })).body)!;
    const r = await s.app.inject({ method: 'HEAD', url: '/boot.ipxe?mac=52:54:00:12:34:56' });
    expect(r.statusCode).toBe(404);
    expect(s.core.bootTokens.verify(MAC1, before)).toBe(true);
  });

  it('never fails on any query or path (fuzzed)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ maxLength: 60 }),
          fc.webUrl().map((u) => u.slice(8, 70)),
        ),
        fc.constantFrom(
          '/boot.ipxe?mac=',
          '/boot.ipxe?',
          '/boot/',
          '/image/vmlinuz?mac=',
          '/api/v1/boots?mac=',
          '/api/v1/boots?node=',
          '/pxe/',
        ),
        async (junk, prefix) => {
          const r = await s.app.inject({
            url: prefix + encodeURIComponent(junk).replace(/%2F/g, '/').replace(/%3D/g, '=').replace(/%26/g, '&'),
          });
          expect(r.statusCode).toBeLessThan(500);
          if (prefix.startsWith('/boot') && r.statusCode === 200) expect(r.body.startsWith('#!ipxe\n')).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
    // raw, unencoded junk too
    for (const url of [
      '/boot.ipxe?mac=%',
      '/boot.ipxe?mac=%00',
      '/boot.ipxe?mac[]=1&mac=2',
      '/boot/%2e%2e%2fetc',
      '/image/vmlinuz?mac=%ZZ',
      '/pxe/..%2f..%2fetc%2fpasswd',
      '/api/v1/boots?boots=9999999999',
    ]) {
      const r = await s.app.inject({ url });
      expect(r.statusCode, url).toBeLessThan(500);
    }
  });
});

describe('boot scripts under enrollment policies', () => {
  it('boots a machine waiting for approval, and says so', async () => {
    const s = await setup('enrollment: approve\n');
    try {
      const r = await s.app.inject({ url: '/boot.ipxe?mac=52:54:00:12:34:56' });
      expect(r.body).toMatch(/^kernel /m);
      expect(r.body).toContain('waiting for approval');
      expect(s.core.nodes.byMac(MAC1)?.enrollment).toBe('pending');
    } finally {
      await teardown(s);
    }
  });

  it('tells a refused machine why, without a kernel or a token, and asks it to retry later', async () => {
    const s = await setup('enrollment: deny\nnodes:\n  - {name: n1, mac: "52:54:00:00:00:01"}\n');
    try {
      const r = await s.app.inject({ url: '/boot.ipxe?mac=52:54:00:12:34:56' });
      expect(r.statusCode).toBe(200);
      expect(r.body).toMatch(/may not boot: unknown MAC and the cluster file says enrollment: deny/);
      expect(r.body).toMatch(/^sleep \d+$/m);
      expect(r.body).toContain('chain --autofree http://10.42.0.1:8080/boot.ipxe?mac=52-54-00-12-34-56');
      expect(r.body).not.toMatch(/^kernel /m);
      expect(s.core.nodes.byMac(MAC1)).toBeUndefined();
      // a listed machine still boots
      expect((await s.app.inject({ url: '/boot.ipxe?mac=52:54:00:00:00:01' })).body).toMatch(/^kernel /m);
    } finally {
      await teardown(s);
    }
  });
});

describe('image files', () => {
  let s: Setup;
  beforeAll(async () => (s = await setup('enrollment: auto\n', { missing: ['snponly.efi'] })));
  afterAll(() => teardown(s));

  const kernel = () => s.tree.files.vmlinuz!;

  it('serves the kernel whole with length, strong ETag and Last-Modified', async () => {
    const r = await s.app.inject({ url: '/image/vmlinuz' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-length']).toBe(String(kernel().length));
    expect(r.headers.etag).toBe(`"${sha(kernel())}"`);
    expect(r.headers['accept-ranges']).toBe('bytes');
    expect(r.headers['last-modified']).toMatch(/GMT$/);
    expect(sha(r.rawPayload)).toBe(sha(kernel()));
  });

  it('answers HEAD with the headers of a GET and no body', async () => {
    const r = await s.app.inject({ method: 'HEAD', url: '/image/initrd.img' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-length']).toBe(String(s.tree.files['initrd.img']!.length));
    expect(r.rawPayload.length).toBe(0);
  });

  it.each([
    ['a single range', 'bytes=100-199', 206, 100, 199],
    ['an open range', 'bytes=1999000-', 206, 1_999_000, 1_999_999],
    ['a suffix range', 'bytes=-500', 206, 1_999_500, 1_999_999],
  ])('serves %s as 206 with Content-Range', async (_n, range, status, start, end) => {
    const r = await s.app.inject({ url: '/image/vmlinuz', headers: { range } });
    expect(r.statusCode).toBe(status);
    expect(r.headers['content-range']).toBe(`bytes ${start}-${end}/2000000`);
    expect(r.headers['content-length']).toBe(String(end - start + 1));
    expect(r.rawPayload.equals(kernel().subarray(start, end + 1))).toBe(true);
  });

  it('answers an unsatisfiable range with 416 and the size', async () => {
    const r = await s.app.inject({ url: '/image/vmlinuz', headers: { range: 'bytes=2000000-' } });
    expect(r.statusCode).toBe(416);
    expect(r.headers['content-range']).toBe('bytes */2000000');
  });

  it('answers If-None-Match with the current tag by 304, and an old tag by the file', async () => {
    const etag = `"${sha(kernel())}"`;
    const r = await s.app.inject({ url: '/image/vmlinuz', headers: { 'if-none-match': etag } });
    expect(r.statusCode).toBe(304);
    expect(r.rawPayload.length).toBe(0);
    expect(r.headers.etag).toBe(etag);
    const old = await s.app.inject({ url: '/image/vmlinuz', headers: { 'if-none-match': '"0000"' } });
    expect(old.statusCode).toBe(200);
  });

  it('honours If-Range: the range only while the tag still matches', async () => {
    const etag = `"${sha(kernel())}"`;
    expect((await s.app.inject({ url: '/image/vmlinuz', headers: { range: 'bytes=0-9', 'if-range': etag } })).statusCode).toBe(206);
    const changed = await s.app.inject({ url: '/image/vmlinuz', headers: { range: 'bytes=0-9', 'if-range': '"old"' } });
    expect(changed.statusCode).toBe(200);
    expect(changed.rawPayload.length).toBe(2_000_000);
  });

  it('serves the iPXE binaries for UEFI HTTP boot clients, and says what is missing', async () => {
    const r = await s.app.inject({ url: '/pxe/ipxe.efi' });
    expect(r.statusCode).toBe(200);
    expect(sha(r.rawPayload)).toBe(sha(s.tree.files['ipxe.efi']!));
    const missing = await s.app.inject({ url: '/pxe/snponly.efi' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ error: { code: 'DSP_ERR_NOT_FOUND', hint: 'run `make pxe` on the dispatcher' } });
    expect((await s.app.inject({ url: '/pxe/..%2f..%2fetc%2fpasswd' })).statusCode).toBe(404);
    expect((await s.app.inject({ url: '/pxe/dispatcher.db' })).statusCode).toBe(404);
  });

  it('records kernel and initrd downloads on the timeline of the MAC in the URL', async () => {
    const m = mac('52:54:00:00:00:42');
    await s.app.inject({ url: '/boot.ipxe?mac=52:54:00:00:00:42' });
    await s.app.inject({ url: '/image/vmlinuz?mac=52-54-00-00-00-42' });
    await s.app.inject({ url: '/image/initrd.img?mac=52-54-00-00-00-42' });
    await new Promise((r) => setTimeout(r, 20));
    const stages = s.core.timeline.list(m);
    expect(stages.map((x) => x.stage)).toEqual(['http.script', 'http.kernel', 'http.initrd']);
    expect(stages[1]!.detail).toMatchObject({ file: 'vmlinuz', bytes: 2_000_000, status: 200 });
    expect(stages[2]!.detail).toMatchObject({ file: 'initrd.img', bytes: 6_000_000 });
    expect(typeof stages[2]!.detail!.durationMs).toBe('number');
  });

  it('records a UEFI HTTP boot first stage by the client IP the DHCP server leased', async () => {
    const m = mac('52:54:00:00:00:43');
    s.core.nodes.admit(m);
    s.core.nodes.setIp(m, '127.0.0.1'); // inject() requests come from 127.0.0.1
    const r = await s.app.inject({ url: '/pxe/ipxe.efi' });
    expect(r.statusCode).toBe(200);
    await new Promise((res) => setTimeout(res, 20));
    expect(s.core.timeline.list(m).map((x) => [x.stage, x.detail?.file])).toEqual([['http.firststage', 'ipxe.efi']]);
    s.core.nodes.setIp(m, '10.0.0.43');
  });

  it('does not record downloads for a MAC it has never seen', async () => {
    await s.app.inject({ url: '/image/vmlinuz?mac=52-54-00-00-0f-0f' });
    expect(s.core.timeline.list(mac('52:54:00:00:0f:0f'))).toEqual([]);
  });
});

describe('image downloads on a real port', () => {
  let s: Setup;
  let port: number;
  beforeAll(async () => {
    // a kernel bigger than what loopback socket buffers hold, so a hang-up interrupts it
    s = await setup('enrollment: auto\n', { maxTransfers: 2, sizes: { vmlinuz: 40_000_000 } });
    await s.app.listen({ port: 0, host: '127.0.0.1' });
    port = (s.app.server.address() as { port: number }).port;
  });
  afterAll(() => teardown(s));

  const get = (path: string, onData?: (req: ReturnType<typeof httpRequest>, got: number) => void) =>
    new Promise<{ status: number; bytes: Buffer; aborted: boolean }>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, path }, (res) => {
        const chunks: Buffer[] = [];
        let got = 0;
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          got += c.length;
          onData?.(req, got);
        });
        res.on('end', () => resolve({ status: res.statusCode!, bytes: Buffer.concat(chunks), aborted: false }));
        res.on('error', () => resolve({ status: res.statusCode!, bytes: Buffer.concat(chunks), aborted: true }));
        res.on('aborted', () => resolve({ status: res.statusCode!, bytes: Buffer.concat(chunks), aborted: true }));
      });
      req.on('error', (e) =>
        e.message.includes('socket hang up') || e.message.includes('aborted')
          ? resolve({ status: 0, bytes: Buffer.alloc(0), aborted: true })
          : reject(e),
      );
      req.end();
    });

  it('serves 12 concurrent initrd downloads intact through a bound of 2', async () => {
    let maxActive = 0;
    let maxQueued = 0;
    const poll = setInterval(() => {
      const c = s.http.counters();
      maxActive = Math.max(maxActive, c.active);
      maxQueued = Math.max(maxQueued, c.queued);
    }, 2);
    const results = await Promise.all(Array.from({ length: 12 }, () => get('/image/initrd.img')));
    // the server sees 'finish' a moment after the client has read the last byte
    for (let i = 0; i < 50 && s.http.counters().completed < 12; i++) await new Promise((r) => setTimeout(r, 10));
    clearInterval(poll);
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(sha(r.bytes)).toBe(sha(s.tree.files['initrd.img']!));
    }
    expect(maxActive).toBeLessThanOrEqual(2);
    expect(maxQueued).toBeGreaterThan(0);
    expect(s.http.counters()).toMatchObject({ completed: 12, failed: 0, active: 0, queued: 0 });
  });

  it('records http.failed when the client hangs up mid-download', async () => {
    const m = mac('52:54:00:00:00:99');
    await s.app.inject({ url: '/boot.ipxe?mac=52:54:00:00:00:99' });
    const r = await get('/image/vmlinuz?mac=52-54-00-00-00-99', (req, got) => {
      if (got > 100_000) req.destroy();
    });
    expect(r.aborted).toBe(true);
    for (let i = 0; i < 50 && !s.core.timeline.list(m).some((x) => x.stage === 'http.failed'); i++)
      await new Promise((res) => setTimeout(res, 20));
    const failed = s.core.timeline.list(m).find((x) => x.stage === 'http.failed');
    expect(failed?.detail).toMatchObject({ file: 'vmlinuz', size: 40_000_000, reason: 'connection closed before the end' });
    expect(s.http.counters()).toMatchObject({ failed: 1 });
  });
});

describe('boot timeline API', () => {
  let s: Setup;
  beforeAll(async () => (s = await setup()));
  afterAll(() => teardown(s));

  it('returns the boots of a MAC or a node name, stage by stage', async () => {
    s.core.timeline.record(MAC1, 'dhcp.discover', { arch: 0 }, { newBoot: true });
    await s.app.inject({ url: '/boot.ipxe?mac=52:54:00:12:34:56' });
    await s.app.inject({ url: '/image/vmlinuz?mac=52:54:00:12:34:56' });
    const name = s.core.nodes.byMac(MAC1)!.name;
    for (const url of ['/api/v1/boots?mac=52-54-00-12-34-56', `/api/v1/boots?node=${name}`]) {
      const r = await s.app.inject({ url });
      expect(r.statusCode, r.body).toBe(200);
      const body = r.json();
      expect(body).toMatchObject({ mac: '52:54:00:12:34:56', node: name });
      expect(body.boots).toHaveLength(1);
      expect(body.boots[0].stages.map((x: { stage: string }) => x.stage)).toEqual(['dhcp.discover', 'http.script', 'http.kernel']);
      expect(body.boots[0].stages[0]).toMatchObject({ sinceStartMs: 0, detail: { arch: 0 } });
      expect(body.boots[0].stages[2].detail).toMatchObject({ file: 'vmlinuz', bytes: 2_000_000 });
      expect(body.boots[0]).toMatchObject({ boot: 1, lastStage: 'http.kernel', reachedAgent: false, failures: 0 });
      expect(JSON.stringify(body)).not.toMatch(/lc\.token|token/);
    }
  });

  it('returns no boots for a MAC it has not seen', async () => {
    const r = await s.app.inject({ url: '/api/v1/boots?mac=02:00:00:00:00:01' });
    expect(r.json()).toEqual({ mac: '02:00:00:00:00:01', node: null, boots: [] });
  });

  it.each([
    ['no selector', '/api/v1/boots', 400, 'DSP_ERR_BAD_REQUEST'],
    ['a bad MAC', '/api/v1/boots?mac=hello', 400, 'DSP_ERR_BAD_REQUEST'],
    ['an unknown node', '/api/v1/boots?node=node999', 404, 'DSP_ERR_NODE_NOT_FOUND'],
    ['too many boots', '/api/v1/boots?mac=02:00:00:00:00:01&boots=500', 400, 'DSP_ERR_BAD_REQUEST'],
  ])('refuses %s with a coded error', async (_n, url, status, code) => {
    const r = await s.app.inject({ url });
    expect(r.statusCode).toBe(status);
    expect(r.json().error.code).toBe(code);
  });
});
