import { describe, expect, it } from 'vitest';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitForFile } from '../../../node-agent/src/wait-file.js';
import { tempDir } from './temp-dirs.js';

describe('waitForFile', () => {
  it('returns the text of a file that is already there', async () => {
    const dir = tempDir('lc-wait-');
    writeFileSync(join(dir, 'dispatcher'), 'http://10.0.0.1:8080\n');
    await expect(waitForFile(join(dir, 'dispatcher'))).resolves.toBe('http://10.0.0.1:8080\n');
  });

  it('waits for a file renamed into place later', async () => {
    const dir = tempDir('lc-wait-');
    const waiting = waitForFile(join(dir, 'dispatcher'));
    let settled = false;
    void waiting.then(() => (settled = true));
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    writeFileSync(join(dir, 'dispatcher.tmp'), 'http://10.0.0.2:8080\n');
    renameSync(join(dir, 'dispatcher.tmp'), join(dir, 'dispatcher'));
    await expect(waiting).resolves.toBe('http://10.0.0.2:8080\n');
  });

  it('waits even when the directory does not exist yet', async () => {
    const dir = join(tempDir('lc-wait-'), 'run');
    const waiting = waitForFile(join(dir, 'dispatcher'));
    mkdirSync(dir);
    writeFileSync(join(dir, 'dispatcher'), 'x');
    await expect(waiting).resolves.toBe('x');
  });

  it('stops when aborted', async () => {
    const ac = new AbortController();
    const waiting = waitForFile(join(tempDir('lc-wait-'), 'never'), ac.signal);
    ac.abort(new Error('shutting down'));
    await expect(waiting).rejects.toThrow('shutting down');
  });
});
