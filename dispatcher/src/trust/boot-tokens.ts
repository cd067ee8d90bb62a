/**
 * Per-boot tokens and the session credentials that follow them. Only hashes are stored.
 *
 *   boot token   each boot script served to a MAC carries a fresh random token on the kernel
 *                command line. It admits one hello of that MAC, once, within `ttlMs` of being
 *                issued (the kernel and agent start within a minute of the script). A newer
 *                boot of the MAC replaces it.
 *   session      the hello that spends a boot token derives, on both sides, a reconnect
 *   credential   credential from the session's key exchange (protocol/session.ts): it never
 *                travels until the agent reconnects with it (dispatcher restart, dropped
 *                connection, agent restart). Every welcome derives the next one; the one just
 *                presented stays good until the agent proves, by its first sealed message, that
 *                it holds the next (a welcome lost on the way locks nobody out). A credential
 *                seen on the wire is therefore spent by the time anyone could replay it. A new
 *                boot script for the MAC revokes it.
 */
import type { Db, Migration } from '../store/database.js';
import type { Mac } from '../nodes/mac.js';
import type { GroupCommit } from '../store/group-commit.js';
import { hashToken, randomToken, tokensEqual } from './secrets.js';

/** How long a boot token admits its hello (cluster file `bootTokenMinutes` overrides). */
export const DEFAULT_BOOT_TOKEN_TTL_MS = 10 * 60_000;

export const bootTokenMigrations: Migration[] = [
  {
    name: 'trust/001-boot-tokens',
    sql: `CREATE TABLE boot_tokens (mac TEXT PRIMARY KEY, token_hash TEXT NOT NULL, issued_at INTEGER NOT NULL);`,
  },
  {
    name: 'trust/002-single-use-and-sessions',
    sql: `ALTER TABLE boot_tokens ADD COLUMN used_at INTEGER;
      CREATE TABLE session_credentials (mac TEXT PRIMARY KEY, cred_hash TEXT, next_hash TEXT, issued_at INTEGER NOT NULL);`,
  },
];

/** Why a boot token was not taken. */
export type BootTokenCheck = 'ok' | 'unknown' | 'used' | 'expired';

export class BootTokens {
  readonly #issue;
  readonly #lookup;
  readonly #spend;
  readonly #renew;
  readonly #revokeSession;
  readonly #session;
  readonly #grant;
  readonly #promote;
  readonly #forget: (mac: Mac) => void;

  constructor(
    db: Db,
    private readonly now: () => number = Date.now,
    readonly ttlMs = DEFAULT_BOOT_TOKEN_TTL_MS,
  ) {
    const upsert = db.prepare(
      'INSERT INTO boot_tokens (mac, token_hash, issued_at, used_at) VALUES (?, ?, ?, NULL) ON CONFLICT(mac) DO UPDATE SET token_hash = excluded.token_hash, issued_at = excluded.issued_at, used_at = NULL',
    );
    this.#revokeSession = db.prepare('DELETE FROM session_credentials WHERE mac = ?');
    // A legitimate new boot replaces the token and ends the previous boot's sessions, in one write.
    this.#issue = db.transaction((mac: Mac, hash: string, t: number) => {
      upsert.run(mac, hash, t);
      this.#revokeSession.run(mac);
    });
    this.#lookup = db.prepare('SELECT token_hash AS hash, issued_at AS issuedAt, used_at AS usedAt FROM boot_tokens WHERE mac = ?');
    this.#spend = db.prepare('UPDATE boot_tokens SET used_at = ? WHERE mac = ? AND token_hash = ? AND used_at IS NULL');
    this.#renew = db.prepare('UPDATE boot_tokens SET issued_at = ? WHERE mac = ? AND token_hash = ? AND used_at IS NULL');
    this.#session = db.prepare('SELECT cred_hash AS cred, next_hash AS next FROM session_credentials WHERE mac = ?');
    this.#grant = db.prepare(
      'INSERT INTO session_credentials (mac, cred_hash, next_hash, issued_at) VALUES (?, NULL, ?, ?) ON CONFLICT(mac) DO UPDATE SET next_hash = excluded.next_hash, issued_at = excluded.issued_at',
    );
    this.#promote = db.prepare(
      'UPDATE session_credentials SET cred_hash = next_hash, next_hash = NULL WHERE mac = ? AND next_hash IS NOT NULL',
    );
    const dropToken = db.prepare('DELETE FROM boot_tokens WHERE mac = ?');
    this.#forget = db.transaction((mac: Mac) => {
      dropToken.run(mac);
      this.#revokeSession.run(mac);
    });
  }

  /** A fresh token for this MAC's next boot (durable before it is returned); ends the MAC's sessions. */
  issue(mac: Mac): string {
    const token = randomToken();
    this.#issue(mac, hashToken(token), this.now());
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
    await commits.run(() => this.#issue(mac, hash, t));
    return token;
  }

  /** Whether `token` would admit a hello of `mac` now (does not spend it). */
  check(mac: Mac, token: string): BootTokenCheck {
    const row = this.#lookup.get(mac) as { hash: string; issuedAt: number; usedAt: number | null } | undefined;
    if (!row || !tokensEqual(row.hash, hashToken(token))) return 'unknown';
    if (row.usedAt !== null) return 'used';
    if (this.now() - row.issuedAt > this.ttlMs) return 'expired';
    return 'ok';
  }

  verify(mac: Mac, token: string): boolean {
    return this.check(mac, token) === 'ok';
  }

  /** Checks and spends the token in one step: of two hellos with it, one wins. */
  spend(mac: Mac, token: string): BootTokenCheck {
    const c = this.check(mac, token);
    if (c !== 'ok') return c;
    return this.#spend.run(this.now(), mac, hashToken(token)).changes === 1 ? 'ok' : 'used';
  }

  /**
   * A valid token whose node waits for approval: its clock starts again, so an agent that
   * keeps asking is admitted whenever the operator approves, but a token left unused expires.
   */
  renew(mac: Mac, token: string): void {
    if (this.check(mac, token) === 'ok') this.#renew.run(this.now(), mac, hashToken(token));
  }

  /** Whether `credential` is this MAC's session credential (current, or the next one not yet confirmed). */
  checkSession(mac: Mac, credential: string): boolean {
    const row = this.#session.get(mac) as { cred: string | null; next: string | null } | undefined;
    if (!row) return false;
    const h = hashToken(credential);
    if (row.next !== null && tokensEqual(row.next, h)) {
      this.#promote.run(mac); // the agent holds the next one: the older is spent
      return true;
    }
    return row.cred !== null && tokensEqual(row.cred, h);
  }

  /** The welcome just sent derives this credential: it is the next one the agent may present. */
  grantSession(mac: Mac, credential: string): void {
    this.#grant.run(mac, hashToken(credential), this.now());
  }

  /** The agent's first sealed message proves it derived the granted credential: the older one is spent. */
  confirmSession(mac: Mac): void {
    this.#promote.run(mac);
  }

  /** Drops every token and credential of the MAC (the node is forgotten). */
  forget(mac: Mac): void {
    this.#forget(mac);
  }
}
