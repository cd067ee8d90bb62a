/**
 * Which address a MAC gets. Works on the lease store's memory index and its own table of
 * outstanding offers; no I/O, and time comes from the caller, so tests need no sleeping.
 *
 * Preference, for a MAC asking for an address (RFC 2131 §4.3.1):
 *   1. its reservation (the node's fixed IP from the cluster file), if nobody else holds it;
 *   2. the address it holds or held (current, expired or released lease), or was just offered;
 *   3. the address it asks for (option 50), if free;
 *   4. an address of the range never handed out, scanning from a cursor;
 *   5. the free address whose lease ended longest ago.
 * An address is never offered or bound to a MAC while another MAC's lease, offer or
 * reservation holds it.
 */
import type { Mac } from '../nodes/mac.js';
import type { LeaseStore } from './leases.js';
import { holdsAddress } from './leases.js';
import { broadcastOf, inSubnet, type Subnet } from './ipv4.js';

/** How long an offered address stays set aside for the MAC it was offered to. */
export const OFFER_HOLD_MS = 30_000;
/** After a fruitless scan of a full pool, DISCOVERs skip the scan this long (a flood of new MACs stays cheap). */
const FULL_POOL_RECHECK_MS = 1_000;

export interface PoolConfig {
  subnet: Subnet;
  /** First and last dynamic address, inclusive. */
  rangeStart: number;
  rangeEnd: number;
  /** Addresses never handed out (the dispatcher's own, routers...). */
  excluded: ReadonlySet<number>;
  /** Fixed address of a MAC (its reservation), if any. */
  reservationOf: (mac: Mac) => number | undefined;
  /** MAC an address is reserved for, if any. */
  reservedFor: (ip: number) => Mac | undefined;
}

export class AddressPool {
  readonly #offers = new Map<number, { mac: Mac; until: number }>();
  readonly #offerOf = new Map<Mac, number>();
  #cursor: number;
  #fullUntil = 0;

  constructor(
    readonly config: PoolConfig,
    private readonly leases: LeaseStore,
  ) {
    this.#cursor = config.rangeStart;
  }

  get size(): number {
    return this.config.rangeEnd - this.config.rangeStart + 1;
  }

  /** The address to offer `mac`, or undefined when the pool is exhausted. */
  pick(mac: Mac, requested: number | undefined, now: number): number | undefined {
    const fixed = this.usableReservation(mac, now);
    if (fixed !== undefined) return fixed;
    const held = this.leases.byMac(mac);
    if (held && this.inRange(held.ip) && this.isFreeFor(held.ip, mac, now)) return held.ip;
    const offered = this.#offerOf.get(mac);
    if (offered !== undefined && this.inRange(offered) && this.isFreeFor(offered, mac, now)) return offered;
    if (requested !== undefined && this.inRange(requested) && this.isFreeFor(requested, mac, now)) return requested;
    if (now < this.#fullUntil) return undefined;
    const found = this.#scan(mac, now);
    if (found === undefined) this.#fullUntil = now + FULL_POOL_RECHECK_MS;
    return found;
  }

  /**
   * May `mac` have `ip` now (REQUEST in any state)? Its reservation if it has a usable one,
   * else any free address of the range.
   */
  acceptable(mac: Mac, ip: number, now: number): boolean {
    const fixed = this.usableReservation(mac, now);
    if (fixed !== undefined) return ip === fixed;
    return this.inRange(ip) && this.isFreeFor(ip, mac, now);
  }

  /** The MAC's reservation, if it is in the subnet and no other MAC's lease holds it. */
  usableReservation(mac: Mac, now: number): number | undefined {
    const fixed = this.config.reservationOf(mac);
    if (fixed === undefined || !this.isAssignable(fixed)) return undefined;
    return this.isFreeFor(fixed, mac, now) ? fixed : undefined;
  }

  /** Sets `ip` aside for `mac` for OFFER_HOLD_MS. */
  holdOffer(mac: Mac, ip: number, now: number): void {
    this.dropOffer(mac);
    this.#offers.set(ip, { mac, until: now + OFFER_HOLD_MS });
    this.#offerOf.set(mac, ip);
  }

  /** The address currently offered to `mac`, if any. */
  offeredTo(mac: Mac): number | undefined {
    return this.#offerOf.get(mac);
  }

  dropOffer(mac: Mac): void {
    const ip = this.#offerOf.get(mac);
    if (ip === undefined) return;
    this.#offerOf.delete(mac);
    if (this.#offers.get(ip)?.mac === mac) this.#offers.delete(ip);
    this.#fullUntil = 0;
  }

  /** Forgets expired offers (memory only; an expired offer already counts as free). */
  sweep(now: number): void {
    for (const [ip, o] of this.#offers)
      if (o.until <= now) {
        this.#offers.delete(ip);
        if (this.#offerOf.get(o.mac) === ip) this.#offerOf.delete(o.mac);
      }
    this.#fullUntil = 0;
  }

  get outstandingOffers(): number {
    return this.#offers.size;
  }

  /** Leases or reservations changed in a way that may free addresses (release, expiry). */
  invalidateFullPool(): void {
    this.#fullUntil = 0;
  }

  inRange(ip: number): boolean {
    return ip >= this.config.rangeStart && ip <= this.config.rangeEnd && this.isAssignable(ip);
  }

  /** In the subnet, not its network or broadcast address, not excluded. */
  isAssignable(ip: number): boolean {
    const s = this.config.subnet;
    return inSubnet(ip, s) && ip !== s.network && ip !== broadcastOf(s) && !this.config.excluded.has(ip);
  }

  /** Nobody else's lease, offer or reservation holds `ip`. */
  isFreeFor(ip: number, mac: Mac, now: number): boolean {
    const reservedFor = this.config.reservedFor(ip);
    if (reservedFor !== undefined && reservedFor !== mac) return false;
    const lease = this.leases.byIp(ip);
    if (lease && lease.mac !== mac && holdsAddress(lease, now)) return false;
    const offer = this.#offers.get(ip);
    if (offer && offer.mac !== mac && offer.until > now) return false;
    return true;
  }

  #scan(mac: Mac, now: number): number | undefined {
    const { rangeStart, rangeEnd } = this.config;
    const n = rangeEnd - rangeStart + 1;
    let oldest: number | undefined;
    let oldestEnd = Infinity;
    for (let k = 0, ip = this.#cursor; k < n; k++, ip = ip >= rangeEnd ? rangeStart : ip + 1) {
      if (!this.isAssignable(ip) || this.config.reservedFor(ip) !== undefined) continue;
      const offer = this.#offers.get(ip);
      if (offer && offer.until > now) continue;
      const lease = this.leases.byIp(ip);
      if (!lease) {
        this.#cursor = ip >= rangeEnd ? rangeStart : ip + 1;
        return ip;
      }
      if (!holdsAddress(lease, now) && lease.mac !== mac && lease.expiresAt < oldestEnd) {
        oldest = ip;
        oldestEnd = lease.expiresAt;
      }
    }
    return oldest;
  }
}
