import { describe, expect, it } from 'vitest';
import { gzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { COMPRESS_MIN_BYTES, inflateBounded, packText, unpackText } from '../../../dispatcher/src/protocol/compression.js';
import { fromWireResults, toWireResult, type ResultLimits } from '../../../dispatcher/src/protocol/results.js';
import type { TaskResult } from '../../../dispatcher/src/protocol/messages.js';

const base: TaskResult = {
  taskId: 1,
  attempt: 1,
  exitCode: 0,
  signal: null,
  timedOut: false,
  error: null,
  startedAt: 1,
  durationMs: 1,
  maxRssKiB: null,
  stdout: '',
  stderr: '',
  stdoutTruncated: false,
  stderrTruncated: false,
  outputsTarGzB64: null,
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
    const random = Buffer.from(Array.from({ length: COMPRESS_MIN_BYTES * 2 }, () => 33 + Math.floor(Math.random() * 90))).toString(
      'latin1',
    );
    expect(await packText(random)).toBe(random);
  });

  it('refuses a gzip bomb beyond the limit', async () => {
    const bomb = { gz: gzipSync(Buffer.alloc(10 * 1024 * 1024)).toString('base64') };
    await expect(unpackText(bomb, 1024 * 1024)).rejects.toThrow();
  });

  it('inflates a stream only up to its cap, keeping the first bytes or only counting', async () => {
    const gz = gzipSync(Buffer.from('a'.repeat(3 * 1024 * 1024)));
    expect(await inflateBounded(gz, 10_000, { keep: true })).toMatchObject({
      bytes: 10_000,
      over: true,
      data: Buffer.from('a'.repeat(10_000)),
    });
    expect(await inflateBounded(gz, 8 << 20, { keep: false })).toEqual({ bytes: 3 * 1024 * 1024, over: false });
    await expect(inflateBounded(Buffer.from('not gzip'), 1024, { keep: false })).rejects.toThrow();
  });
});

const limits: ResultLimits = { textBytes: 1 << 20, outputsBytes: 64 * 1024, outputsInflatedBytes: 1 << 20, messageInflatedBytes: 4 << 20 };
const gzText = (n: number) => ({ gz: gzipSync(Buffer.alloc(n, 'x')).toString('base64') });

describe('unpacking results within limits', () => {
  it('round-trips results, and records one whose text does not decompress with an error', async () => {
    const r = { ...base, stdout: 'é'.repeat(10_000), stderr: 'warn\n'.repeat(2000) };
    expect((await fromWireResults([await toWireResult(r)], limits)).results).toEqual([r]);
    const [broken] = (await fromWireResults([{ ...base, stdout: { gz: 'bm90IGd6aXA=' }, error: 'exit 1' }], limits)).results;
    expect(broken!.stdout).toBe('');
    expect(broken!.stdoutTruncated).toBe(true);
    expect(broken!.error).toMatch(/^exit 1; stdout could not be decompressed/);
  });

  it('cuts texts at the per-task cap, marks them truncated and names the refusal', async () => {
    const u = await fromWireResults([{ ...base, stdout: gzText(800_000), stderr: gzText(800_000) }], limits);
    const [r] = u.results;
    expect(r!.stdout.length + r!.stderr.length).toBe(1 << 20);
    expect(r).toMatchObject({ stdoutTruncated: false, stderrTruncated: true, error: null });
    expect(u.refusals).toEqual([
      {
        taskId: 1,
        attempt: 1,
        field: 'stderr',
        why: expect.stringMatching(/more than 1048576 bytes \(the dispatcher's resultTextMaxBytes\)/),
      },
    ]);
  });

  it('refuses outputs too big as sent or once inflated, or not gzip, and keeps the rest of the result', async () => {
    const big = randomBytes(100_000).toString('base64');
    const bomb = gzipSync(Buffer.alloc(2 << 20)).toString('base64');
    const u = await fromWireResults(
      [
        { ...base, taskId: 1, outputsTarGzB64: big },
        { ...base, taskId: 2, outputsTarGzB64: bomb, stdout: 'kept' },
        { ...base, taskId: 3, outputsTarGzB64: Buffer.from('plain').toString('base64') },
        { ...base, taskId: 4, outputsTarGzB64: gzipSync(Buffer.alloc(10_000)).toString('base64') },
      ],
      limits,
    );
    expect(u.results.map((r) => [r.taskId, r.outputsTarGzB64 !== null])).toEqual([
      [1, false],
      [2, false],
      [3, false],
      [4, true],
    ]);
    expect(u.results[1]).toMatchObject({
      stdout: 'kept',
      error: expect.stringMatching(/^outputs refused: the outputs tar inflates to more than 1048576 bytes/),
    });
    expect(u.refusals.map((r) => [r.taskId, r.field])).toEqual([
      [1, 'outputs'],
      [2, 'outputs'],
      [3, 'outputs'],
    ]);
    expect(u.refusals[0]!.why).toMatch(/more than the 65536 allowed \(outputsMaxBytes\)/);
  });

  it('defers the results past the message budget, but always takes the first', async () => {
    const wire = [1, 2, 3, 4, 5, 6].map((taskId) => ({ ...base, taskId, stdout: gzText(900_000) }));
    const u = await fromWireResults(wire, limits);
    expect(u.results.map((r) => r.taskId)).toEqual([1, 2, 3, 4]);
    expect(u.deferred.map((r) => r.taskId)).toEqual([5, 6]);
    expect(u.refusals).toEqual([]);
    const alone = await fromWireResults(wire.slice(4), { ...limits, messageInflatedBytes: 1024 });
    expect(alone.results.map((r) => [r.taskId, r.stdout.length, r.stdoutTruncated])).toEqual([[5, 1024, true]]);
    expect(alone.deferred.map((r) => r.taskId)).toEqual([6]);
  });
});
