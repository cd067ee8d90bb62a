/**
 * A boot server of another segment under QEMU. The leader runs in the rack's namespace
 * (10.75.0.1); a boot server (`dispatcher --role boot --leader http://10.75.0.1:8080`) runs in
 * a second namespace with a segment of its own (10.76.0.0/24 on its bridge). The two are
 * routed, not relayed: a /30 veth between the namespaces, the boot server's namespace forwards,
 * and its DHCP gives its segment a router (itself), so the node's agent reaches the leader.
 *
 * One SeaBIOS machine on the boot server's segment PXE-boots through it: DHCP from the boot
 * server, its boot script from the leader (through the boot server), kernel and initrd
 * from the boot server's cache. Its agent says hello to the leader and runs a task. The leader's
 * timeline shows the boot stages the boot server forwarded; its list shows the boot server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildForE2e, PxeLab, type LabMachine } from '../lab/pxe-lab.js';
import type { Iface, LabProcess, Netns } from '../lab/netns.js';
import type { BootServerAdded, BootServerList } from '../../dispatcher/src/api/boot-servers/schemas.js';

const BOOT_MS = 240_000;
const SEGMENT = '10.76.0';

interface StageView {
  stage: string;
  detail: Record<string, unknown> | null;
}

let rack: PxeLab;
let seg: Netns;
let segBridge: Iface;
let bootServer: LabProcess;
let node1: LabMachine;

beforeAll(async () => {
  buildForE2e();
  rack = await PxeLab.create({ area: 'bootsrv', subnet: 75 });
  seg = await rack.lab.namespace('seg');
  segBridge = await rack.lab.bridge(seg, { address: `${SEGMENT}.1/24` });
  await rack.lab.veth({ ns: rack.ns, address: '10.200.75.1/30' }, { ns: seg, address: '10.200.75.2/30' });
  await rack.ns.exec('ip', ['route', 'add', `${SEGMENT}.0/24`, 'via', '10.200.75.2']);
  await seg.exec('ip', ['route', 'add', '10.75.0.0/24', 'via', '10.200.75.1']);
  await seg.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);

  node1 = await rack.machine({ name: 'node1', segment: { ns: seg, bridge: segBridge } });
  await rack.startDispatcher({ cluster: rack.clusterNodes() });
  const added = await rack.json<BootServerAdded>('boot-server', 'add', 'seg76');

  const dataDir = mkdtempSync(join(tmpdir(), 'lc-bootsrv-seg-'));
  writeFileSync(join(dataDir, 'leader.token'), `${added.token}\n`, { mode: 0o600 });
  writeFileSync(join(dataDir, 'boot.yaml'), `dhcp: {router: ${SEGMENT}.1}\n`);
  bootServer = seg.spawn(process.execPath, [
    'dist/bin/dispatcher.mjs',
    '--role',
    'boot',
    '--leader',
    rack.url,
    '--config',
    join(dataDir, 'boot.yaml'),
    '--interface',
    segBridge.name,
    '--dhcp',
    'full',
    '--range',
    `${SEGMENT}.100-${SEGMENT}.199`,
    '--data-dir',
    dataDir,
    // No image of its own: every image byte comes from the leader, through the cache.
    '--image',
    mkdtempSync(join(tmpdir(), 'lc-bootsrv-noimage-')),
    '--images',
    mkdtempSync(join(tmpdir(), 'lc-bootsrv-noimages-')),
    '--pxe-dir',
    'pxe/bin',
    '--heartbeat',
    '2',
  ]);
  await bootServer.waitForOutput(/"msg":"DHCP serving"/, 30_000);
  await bootServer.waitForOutput(/"msg":"dispatcher started"/, 30_000);
  await node1.powerOn();
}, 600_000);

afterAll(async () => {
  if (bootServer) writeFileSync('test/artifacts/bootsrv-boot-server.log', bootServer.output());
  await rack?.cleanup();
});

describe('a boot server on its own segment', () => {
  it('PXE-boots a machine whose agent then works for the leader', async () => {
    const up = await rack.nodeUp('node1', BOOT_MS).catch((err: Error) => {
      throw new Error(`${err.message}\n--- boot server\n${bootServer.output().slice(-4000)}`);
    });
    expect(up.ip).toMatch(new RegExp(`^${SEGMENT.replace(/\./g, '\\.')}\\.1\\d\\d$`));

    const job = (await rack.ok('submit', '--', 'sh', '-c', 'echo hello from $(hostname)')).trim();
    const done = await rack.until(
      'the task done',
      async () => (await rack.json<{ tasks: { id: number; state: string }[] }>('tasks', job)).tasks.find((t) => t.state === 'done'),
      60_000,
    );
    const task = await rack.json<{ result: { mac: string | null; exitCode: number | null; stdout: string } | null }>(
      'task',
      String(done.id),
    );
    expect(task.result).toMatchObject({ mac: node1.mac.toLowerCase(), exitCode: 0 });
    expect(task.result!.stdout).toContain('hello from');

    // The leader's timeline has the whole boot: DHCP, TFTP and downloads from the boot server, then the hello.
    const boots = await rack.json<{ boots: { stages: StageView[] }[] }>('boot-log', 'node1');
    const stages = boots.boots.at(-1)!.stages;
    const via = (stage: string) => stages.find((s) => s.stage === stage)?.detail?.bootServer;
    // (QEMU's NIC ROM is iPXE already: it goes from DHCP straight to the boot script, no TFTP.)
    for (const stage of ['dhcp.ack', 'http.kernel', 'http.initrd']) expect(via(stage), stage).toBe('seg76');
    expect(via('http.script')).toBe('seg76');
    expect(stages.at(-1)!.stage).toBe('agent.hello');

    const list = await rack.json<BootServerList>('boot-servers');
    expect(list.bootServers).toHaveLength(1);
    expect(list.bootServers[0]).toMatchObject({ name: 'seg76', state: 'online', address: '10.200.75.2' });
    expect(list.bootServers[0]!.report?.cache.fills).toBeGreaterThanOrEqual(2);
    expect(list.bootServers[0]!.report?.cache.refused).toBe(0);
  });
});
