import { describe, expect, it } from 'vitest';
import { BOOT_HEADROOM_MIB, memoryRefusal } from '../../../dispatcher/src/boot/memory-fit.js';
import type { ImageVersion } from '../../../dispatcher/src/images/catalog.js';

const MiB = 1048576;
const v: ImageVersion = {
  image: 'ml',
  version: '0123456789ab',
  dir: '/x',
  hasRoot: true,
  bytes: 100 * MiB,
  memoryBytes: { compressed: 300 * MiB, unpacked: 900 * MiB },
  source: 'packages:python3-numpy',
  health: null,
  agentVersion: '0.1.0',
  keyStatus: 'none',
};
const node = (memoryMiB: number | null) => ({ name: 'node3', inventory: memoryMiB === null ? null : { memoryMiB, cpu: { cores: 2 } } });

describe('a root larger than the node', () => {
  it('refuses an image that needs more RAM than the node has, naming both figures and what to do', () => {
    const why = memoryRefusal(v, node(256), '');
    expect(why).toMatch(/ml@0123456789ab needs about 364 MiB of RAM .* node3 has 256 MiB/);
    expect(why).toMatch(/dispatcherctl set node3 --image/);
  });

  it('counts the root unpacked when the kernel arguments copy it into tmpfs', () => {
    expect(memoryRefusal(v, node(512), '')).toBeNull();
    expect(memoryRefusal(v, node(512), 'quiet lc.root=unpack')).toMatch(/needs about 964 MiB .*root unpacked/);
    expect(memoryRefusal(v, node(900 + BOOT_HEADROOM_MIB), 'lc.root=unpack')).toBeNull();
  });

  it('lets a node boot when its memory or the image’s needs are not known', () => {
    expect(memoryRefusal(v, node(null), '')).toBeNull();
    expect(memoryRefusal({ ...v, memoryBytes: null }, node(64), '')).toBeNull();
  });
});
