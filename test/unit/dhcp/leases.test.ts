import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Db } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { LeaseStore, holdsAddress } from '../../../dispatcher/src/dhcp/leases.js';
import { AddressPool, OFFER_HOLD_MS, type PoolConfig } from '../../../dispatcher/src/dhcp/allocator.js';
import { ipToInt, subnetOf } from '../../../dispatcher/src/dhcp/ipv4.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const ip = (s: string) => ipToInt(s)!;
const mac = (n: number) => `52:54:00:00:${(n >> 8).toString(16).padStart(2, '0')}:${(n & 0xff).toString(16).padStart(2, '0')}` as Mac;

const opened: { dir: string; db: Db }[] = [];
afterEach(() => {
  for (const o of opened.splice(0)) {
    if (o.db.open) o.db.close();
    if (o.dir !== ':memory:') rmSync(o.dir, { recursive: true, force: true });
  }
});

function open(dir = mkdtempSync(join(tmpdir(), 'lc-dhcp-leases-'))) {
  const db = openStore({ dataDir: dir, migrations: allMigrations });
  opened.push({ dir, db });
  const commits = new GroupCommit(db);
  const leases = new LeaseStore(db, commits);
  return { dir, db, commits, leases };
}

function poolConfig(over: Partial<PoolConfig> = {}, reservations: [Mac, string][] = []): PoolConfig {
  const byMac = new Map(reservations.map(([m, a]) => [m, ip(a)]));
  const byIp = new Map(reservations.map(([m, a]) => [ip(a), m]));
  return {
    subnet: subnetOf('10.42.0.1', '255.255.255.0')!,
    rangeStart: ip('10.42.0.100'),
    rangeEnd: ip('10.42.0.104'),
    excluded: new Set([ip('10.42.0.1')]),
    reservationOf: (m) => byMac.get(m),
    reservedFor: (a) => byIp.get(a),
    ...over,
  };
}

const rows = (db: Db) =>
  db.prepare('SELECT ip, mac, state, expires_at FROM dhcp_leases ORDER BY ip').all() as {
    ip: string;
    mac: string | null;
    state: string;
    expires_at: number;
  }[];

describe('lease store', () => {
  it('resolves a bind only once the lease is in the database', async () => {
    const { db, leases } = open();
    const p = leases.bind(mac(1), ip('10.42.0.100'), 5_000, 'node1', 1_000);
    expect(rows(db)).toEqual([]); // not committed yet: no ACK may leave now
    await p;
    expect(rows(db)).toEqual([{ ip: '10.42.0.100', mac: mac(1), state: 'bound', expires_at: 5_000 }]);
  });

  it('keeps leases across a restart', async () => {
    const a = open();
    await a.leases.bind(mac(1), ip('10.42.0.100'), 5_000, null, 1_000);
    await a.leases.bind(mac(2), ip('10.42.0.101'), 6_000, null, 1_000);
    a.db.close();
    const b = open(a.dir);
    expect(b.leases.byMac(mac(1))).toMatchObject({ ip: ip('10.42.0.100'), state: 'bound', expiresAt: 5_000 });
    expect(b.leases.byIp(ip('10.42.0.101'))?.mac).toBe(mac(2));
    expect(b.leases.size).toBe(2);
  });

  it('moves a MAC to its new address and gives an expired address to its new owner, one row each', async () => {
    const { db, leases } = open();
    await leases.bind(mac(1), ip('10.42.0.100'), 5_000, null, 1_000);
    await leases.bind(mac(1), ip('10.42.0.101'), 9_000, null, 2_000);
    await leases.bind(mac(2), ip('10.42.0.101'), 20_000, null, 10_000);
    expect(rows(db)).toEqual([{ ip: '10.42.0.101', mac: mac(2), state: 'bound', expires_at: 20_000 }]);
    expect(leases.byMac(mac(1))).toBeUndefined();
    expect(leases.byIp(ip('10.42.0.100'))).toBeUndefined();
  });

  it('records releases and declines', async () => {
    const { db, leases } = open();
    const l = await leases.bind(mac(1), ip('10.42.0.100'), 5_000, null, 1_000);
    await leases.release(l, 2_000);
    await leases.decline(ip('10.42.0.101'), 600_000, 2_000);
    expect(rows(db)).toEqual([
      { ip: '10.42.0.100', mac: mac(1), state: 'released', expires_at: 2_000 },
      { ip: '10.42.0.101', mac: null, state: 'declined', expires_at: 600_000 },
    ]);
    expect(holdsAddress(leases.byIp(ip('10.42.0.100'))!, 2_000)).toBe(false);
    expect(holdsAddress(leases.byIp(ip('10.42.0.101'))!, 2_000)).toBe(true);
  });

  it('puts memory back when the store cannot be written, and rejects so no ACK is sent', async () => {
    const { db, leases } = open();
    await leases.bind(mac(1), ip('10.42.0.100'), 5_000, null, 1_000);
    db.exec(`CREATE TRIGGER no_writes BEFORE UPDATE ON dhcp_leases BEGIN SELECT RAISE(ABORT, 'disk full'); END;
             CREATE TRIGGER no_inserts BEFORE INSERT ON dhcp_leases BEGIN SELECT RAISE(ABORT, 'disk full'); END;`);
    await expect(leases.bind(mac(2), ip('10.42.0.100'), 9_000, null, 6_000)).rejects.toThrow(/disk full/);
    expect(leases.byIp(ip('10.42.0.100'))?.mac).toBe(mac(1));
    expect(leases.byMac(mac(2))).toBeUndefined();
  });
});

