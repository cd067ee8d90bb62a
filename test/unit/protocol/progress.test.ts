import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseProgressLine, ProgressScanner, PROGRESS_MAX_LINE } from '../../../dispatcher/src/protocol/progress.js';

describe('progress lines', () => {
  it.each([
    ['PROGRESS 0.42', 0.42],
    ['PROGRESS 1', 1],
    ['PROGRESS 0', 0],
    ['PROGRESS\t.5', 0.5],
    ['PROGRESS 5e-1  ', 0.5],
    ['PROGRESS 0.25\r', 0.25],
  ])('reads %j as %d', (line, f) => expect(parseProgressLine(line)).toBe(f));

  it.each([
    'PROGRESS 1.5',
    'PROGRESS -0.1',
    'PROGRESS 42%',
    'progress 0.5',
    'PROGRESS',
    'PROGRESS 0.5 done',
    ' PROGRESS 0.5',
    'PROGRESS 0x1',
    `PROGRESS 0.${'1'.repeat(80)}`,
  ])('ignores %j', (line) => expect(parseProgressLine(line)).toBeUndefined());

  it('finds progress lines across chunk boundaries and skips overlong lines', () => {
    const seen: number[] = [];
    const s = new ProgressScanner((f) => seen.push(f));
    s.push(Buffer.from('hello\nPROGR'));
    s.push(Buffer.from('ESS 0.1\nPROGRESS 0.2\n'));
    s.push(Buffer.from('x'.repeat(PROGRESS_MAX_LINE * 3)));
    s.push(Buffer.from('PROGRESS 0.9\nPROGRESS 0.3\nPROGRESS 0.4'));
    expect(seen).toEqual([0.1, 0.2, 0.3]); // 0.9 ends an overlong line; 0.4 has no newline yet
    s.push(Buffer.from('\n'));
    expect(seen).toEqual([0.1, 0.2, 0.3, 0.4]);
  });

  it('fuzz: any split of a stream yields the same progress values', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constantFrom('PROGRESS 0.5', 'PROGRESS 1', 'noise', ''), fc.string({ maxLength: 100 })), { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (lines, cuts) => {
          const text = Buffer.from(lines.join('\n') + '\n');
          const whole: number[] = [];
          new ProgressScanner((f) => whole.push(f)).push(text);
          const parts: number[] = [];
          const s = new ProgressScanner((f) => parts.push(f));
          const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
          let prev = 0;
          for (const p of [...points, text.length]) {
            s.push(text.subarray(prev, p));
            prev = p;
          }
          expect(parts).toEqual(whole);
        },
      ),
    );
  });
});
