/**
 * dispatcher/README.md's keepalived example ("Standby dispatchers: addresses") is what the HA
 * lab runs (test/lab/ha-lab.ts, which test/e2e/failover.test.ts kills the leader in): the two
 * must not drift apart.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { keepalivedConf, leaderCheckScript } from '../../lab/ha-lab.js';
import { ROOT } from '../../lab/paths.js';

const readme = readFileSync(join(ROOT, 'dispatcher/README.md'), 'utf8');
const section = readme.slice(readme.indexOf('## Standby dispatchers: addresses'));
const block = (fence: string) => {
  const start = section.indexOf(`\`\`\`${fence}\n`);
  if (start < 0) return undefined;
  const body = section.slice(start + fence.length + 4);
  return body.slice(0, body.indexOf('```'));
};

describe("the README's keepalived example", () => {
  it('is the configuration the HA lab writes', () => {
    expect(block('keepalived')).toBe(
      keepalivedConf({
        name: 'head-a',
        iface: 'eth1',
        self: '10.42.0.2',
        peers: ['10.42.0.3'],
        vip: '10.42.0.1/24',
        checkScript: '/etc/keepalived/lilcluster-leader.sh',
      }),
    );
  });

  it('checks the leader as the HA lab does', () => {
    expect(block('sh')).toBe(leaderCheckScript());
  });
});