describe('address pool', () => {
  it('gives each MAC its own address and the same one again', async () => {
    const { leases } = open();
    const pool = new AddressPool(poolConfig(), leases);
    const a = pool.pick(mac(1), undefined, 0)!;
    pool.holdOffer(mac(1), a, 0);
    const b = pool.pick(mac(2), undefined, 0)!;
    expect(b).not.toBe(a);
    expect(pool.pick(mac(1), undefined, 1)).toBe(a);
    await leases.bind(mac(1), a, 100_000, null, 1);
    pool.dropOffer(mac(1));
    expect(pool.pick(mac(1), undefined, 50_000)).toBe(a);
  });

  it('honours a requested address that is free, and not one held by another MAC', async () => {
    const { leases } = open();
    const pool = new AddressPool(poolConfig(), leases);
    expect(pool.pick(mac(1), ip('10.42.0.103'), 0)).toBe(ip('10.42.0.103'));
    await leases.bind(mac(1), ip('10.42.0.103'), 100_000, null, 0);
    expect(pool.pick(mac(2), ip('10.42.0.103'), 1)).not.toBe(ip('10.42.0.103'));
    const other = pool.pick(mac(2), ip('10.42.9.9'), 1)!; // outside the range: ignored
    expect(other).toBeGreaterThanOrEqual(ip('10.42.0.100'));
    expect(other).toBeLessThanOrEqual(ip('10.42.0.104'));
    expect(other).not.toBe(ip('10.42.0.103'));
  });

  it('gives a reserved MAC its fixed address (outside the range too) and never gives it to anyone else', () => {
    const { leases } = open();
    const pool = new AddressPool(
      poolConfig({}, [
        [mac(9), '10.42.0.20'],
        [mac(8), '10.42.0.100'],
      ]),
      leases,
    );
    expect(pool.pick(mac(9), undefined, 0)).toBe(ip('10.42.0.20'));
    expect(pool.acceptable(mac(9), ip('10.42.0.101'), 0)).toBe(false); // must take its reservation
    expect(pool.pick(mac(1), ip('10.42.0.100'), 0)).toBe(ip('10.42.0.101')); // .100 is mac(8)'s
    expect(pool.acceptable(mac(1), ip('10.42.0.100'), 0)).toBe(false);
  });

  it('falls back to a dynamic address when another MAC still holds a reservation', async () => {
    const { leases } = open();
    await leases.bind(mac(1), ip('10.42.0.102'), 100_000, null, 0);
    const pool = new AddressPool(poolConfig({}, [[mac(9), '10.42.0.102']]), leases);
    const got = pool.pick(mac(9), undefined, 1);
    expect(got).not.toBe(ip('10.42.0.102'));
    expect(got).toBeGreaterThanOrEqual(ip('10.42.0.100'));
    // ...and the holder must move at its next renewal
    expect(pool.acceptable(mac(1), ip('10.42.0.102'), 2)).toBe(false);
  });

  it('prefers addresses never handed out, then the one whose lease ended longest ago', async () => {
    const { leases } = open();
    const pool = new AddressPool(poolConfig({ rangeEnd: ip('10.42.0.102') }), leases);
    await leases.bind(mac(1), ip('10.42.0.100'), 1_000, null, 0);
    await leases.bind(mac(2), ip('10.42.0.101'), 2_000, null, 0);
    expect(pool.pick(mac(3), undefined, 5_000)).toBe(ip('10.42.0.102'));
    await leases.bind(mac(3), ip('10.42.0.102'), 100_000, null, 5_000);
    expect(pool.pick(mac(4), undefined, 5_000)).toBe(ip('10.42.0.100'));
  });

  it('reports exhaustion instead of reusing a live lease, and recovers when an offer lapses', async () => {
    const { leases } = open();
    const pool = new AddressPool(poolConfig({ rangeEnd: ip('10.42.0.101') }), leases);
    await leases.bind(mac(1), ip('10.42.0.100'), 100_000, null, 0);
    pool.holdOffer(mac(2), ip('10.42.0.101'), 0);
    expect(pool.pick(mac(3), undefined, 10)).toBeUndefined();
    expect(pool.pick(mac(3), undefined, 20)).toBeUndefined(); // cached: no rescan within a second
    expect(pool.pick(mac(3), undefined, OFFER_HOLD_MS + 2_000)).toBe(ip('10.42.0.101'));
  });

  it('sets a declined address aside for everyone until the hold ends', async () => {
    const { leases } = open();
    const pool = new AddressPool(poolConfig({ rangeEnd: ip('10.42.0.100') }), leases);
    await leases.decline(ip('10.42.0.100'), 60_000, 0);
    expect(pool.pick(mac(1), undefined, 1_000)).toBeUndefined();
    expect(pool.pick(mac(1), undefined, 61_000)).toBe(ip('10.42.0.100'));
  });

  it('never hands out the network, broadcast or excluded addresses', () => {
    const { leases } = open();
    const pool = new AddressPool(
      poolConfig({ rangeStart: ip('10.42.0.0'), rangeEnd: ip('10.42.0.2'), excluded: new Set([ip('10.42.0.1')]) }),
      leases,
    );
    expect(pool.pick(mac(1), ip('10.42.0.0'), 0)).toBe(ip('10.42.0.2'));
    pool.holdOffer(mac(1), ip('10.42.0.2'), 0);
    expect(pool.pick(mac(2), ip('10.42.0.1'), 0)).toBeUndefined();
  });

  it('never gives one address to two MACs, whatever the clients do (random DISCOVER/REQUEST/RELEASE/DECLINE and time)', async () => {
    type Op = { kind: 'discover' | 'request' | 'release' | 'decline' | 'wait'; m: number; asked: number; ms: number };
    const op = fc.record({
      kind: fc.constantFrom('discover' as const, 'request' as const, 'release' as const, 'decline' as const, 'wait' as const),
      m: fc.integer({ min: 1, max: 9 }),
      asked: fc.integer({ min: 98, max: 106 }),
      ms: fc.integer({ min: 0, max: 40_000 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 60 }), async (ops: Op[]) => {
        const { leases } = open(':memory:');
        const pool = new AddressPool(
          poolConfig({}, [
            [mac(9), '10.42.0.50'],
            [mac(8), '10.42.0.104'],
          ]),
          leases,
        );
        let now = 0;
        const leaseMs = 30_000;
        const bound = new Map<number, { mac: Mac; until: number }>();
        for (const o of ops) {
          const m = mac(o.m);
          const asked = ip(`10.42.0.${o.asked}`);
          if (o.kind === 'wait') now += o.ms;
          else if (o.kind === 'discover') {
            const a = pool.pick(m, asked, now);
            if (a !== undefined) pool.holdOffer(m, a, now);
          } else if (o.kind === 'request') {
            if (pool.acceptable(m, asked, now)) {
              await leases.bind(m, asked, now + leaseMs, null, now);
              pool.dropOffer(m);
            }
          } else if (o.kind === 'release') {
            const l = leases.byMac(m);
            if (l && l.state === 'bound') await leases.release(l, now);
          } else {
            const l = leases.byMac(m);
            if (l) await leases.decline(l.ip, now + 60_000, now);
          }
          // Invariant: live leases are one per address and one per MAC, and never on someone else's reservation.
          const seenMacs = new Set<Mac>();
          for (const l of leases.all()) {
            if (l.state !== 'bound' || l.expiresAt <= now) continue;
            expect(l.mac).not.toBeNull();
            expect(seenMacs.has(l.mac!)).toBe(false);
            seenMacs.add(l.mac!);
            const r = l.ip === ip('10.42.0.104') ? mac(8) : l.ip === ip('10.42.0.50') ? mac(9) : undefined;
            if (r) expect(l.mac).toBe(r);
            bound.set(l.ip, { mac: l.mac!, until: l.expiresAt });
          }
          // An address bound to one MAC is not acceptable to another while the lease lives.
          for (const [a, b] of bound)
            if (b.until > now)
              for (let k = 1; k <= 9; k++)
                if (mac(k) !== b.mac && leases.byIp(a)?.mac === b.mac && leases.byIp(a)?.state === 'bound')
                  expect(pool.acceptable(mac(k), a, now)).toBe(false);
        }
      }),
      { numRuns: 150 },
    );
  });
});
