/**
 * The DHCP lease store: every address handed out, durable in the dispatcher's SQLite store
 * (so leases survive a restart) and indexed in memory by address and by MAC (so a storm is
 * answered from memory). A write resolves only once its transaction is on disk: the server
 * sends an ACK after that, never before (group commit batches the fsyncs of a storm).
 *
 * Leases are keyed by MAC (chaddr), not by client identifier: a PXE ROM, iPXE and the Linux
 * in the image all DHCP from one NIC with different client ids, and must keep one address.
 */
import type { Db, Migration } from '../store/database.js';
import type { GroupCommit } from '../store/group-commit.js';
import type { Mac } from '../nodes/mac.js';
import { intToIp, ipToInt } from './ipv4.js';

export const leaseMigrations: Migration[] = [
  {
    name: 'dhcp/001-leases',
    sql: `CREATE TABLE dhcp_leases (
      ip TEXT PRIMARY KEY,
      mac TEXT,
      state TEXT NOT NULL,
      expires_at INTEGER NOT NULL,
      hostname TEXT,
      updated_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX dhcp_leases_mac ON dhcp_leases(mac) WHERE mac IS NOT NULL;`,
  },
];

/**
 * `bound`: the MAC holds the address until `expiresAt`.
 * `released`: the MAC gave it back (RFC 2131 §4.4.6); it stays the MAC's preferred address.
 * `declined`: a client found it in use (DHCPDECLINE, §4.3.3); nobody gets it until `expiresAt`.
 */
export type LeaseState = 'bound' | 'released' | 'declined';

export interface Lease {
  readonly ip: number;
  readonly mac: Mac | null;
  readonly state: LeaseState;
  /** ms since the epoch. */
  readonly expiresAt: number;
  readonly hostname: string | null;
}

/** Does this record keep the address from anyone else at `now`? */
export function holdsAddress(l: Lease, now: number): boolean {
  return l.state !== 'released' && l.expiresAt > now;
}

/**
 * Deletes a MAC's lease rows in any DHCP mode (a forgotten node): the rows may be there from an
 * earlier run in full mode even when no LeaseStore runs now. A running LeaseStore drops its own
 * copy (`forget`).
 */
export async function forgetLeaseRows(db: Db, commits: GroupCommit, mac: Mac): Promise<void> {
  const del = db.prepare('DELETE FROM dhcp_leases WHERE mac = ?');
  await commits.run(() => del.run(mac));
}

/**
 * Lease writes go to group commit together, at most once per this interval. A commit blocks
 * the event loop for its fsync (~3 ms here); committing after every loop turn, i.e. every
 * ≤ 32 datagrams libuv reads, would leave a storm waiting on fsyncs. Under light load the
 * first write commits at once; the interval adds at most this much to an ACK.
 */
export const LEASE_COMMIT_INTERVAL_MS = 8;
export const LEASE_COMMIT_MAX_INTERVAL_MS = 50;

interface QueuedWrite {
  lease: Lease;
  now: number;
  prevOfMac: Lease | undefined;
  prevAtIp: Lease | undefined;
  resolve: (l: Lease) => void;
  reject: (err: unknown) => void;
}

export class LeaseStore {
  readonly #byIp = new Map<number, Lease>();
  readonly #byMac = new Map<Mac, Lease>();
  readonly #stmts;
  #queue: QueuedWrite[] = [];
  /** Leases indexed but not yet durable, with the promise of their write. */
  readonly #pending = new Map<Lease, Promise<Lease>>();
  #timer: NodeJS.Timeout | undefined;
  #lastCommit = -Infinity;

