/**
 * TFTP against real clients (tftp-hpa, atftp) and the real dispatcher process on loopback:
 * content, options, refusals (traversal, absolute paths, NUL bytes, writes), hostile
 * packets and the EDK2 size probe.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeBootTree, type BootTree } from '../../lab/boot-tree.js';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { RawTftp, errorPacket } from './raw-tftp.js';
import { TftpOpcode, decodeError } from '../../../dispatcher/src/tftp/codec.js';

const run = promisify(execFile);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let tree: BootTree;
let d: DispatcherProcess;
let out: string;

beforeAll(async () => {
  tree = makeBootTree({ 'snponly.efi': -1 }); // snponly.efi left out: "make pxe was not run"
  d = await startDispatcher({ tftp: true, boot: tree });
  out = mkdtempSync(join(tmpdir(), 'lc-tftp-out-'));
});
afterAll(async () => {
  await d?.stop();
});

/** tftp-hpa prints errors and exits 0: return everything it said. */
async function tftpHpa(cmd: string): Promise<string> {
  const r = await run('tftp', ['-m', 'binary', '-v', '127.0.0.1', String(d.tftpPort), '-c', ...cmd.split(' ')], { timeout: 30_000 }).catch(
    (e: { stdout: string; stderr: string }) => e,
  );
  return `${r.stdout}${r.stderr}`;
}

