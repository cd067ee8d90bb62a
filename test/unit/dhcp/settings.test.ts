import { describe, expect, it } from 'vitest';
import { planAddresses } from '../../../dispatcher/src/dhcp/settings.js';
import { intToIp, ipToInt } from '../../../dispatcher/src/dhcp/ipv4.js';
import { DispatcherError } from '../../../dispatcher/src/errors.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const dhcp = (over = {}) => ({ mode: 'full' as const, leaseSeconds: 3600, leaseCacheThreshold: 0.25, ...over });
const net24 = { address: '10.42.0.1', netmask: '255.255.255.0' };
const range = (p: ReturnType<typeof planAddresses>) => `${intToIp(p.pool.rangeStart)}-${intToIp(p.pool.rangeEnd)}`;
const m = (s: string) => s as Mac;
const src = (nodes: { mac: Mac; fixedIp: string | null }[], now = () => 0) => ({ list: () => nodes, now });

describe('address plan', () => {
  it.each([
    ['a /24 gets .100-.249', net24, '10.42.0.100-10.42.0.249'],
    ['a /16 gets .100-.249 of the subnet', { address: '10.88.0.1', netmask: '255.255.0.0' }, '10.88.0.100-10.88.0.249'],
    ['a /25 gets its upper half', { address: '192.168.5.129', netmask: '255.255.255.128' }, '192.168.5.192-192.168.5.254'],
  ])('without --range, %s', (_w, net, want) => {
    expect(range(planAddresses(dhcp(), net, src([])))).toBe(want);
  });

  it('takes --range as given and excludes the dispatcher and router addresses', () => {
    const p = planAddresses(dhcp({ rangeStart: '10.42.0.1', rangeEnd: '10.42.0.20', router: '10.42.0.2' }), net24, src([]));
    expect(range(p)).toBe('10.42.0.1-10.42.0.20');
    expect([...p.pool.excluded].map(intToIp).sort()).toEqual(['10.42.0.1', '10.42.0.2']);
  });

  it.each([
    [
      'a range outside the interface subnet',
      dhcp({ rangeStart: '10.43.0.10', rangeEnd: '10.43.0.20' }),
      net24,
      /not inside the node network 10\.42\.0\.0\/24/,
    ],
    ['a reversed range', dhcp({ rangeStart: '10.42.0.20', rangeEnd: '10.42.0.10' }), net24, /comes after/],
    ['a subnet with no room', dhcp(), { address: '10.42.0.1', netmask: '255.255.255.254' }, /no room for a range/],
    ['a non-contiguous netmask', dhcp({ netmask: '255.0.255.0' }), net24, /not a netmask/],
  ])('refuses %s', (_w, cfg, net, msg) => {
    expect(() => planAddresses(cfg, net, src([]))).toThrow(DispatcherError);
    expect(() => planAddresses(cfg, net, src([]))).toThrow(msg);
  });

  it('turns cluster-file fixed IPs into reservations, and skips unusable ones with a reason', () => {
    const p = planAddresses(
      dhcp(),
      net24,
      src([
        { mac: m('52:54:00:00:00:01'), fixedIp: '10.42.0.11' },
        { mac: m('52:54:00:00:00:02'), fixedIp: '10.42.1.11' },
        { mac: m('52:54:00:00:00:03'), fixedIp: '10.42.0.11' },
        { mac: m('52:54:00:00:00:04'), fixedIp: '10.42.0.1' },
        { mac: m('52:54:00:00:00:05'), fixedIp: null },
      ]),
    );
    expect(p.pool.reservationOf(m('52:54:00:00:00:01'))).toBe(ipToInt('10.42.0.11'));
    expect(p.pool.reservedFor(ipToInt('10.42.0.11')!)).toBe('52:54:00:00:00:01');
    expect(p.reservations.warnings().map((w) => [w.mac, w.reason])).toEqual([
      ['52:54:00:00:00:02', 'not a host address of the node network'],
      ['52:54:00:00:00:03', 'already reserved for 52:54:00:00:00:01'],
      ['52:54:00:00:00:04', "is the dispatcher's or the router's address"],
    ]);
  });

  it('follows reservations changed at run time (PATCH /api/v1/nodes) within a second, and reports each bad one once', () => {
    let t = 0;
    const nodes = [{ mac: m('52:54:00:00:00:01'), fixedIp: '10.42.0.11' as string | null }];
    const p = planAddresses(
      dhcp(),
      net24,
      src(nodes, () => t),
    );
    const seen: string[] = [];
    p.reservations.onWarning = (w) => seen.push(w.ip);
    expect(p.pool.reservationOf(m('52:54:00:00:00:01'))).toBe(ipToInt('10.42.0.11'));
    nodes[0]!.fixedIp = '10.42.0.12';
    nodes.push({ mac: m('52:54:00:00:00:02'), fixedIp: '10.99.0.1' });
    t = 500;
    expect(p.pool.reservationOf(m('52:54:00:00:00:01'))).toBe(ipToInt('10.42.0.11')); // cached
    t = 1_000;
    expect(p.pool.reservationOf(m('52:54:00:00:00:01'))).toBe(ipToInt('10.42.0.12'));
    expect(p.pool.reservedFor(ipToInt('10.42.0.11')!)).toBeUndefined();
    t = 2_000;
    p.pool.reservedFor(1);
    expect(seen).toEqual(['10.99.0.1']);
  });
});
