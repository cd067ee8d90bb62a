/**
 * Enrollment tokens for hosts that did not PXE-boot (`dispatcherctl enroll-token create`).
 * Each says what it admits: one MAC (given at creation, or the first MAC that uses it) until
 * it expires or is revoked. Only a hash is stored; the token is shown once, at creation.
 *
 * Whatever the token, it never admits the MAC of a node that booted by PXE or is connected
 * (admission.ts): those have per-boot tokens and session credentials of their own.
 */
import type { Db, Migration } from '../store/database.js';
import type { Mac } from '../nodes/mac.js';
import { hashToken, randomToken } from './secrets.js';

/** Lifetime of a token created without --expires. */
export const DEFAULT_ENROLL_TOKEN_TTL_MS = 24 * 3600_000;
/** Tokens kept at most (expired ones are dropped first); a bound on what an admin script can pile up. */
export const MAX_ENROLL_TOKENS = 10_000;
/** Created tokens start with this, so a leaked one is recognisable in logs and files. */
export const ENROLL_TOKEN_PREFIX = 'lce_';

export const enrollTokenMigrations: Migration[] = [
  {
    name: 'trust/003-enroll-tokens',
    sql: `CREATE TABLE enroll_tokens (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, mac TEXT, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER);`,
  },
];

export interface EnrollTokenInfo {
  id: string;
  /** The MAC it admits; null until first used when created without one. */
  mac: Mac | null;
  createdAt: number;
  expiresAt: number;
  usedAt: number | null;
}

/** What presenting a token for a MAC gives. */
export type EnrollCheck = { ok: true; id: string } | { ok: false; why: 'unknown' | 'expired' | 'other-mac' };

interface Row {
  id: string;
  mac: string | null;
  created_at: number;
  expires_at: number;
  used_at: number | null;
}

export class EnrollTokens {
  readonly #insert;
  readonly #byHash;
  readonly #bind;
  readonly #list;
  readonly #revoke;
  readonly #count;
  readonly #purge;
  readonly #forgetMac;

  constructor(
    db: Db,
    private readonly now: () => number = Date.now,
  ) {
    this.#insert = db.prepare('INSERT INTO enroll_tokens (id, token_hash, mac, created_at, expires_at) VALUES (?, ?, ?, ?, ?)');
    this.#byHash = db.prepare('SELECT * FROM enroll_tokens WHERE token_hash = ?');
    this.#bind = db.prepare('UPDATE enroll_tokens SET mac = coalesce(mac, ?), used_at = ? WHERE id = ?');
    this.#list = db.prepare('SELECT * FROM enroll_tokens ORDER BY created_at, rowid');
    this.#revoke = db.prepare('DELETE FROM enroll_tokens WHERE id = ?');
    this.#count = db.prepare('SELECT count(*) FROM enroll_tokens').pluck();
    this.#purge = db.prepare('DELETE FROM enroll_tokens WHERE expires_at < ?');
    this.#forgetMac = db.prepare('DELETE FROM enroll_tokens WHERE mac = ?');
  }

  /** A new token; the secret is returned once and only its hash kept. */
  create(opts: { mac?: Mac | null; ttlMs?: number } = {}): { token: string; info: EnrollTokenInfo } {
    const t = this.now();
    this.#purge.run(t);
    if ((this.#count.get() as number) >= MAX_ENROLL_TOKENS)
      throw new Error(`${MAX_ENROLL_TOKENS} enrollment tokens exist: revoke some first`);
    const token = ENROLL_TOKEN_PREFIX + randomToken(24);
    const hash = hashToken(token);
    const id = hash.slice(0, 12);
    const info: EnrollTokenInfo = {
      id,
      mac: opts.mac ?? null,
      createdAt: t,
      expiresAt: t + (opts.ttlMs ?? DEFAULT_ENROLL_TOKEN_TTL_MS),
      usedAt: null,
    };
    this.#insert.run(id, hash, info.mac, info.createdAt, info.expiresAt);
    return { token, info };
  }

  /** Whether `token` admits `mac` now (changes nothing). */
  check(mac: Mac, token: string): EnrollCheck {
    const row = this.#byHash.get(hashToken(token)) as Row | undefined;
    if (!row) return { ok: false, why: 'unknown' };
    if (row.expires_at < this.now()) return { ok: false, why: 'expired' };
    if (row.mac !== null && row.mac !== mac) return { ok: false, why: 'other-mac' };
    return { ok: true, id: row.id };
  }

  /** Like check(), and a token without a MAC is bound to this one (call once the hello is admitted). */
  use(mac: Mac, token: string): EnrollCheck {
    const c = this.check(mac, token);
    if (c.ok) this.#bind.run(mac, this.now(), c.id);
    return c;
  }

  list(): EnrollTokenInfo[] {
    return (this.#list.all() as Row[]).map((r) => ({
      id: r.id,
      mac: r.mac as Mac | null,
      createdAt: r.created_at,
      expiresAt: r.expires_at,
      usedAt: r.used_at,
    }));
  }

  revoke(id: string): boolean {
    return this.#revoke.run(id).changes === 1;
  }

  /** Drops the tokens bound to a forgotten node's MAC. */
  forget(mac: Mac): void {
    this.#forgetMac.run(mac);
  }
}
