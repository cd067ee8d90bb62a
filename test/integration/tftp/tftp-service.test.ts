/**
 * The TFTP service in-process (real sockets, real clients, real store): queuing under load,
 * the boot timeline records of sent, aborted and timed-out transfers, and stop().
 */
import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCore, closeCore, type Core } from '../../../dispatcher/src/core.js';
import { resolveConfig } from '../../../dispatcher/src/config.js';
import { silentLogger } from '../../../dispatcher/src/log.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';
import { BootFiles } from '../../../dispatcher/src/boot/boot-files.js';
import { startTftp, type RunningTftp, type StartTftpOptions } from '../../../dispatcher/src/tftp/server.js';
import { makeBootTree, type BootTree } from '../../lab/boot-tree.js';
import { RawTftp, errorPacket } from './raw-tftp.js';

const run = promisify(execFile);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const mac = parseMac('52:54:00:aa:00:01') as Mac;

let core: Core | undefined;
let tftp: RunningTftp | undefined;
afterEach(async () => {
  await tftp?.stop();
  if (core) closeCore(core);
  core = undefined;
  tftp = undefined;
});

async function start(tree: BootTree, opts: StartTftpOptions = {}) {
  const config = resolveConfig({
    dhcp: { mode: 'off' },
    dataDir: join(tree.dir, 'data'),
    imageDir: tree.imageDir,
    pxeDir: tree.pxeDir,
    tftpPort: 0,
  });
  core = createCore({
    config,
    log: silentLogger(),
    network: { name: undefined, ifindex: undefined, address: '127.0.0.1', netmask: '255.0.0.0', mac: undefined },
  });
  const files = new BootFiles({ imageDir: tree.imageDir, pxeDir: tree.pxeDir, log: silentLogger() });
  await files.loadAll();
  tftp = await startTftp(core, { files, host: '127.0.0.1', ...opts });
  return { core, tftp };
}

