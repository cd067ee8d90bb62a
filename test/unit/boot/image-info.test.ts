import { describe, expect, it } from 'vitest';
import { mkdtempSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageInfo } from '../../../dispatcher/src/boot/image-info.js';

const OURS = 'a'.repeat(64);

function imageDir(manifest: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'lc-image-info-'));
  writeFileSync(join(dir, 'manifest.json'), typeof manifest === 'string' ? manifest : JSON.stringify(manifest));
  return dir;
}

describe('image info from the manifest', () => {
  it.each([
    ['carries our key', { dispatcherKey: { fingerprint: OURS } }, 'ours'],
    ['carries no key', { dispatcherKey: null }, 'none'],
    ["carries another dispatcher's key", { dispatcherKey: { fingerprint: 'b'.repeat(64) } }, 'other'],
    ['is not JSON', '{not json', 'no-manifest'],
  ])('says whether an image that %s needs lc.pubkey', (_what, manifest, status) => {
    expect(new ImageInfo(imageDir(manifest), OURS).keyStatus()).toBe(status);
  });

  it('tells an image with its own root from the base image alone, ignoring a malformed root', () => {
    expect(new ImageInfo(imageDir({ dispatcherKey: null }), OURS).root()).toBeNull();
    const root = { image: 'ml', version: '3f2a9c1d0b7e', size: 123456, source: 'docker://x/y:1' };
    const info = new ImageInfo(imageDir({ root, agent: { version: '0.1.0' }, inputs: '5cbad04e9550c066' }), OURS);
    expect(info.root()).toEqual({ image: 'ml', version: '3f2a9c1d0b7e', size: 123456 });
    expect(info.version()).toBe('ml/0.1.0+5cbad04e');
    expect(new ImageInfo(imageDir({ root: { image: 'ml', version: 7, size: '1' } }), OURS).root()).toBeNull();
  });

  it('reports no manifest when the image dir has none', () => {
    expect(new ImageInfo(mkdtempSync(join(tmpdir(), 'lc-image-info-')), OURS).keyStatus()).toBe('no-manifest');
  });

  it('names the image by agent version and inputs digest, and follows a new manifest', () => {
    const dir = imageDir({ agent: { version: '0.1.0' }, inputs: '5cbad04e9550c066', dispatcherKey: null });
    const info = new ImageInfo(dir, OURS);
    expect(info.version()).toBe('0.1.0+5cbad04e');
    writeFileSync(
      join(dir, 'manifest.json'),
      JSON.stringify({ agent: { version: '0.2.0' }, inputs: 'ffff0000aaaa', dispatcherKey: { fingerprint: OURS } }),
    );
    const later = new Date(Date.now() + 5000);
    utimesSync(join(dir, 'manifest.json'), later, later);
    expect(info.version()).toBe('0.2.0+ffff0000');
    expect(info.keyStatus()).toBe('ours');
  });
});
