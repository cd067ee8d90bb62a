import { describe, expect, it } from 'vitest';
import { gzipSync } from 'node:zlib';
import { COMPRESS_MIN_BYTES, packText, unpackText } from '../../../dispatcher/src/protocol/compression.js';
import { fromWireResult, toWireResult } from '../../../dispatcher/src/protocol/results.js';
import type { TaskResult } from '../../../dispatcher/src/dispatch/contract.js';

const base: TaskResult = {
  taskId: 1, attempt: 1, exitCode: 0, signal: null, timedOut: false, error: null, startedAt: 1, durationMs: 1, maxRssKiB: null,
  stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false, outputsTarGzB64: null,
};

describe('result compression', () => {
  it('keeps short texts plain and compresses long compressible ones', async () => {
    expect(await packText('hello')).toBe('hello');
    const long = 'line of output\n'.repeat(1000);
    const packed = await packText(long);
    expect(typeof packed).toBe('object');
    expect(JSON.stringify(packed).length).toBeLessThan(long.length / 10);
    expect(await unpackText(packed, 1 << 20)).toBe(long);
  });

  it('sends incompressible text plain', async () => {
    const random = Buffer.from(Array.from({ length: COMPRESS_MIN_BYTES * 2 }, () => 33 + Math.floor(Math.random() * 90))).toString('latin1');
    expect(await packText(random)).toBe(random);
  });

  it('refuses a gzip bomb beyond the limit', async () => {
    const bomb = { gz: gzipSync(Buffer.alloc(10 * 1024 * 1024)).toString('base64') };
    await expect(unpackText(bomb, 1024 * 1024)).rejects.toThrow();
  });

  it('round-trips results, and records one whose text does not decompress with an error', async () => {
    const r = { ...base, stdout: 'é'.repeat(10_000), stderr: 'warn\n'.repeat(2000) };
    expect(await fromWireResult(await toWireResult(r), 1 << 20)).toEqual(r);
    const broken = await fromWireResult({ ...base, stdout: { gz: 'bm90IGd6aXA=' }, error: 'exit 1' }, 1 << 20);
    expect(broken.stdout).toBe('');
    expect(broken.stdoutTruncated).toBe(true);
    expect(broken.error).toMatch(/^exit 1; stdout could not be decompressed/);
  });
});