  constructor(
    db: Db,
    private readonly commits: GroupCommit,
  ) {
    this.#stmts = {
      dropMac: db.prepare('DELETE FROM dhcp_leases WHERE mac = ? AND ip <> ?'),
      forget: db.prepare('DELETE FROM dhcp_leases WHERE mac = ?'),
      upsert: db.prepare(`INSERT INTO dhcp_leases (ip, mac, state, expires_at, hostname, updated_at) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac, state = excluded.state, expires_at = excluded.expires_at,
          hostname = excluded.hostname, updated_at = excluded.updated_at`),
    };
    const rows = db.prepare('SELECT ip, mac, state, expires_at, hostname FROM dhcp_leases').all() as LeaseRow[];
    for (const r of rows) {
      const ip = ipToInt(r.ip);
      if (ip === undefined) continue;
      this.#index({ ip, mac: r.mac as Mac | null, state: r.state as LeaseState, expiresAt: r.expires_at, hostname: r.hostname });
    }
  }

  get size(): number {
    return this.#byIp.size;
  }

  byIp(ip: number): Lease | undefined {
    return this.#byIp.get(ip);
  }

  byMac(mac: Mac): Lease | undefined {
    return this.#byMac.get(mac);
  }

  all(): IterableIterator<Lease> {
    return this.#byIp.values();
  }

  /** Binds `ip` to `mac` until `expiresAt`; resolves once durable. */
  bind(mac: Mac, ip: number, expiresAt: number, hostname: string | null, now: number): Promise<Lease> {
    return this.#write({ ip, mac, state: 'bound', expiresAt, hostname }, now);
  }

  /**
   * The MAC's bound lease of `ip` under `hostname` if at least `minRemainingMs` of it is left
   * (lease caching): resolves once that lease is durable — at once, or with the write that is
   * still on its way. Undefined: bind anew.
   */
  reuse(mac: Mac, ip: number, hostname: string | null, now: number, minRemainingMs: number): Promise<Lease> | undefined {
    const l = this.#byMac.get(mac);
    if (!l || l.ip !== ip || l.state !== 'bound' || l.hostname !== hostname || l.expiresAt - now < minRemainingMs) return undefined;
    return this.#pending.get(l) ?? Promise.resolve(l);
  }

  /** DHCPRELEASE: the address is free again but stays this MAC's preference. */
  release(lease: Lease, now: number): Promise<Lease> {
    return this.#write({ ...lease, state: 'released', expiresAt: now }, now);
  }

  /** DHCPDECLINE: nobody gets `ip` until `until`. */
  decline(ip: number, until: number, now: number): Promise<Lease> {
    return this.#write({ ip, mac: null, state: 'declined', expiresAt: until, hostname: null }, now);
  }

  /** A forgotten node: its lease goes from memory now and from the store with the next commit. */
  async forget(mac: Mac): Promise<void> {
    const l = this.#byMac.get(mac);
    if (l) this.#unindex(l);
    this.flush(); // queued writes of this MAC first, then the delete
    await this.commits.run(() => this.#stmts.forget.run(mac));
  }

  /** Hands queued writes to group commit now (shutdown). */
  flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#commitQueued();
  }

  /**
   * Updates memory at once (so the next packet sees it), then queues the write; the promise
   * settles when its transaction is durable. If the commit fails, memory goes back to what
   * it was, unless something newer replaced it meanwhile.
   */
  #write(lease: Lease, now: number): Promise<Lease> {
    const prevOfMac = lease.mac ? this.#byMac.get(lease.mac) : undefined;
    const prevAtIp = this.#byIp.get(lease.ip);
    this.#index(lease);
    const durable = new Promise<Lease>((resolve, reject) => {
      this.#queue.push({ lease, now, prevOfMac, prevAtIp, resolve, reject });
      this.#timer ??= setTimeout(
        () => {
          this.#timer = undefined;
          this.#commitQueued();
        },
        Math.max(0, this.#lastCommit + this.#interval() - performance.now()),
      );
    });
    this.#pending.set(lease, durable);
    const settled = () => void this.#pending.delete(lease);
    durable.then(settled, settled);
    return durable;
  }

  /**
   * Time between lease commits: at least LEASE_COMMIT_INTERVAL_MS, and twice the last commit's
   * duration when the disk is slow (so fsyncs never take more than a third of the event loop),
   * at most LEASE_COMMIT_MAX_INTERVAL_MS (the most an ACK waits for company).
   */
  #interval(): number {
    return Math.min(LEASE_COMMIT_MAX_INTERVAL_MS, Math.max(LEASE_COMMIT_INTERVAL_MS, 2 * this.commits.stats.lastCommitMs));
  }

  #commitQueued(): void {
    const batch = this.#queue;
    if (batch.length === 0) return;
    this.#queue = [];
    this.#lastCommit = performance.now();
    this.commits
      .run(() => {
        for (const w of batch) {
          // The MAC moves to another address: its old row goes (one lease per MAC).
          if (w.lease.mac && w.prevOfMac && w.prevOfMac.ip !== w.lease.ip) this.#stmts.dropMac.run(w.lease.mac, intToIp(w.lease.ip));
          this.#stmts.upsert.run(intToIp(w.lease.ip), w.lease.mac, w.lease.state, w.lease.expiresAt, w.lease.hostname, w.now);
        }
      })
      .then(
        () => {
          for (const w of batch) w.resolve(w.lease);
        },
        (err: unknown) => {
          for (let i = batch.length - 1; i >= 0; i--) this.#revert(batch[i]!);
          for (const w of batch) w.reject(err);
        },
      );
  }

  #revert(w: QueuedWrite): void {
    const { lease, prevAtIp, prevOfMac } = w;
    if (this.#byIp.get(lease.ip) !== lease) return; // replaced meanwhile: keep the newer
    this.#unindex(lease);
    if (prevAtIp) this.#index(prevAtIp);
    if (prevOfMac && prevOfMac !== prevAtIp && !this.#byIp.has(prevOfMac.ip)) this.#index(prevOfMac);
  }

  #index(l: Lease): void {
    const atIp = this.#byIp.get(l.ip);
    if (atIp?.mac && atIp.mac !== l.mac && this.#byMac.get(atIp.mac) === atIp) this.#byMac.delete(atIp.mac);
    if (l.mac) {
      const ofMac = this.#byMac.get(l.mac);
      if (ofMac && ofMac.ip !== l.ip && this.#byIp.get(ofMac.ip) === ofMac) this.#byIp.delete(ofMac.ip);
      this.#byMac.set(l.mac, l);
    }
    this.#byIp.set(l.ip, l);
  }

  #unindex(l: Lease): void {
    if (this.#byIp.get(l.ip) === l) this.#byIp.delete(l.ip);
    if (l.mac && this.#byMac.get(l.mac) === l) this.#byMac.delete(l.mac);
  }
}

interface LeaseRow {
  ip: string;
  mac: string | null;
  state: string;
  expires_at: number;
  hostname: string | null;
}
