/**
 * Transfers of the TFTP service (the `tftp` package behind node-tftp.ts). Real clients and a
 * raw client: RFC 1350 lock-step, blksize + windowsize + tsize, the final empty block of a
 * file whose size is a multiple of blksize, block numbers rolling over past 65535, the EDK2
 * size probe, a silent client, and duplicate ACKs that must not trigger resends.
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
import { BootFiles } from '../../../dispatcher/src/boot/boot-files.js';
import { startTftp, type RunningTftp } from '../../../dispatcher/src/tftp/server.js';
import { TftpOpcode } from '../../../dispatcher/src/tftp/codec.js';
import { makeBootTree, type BootTree } from '../../lab/boot-tree.js';
import { RawTftp, errorPacket } from './raw-tftp.js';

const run = promisify(execFile);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let core: Core | undefined;
let tftp: RunningTftp | undefined;
afterEach(async () => {
  await tftp?.stop();
  if (core) closeCore(core);
  core = undefined;
  tftp = undefined;
});

async function start(tree: BootTree, timeoutMs = 1000, retries = 5) {
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
  tftp = await startTftp(core, { files, host: '127.0.0.1', timeoutMs, retries });
  return tftp;
}

describe('TFTP transfers', () => {
  it('tftp-hpa reads a file in 512-byte lock-step, and one whose size is a multiple of 512 (empty last block)', async () => {
    const tree = makeBootTree({ 'undionly.kpxe': 74_213, 'snponly.efi': 512 * 300 });
    const t = await start(tree);
    const dir = mkdtempSync(join(tmpdir(), 'lc-tftp-eng-'));
    for (const name of ['undionly.kpxe', 'snponly.efi']) {
      await run('tftp', ['-m', 'binary', '127.0.0.1', String(t.port), '-c', 'get', name, join(dir, name)], { timeout: 30_000 });
      expect(sha(readFileSync(join(dir, name)))).toBe(sha(tree.files[name]!));
    }
    expect(t.counters()).toMatchObject({ completed: 2, failed: 0 });
  });

  it('atftp reads with blksize 1468, windowsize 8 and tsize', async () => {
    const tree = makeBootTree({ 'initrd.img': 5_000_000 });
    const t = await start(tree);
    const out = join(mkdtempSync(join(tmpdir(), 'lc-tftp-eng-')), 'initrd.img');
    await run(
      'atftp',
      [
        '--option',
        'blksize 1468',
        '--option',
        'windowsize 8',
        '--option',
        'tsize 0',
        '-g',
        '-r',
        'initrd.img',
        '-l',
        out,
        '127.0.0.1',
        String(t.port),
      ],
      { timeout: 60_000 },
    );
    expect(sha(readFileSync(out))).toBe(sha(tree.files['initrd.img']!));
  });

  it('rolls block numbers over past 65535 (a 40 MB file in 512-byte blocks)', async () => {
    const tree = makeBootTree({ vmlinuz: 40_000_000 });
    const t = await start(tree);
    const raw = await RawTftp.open();
    try {
      const res = await raw.request(t.port, 'vmlinuz', { blksize: '512', tsize: '0' });
      if (!('oack' in res)) throw new Error(`refused: ${res.error.message}`);
      expect(res.oack).toEqual({ blksize: '512', tsize: '40000000' });
      const bytes = await raw.readAll(res.tid, 512);
      expect(sha(bytes)).toBe(sha(tree.files.vmlinuz!));
    } finally {
      raw.close();
    }
  }, 120_000);

  it('treats ERROR 8 after the OACK as a size probe, not a failure', async () => {
    const tree = makeBootTree({});
    const t = await start(tree);
    const raw = await RawTftp.open();
    try {
      const probe = await raw.request(t.port, 'ipxe.efi', { tsize: '0', blksize: '1468', windowsize: '4' });
      if (!('oack' in probe)) throw new Error(`refused: ${probe.error.message}`);
      expect(probe.oack).toEqual({ blksize: '1468', windowsize: '4', tsize: String(tree.files['ipxe.efi']!.length) });
      raw.send(errorPacket(8, 'User aborted the transfer'), probe.tid);
      expect(await raw.next(1500)).toBeUndefined(); // nothing more: the probe ended
      expect(t.counters()).toMatchObject({ sizeProbes: 1, failed: 0, active: 0 });
    } finally {
      raw.close();
    }
  });

  it('gives up on a client that stops acknowledging, after its retries', async () => {
    const tree = makeBootTree({});
    const t = await start(tree, 200, 2);
    const raw = await RawTftp.open();
    try {
      const res = await raw.request(t.port, 'undionly.kpxe', { blksize: '1468' });
      if (!('oack' in res)) throw new Error(`refused: ${res.error.message}`);
      const deadline = Date.now() + 5000;
      while (t.counters().failed === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(t.counters()).toMatchObject({ failed: 1, active: 0 });
    } finally {
      raw.close();
    }
  });
});

// node-tftp alone answers every duplicate ACK with the next block again (the Sorcerer's
// Apprentice of RFC 1123 §4.2.3.1), doubling the traffic after one delayed ACK; our adapter drops them.
describe('duplicate ACKs', () => {
  it("does not answer a duplicate ACK with a resend (Sorcerer's Apprentice)", async () => {
    const tree = makeBootTree({ 'undionly.kpxe': 10 * 512 + 7 });
    const t = await start(tree);
    const raw = await RawTftp.open();
    try {
      const res = await raw.request(t.port, 'undionly.kpxe', { blksize: '512' });
      if (!('oack' in res)) throw new Error(`refused: ${res.error.message}`);
      raw.send(Buffer.from([0, TftpOpcode.ACK, 0, 0]), res.tid);
      const first = await raw.next(2000);
      expect(first?.packet.readUInt16BE(2)).toBe(1);
      // ACK 1 twice: block 2 must come once
      raw.send(Buffer.from([0, TftpOpcode.ACK, 0, 1]), res.tid);
      raw.send(Buffer.from([0, TftpOpcode.ACK, 0, 1]), res.tid);
      const blocks: number[] = [];
      for (let p = await raw.next(300); p; p = await raw.next(300)) blocks.push(p.packet.readUInt16BE(2));
      expect(blocks).toEqual([2]);
    } finally {
      raw.close();
    }
    expect(t.counters().active).toBe(1);
  });
});
