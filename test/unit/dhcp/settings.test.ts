import { describe, expect, it } from 'vitest';
import { planAddresses } from '../../../dispatcher/src/dhcp/settings.js';
import { intToIp, ipToInt } from '../../../dispatcher/src/dhcp/ipv4.js';
import { DispatcherError } from '../../../dispatcher/src/errors.js';
import type { Mac } from '../../../dispatcher/src/nodes/mac.js';

const dhcp = (over = {}) => ({ mode: 'full' as const, leaseSeconds: 3600, ...over });
const net24 = { address: '10.42.0.1', netmask: '255.255.255.0' };
const range = (p: ReturnType<typeof planAddresses>) => `${intToIp(p.pool.rangeStart)}-${intToIp(p.pool.rangeEnd)}`;
const m = (s: string) => s as Mac;

describe('address plan', () => {
  it.each([
    ['a /24 gets .100-.249', net24, '10.42.0.100-10.42.0.249'],
    ['a /16 gets .100-.249 of the subnet', { address: '10.88.0.1', netmask: '255.255.0.0' }, '10.88.0.100-10.88.0.249'],
    ['a /25 gets its upper half', { address: '192.168.5.129', netmask: '255.255.255.128' }, '192.168.5.192-192.168.5.254'],
  ])('without --range, %s', (_w, net, want) => {
    expect(range(planAddresses(dhcp(), net, []))).toBe(want);
  });

  it('takes --range as given and excludes the dispatcher and router addresses', () => {
    const p = planAddresses(dhcp({ rangeStart: '10.42.0.1', rangeEnd: '10.42.0.20', router: '10.42.0.2' }), net24, []);
    expect(range(p)).toBe('10.42.0.1-10.42.0.20');
    expect([...p.pool.excluded].map(intToIp).sort()).toEqual(['10.42.0.1', '10.42.0.2']);
  });

  it.each([
    ['a range outside the interface subnet', dhcp({ rangeStart: '10.43.0.10', rangeEnd: '10.43.0.20' }), net24, /not inside the node network 10\.42\.0\.0\/24/],
    ['a reversed range', dhcp({ rangeStart: '10.42.0.20', rangeEnd: '10.42.0.10' }), net24, /comes after/],
    ['a subnet with no room', dhcp(), { address: '10.42.0.1', netmask: '255.255.255.254' }, /no room for a range/],
    ['a non-contiguous netmask', dhcp({ netmask: '255.0.255.0' }), net24, /not a netmask/],
  ])('refuses %s', (_w, cfg, net, msg) => {
    expect(() => planAddresses(cfg, net, [])).toThrow(DispatcherError);
    expect(() => planAddresses(cfg, net, [])).toThrow(msg);
  });

  it('turns cluster-file fixed IPs into reservations, and skips unusable ones with a reason', () => {
    const p = planAddresses(dhcp(), net24, [
      { mac: m('52:54:00:00:00:01'), fixedIp: '10.42.0.11' },
      { mac: m('52:54:00:00:00:02'), fixedIp: '10.42.1.11' },
      { mac: m('52:54:00:00:00:03'), fixedIp: '10.42.0.11' },
      { mac: m('52:54:00:00:00:04'), fixedIp: '10.42.0.1' },
      { mac: m('52:54:00:00:00:05'), fixedIp: null },
    ]);
    expect(p.pool.reservationOf(m('52:54:00:00:00:01'))).toBe(ipToInt('10.42.0.11'));
    expect(p.pool.reservedFor(ipToInt('10.42.0.11')!)).toBe('52:54:00:00:00:01');
    expect(p.warnings.map((w) => [w.mac, w.reason])).toEqual([
      ['52:54:00:00:00:02', 'not a host address of the node network'],
      ['52:54:00:00:00:03', 'already reserved for 52:54:00:00:00:01'],
      ['52:54:00:00:00:04', "is the dispatcher's or the router's address"],
    ]);
  });
});
