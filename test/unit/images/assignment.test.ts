import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { ImageCatalog } from '../../../dispatcher/src/images/catalog.js';
import { ImageReleases } from '../../../dispatcher/src/images/releases.js';
import { ImageAssignments, missingClusterImages } from '../../../dispatcher/src/images/assignment.js';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';
import { createLogger } from '../../../dispatcher/src/log.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const log = createLogger({ level: 'silent' });
const MAC = '52:54:00:00:00:01' as Mac;

/** A library with `ml` at versions 1…n (newest last) and a default image. */
function library(n: number): { defaultDir: string; libraryDir: string } {
  const root = mkdtempSync(join(tmpdir(), 'lc-assign-'));
  const write = (dir: string, digit: string) => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ inputs: digit.repeat(64) }));
    writeFileSync(join(dir, 'vmlinuz'), 'k');
    writeFileSync(join(dir, 'initrd.img'), 'i');
  };
  write(join(root, 'image'), 'd');
  const ml = join(root, 'lib', 'ml');
  const order: string[] = [];
  for (let i = 1; i <= n; i++) {
    write(join(ml, 'versions', String(i).repeat(12)), String(i));
    order.push(String(i).repeat(12));
  }
  writeFileSync(join(ml, 'versions', 'order'), `${order.join('\n')}\n`);
  write(ml, String(n));
  return { defaultDir: join(root, 'image'), libraryDir: join(root, 'lib') };
}

function setup(clusterYaml: string, versions = 2) {
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  const commits = new GroupCommit(db);
  const catalog = new ImageCatalog({ ...library(versions), fingerprint: 'f', log });
  const releases = new ImageReleases(db, commits);
  const assignments = new ImageAssignments(catalog, releases, parseClusterFile(clusterYaml));
  return { db, commits, catalog, releases, assignments };
}

describe('which image and version a node boots', () => {
  it('takes the node’s own image, else its first label listed in labelImages, else the cluster default, else default', () => {
    const { assignments } = setup('image: ml\nlabelImages: {gpu: default, big: ml}\n');
    expect(assignments.imageOf({ image: 'ml', labels: ['gpu'] })).toBe('ml');
    expect(assignments.imageOf({ image: null, labels: ['x', 'gpu', 'big'] })).toBe('default');
    expect(assignments.imageOf({ image: null, labels: ['other'] })).toBe('ml');
    expect(setup('').assignments.imageOf({ image: null, labels: [] })).toBe('default');
  });

  it('boots the release, adopted at the newest build on first sight; a newer build waits for a rollout', async () => {
    const { assignments, releases } = setup('');
    const first = assignments.next({ mac: MAC, image: 'ml', labels: [] });
    expect(first.ok && first.version.version).toBe('222222222222');
    expect(releases.release('ml')?.version).toBe('222222222222');
    await releases.setRelease('ml', '111111111111', 'rollback');
    const after = assignments.next({ mac: MAC, image: 'ml', labels: [] });
    expect(after.ok && after.version.version).toBe('111111111111');
    expect(releases.release('ml')?.previous).toBe('222222222222');
    // A node running the older version is stale: a newer build exists.
    expect(assignments.status({ mac: MAC, image: 'ml', labels: [], imageVersion: 'ml@111111111111' })).toMatchObject({
      image: 'ml',
      next: 'ml@111111111111',
      stale: true,
    });
  });

  it('boots a node pinned by a rollout at its pin, and the release again once unpinned', async () => {
    const { assignments, releases } = setup('', 3);
    assignments.next({ mac: MAC, image: 'ml', labels: [] });
    await releases.setRelease('ml', '111111111111', 'test');
    await releases.pin(MAC, 'ml', '333333333333');
    const pinned = assignments.next({ mac: MAC, image: 'ml', labels: [] });
    expect(pinned.ok && pinned.version.version).toBe('333333333333');
    // A pin to another image than the node's own is not used.
    const other = assignments.next({ mac: MAC, image: 'default', labels: [] });
    expect(other.ok && other.version.image).toBe('default');
    await releases.unpin(MAC);
    const back = assignments.next({ mac: MAC, image: 'ml', labels: [] });
    expect(back.ok && back.version.version).toBe('111111111111');
  });

  it('says what to do for an image that is not built', () => {
    const { assignments } = setup('');
    const r = assignments.next({ mac: MAC, image: 'nope', labels: [] });
    expect(r).toMatchObject({ ok: false, image: 'nope', reason: 'image "nope" is not built' });
    expect(!r.ok && r.hint).toMatch(/make image IMAGE=nope/);
  });

  it('keeps releases and pins across a restart (the store)', async () => {
    const s = setup('');
    await s.releases.setRelease('ml', '111111111111', 'test');
    await s.releases.pin(MAC, 'ml', '222222222222');
    const again = new ImageReleases(s.db, s.commits);
    expect(again.release('ml')).toMatchObject({ version: '111111111111', reason: 'test' });
    expect(again.pinOf(MAC)).toEqual({ image: 'ml', version: '222222222222' });
  });
});

describe('cluster file images', () => {
  it('reads image, labelImages and nodes[].image, and names a bad image name', () => {
    const c = parseClusterFile('image: ml\nlabelImages: {gpu: cuda}\nnodes:\n  - {name: n1, mac: "52:54:00:00:00:01", image: cuda}\n');
    expect(c.image).toBe('ml');
    expect(c.labelImages).toEqual({ gpu: 'cuda' });
    expect(c.nodes[0]!.image).toBe('cuda');
    expect(() => parseClusterFile('image: "Bad Name"\n')).toThrow(/image: must be an image name/);
    expect(() => parseClusterFile('labelImages: {gpu: "../x"}\n')).toThrow(/labelImages.gpu: must be an image name/);
    expect(() => parseClusterFile('nodes:\n  - {name: n1, mac: "52:54:00:00:00:01", image: 7}\n')).toThrow(/nodes\[0\]\.image/);
  });

  it('names the images it refers to that are not built', () => {
    const { catalog } = setup('');
    const c = parseClusterFile(
      'image: ml\nlabelImages: {gpu: cuda}\nonDemand: {images: [default, r], keep: {default: 1}}\nnodes:\n  - {name: n1, mac: "52:54:00:00:00:01", image: sim}\n',
    );
    expect(missingClusterImages(c, catalog).sort()).toEqual(['cuda', 'r', 'sim']);
    expect(() => parseClusterFile('onDemand: {images: [default], keep: {}}\n')).toThrow(/onDemand.images: expected a list of at least two/);
    expect(() => parseClusterFile('onDemand: {images: [default, ml], keep: {r: 1}}\n')).toThrow(
      /onDemand.keep.r: not one of onDemand.images/,
    );
  });
});
