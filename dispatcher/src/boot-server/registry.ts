/**
 * The leader's list of boot servers (`dispatcherctl boot-server add NAME`), and what each said
 * last. A boot server proves itself with the token made for it: only a hash is stored, the
 * token is shown once. The leader takes a client's MAC and address from a request only when
 * it carries a registered boot server's token (boot-server/leader-routes.ts); nothing else on
 * the network can speak for a client. The token admits the boot-server routes and nothing of
 * the operator's API, and removing the boot server revokes it.
 *
 * Names and token hashes are durable (the store); what a boot server reports (address, cache,
 * errors) lives in memory and comes back with its next heartbeat.
 */
import type { Db, Migration } from '../store/database.js';
import { hashToken, randomToken, tokensEqual } from '../trust/secrets.js';

/** Boot-server tokens start with this, so a leaked one is recognisable in logs and files. */
export const BOOT_SERVER_TOKEN_PREFIX = 'lcb_';
/** A boot server silent this many heartbeat intervals is shown `lost`. */
export const LOST_AFTER_HEARTBEATS = 3;
/** Boot servers kept at most (a bound on what an admin script can pile up). */
export const MAX_BOOT_SERVERS = 1000;
export const BOOT_SERVER_NAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

export const bootServerMigrations: Migration[] = [
  {
    name: 'boot-server/001-registry',
    sql: `CREATE TABLE boot_servers (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);`,
  },
];

/** What a boot server says in each heartbeat (validated by the route's schema). */
export interface BootServerReport {
  /** Where its nodes fetch boot files: `http://<address>:<port>`. */
  url: string;
  version: string;
  /** The interface it serves DHCP and TFTP on, and its DHCP mode. */
  interface: string | null;
  dhcp: string;
  cache: { files: number; bytes: number; fills: number; refused: number };
  /** Its latest errors, newest last (stale files refused, leader unreachable...). */
  errors: { at: number; message: string }[];
  /** Timeline events it could not forward (its queue overflowed). */
  eventsDropped: number;
}

export type BootServerState = 'online' | 'lost' | 'never-seen';

export interface BootServerView {
  name: string;
  state: BootServerState;
  createdAt: number;
  lastSeen: number | null;
  /** The address its requests come from, as the leader sees it. */
  address: string | null;
  report: BootServerReport | null;
  /** Forwarded boot events and scripts served through it since the leader started. */
  events: number;
  scripts: number;
}

interface Live {
  lastSeen: number;
  address: string;
  report: BootServerReport | null;
  events: number;
  scripts: number;
}

export class BootServerRegistry {
  readonly #insert;
  readonly #byHash;
  readonly #list;
  readonly #remove;
  readonly #count;
  readonly #live = new Map<string, Live>();

  constructor(
    db: Db,
    private readonly heartbeatMs: () => number,
    private readonly now: () => number = Date.now,
  ) {
    this.#insert = db.prepare('INSERT INTO boot_servers (name, token_hash, created_at) VALUES (?, ?, ?)');
    this.#byHash = db.prepare('SELECT name, token_hash FROM boot_servers WHERE token_hash = ?');
    this.#list = db.prepare('SELECT name, created_at FROM boot_servers ORDER BY name');
    this.#remove = db.prepare('DELETE FROM boot_servers WHERE name = ?');
    this.#count = db.prepare('SELECT count(*) FROM boot_servers').pluck();
  }

  /** Registers a boot server; its token is returned once and only its hash kept. */
  add(name: string): { name: string; token: string } | { error: 'bad-name' | 'exists' | 'full' } {
    if (!BOOT_SERVER_NAME_RE.test(name)) return { error: 'bad-name' };
    if ((this.#count.get() as number) >= MAX_BOOT_SERVERS) return { error: 'full' };
    if (this.list().some((b) => b.name === name)) return { error: 'exists' };
    const token = `${BOOT_SERVER_TOKEN_PREFIX}${randomToken(24)}`;
    this.#insert.run(name, hashToken(token), this.now());
    return { name, token };
  }

  /** Removes a boot server: its token stops working at once. */
  remove(name: string): boolean {
    this.#live.delete(name);
    return this.#remove.run(name).changes > 0;
  }

  /** The boot server a bearer token belongs to, or undefined (unknown, removed, not a boot-server token). */
  authenticate(token: string | undefined): string | undefined {
    if (!token?.startsWith(BOOT_SERVER_TOKEN_PREFIX)) return undefined;
    const hash = hashToken(token);
    const row = this.#byHash.get(hash) as { name: string; token_hash: string } | undefined;
    // The lookup is by hash; compare again in constant time so no timing tells how close a guess was.
    return row && tokensEqual(row.token_hash, hash) ? row.name : undefined;
  }

  /** A request from `name` arrived from `address` (any authenticated call counts as a sign of life). */
  seen(name: string, address: string): Live {
    let l = this.#live.get(name);
    if (!l) {
      l = { lastSeen: 0, address, report: null, events: 0, scripts: 0 };
      this.#live.set(name, l);
    }
    l.lastSeen = this.now();
    l.address = address;
    return l;
  }

  heartbeat(name: string, address: string, report: BootServerReport): void {
    this.seen(name, address).report = report;
  }

  countEvents(name: string, address: string, n: number): void {
    this.seen(name, address).events += n;
  }

  countScript(name: string, address: string): void {
    this.seen(name, address).scripts++;
  }

  list(): BootServerView[] {
    const lostAfter = LOST_AFTER_HEARTBEATS * this.heartbeatMs();
    const t = this.now();
    return (this.#list.all() as { name: string; created_at: number }[]).map((r) => {
      const l = this.#live.get(r.name);
      return {
        name: r.name,
        state: !l ? 'never-seen' : t - l.lastSeen > lostAfter ? 'lost' : 'online',
        createdAt: r.created_at,
        lastSeen: l?.lastSeen ?? null,
        address: l?.address ?? null,
        report: l?.report ?? null,
        events: l?.events ?? 0,
        scripts: l?.scripts ?? 0,
      };
    });
  }
}
