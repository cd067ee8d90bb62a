import { describe, expect, it } from 'vitest';
import { openStore } from '../../../dispatcher/src/store/database.js';
import { GroupCommit } from '../../../dispatcher/src/store/group-commit.js';
import { allMigrations } from '../../../dispatcher/src/store/migrations.js';
import { EventLog } from '../../../dispatcher/src/events/event-log.js';
import { NodeRegistry } from '../../../dispatcher/src/nodes/registry.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';
import { ClientMacLookup, parseProcNetArp, plainIPv4 } from '../../../dispatcher/src/boot/client-mac.js';

const mac = (s: string) => parseMac(s) as Mac;
const ARP = `IP address       HW type     Flags       HW address            Mask     Device
10.42.0.101      0x1         0x2         52:54:00:00:00:01     *        br0
10.42.0.102      0x1         0x0         00:00:00:00:00:00     *        br0
10.42.0.103      0x1         0x6         52:54:00:00:00:03     *        br0
10.42.0.104      0x1         0x2         00:00:00:00:00:00     *        br0
garbage
`;

function registry() {
  const db = openStore({ dataDir: ':memory:', migrations: allMigrations });
  const commits = new GroupCommit(db);
  return new NodeRegistry(db, commits, new EventLog(db, commits), { enrollment: 'auto', nodes: [] });
}

describe('client IP → MAC', () => {
  it('parses complete entries of /proc/net/arp and skips incomplete or zero ones', () => {
    expect([...parseProcNetArp(ARP)]).toEqual([
      ['10.42.0.101', '52:54:00:00:00:01'],
      ['10.42.0.103', '52:54:00:00:00:03'],
    ]);
    expect(parseProcNetArp('').size).toBe(0);
  });

  it('unwraps IPv4-mapped IPv6 peers', () => {
    expect(plainIPv4('::ffff:10.0.0.5')).toBe('10.0.0.5');
    expect(plainIPv4('10.0.0.5')).toBe('10.0.0.5');
  });

  it('prefers the address the DHCP server gave a node, and follows it when it changes', () => {
    const nodes = registry();
    nodes.admit(mac('52:54:00:00:00:09'));
    nodes.setIp(mac('52:54:00:00:00:09'), '10.42.0.101');
    let t = 0;
    const lookup = new ClientMacLookup(
      nodes,
      () => ARP,
      () => (t += 1000),
    );
    expect(lookup.macOf('10.42.0.101')).toBe('52:54:00:00:00:09');
    nodes.setIp(mac('52:54:00:00:00:09'), '10.42.0.150');
    expect(lookup.macOf('::ffff:10.42.0.150')).toBe('52:54:00:00:00:09');
    // the old address now falls through to the neighbour table
    expect(lookup.macOf('10.42.0.101')).toBe('52:54:00:00:00:01');
  });

  it('falls back to the neighbour table, and to nothing', () => {
    let reads = 0;
    let t = 0;
    const lookup = new ClientMacLookup(
      registry(),
      () => {
        reads++;
        return ARP;
      },
      () => (t += 1000),
    );
    expect(lookup.macOf('10.42.0.103')).toBe('52:54:00:00:00:03');
    expect(lookup.macOf('10.42.0.102')).toBeUndefined();
    expect(lookup.macOf('127.0.0.1')).toBeUndefined();
    expect(reads).toBeGreaterThan(0);
  });

  it('reads the neighbour table at most 20 times a second under a flood of unknown addresses', () => {
    let reads = 0;
    const lookup = new ClientMacLookup(
      registry(),
      () => {
        reads++;
        return ARP;
      },
      () => 5000,
    );
    for (let i = 0; i < 1000; i++) lookup.macOf(`10.9.${i >> 8}.${i & 255}`);
    expect(reads).toBe(1);
  });

  it('survives an unreadable neighbour table', () => {
    const lookup = new ClientMacLookup(registry(), () => {
      throw new Error('EACCES');
    });
    expect(lookup.macOf('10.0.0.1')).toBeUndefined();
  });
});
