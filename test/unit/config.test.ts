/** The dispatcher's configuration: layers merge, and a bad value is refused naming its field. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_BOOT_HTTP_MAX_TRANSFERS, DEFAULT_LEASE_CACHE_THRESHOLD, resolveConfig } from '../../dispatcher/src/config.js';

const base = { interface: 'lab0' };

describe('resolveConfig', () => {
  it('defaults lease caching to Kea’s threshold and lets a later layer change it, 0 included', () => {
    expect(resolveConfig(base).dhcp.leaseCacheThreshold).toBe(DEFAULT_LEASE_CACHE_THRESHOLD);
    expect(resolveConfig(base, { dhcp: { leaseCacheThreshold: 0.5 } }, { dhcp: { leaseCacheThreshold: 0 } }).dhcp).toMatchObject({
      leaseCacheThreshold: 0,
      leaseSeconds: 3600,
    });
  });

  it('refuses a cache threshold outside [0, 1), a short lease and an unknown key, naming the field', () => {
    for (const bad of [-0.1, 1, 2, '0.5'])
      expect(() => resolveConfig(base, { dhcp: { leaseCacheThreshold: bad as number } })).toThrow(
        /dhcp\.leaseCacheThreshold: must be a number from 0/,
      );
    expect(() => resolveConfig(base, { dhcp: { leaseSeconds: 30 } })).toThrow(/dhcp\.leaseSeconds: must be an integer ≥ 60/);
    expect(() => resolveConfig(base, { dhcp: { leaseCache: 0.1 } as never })).toThrow(/unknown configuration key "dhcp\.leaseCache"/);
  });

  it('takes a store and peers, and refuses peers that are not http URLs, naming them', () => {
    const c = resolveConfig(base, { store: 'postgres://u:p@db/lc', peers: ['http://10.42.0.2:8080', 'https://b:8443'] });
    expect(c).toMatchObject({ store: 'postgres://u:p@db/lc', peers: ['http://10.42.0.2:8080', 'https://b:8443'] });
    expect(() => resolveConfig(base, { peers: ['ftp://x'] })).toThrow(/peers: "ftp:\/\/x" is not an http:\/\/ URL/);
    expect(() => resolveConfig(base, { peers: 'http://a:8080' as never })).toThrow(/peers: a list of URLs/);
    expect(() => resolveConfig(base, { store: 5 as never })).toThrow(/store: a postgres:\/\/ connection string/);
  });

  it('caps boot downloads at bootHttpMaxTransfers, and refuses a cap that is not a whole number ≥ 1', () => {
    expect(resolveConfig(base).bootHttpMaxTransfers).toBe(DEFAULT_BOOT_HTTP_MAX_TRANSFERS);
    expect(resolveConfig(base, { bootHttpMaxTransfers: 64 }).bootHttpMaxTransfers).toBe(64);
    for (const bad of [0, 1.5, -3, '64'])
      expect(() => resolveConfig(base, { bootHttpMaxTransfers: bad as number })).toThrow(/bootHttpMaxTransfers: must be an integer ≥ 1/);
  });
});