async function atftp(args: string[]): Promise<{ code: number; text: string }> {
  try {
    const r = await run('atftp', [...args, '127.0.0.1', String(d.tftpPort)], { timeout: 60_000, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, text: r.stdout + r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code ?? 1, text: `${err.stdout}${err.stderr}` };
  }
}

describe('TFTP with real clients', () => {
  it('warned at start that an iPXE first stage is missing', () => {
    expect(
      d.logs.some((l) => l.msg?.toString().startsWith('iPXE first stages missing') && JSON.stringify(l.missing) === '["snponly.efi"]'),
    ).toBe(true);
  });

  it('tftp-hpa reads undionly.kpxe (RFC 1350, 512-byte blocks) byte for byte', async () => {
    const file = join(out, 'undionly.kpxe');
    const text = await tftpHpa(`get undionly.kpxe ${file}`);
    expect(text).toMatch(/Received 74213 bytes/);
    expect(sha(readFileSync(file))).toBe(sha(tree.files['undionly.kpxe']!));
  });

  it('tftp-hpa reads an absolute name of the tree (/ipxe.efi)', async () => {
    const file = join(out, 'ipxe-abs.efi');
    await tftpHpa(`get /ipxe.efi ${file}`);
    expect(sha(readFileSync(file))).toBe(sha(tree.files['ipxe.efi']!));
  });

  it('atftp reads the initrd with blksize 1468, windowsize 8 and tsize', async () => {
    const file = join(out, 'initrd.img');
    const t0 = Date.now();
    const r = await atftp([
      '--option',
      'blksize 1468',
      '--option',
      'windowsize 8',
      '--option',
      'tsize 0',
      '--trace',
      '-g',
      '-r',
      'initrd.img',
      '-l',
      file,
    ]);
    const ms = Date.now() - t0;
    expect(r.code, r.text.slice(0, 2000)).toBe(0);
    expect(sha(readFileSync(file))).toBe(sha(tree.files['initrd.img']!));
    // atftp traces the OACK it got: the server granted both options and told the size
    const oack = /received OACK <([^>]*)>/.exec(r.text)?.[1] ?? '';
    expect(oack).toMatch(/blksize: 1468/);
    expect(oack).toMatch(/windowsize: 8/);
    expect(oack).toMatch(new RegExp(`tsize: ${tree.files['initrd.img']!.length}`));
    console.log(`atftp blksize 1468 windowsize 8: ${tree.files['initrd.img']!.length} bytes in ${ms} ms`);
  });

  it('atftp with a blksize above the maximum gets 1468 and still reads the kernel', async () => {
    const file = join(out, 'vmlinuz');
    const r = await atftp(['--option', 'blksize 9000', '--option', 'tsize 0', '--trace', '-g', '-r', 'vmlinuz', '-l', file]);
    expect(r.code, r.text.slice(0, 2000)).toBe(0);
    expect(/received OACK <([^>]*)>/.exec(r.text)?.[1]).toMatch(/blksize: 1468/);
    expect(sha(readFileSync(file))).toBe(sha(tree.files.vmlinuz!));
  });

  it.each([
    ['a parent-directory escape', '../../etc/passwd', 2],
    ['an absolute path outside the tree', '/etc/passwd', 2],
    ['an escape behind a served name', 'undionly.kpxe/../../../etc/shadow', 2],
    ['a file that is not in the tree', 'pxelinux.0', 1],
    ['a first stage that is not installed', 'snponly.efi', 1],
  ])('tftp-hpa gets a TFTP error for %s', async (_n, name, code) => {
    const file = join(out, `refused-${code}-${Math.random()}`);
    const text = await tftpHpa(`get ${name} ${file}`);
    expect(text).toMatch(new RegExp(`Error code ${code}:`));
    expect(existsSync(file) ? readFileSync(file).length : 0).toBe(0);
  });

  it('says how to fix a missing first stage', async () => {
    const text = await tftpHpa(`get snponly.efi ${join(out, 'snp')}`);
    expect(text).toMatch(/snponly\.efi is missing on the dispatcher \(run make pxe\)/);
  });

  it('refuses writes with an access violation (tftp-hpa and atftp)', async () => {
    const local = join(out, 'upload');
    writeFileSync(local, 'not welcome');
    expect(await tftpHpa(`put ${local} ipxe.efi`)).toMatch(/Error code 2: read-only server/);
    const r = await atftp(['-p', '-l', local, '-r', 'evil.bin']);
    expect(r.code).not.toBe(0);
    expect(r.text).toMatch(/read-only server|Access violation|error/i);
    // and the served file is untouched
    const file = join(out, 'ipxe-after-put.efi');
    await tftpHpa(`get ipxe.efi ${file}`);
    expect(sha(readFileSync(file))).toBe(sha(tree.files['ipxe.efi']!));
  });

  it('answers a request with a NUL byte inside the name with an error, not a file', async () => {
    const raw = await RawTftp.open();
    try {
      raw.send(Buffer.from('\x00\x01undionly.kpxe\x00../../etc/passwd\x00octet\x00', 'latin1'), d.tftpPort);
      const r = await raw.next();
      expect(r && decodeError(r.packet)).toMatchObject({ code: 4 });
      raw.send(Buffer.from('\x00\x01../../etc/passwd\x00.kpxe\x00octet\x00', 'latin1'), d.tftpPort);
      const r2 = await raw.next();
      expect(r2 && decodeError(r2.packet)).toMatchObject({ code: 4 });
    } finally {
      raw.close();
    }
  });

  it('drops junk on port 69 and keeps serving', async () => {
    const s = createSocket('udp4');
    const junk = [
      Buffer.alloc(0),
      Buffer.from([0]),
      Buffer.from([0, 3, 0, 1, 1, 2]),
      Buffer.from([0, 4, 0, 0]),
      Buffer.from([0, 5]),
      Buffer.alloc(2000, 0x41),
      Buffer.from([0, 1]),
    ];
    for (let i = 0; i < 200; i++) junk.push(Buffer.from(Array.from({ length: (i * 7) % 64 }, (_, j) => (i * 31 + j * 17) & 255)));
    for (const j of junk) s.send(j, d.tftpPort, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 300));
    s.close();
    expect(d.child.exitCode).toBeNull();
    const file = join(out, 'after-junk.kpxe');
    await tftpHpa(`get undionly.kpxe ${file}`);
    expect(sha(readFileSync(file))).toBe(sha(tree.files['undionly.kpxe']!));
  });

  it('ignores strangers and runt packets on a transfer port and finishes the transfer', async () => {
    const raw = await RawTftp.open();
    const stranger = createSocket('udp4');
    try {
      const res = await raw.request(d.tftpPort, 'vmlinuz', { blksize: '1468', tsize: '0' });
      if (!('oack' in res)) throw new Error(`refused: ${res.error.message}`);
      expect(res.oack).toEqual({ blksize: '1468', tsize: String(tree.files.vmlinuz!.length) });
      const bytes = await raw.readAll(res.tid, 1468, (block) => {
        if (block === 5) {
          // an ACK for a far block and an ERROR from another port, and a 1-byte datagram from the client
          stranger.send(Buffer.from([0, TftpOpcode.ACK, 0xff, 0xff]), res.tid, '127.0.0.1');
          stranger.send(errorPacket(0, 'go away'), res.tid, '127.0.0.1');
          raw.send(Buffer.from([0]), res.tid);
        }
      });
      expect(sha(bytes)).toBe(sha(tree.files.vmlinuz!));
    } finally {
      raw.close();
      stranger.close();
    }
  });

  it('handles the EDK2 size probe: OACK with tsize, ERROR 8, then the real download from a new port', async () => {
    // OVMF's order, as captured: RRQ tsize+blksize+windowsize 4 → OACK → ERROR 8 "User aborted
    // the transfer" → 12 ms later an RRQ blksize+windowsize 4 from the next UDP port.
    const raw = await RawTftp.open();
    const second = await RawTftp.open();
    try {
      const probe = await raw.request(d.tftpPort, 'ipxe.efi', { tsize: '0', blksize: '1468', windowsize: '4' });
      if (!('oack' in probe)) throw new Error(`refused: ${probe.error.message}`);
      expect(probe.oack).toEqual({ blksize: '1468', windowsize: '4', tsize: String(tree.files['ipxe.efi']!.length) });
      raw.send(errorPacket(8, 'User aborted the transfer'), probe.tid);
      await new Promise((r) => setTimeout(r, 12));
      const real = await second.request(d.tftpPort, 'ipxe.efi', { blksize: '1468', windowsize: '1' });
      if (!('oack' in real)) throw new Error(`refused: ${real.error.message}`);
      const bytes = await second.readAll(real.tid, 1468);
      expect(sha(bytes)).toBe(sha(tree.files['ipxe.efi']!));
      expect(await raw.next(1500)).toBeUndefined(); // the probe's OACK is not retransmitted: it ended
      await new Promise((r) => setTimeout(r, 100));
      // the probe is not logged as a failed transfer; the download is logged as sent
      expect(d.logs.filter((l) => l.msg === 'transfer aborted by the client' && l.file === 'ipxe.efi')).toEqual([]);
      expect(
        d.logs.some(
          (l) =>
            l.msg === 'file sent' &&
            l.file === 'ipxe.efi' &&
            l.bytes === tree.files['ipxe.efi']!.length &&
            typeof l.durationMs === 'number',
        ),
      ).toBe(true);
    } finally {
      raw.close();
      second.close();
    }
  });

  it('logs every transfer with bytes and duration', () => {
    const sent = d.logs.filter((l) => l.svc === 'tftp' && l.msg === 'file sent');
    expect(sent.length).toBeGreaterThanOrEqual(5);
    for (const l of sent) {
      expect(typeof l.bytes).toBe('number');
      expect(typeof l.durationMs).toBe('number');
    }
  });
});
