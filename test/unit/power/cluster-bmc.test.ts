/** The cluster file's `bmc` (per node) and `bmcs` (per label group): parsed strictly, password files checked at load. */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadClusterFile, parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';

const dir = mkdtempSync(join(tmpdir(), 'lc-cluster-bmc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const node = (bmc: string) => `nodes:\n  - name: node1\n    mac: 52:54:00:00:00:01\n    bmc: ${bmc}\n`;

describe('cluster file: bmc', () => {
  it('per node and per label group', () => {
    const c = parseClusterFile(
      node('{type: redfish, address: "10.1.0.1:8443", user: root, passwordFile: /etc/lc/n1.pw, ca: /etc/lc/ca.pem}') +
        'bmcs:\n  - {labels: [rack1], type: ipmi, address: "10.2.0.{n}", user: admin, passwordFile: /etc/lc/rack1.pw}\n',
    );
    expect(c.nodes[0]!.bmc).toEqual({
      type: 'redfish',
      address: '10.1.0.1:8443',
      user: 'root',
      passwordFile: '/etc/lc/n1.pw',
      ca: '/etc/lc/ca.pem',
    });
    expect(c.bmcs).toEqual([{ labels: ['rack1'], type: 'ipmi', address: '10.2.0.{n}', user: 'admin', passwordFile: '/etc/lc/rack1.pw' }]);
  });

  it.each([
    ['{type: amt, address: a, user: u, passwordFile: /p}', 'nodes[0].bmc.type: must be ipmi or redfish'],
    ['{type: ipmi, address: "a b", user: u, passwordFile: /p}', 'nodes[0].bmc.address: must be host or host:port'],
    ['{type: ipmi, address: "10.0.0.{n}", user: u, passwordFile: /p}', 'nodes[0].bmc.address: {n} and {name} are for bmcs: groups'],
    ['{type: ipmi, address: "a:70000", user: u, passwordFile: /p}', 'nodes[0].bmc.address: port must be 1 to 65535'],
    ['{type: ipmi, address: a, user: u, passwordFile: rel/p}', 'nodes[0].bmc.passwordFile: must be an absolute path'],
    ['{type: ipmi, address: a, user: u, password: hunter2, passwordFile: /p}', 'nodes[0].bmc.password: unknown field'],
    [
      '{type: ipmi, address: a, user: u, passwordFile: /p, verify: false}',
      'nodes[0].bmc.verify: only for redfish (IPMI has no certificates)',
    ],
    ['{type: redfish, address: a, user: u, passwordFile: /p, verify: "no"}', 'nodes[0].bmc.verify: must be true or false'],
    ['{type: redfish, address: a, user: "", passwordFile: /p}', 'nodes[0].bmc.user: must be a user name'],
  ])('refuses %s naming the field', (bmc, why) => {
    expect(() => parseClusterFile(node(bmc))).toThrow(why);
  });

  it('refuses a group without labels or with other braces', () => {
    expect(() => parseClusterFile('bmcs:\n  - {type: ipmi, address: a, user: u, passwordFile: /p}\n')).toThrow(
      'bmcs[0].labels: must be a list of labels',
    );
    expect(() => parseClusterFile('bmcs:\n  - {labels: [x], type: ipmi, address: "{x}", user: u, passwordFile: /p}\n')).toThrow(
      'bmcs[0].address: only {n} and {name} may be in braces',
    );
  });

  it('at load, refuses a password file others can read, or a missing one, naming field and file', () => {
    const pw = join(dir, 'open.pw');
    writeFileSync(pw, 'x\n', { mode: 0o644 });
    const file = join(dir, 'cluster.yaml');
    writeFileSync(file, node(`{type: ipmi, address: a, user: u, passwordFile: ${pw}}`));
    expect(() => loadClusterFile(file)).toThrow(`nodes[0].bmc.passwordFile: ${pw} is readable or writable by group or others (mode 0644)`);
    writeFileSync(file, `bmcs:\n  - {labels: [r], type: ipmi, address: a, user: u, passwordFile: ${dir}/none.pw}\n`);
    expect(() => loadClusterFile(file)).toThrow(`bmcs[0].passwordFile: cannot read ${dir}/none.pw: ENOENT`);
    const ok = join(dir, 'ok.pw');
    writeFileSync(ok, 'x\n', { mode: 0o400 });
    writeFileSync(file, node(`{type: ipmi, address: a, user: u, passwordFile: ${ok}}`));
    expect(loadClusterFile(file).nodes[0]!.bmc!.passwordFile).toBe(ok);
  });
});