describe('TFTP service', () => {
  it('queues transfers beyond its bound instead of failing them', async () => {
    const tree = makeBootTree({ vmlinuz: 4_000_000 });
    const { tftp: t } = await start(tree, { maxTransfers: 2 });
    const out = mkdtempSync(join(tmpdir(), 'lc-tftp-q-'));
    let maxActive = 0;
    let maxQueued = 0;
    const poll = setInterval(() => {
      const c = t.counters();
      maxActive = Math.max(maxActive, c.active);
      maxQueued = Math.max(maxQueued, c.queued);
    }, 5);
    try {
      await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          run(
            'atftp',
            [
              '--option',
              'blksize 1468',
              '--option',
              'windowsize 4',
              '--option',
              'tsize 0',
              '-g',
              '-r',
              'vmlinuz',
              '-l',
              join(out, `k${i}`),
              '127.0.0.1',
              String(t.port),
            ],
            { timeout: 60_000 },
          ),
        ),
      );
    } finally {
      clearInterval(poll);
    }
    for (let i = 0; i < 8; i++) expect(sha(readFileSync(join(out, `k${i}`)))).toBe(sha(tree.files.vmlinuz!));
    expect(maxActive).toBeLessThanOrEqual(2);
    expect(maxQueued).toBeGreaterThan(0);
    expect(t.counters()).toMatchObject({ completed: 8, failed: 0, busy: 0, bytesSent: 8 * 4_000_000, active: 0, queued: 0 });
  });

  it('records tftp.sent on the timeline of the MAC the client IP belongs to', async () => {
    const tree = makeBootTree();
    const { core: c, tftp: t } = await start(tree);
    c.nodes.admit(mac);
    c.nodes.setIp(mac, '127.0.0.1');
    await run('tftp', ['-m', 'binary', '127.0.0.1', String(t.port), '-c', 'get', 'undionly.kpxe', join(tree.dir, 'u')]);
    await new Promise((r) => setTimeout(r, 50));
    const stages = c.timeline.list(mac);
    expect(stages.map((s) => s.stage)).toEqual(['tftp.sent']);
    expect(stages[0]!.detail).toMatchObject({ file: 'undionly.kpxe', bytes: 74_213, ip: '127.0.0.1', blksize: 512, windowsize: 1 });
    expect(typeof stages[0]!.detail!.durationMs).toBe('number');
  });

  it('records tftp.failed when the client aborts mid-transfer, and counts a size probe apart', async () => {
    const tree = makeBootTree();
    const { core: c, tftp: t } = await start(tree);
    c.nodes.admit(mac);
    c.nodes.setIp(mac, '127.0.0.1');
    const raw = await RawTftp.open();
    try {
      const probe = await raw.request(t.port, 'ipxe.efi', { tsize: '0' });
      if (!('oack' in probe)) throw new Error('refused');
      raw.send(errorPacket(8, 'size probe'), probe.tid);
      const res = await raw.request(t.port, 'ipxe.efi', { blksize: '512' });
      if (!('oack' in res)) throw new Error('refused');
      await raw.readAll(res.tid, 512, (block) => {
        if (block < 10) return true;
        raw.send(errorPacket(0, 'user pressed Ctrl-C'), res.tid);
        return false;
      });
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      raw.close();
    }
    expect(t.counters()).toMatchObject({ sizeProbes: 1, failed: 1, completed: 0 });
    const failed = c.timeline.list(mac).filter((s) => s.stage === 'tftp.failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]!.detail).toMatchObject({ file: 'ipxe.efi', reason: 'client error 0: user pressed Ctrl-C', size: 1_048_576 });
    expect(failed[0]!.detail!.bytes).toBeGreaterThanOrEqual(9 * 512);
  });

  it('gives up on a client that stops answering and records why', async () => {
    const tree = makeBootTree();
    const { core: c, tftp: t } = await start(tree, { timeoutMs: 100, retries: 2 });
    c.nodes.admit(mac);
    c.nodes.setIp(mac, '127.0.0.1');
    const raw = await RawTftp.open();
    try {
      const res = await raw.request(t.port, 'snponly.efi', { blksize: '1024' });
      if (!('oack' in res)) throw new Error('refused');
      raw.send(Buffer.from([0, 4, 0, 0]), res.tid); // ACK the OACK, then silence
      await new Promise((r) => setTimeout(r, 1000));
    } finally {
      raw.close();
    }
    expect(t.counters()).toMatchObject({ failed: 1, active: 0 });
    const failed = c.timeline.list(mac).filter((s) => s.stage === 'tftp.failed');
    expect(failed[0]?.detail).toMatchObject({ file: 'snponly.efi', reason: 'Timed out' });
  });

  it('drops a retransmitted RRQ while the first one waits in line', async () => {
    const tree = makeBootTree();
    const { tftp: t } = await start(tree, { maxTransfers: 1 });
    const a = await RawTftp.open();
    const b = await RawTftp.open();
    try {
      const first = await a.request(t.port, 'ipxe.efi', { blksize: '512' }); // holds the only slot (no ACK yet)
      if (!('oack' in first)) throw new Error('refused');
      const req = Buffer.from('\x00\x01undionly.kpxe\x00octet\x00blksize\x001024\x00', 'latin1');
      b.send(req, t.port);
      b.send(req, t.port);
      b.send(req, t.port);
      expect(await b.next(300)).toBeUndefined(); // queued: no OACK yet
      expect(t.counters()).toMatchObject({ queued: 1, duplicates: 2 });
      a.send(errorPacket(0, 'done'), first.tid); // frees the slot
      const oack = await b.next(2000);
      expect(oack?.packet.readUInt16BE(0)).toBe(6);
      expect(await b.next(300)).toBeUndefined(); // exactly one transfer answered
    } finally {
      a.close();
      b.close();
    }
  });

  it('ends running transfers on stop', async () => {
    const tree = makeBootTree();
    const { tftp: t } = await start(tree);
    const raw = await RawTftp.open();
    try {
      const res = await raw.request(t.port, 'initrd.img', { blksize: '512' });
      if (!('oack' in res)) throw new Error('refused');
      expect(t.counters().active).toBe(1);
      await t.stop();
      tftp = undefined;
      expect(t.counters().active).toBe(0);
    } finally {
      raw.close();
    }
  });
});
