/**
 * Per-boot tokens: each boot script served to a MAC carries a fresh random token on the
 * kernel command line; the agent of that boot presents it in its hello. Only a hash is
 * stored. The newest token of a MAC is the valid one (a new boot replaces it), and it stays
 * valid for the life of that boot, so an agent can reconnect after a dispatcher restart.
 */
import type { Db, Migration } from '../store/database.js';
import type { Mac } from '../nodes/mac.js';
import type { GroupCommit } from '../store/group-commit.js';
import { hashToken, randomToken, tokensEqual } from './secrets.js';

export const bootTokenMigrations: Migration[] = [
  {
    name: 'trust/001-boot-tokens',
    sql: `CREATE TABLE boot_tokens (mac TEXT PRIMARY KEY, token_hash TEXT NOT NULL, issued_at INTEGER NOT NULL);`,
  },
];

export class BootTokens {
  readonly #issue;
  readonly #lookup;
  constructor(
    db: Db,
    private readonly now: () => number = Date.now,
  ) {
    this.#issue = db.prepare('INSERT INTO boot_tokens (mac, token_hash, issued_at) VALUES (?, ?, ?) ON CONFLICT(mac) DO UPDATE SET token_hash = excluded.token_hash, issued_at = excluded.issued_at');
    this.#lookup = db.prepare('SELECT token_hash FROM boot_tokens WHERE mac = ?').pluck();
  }

  /** A fresh token for this MAC's next boot (durable before it is returned). */
  issue(mac: Mac): string {
    const token = randomToken();
    this.#issue.run(mac, hashToken(token), this.now());
    return token;
  }

  /**
   * Like issue(), but the write joins the store's next group commit: a boot storm's scripts
   * share one fsync instead of taking one each on the event loop. Resolves once durable.
   */
  async issueGrouped(mac: Mac, commits: GroupCommit): Promise<string> {
    const token = randomToken();
    const hash = hashToken(token);
    const t = this.now();
    await commits.run(() => this.#issue.run(mac, hash, t));
    return token;
  }

  verify(mac: Mac, token: string): boolean {
    const h = this.#lookup.get(mac) as string | undefined;
    return h !== undefined && tokensEqual(h, hashToken(token));
  }
}
