import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { validateSubmission, pathToField } from '../../../dispatcher/src/dispatch/submission.js';
import { parseParamsText, createParamsParser, ParamsFileError, type ParamsRowAt } from '../../../dispatcher/src/dispatch/params-file.js';
import { substitute, templatePlaceholders } from '../../../dispatcher/src/dispatch/template.js';
import { DispatcherError } from '../../../dispatcher/src/errors.js';

function refusal(body: unknown, opts?: { streamed?: boolean }): string {
  try {
    validateSubmission(body, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(DispatcherError);
    expect((err as DispatcherError).code).toBe('DSP_ERR_BAD_SUBMISSION');
    return (err as DispatcherError).message;
  }
  throw new Error('the submission was accepted');
}

describe('submission validation', () => {
  it.each([
    ['an empty shell command is refused', { command: '   ' }, /^command: empty command/],
    ['an empty argv is refused', { command: [] }, /^command: empty command/],
    ['an argv with an empty program name is refused', { command: ['', 'x'] }, /^command\[0\]: empty program name/],
    ['a missing command is refused', { timeoutSeconds: 5 }, /^command: missing/],
    ['a command of the wrong type is refused', { command: 42 }, /^command: expected an argv array/],
    ['an argv with a number in it is refused, naming the element', { command: ['echo', 3] }, /^command\[1\]: expected a string/],
    ['an unknown field is refused, naming it', { command: ['true'], retry: 3 }, /^retry: unknown field/],
    [
      'an unknown field in the requirements is refused',
      { command: ['true'], requirements: { gpu: true } },
      /^requirements\.gpu: unknown field/,
    ],
    [
      'a negative timeout is refused',
      { command: ['true'], timeoutSeconds: -1 },
      /^timeoutSeconds: must be between 1 and 2592000 seconds \(30 days\), got -1/,
    ],
    ['a zero timeout is refused', { command: ['true'], timeoutSeconds: 0 }, /^timeoutSeconds: /],
    [
      'a sub-second timeout is refused (it reached agents as 0 ms)',
      { command: ['true'], timeoutSeconds: 0.0001 },
      /^timeoutSeconds: must be between 1 and 2592000 seconds/,
    ],
    ['a timeout over 30 days is refused', { command: ['true'], timeoutSeconds: 30 * 24 * 3600 + 1 }, /^timeoutSeconds: must be between/],
    ['a NUL byte in an argv word is refused', { command: ['echo', 'a\0b'] }, /^command\[1\]: contains a NUL byte/],
    ['a NUL byte in a shell command is refused', { command: 'echo a\0b' }, /^command: contains a NUL byte/],
    ['a NUL byte in an environment value is refused', { command: ['true'], env: { X: 'a\0b' } }, /^env\.X: contains a NUL byte/],
    ['a NUL byte in a cwd is refused', { command: ['true'], cwd: 'a\0b' }, /^cwd: contains a NUL byte/],
    [
      'a NUL byte in a params value is refused',
      { command: ['echo', '{x}'], params: [{ x: 'a\0b' }] },
      /^params\[0\]\.x: contains a NUL byte/,
    ],
    [
      'a NUL byte in a task override is refused',
      { command: ['true'], tasks: [{ env: { Y: '\0' } }] },
      /^tasks\[0\]\.env\.Y: contains a NUL byte/,
    ],
    ['a fractional priority is refused', { command: ['true'], priority: 1.5 }, /^priority: expected integer/],
    ['zero attempts are refused', { command: ['true'], maxAttempts: 0 }, /^maxAttempts: /],
    ['an absolute cwd is refused', { command: ['true'], cwd: '/etc' }, /^cwd: must be relative/],
    ['a cwd climbing out of the work dir is refused', { command: ['true'], cwd: 'a/../../b' }, /^cwd: must stay inside/],
    [
      'an invalid environment variable name is refused',
      { command: ['true'], env: { '1X': 'a' } },
      /^env\.1X: not a valid environment variable name/,
    ],
    ['stdin given twice is refused', { command: ['cat'], stdin: 'a', stdinB64: 'YQ==' }, /^stdin: give either/],
    ['stdin bytes that are not base64 are refused', { command: ['cat'], stdinB64: '%%%' }, /^stdinB64: not base64/],
    ['params and tasks together are refused', { command: ['true'], params: [{ x: 1 }], tasks: [{}] }, /either "params".*or "tasks"/],
    ['an empty params list is refused', { command: ['true'], params: [] }, /^params: empty list/],
    [
      'a params row missing a placeholder is refused, naming the row and the field',
      { command: ['echo', '{x}', '{y}'], params: [{ x: 1, y: 2 }, { x: 3 }] },
      /^params\[1\] \(row 2\): missing field "y"/,
    ],
    [
      'a params value that is an object is refused',
      { command: ['echo', '{x}'], params: [{ x: { a: 1 } }] },
      /^params\[0\]\.x: must be a string, a number or a boolean/,
    ],
    ['an inputs id that is not a sha256 is refused', { command: ['true'], inputs: 'abc' }, /^inputs: /],
    [
      'a task override with an empty command is refused, naming the task',
      { command: ['true'], tasks: [{}, { command: [] }] },
      /^tasks\[1\]\.command: empty command/,
    ],
    [
      'a streamed sweep carrying inline params is refused',
      { command: ['true'], params: [{ x: 1 }] },
      /must not carry "params"/,
      { streamed: true },
    ],
    ['a body that is not an object is refused', [1, 2], /must be a JSON object/],
  ] as [string, unknown, RegExp, { streamed?: boolean }?][])('%s', (_name, body, message, opts) => {
    expect(refusal(body, opts)).toMatch(message);
  });

  it('fills in every default', () => {
    const { spec, tasks } = validateSubmission({ command: 'echo hi' });
    expect(spec).toEqual({
      name: null,
      template: { command: 'echo hi', env: {}, cwd: null, stdin: null, stdinB64: null },
      timeoutSeconds: 3600,
      priority: 0,
      maxAttempts: 3,
      retries: 0,
      requirements: { labels: [], minCores: 0, minMemoryMiB: 0, image: null },
      speculative: true,
      inputs: null,
      placeholders: [],
      columns: null,
      taskData: 'none',
    });
    expect(tasks).toEqual({ kind: 'single' });
  });

  it('turns inline params into string rows and records the columns', () => {
    const { spec, tasks } = validateSubmission({ command: ['run', '--n={n}', '{flag}'], params: [{ n: 1, flag: true, extra: 'e' }] });
    expect(spec.placeholders).toEqual(['n', 'flag']);
    expect(spec.columns).toEqual(['n', 'flag', 'extra']);
    expect(tasks).toEqual({ kind: 'params', rows: [{ n: '1', flag: 'true', extra: 'e' }] });
  });

  it('names nested fields readably', () => {
    expect(pathToField('/params/3/x')).toBe('params[3].x');
    expect(pathToField('/requirements/labels/0')).toBe('requirements.labels[0]');
  });
});

describe('placeholders', () => {
  it.each([
    ['replaces names by their values', 'run {x} --y={y}', { x: '1', y: 'b c' }, 'run 1 --y=b c'],
    ['leaves awk programs alone', "awk '{print $1}' {file}", { file: 'f.txt' }, "awk '{print $1}' f.txt"],
    ['reads doubled braces as literal braces', 'echo {{x}} {x}', { x: '7' }, 'echo {x} 7'],
    ['leaves text without braces as is', 'plain', {}, 'plain'],
  ])('%s', (_n, text, vars, expected) => {
    expect(substitute(text, vars)).toBe(expected);
  });

  it('finds placeholders in the command, env values, cwd and stdin', () => {
    expect(templatePlaceholders({ command: ['a', '{x}'], env: { K: '{y}' }, cwd: 'd/{z}', stdin: '{w} {x}', stdinB64: null })).toEqual([
      'x',
      'y',
      'z',
      'w',
    ]);
  });
});

describe('params files', () => {
  it('reads CSV with quotes, commas, doubled quotes, newlines in fields and CRLF', () => {
    const text = 'x,y\r\n1,"a, b"\r\n2,"say ""hi"""\r\n3,"two\nlines"\r\n\r\n4,last';
    const { columns, rows } = parseParamsText('csv', text, { required: ['x', 'y'] });
    expect(columns).toEqual(['x', 'y']);
    expect(rows).toEqual([
      { line: 2, values: { x: '1', y: 'a, b' } },
      { line: 3, values: { x: '2', y: 'say "hi"' } },
      { line: 4, values: { x: '3', y: 'two\nlines' } },
      { line: 7, values: { x: '4', y: 'last' } },
    ]);
  });

  it.each([
    ['a header without a column the command uses', 'x,z\n1,2\n', ['x', 'y'], 1, /missing column "y"/],
    ['a row with a missing field', 'x,y\n1,2\n3\n4,5\n', ['x'], 3, /1 field, but the header has 2 columns/],
    ['a row with one field too many', 'x,y\n1,2\n1,2,3\n', [], 3, /3 fields/],
    ['a quoted field never closed', 'x\n"abc\n', [], 2, /not closed/],
    ['junk after a closing quote', 'x,y\n"a"b,c\n', [], 2, /after a closing quote/],
    ['a duplicated header name', 'x,x\n1,2\n', [], 1, /column "x" twice/],
    ['an empty file', '', [], 1, /empty/],
    ['a NUL byte in a value', 'x,y\n1,2\n3,a\0b\n', [], 3, /NUL byte/],
  ])('refuses %s, naming the line', (_n, text, required, line, message) => {
    try {
      parseParamsText('csv', text, { required });
      throw new Error('accepted');
    } catch (err) {
      expect(err).toBeInstanceOf(ParamsFileError);
      expect((err as ParamsFileError).line).toBe(line);
      expect((err as Error).message).toMatch(message);
    }
  });

  it.each([
    ['invalid JSON', '{"x":1}\n{"x":\n', [], 2, /not valid JSON/],
    ['a line that is not an object', '{"x":1}\n[1]\n', [], 2, /expected a JSON object/],
    ['a missing field', '{"x":1,"y":2}\n\n{"x":3}\n', ['y'], 3, /missing field "y"/],
    ['a nested value', '{"x":{"a":1}}\n', [], 1, /field "x" must be a string/],
    ['a NUL byte in a value', '{"x":"ok"}\n{"x":"a\\u0000b"}\n', [], 2, /NUL byte/],
  ])('refuses JSON lines with %s, naming the line', (_n, text, required, line, message) => {
    expect(() => parseParamsText('jsonl', text, { required })).toThrow(message);
    try {
      parseParamsText('jsonl', text, { required });
    } catch (err) {
      expect((err as ParamsFileError).line).toBe(line);
    }
  });

  const fieldArb = fc.string({ unit: fc.constantFrom('a', 'b', ',', '"', '\n', '\r', ' ', 'é', '1'), maxLength: 8 });
  const csvField = (s: string) => (/[",\r\n]/.test(s) || s.trim() !== s ? `"${s.replaceAll('"', '""')}"` : s);

  it('reads back any CSV it is given, whatever the chunking', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.array(fc.array(fieldArb, { minLength: 4, maxLength: 4 }), { maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1 }),
        fc.boolean(),
        (ncol, table, cuts, crlf) => {
          const header = Array.from({ length: ncol }, (_, i) => `c${i}`);
          // A row that is one empty field reads as a blank line; give single-column rows content.
          const rows = table.map((r) => r.slice(0, ncol)).map((r) => (ncol === 1 && r[0]!.trim() === '' ? ['z'] : r));
          const eol = crlf ? '\r\n' : '\n';
          const text = [header, ...rows].map((r) => r.map(csvField).join(',')).join(eol) + eol;
          const p = createParamsParser('csv', { required: [] });
          const got: ParamsRowAt[] = [];
          let at = 0;
          for (let i = 0; at < text.length; i++) {
            const n = cuts[i % cuts.length]!;
            p.push(text.slice(at, at + n), (r) => got.push(r));
            at += n;
          }
          p.end((r) => got.push(r));
          expect(got.map((r) => header.map((h) => r.values[h]))).toEqual(rows);
        },
      ),
    );
  });

  it('gives rows or a ParamsFileError for any input, nothing else', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('csv' as const, 'jsonl' as const),
        fc.string({ unit: fc.constantFrom('a', ',', '"', '\n', '\r', '{', '}', ':', '[', '1', ' ', '\u0000', '\ufeff'), maxLength: 200 }),
        (format, text) => {
          try {
            const { rows } = parseParamsText(format, text, { required: ['a'] });
            for (const r of rows) expect(typeof r.values.a).toBe('string');
          } catch (err) {
            expect(err).toBeInstanceOf(ParamsFileError);
            expect((err as ParamsFileError).line).toBeGreaterThanOrEqual(1);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});
