import { afterAll, describe, expect, it } from 'vitest';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findExecutable } from '../../../node-agent/src/executable.js';

const dir = mkdtempSync(join(tmpdir(), 'lc-executable-'));
mkdirSync(join(dir, 'bin'));
writeFileSync(join(dir, 'bin/tool'), '#!/bin/sh\n');
chmodSync(join(dir, 'bin/tool'), 0o755);
writeFileSync(join(dir, 'bin/data'), 'not a program\n');
chmodSync(join(dir, 'bin/data'), 0o644);
mkdirSync(join(dir, 'bin/adir'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('findExecutable, as execvp would look', () => {
  it('finds a command on PATH, in order', () => {
    expect(findExecutable('tool', `/nonexistent:${join(dir, 'bin')}`, '/')).toBe(join(dir, 'bin/tool'));
    expect(findExecutable('sh', '/usr/bin:/bin', '/')).toMatch(/\/sh$/);
  });

  it('takes a path with a slash as it is, relative to the working directory', () => {
    expect(findExecutable(join(dir, 'bin/tool'), '', '/')).toBe(join(dir, 'bin/tool'));
    expect(findExecutable('bin/tool', '/usr/bin', dir)).toBe(join(dir, 'bin/tool'));
    expect(findExecutable('./tool', '/usr/bin', dir)).toBeNull();
  });

  it('reads an empty PATH entry as the working directory', () => {
    expect(findExecutable('tool', `/nonexistent::`, join(dir, 'bin'))).toBe(join(dir, 'bin/tool'));
  });

  it('finds nothing for a missing command, a file without x, a directory or an empty name', () => {
    expect(findExecutable('no-such-command-lc', '/usr/bin:/bin', '/')).toBeNull();
    expect(findExecutable('data', join(dir, 'bin'), '/')).toBeNull();
    expect(findExecutable('adir', join(dir, 'bin'), '/')).toBeNull();
    expect(findExecutable('', '/usr/bin', '/')).toBeNull();
  });
});
