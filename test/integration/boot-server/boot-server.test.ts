/**
 * Two real dispatcher processes: a leader, and a boot server (`--role boot --leader URL`) on
 * loopback. A simulated client asks the boot server for its boot script and image files: the
 * script comes from the leader (its token, lc.dispatcher= the leader, files at the boot
 * server), the files from the boot server's cache, filled from the leader by sha256. A stale
 * file planted in the cache is refused (logged, counted) and fetched again; the leader's
 * timeline shows the boot; forged client identities are refused by the leader.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { spawnDispatcher, startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { tempDir } from '../../unit/agent/temp-dirs.js';
import { makeBootTree } from '../../lab/boot-tree.js';
import { ctlAdmin } from '../../lab/run-ctl.js';
import type { BootServerAdded, BootServerList } from '../../../dispatcher/src/api/boot-servers/schemas.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const MAC = '52:54:00:b5:00:01';

let leader: DispatcherProcess;
let bootServer: DispatcherProcess;
let token: string;
const kernel = randomBytes(300_000);
const initrd = randomBytes(500_000);

beforeAll(async () => {
  const imageDir = tempDir('lc-bs-image-');
  writeFileSync(join(imageDir, 'vmlinuz'), kernel);
  writeFileSync(join(imageDir, 'initrd.img'), initrd);
  leader = await startDispatcher({ boot: { imageDir, pxeDir: tempDir('lc-bs-pxe-') } });
  token = (await leader.api<BootServerAdded>('POST', '/api/v1/boot-servers', { name: 'rack2' })).token;
  const dataDir = tempDir('lc-bs-data-');
  writeFileSync(join(dataDir, 'leader.token'), `${token}\n`, { mode: 0o600 });
  // A stale file under the kernel's hash: it must be refused, never served.
  mkdirSync(join(dataDir, 'boot-cache'), { recursive: true });
  writeFileSync(join(dataDir, 'boot-cache', sha(kernel)), 'stale bytes from an older build\n');
  // Its own first stages (pxe dir) for TFTP; no image folder: image bytes come from the leader.
  bootServer = await startDispatcher({
    dataDir,
    tftp: true,
    boot: { imageDir: tempDir('lc-bs-noimage-'), pxeDir: makeBootTree({ vmlinuz: -1, 'initrd.img': -1 }).pxeDir },
    args: ['--role', 'boot', '--leader', leader.url],
  });
}, 60_000);

afterAll(async () => {
  await bootServer?.stop();
  await leader?.stop();
});

async function get(url: string): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(url);
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
}

describe('a boot server of another segment', () => {
  it('gives a client the leader’s boot script, its files from the cache, the stale file refused', async () => {
    const script = (await get(`${bootServer.url}/boot.ipxe?mac=${MAC}`)).body.toString();
    expect(script).toContain(`lc.dispatcher=${leader.url} `);
    expect(script).toMatch(/lc\.token=\S+/);
    expect(script).toContain(`chain --autofree ${bootServer.url}/boot.ipxe?mac=52-54-00-b5-00-01`);
    const kernelUrl = /kernel --name vmlinuz (\S+)/.exec(script)?.[1];
    const initrdUrl = /initrd --name initrd.img (\S+)/.exec(script)?.[1];
    expect(kernelUrl?.startsWith(`${bootServer.url}/image/default/`)).toBe(true);

    const k = await get(kernelUrl!);
    expect(k.status).toBe(200);
    expect(sha(k.body)).toBe(sha(kernel));
    const i = await get(initrdUrl!);
    expect(sha(i.body)).toBe(sha(initrd));

    // The stale file was refused and said so; the cache now holds the leader's bytes.
    const refusal = await bootServer.waitForLog((l) => String(l.msg).includes("disagrees with the leader's sha256"));
    expect(refusal).toMatchObject({ level: 40, want: sha(kernel) });
    expect(sha(readFileSync(join(bootServer.dataDir, 'boot-cache', sha(kernel))))).toBe(sha(kernel));

    // The leader's timeline shows the boot: the script it wrote, the downloads the boot server forwarded.
    const stagesOf = async () => {
      const r = await leader.api<{ boots: { stages: { stage: string; detail: Record<string, unknown> | null }[] }[] }>(
        'GET',
        `/api/v1/boots?mac=${MAC}`,
      );
      return r.boots.at(-1)?.stages ?? [];
    };
    const stages = await vi.waitFor(
      async () => {
        const s = await stagesOf();
        if (!s.some((x) => x.stage === 'http.initrd')) throw new Error('http.initrd not forwarded yet');
        return s;
      },
      { timeout: 10_000, interval: 100 },
    );
    expect(stages.map((s) => s.stage)).toEqual(expect.arrayContaining(['http.script', 'http.kernel', 'http.initrd']));
    expect(stages.find((s) => s.stage === 'http.kernel')?.detail).toMatchObject({ bootServer: 'rack2', bytes: kernel.length });

    // And its list shows the boot server with its cache and the refusal.
    const list = await vi.waitFor(
      async () => {
        const l = await leader.api<BootServerList>('GET', '/api/v1/boot-servers');
        if ((l.bootServers[0]?.report?.cache.fills ?? 0) < 2) throw new Error('no heartbeat with both fills yet');
        return l;
      },
      { timeout: 10_000, interval: 200 },
    );
    const rack2 = list.bootServers[0]!;
    expect(rack2).toMatchObject({ name: 'rack2', state: 'online', address: '127.0.0.1', scripts: 1 });
    expect(rack2.report).toMatchObject({
      url: bootServer.url,
      cache: { files: 2, bytes: kernel.length + initrd.length, fills: 2, refused: 1 },
    });
    expect(rack2.report!.errors.some((e) => e.message.includes('disagrees'))).toBe(true);

    // The operator's view: dispatcherctl boot-servers.
    const ctl = await ctlAdmin(leader, ['boot-servers']);
    expect(ctl.code).toBe(0);
    expect(ctl.stdout).toMatch(/^NAME\s+STATE\s+ADDRESS\s+URL/);
    expect(ctl.stdout).toMatch(/rack2\s+online\s+127\.0\.0\.1\s+http:\/\/127\.0\.0\.1:\d+\s+.*2 files.*\s1\s+1\s+cached default@/);
  });

  it('serves its first stage over TFTP from its own pxe dir', async () => {
    const out = join(tempDir('lc-bs-tftp-'), 'undionly.kpxe');
    await promisify(execFile)('tftp', ['-m', 'binary', '127.0.0.1', String(bootServer.tftpPort), '-c', 'get', 'undionly.kpxe', out], {
      timeout: 30_000,
    });
    expect(readFileSync(out).length).toBe(74_213);
  });

  it.each([
    ['no token', undefined],
    ['the admin token', 'admin'],
    ['a made-up boot-server token', 'lcb_madeupmadeupmadeupmadeupmadeup'],
  ])('refuses a forwarded client identity with %s', async (_, cred) => {
    const forged = '52:54:00:b5:00:99';
    const auth = cred === 'admin' ? leader.token : cred;
    const res = await fetch(`${leader.url}/api/v1/boot-server/script`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${auth}` } : {}) },
      body: JSON.stringify({ mac: forged, ip: '10.9.9.9', bootUrl: 'http://10.9.9.1:8080', leaderUrl: leader.url }),
    });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('DSP_ERR_BOOT_SERVER_TOKEN');
    await leader.waitForLog((l) => String(l.msg).startsWith('boot-server request refused'));
    const nodes = await leader.api<{ nodes: { mac: string }[] }>('GET', '/api/v1/nodes');
    expect(nodes.nodes.some((n) => n.mac === forged)).toBe(false);
  });

  it('will not start without its token, and says where to get one', async () => {
    const d = spawnDispatcher({ args: ['--role', 'boot', '--leader', leader.url] });
    expect((await d.exited).code).toBe(2);
    expect(d.stderr()).toMatch(/cannot read the boot server's token from \S+leader\.token/);
    expect(d.stderr()).toContain('hint: on the leader: dispatcherctl boot-server add NAME');
  });

  it('stops taking a removed boot server’s token', async () => {
    const extra = await leader.api<BootServerAdded>('POST', '/api/v1/boot-servers', { name: 'gone' });
    const call = () =>
      fetch(`${leader.url}/api/v1/boot-server/heartbeat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${extra.token}` },
        body: JSON.stringify({
          url: 'http://10.9.9.1:8080',
          version: 'x',
          interface: null,
          dhcp: 'off',
          cache: { files: 0, bytes: 0, fills: 0, refused: 0 },
          errors: [],
          eventsDropped: 0,
        }),
      });
    expect((await call()).status).toBe(200);
    await leader.api('DELETE', '/api/v1/boot-servers/gone');
    expect((await call()).status).toBe(401);
  });
});
