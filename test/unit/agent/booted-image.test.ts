import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { Value } from '@sinclair/typebox/value';
import { BootedImage } from '../../../dispatcher/src/protocol/messages.js';
import { bootedImage, healthOf, readCmdline } from '../../../node-agent/src/booted-image.js';
import type { TaskRoot } from '../../../node-agent/src/task-root.js';
import { tempDir } from './temp-dirs.js';

const root = (health: string): TaskRoot => ({
  dir: '/run/lilcluster/root',
  path: '/usr/bin:/bin',
  chroot: ['chroot'],
  label: 'image ml',
  health,
});

describe('the booted image', () => {
  it('comes from lc.image and lc.via on the kernel command line', () => {
    const line = 'BOOT_IMAGE=vmlinuz console=ttyS0 lc.token=abc lc.image=ml-gpu@2026-12-07.3 lc.via=kexec quiet\n';
    expect(bootedImage(line, { health: 'passed' })).toEqual({
      image: { name: 'ml-gpu', version: '2026-12-07.3', via: 'kexec', health: 'passed' },
    });
    expect(bootedImage('lc.image=default@1 lc.via=pxe', { health: 'none' }).image).toEqual({
      name: 'default',
      version: '1',
      via: 'firmware',
      health: 'none',
    });
  });

  it('is absent on a host the dispatcher did not boot, and refused with a reason when malformed', () => {
    expect(bootedImage('root=/dev/sda1 ro quiet', { health: 'none' })).toEqual({});
    for (const bad of ['lc.image=ml', 'lc.image=@3', 'lc.image=ml@', 'lc.image=', `lc.image=${'x'.repeat(65)}@1`])
      expect(bootedImage(bad, { health: 'none' })).toEqual({ problem: expect.stringMatching(/is not <name>@<version>/) });
  });

  it('carries the health check: passed, none, or failed with the reason bounded', () => {
    expect(healthOf({ kind: 'none' })).toEqual({ health: 'none' });
    expect(healthOf({ kind: 'root', root: root('') })).toEqual({ health: 'none' });
    expect(healthOf({ kind: 'root', root: root('python3 -c "import torch"') })).toEqual({ health: 'passed' });
    expect(healthOf({ kind: 'refused', reason: 'its health check `false` exited with status 1' })).toEqual({
      health: 'failed',
      healthDetail: 'its health check `false` exited with status 1',
    });
    const long = healthOf({ kind: 'refused', reason: 'x'.repeat(10_000) });
    expect(long.healthDetail).toHaveLength(4096);
    expect(Value.Check(BootedImage, bootedImage('lc.image=a@b', long).image)).toBe(true);
  });

  it('never throws on any command line, and what it reports fits the protocol', () => {
    const part = fc.string({ unit: fc.constantFrom('a', '@', '=', ' ', '\n', '\t', 'é', '\u0000', '.', '-', 'x') });
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          part.map((s) => `lc.image=${s} lc.via=${s}`),
        ),
        (line) => {
          const r = bootedImage(line, { health: 'failed', healthDetail: 'no' });
          if (r.image) expect(Value.Check(BootedImage, r.image)).toBe(true);
          expect(r.image && r.problem).toBeFalsy();
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('reads /proc/cmdline, or nothing where there is none', () => {
    const file = join(tempDir('lc-cmdline-'), 'cmdline');
    writeFileSync(file, 'lc.image=ml@3\n');
    expect(readCmdline(file)).toBe('lc.image=ml@3\n');
    expect(readCmdline(`${file}.missing`)).toBe('');
  });
});
