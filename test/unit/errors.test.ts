/** The error registry (dispatcher/src/errors.ts) and its documentation (dispatcher/README.md) list the same codes and statuses. */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, DispatcherError, type ErrorCode } from '../../dispatcher/src/errors.js';

const README = readFileSync(join(import.meta.dirname, '../../dispatcher/README.md'), 'utf8');

describe('error codes', () => {
  it('are documented in dispatcher/README.md with their HTTP status', () => {
    const documented = Object.fromEntries([...README.matchAll(/^\| `(DSP_ERR_[A-Z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]));
    const registry = Object.fromEntries(Object.entries(ErrorCodes).map(([k, v]) => [k, v.status]));
    expect(documented).toEqual(registry);
  });

  it.each(Object.keys(ErrorCodes) as ErrorCode[])('%s serializes as {error: {code, message}} with its status', (code) => {
    const e = new DispatcherError(code, undefined, { hint: 'do this' });
    expect(e.status).toBe(ErrorCodes[code].status);
    expect(e.toJSON()).toEqual({ error: { code, message: ErrorCodes[code].message, hint: 'do this' } });
  });
});
