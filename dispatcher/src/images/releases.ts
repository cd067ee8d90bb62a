/**
 * Which version of each image nodes boot: its release. A new build does not reach a node by
 * itself (it would skip the canary): the release moves when an operator rolls the image out
 * (`dispatcherctl images rollout`) or back (`images rollback`). An image seen for the first
 * time is released at its newest version. During a rollout, the nodes already moved carry a
 * pin to the new version, so a node that reboots for another reason does not fall back.
 *
 * Kept in the store: releases and pins survive a dispatcher restart (a rollout stopped by a
 * restart leaves each node where it was).
 */
import type { Db, Migration } from '../store/database.js';
import type { GroupCommit } from '../store/group-commit.js';
import type { Mac } from '../nodes/mac.js';

export const imageMigrations: Migration[] = [
  {
    name: 'images/001-releases',
    sql: `CREATE TABLE image_releases (name TEXT PRIMARY KEY, version TEXT NOT NULL, previous TEXT, since INTEGER NOT NULL, reason TEXT);
      CREATE TABLE image_pins (mac TEXT PRIMARY KEY, image TEXT NOT NULL, version TEXT NOT NULL);`,
  },
];

export interface Release {
  image: string;
  version: string;
  /** The version released before this one (what `rollback` returns to), if any. */
  previous: string | null;
  since: number;
  reason: string | null;
}

export class ImageReleases {
  readonly #releases = new Map<string, Release>();
  readonly #pins = new Map<Mac, { image: string; version: string }>();
  readonly #upsert;
  readonly #pin;
  readonly #unpin;

  constructor(
    db: Db,
    private readonly commits: GroupCommit,
    private readonly now: () => number = Date.now,
  ) {
    for (const r of db.prepare('SELECT name, version, previous, since, reason FROM image_releases').all() as {
      name: string;
      version: string;
      previous: string | null;
      since: number;
      reason: string | null;
    }[])
      this.#releases.set(r.name, { image: r.name, version: r.version, previous: r.previous, since: r.since, reason: r.reason });
    for (const p of db.prepare('SELECT mac, image, version FROM image_pins').all() as { mac: Mac; image: string; version: string }[])
      this.#pins.set(p.mac, { image: p.image, version: p.version });
    this.#upsert = db.prepare(
      `INSERT INTO image_releases (name, version, previous, since, reason) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT(name) DO UPDATE SET version = excluded.version, previous = excluded.previous, since = excluded.since, reason = excluded.reason`,
    );
    this.#pin = db.prepare(
      'INSERT INTO image_pins (mac, image, version) VALUES (?, ?, ?) ON CONFLICT(mac) DO UPDATE SET image = excluded.image, version = excluded.version',
    );
    this.#unpin = db.prepare('DELETE FROM image_pins WHERE mac = ?');
  }

  release(image: string): Release | undefined {
    return this.#releases.get(image);
  }

  /**
   * Releases `version` of `image`: the one released before becomes `previous`, except after a
   * rollback (going back to `previous`), which leaves none: a second rollback must not go
   * forward again to the version just left.
   */
  async setRelease(image: string, version: string, reason: string, opts: { rollback?: boolean } = {}): Promise<Release> {
    const cur = this.#releases.get(image);
    const previous = opts.rollback ? null : cur && cur.version !== version ? cur.version : (cur?.previous ?? null);
    const r: Release = { image, version, previous, since: this.now(), reason };
    this.#releases.set(image, r);
    await this.commits.run(() => this.#upsert.run(image, version, previous, r.since, reason));
    return r;
  }

  /** Releases an image seen for the first time at `version` (no-op when it has a release). */
  adopt(image: string, version: string): void {
    if (this.#releases.has(image)) return;
    const r: Release = { image, version, previous: null, since: this.now(), reason: 'first seen' };
    this.#releases.set(image, r);
    void this.commits.run(() => this.#upsert.run(image, version, null, r.since, r.reason));
  }

  pinOf(mac: Mac): { image: string; version: string } | undefined {
    return this.#pins.get(mac);
  }

  pinned(image: string): Mac[] {
    return [...this.#pins].filter(([, p]) => p.image === image).map(([mac]) => mac);
  }

  async pin(mac: Mac, image: string, version: string): Promise<void> {
    this.#pins.set(mac, { image, version });
    await this.commits.run(() => this.#pin.run(mac, image, version));
  }

  async unpin(mac: Mac): Promise<void> {
    if (!this.#pins.delete(mac)) return;
    await this.commits.run(() => this.#unpin.run(mac));
  }
}
