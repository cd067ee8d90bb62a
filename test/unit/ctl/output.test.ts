import { describe, expect, it } from 'vitest';
import { formatAgo, formatDuration, formatMiB, formatMs, keyValues, table } from '../../../dispatcher/src/ctl/output.js';
import { flatten } from '../../../dispatcher/src/ctl/commands/nodes.js';
import { resolveTarget } from '../../../dispatcher/src/ctl/client.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

describe('dispatcherctl output', () => {
  it('aligns table columns, right-aligns numbers and prints missing values as -', () => {
    const t = table(
      [
        { a: 'node1', n: 4 },
        { a: 'node10', n: null },
      ],
      [
        { header: 'NAME', value: (r) => r.a },
        { header: 'CORES', value: (r) => r.n, right: true },
      ],
    );
    expect(t).toBe('NAME    CORES\nnode1       4\nnode10      -\n');
  });

  it('keeps cells on one line', () => {
    expect(table([{ a: 'x\ny' }], [{ header: 'A', value: (r) => r.a }])).toBe('A\nx y\n');
  });

  it.each([
    [0, '0s'],
    [59_400, '59s'],
    [60_000, '1m'],
    [61_000, '1m1s'],
    [3_600_000, '1h'],
    [3_660_000, '1h1m'],
    [90_000_000, '1d1h'],
    [null, null],
  ])('formats %s ms as %s', (ms, s) => {
    expect(formatDuration(ms)).toBe(s);
  });

  it('formats the rest', () => {
    expect(formatAgo(1000, 13_000)).toBe('12s ago');
    expect(formatMs(0.42)).toBe('0.4ms');
    expect(formatMs(12.4)).toBe('12ms');
    expect(formatMs(1300)).toBe('1.3s');
    expect(formatMiB(512)).toBe('512 MiB');
    expect(formatMiB(4096)).toBe('4.0 GiB');
    expect(
      keyValues([
        ['a', 1],
        ['long key', null],
      ]),
    ).toBe('a:         1\nlong key:  -\n');
    expect(flatten({ cpu: { model: 'X', flags: ['a', 'b'] }, disks: [{ n: 1 }, { n: 2 }], none: null })).toEqual([
      ['cpu.model', 'X'],
      ['cpu.flags', 'a, b'],
      ['disks[0].n', '1'],
      ['disks[1].n', '2'],
      ['none', '-'],
    ]);
  });
});

describe('dispatcherctl target', () => {
  it('takes the URL and token from flags, then the environment, then the data dir', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lc-op-tok-'));
    writeFileSync(join(dir, 'admin.token'), 'from-file\n');
    expect(resolveTarget({ url: 'http://a:1', token: 'flag' }, { LILCLUSTER_URL: 'http://b:2', LILCLUSTER_TOKEN: 'env' })).toMatchObject({
      url: 'http://a:1',
      token: 'flag',
      tokenSource: '--token',
    });
    expect(resolveTarget({}, { LILCLUSTER_URL: 'http://b:2', LILCLUSTER_TOKEN: 'env' })).toMatchObject({ url: 'http://b:2', token: 'env' });
    expect(resolveTarget({ dataDir: dir }, {})).toMatchObject({
      url: 'http://127.0.0.1:8080',
      token: 'from-file',
      tokenSource: join(dir, 'admin.token'),
    });
    expect(resolveTarget({}, { LILCLUSTER_DATA_DIR: dir })).toMatchObject({ token: 'from-file' });
    expect(resolveTarget({ dataDir: '/nonexistent' }, {})).toMatchObject({
      token: undefined,
      tokenSource: '/nonexistent/admin.token: not found',
    });
    expect(() => resolveTarget({ url: 'not a url' }, {})).toThrow(/not an http:\/\/ URL/);
  });
});
