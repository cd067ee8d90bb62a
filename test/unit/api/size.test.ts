/** Memory sizes as dispatcherctl takes them (`--mem 512M`): strict, and the error names the flag. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseSizeMiB } from '../../../dispatcher/src/api/jobs/schemas.js';

describe('parseSizeMiB', () => {
  it.each([
    ['512M', 512],
    ['2G', 2048],
    ['2g', 2048],
    ['1.5GiB', 1536],
    ['1T', 1024 * 1024],
    ['1536K', 2],
    ['100MB', 100],
    [' 64M ', 64],
  ])('%s is %d MiB', (text, mib) => {
    expect(parseSizeMiB(text, '--mem')).toBe(mib);
  });

  it.each(['512', '', 'M', '-1G', '1,5G', '2X', '1e3M', '0M', '0.0001K', '512K', 'two G', '1G1', '99999999999999T'])(
    '"%s" is refused, naming the flag',
    (text) => {
      const r = parseSizeMiB(text, '--mem');
      expect(r).toBeInstanceOf(Error);
      expect((r as Error).message).toMatch(/^--mem: /);
    },
  );

  it('reads back what it is written as, in any unit (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1024, max: 1 << 20 }), fc.constantFrom(['K', 1 / 1024], ['M', 1], ['G', 1024]), (n, [unit, f]) => {
        const mib = parseSizeMiB(`${n}${unit}`, 'x');
        expect(mib).toBe(Math.ceil(n * (f as number)));
      }),
    );
  });
});
