/**
 * PXE end to end: bare QEMU machines on a tap that only the dispatcher serves boot the RAM
 * image from the network and their agents say hello.
 *
 *   (1) SeaBIOS with QEMU's iPXE NIC ROM: DHCP → boot.ipxe over HTTP → kernel + initrd.
 *   (2) OVMF UEFI with no NIC ROM: the firmware's own PXE client does DHCP and TFTP of
 *       ipxe.efi, then iPXE does DHCP again and HTTP.
 *
 * The test asserts on the dispatcher's own records (node registry, boot timeline) read through
 * dispatcherctl, not on console text. Then `dispatcherctl reboot node3 --firmware` reboots the
 * BIOS machine through its agent and its firmware (a plain reboot would kexec: images.test.ts):
 * it PXE-boots again and comes back as node3 with a higher boot count.
 *
 * Everything runs in a network namespace of its own: a bridge with the dispatcher's address,
 * one tap per machine. Nothing touches the host's interfaces.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLab, type Lab, type LabProcess, type Netns } from '../lab/netns.js';
import { QemuMachine } from '../lab/qemu.js';

const ARTIFACTS = 'test/artifacts';
const SERVER = '10.61.0.1';
const API = `http://${SERVER}:8080`;
const BIOS_MAC = '52:54:00:61:00:03';
const UEFI_MAC = '52:54:00:61:00:07';
/** TCG on a busy 2-core CI machine: a UEFI PXE boot alone took ~60 s here when idle. */
const BOOT_TIMEOUT_MS = 420_000;

interface NodeView {
  name: string;
  mac: string;
  state: string;
  bootCount: number;
  ip: string | null;
  agentVersion: string | null;
}
interface StageView {
  boot: number;
  stage: string;
  ts: number;
  detail: Record<string, unknown> | null;
}
interface EventView {
  kind: string;
  node: string | null;
  message: string;
}

let lab: Lab;
let srv: Netns;
let dispatcher: LabProcess;
let dataDir: string;
const machines: QemuMachine[] = [];

/** dispatcherctl inside the namespace, JSON output parsed. */
async function ctl<T>(...args: string[]): Promise<T> {
  const r = await srv.exec(process.execPath, ['dist/bin/dispatcherctl.mjs', '--url', API, '--data-dir', dataDir, '--json', ...args], {
    timeoutMs: 60_000,
  });
  return JSON.parse(r.stdout) as T;
}

async function nodes(): Promise<NodeView[]> {
  const out = await ctl<{ nodes: NodeView[] } | NodeView[]>('nodes');
  return Array.isArray(out) ? out : out.nodes;
}

async function waitForNode(mac: string, ok: (n: NodeView) => boolean, what: string, timeoutMs = BOOT_TIMEOUT_MS): Promise<NodeView> {
  const deadline = Date.now() + timeoutMs;
  let last: NodeView | undefined;
  while (Date.now() < deadline) {
    last = (await nodes()).find((n) => n.mac === mac);
    if (last && ok(last)) return last;
    await sleep(2000);
  }
  const consoles = machines.map((m) => `--- ${m.name}\n${m.console().slice(-3000)}`).join('\n');
  throw new Error(
    `${mac}: ${what} not reached in ${timeoutMs} ms; last seen ${JSON.stringify(last)}\n${consoles}\n--- dispatcher\n${dispatcher.output().slice(-4000)}`,
  );
}

/** Every stage of the node's recent boots, flattened (GET /api/v1/boots through dispatcherctl). */
async function bootLog(node: string): Promise<StageView[]> {
  const out = await ctl<{ boots: { boot: number; stages: Omit<StageView, 'boot'>[] }[] }>('boot-log', node, '--boots', '5');
  return out.boots.flatMap((b) => b.stages.map((s) => ({ ...s, boot: b.boot })));
}

async function startMachine(name: string, firmware: 'bios' | 'uefi', mac: string): Promise<QemuMachine> {
  const tap = await lab.tap(srv, { bridge: bridgeIface });
  const vm = await QemuMachine.start({
    name,
    firmware,
    boot: { kind: 'pxe' },
    nics: [{ net: { kind: 'tap', ifname: tap.name }, mac }],
    memoryMiB: 1024,
    consoleLog: join(ARTIFACTS, `pxe-${name}.console.log`),
    netns: srv.name,
  });
  machines.push(vm);
  return vm;
}

let bridgeIface: Awaited<ReturnType<Lab['bridge']>>;

beforeAll(async () => {
  execFileSync('make', ['-s', 'build', 'pxe', 'image'], { stdio: 'inherit' });
  mkdirSync(ARTIFACTS, { recursive: true });
  lab = await createLab('pxe');
  srv = await lab.namespace('srv');
  bridgeIface = await lab.bridge(srv, { address: `${SERVER}/24` });
  dataDir = mkdtempSync(join(tmpdir(), 'lc-pxe-e2e-'));
  const clusterFile = join(dataDir, 'cluster.yaml');
  // node3 by name, as in `dispatcherctl reboot node3`; the UEFI machine is named on first sight.
  writeFileSync(clusterFile, `enrollment: auto\nnodes:\n  - name: node3\n    mac: "${BIOS_MAC}"\n    labels: [bios]\n`);
  dispatcher = srv.spawn(process.execPath, [
    'dist/bin/dispatcher.mjs',
    '--interface',
    bridgeIface.name,
    '--dhcp',
    'full',
    '--range',
    '10.61.0.100-10.61.0.199',
    '--data-dir',
    dataDir,
    '--image',
    'dist/image',
    '--pxe-dir',
    'pxe/bin',
    '--cluster',
    clusterFile,
    '--heartbeat',
    '2',
  ]);
  await dispatcher.waitForOutput(/dispatcher started/, 60_000);
  // Both machines boot at once: the test then waits for each.
  await startMachine('bios', 'bios', BIOS_MAC);
  await startMachine('uefi', 'uefi', UEFI_MAC);
}, 900_000);

afterAll(async () => {
  for (const m of machines) await m.stop().catch(() => undefined);
  if (dispatcher) writeFileSync(join(ARTIFACTS, 'pxe-dispatcher.log'), dispatcher.output());
  await lab?.cleanup();
});

describe('PXE boot of bare QEMU machines', () => {
  it('SeaBIOS + iPXE ROM: DHCP, boot script, kernel and initrd over HTTP, agent hello', async () => {
    const node = await waitForNode(BIOS_MAC, (n) => n.state === 'ready' || n.state === 'busy', 'agent connected');
    expect(node.name).toBe('node3');
    expect(node.ip).toMatch(/^10\.61\.0\.1\d\d$/);
    expect(node.agentVersion).toBeTruthy();

    const stages = await bootLog('node3');
    const current = stages.filter((s) => s.boot === Math.max(...stages.map((x) => x.boot)));
    const names = current.map((s) => s.stage);
    for (const stage of ['dhcp.ack', 'http.script', 'http.kernel', 'http.initrd', 'agent.hello']) expect(names).toContain(stage);
    // In time order: the agent's hello comes after the initrd was served.
    const at = (stage: string) => current.find((s) => s.stage === stage)!.ts;
    expect(at('http.script')).toBeLessThanOrEqual(at('http.kernel'));
    expect(at('http.initrd')).toBeLessThanOrEqual(at('agent.hello'));
    const initrd = current.find((s) => s.stage === 'http.initrd')!;
    expect(Number(initrd.detail?.bytes)).toBeGreaterThan(1_000_000);
  });

  it('OVMF UEFI native PXE: TFTP of ipxe.efi, then iPXE over HTTP, agent hello', async () => {
    const node = await waitForNode(UEFI_MAC, (n) => n.state === 'ready' || n.state === 'busy', 'agent connected');
    expect(node.name).toMatch(/^node\d+$/);
    const stages = await bootLog(node.name);
    const names = stages.map((s) => s.stage);
    const tftp = stages.find((s) => s.stage === 'tftp.sent');
    expect(tftp?.detail?.file).toBe('ipxe.efi');
    expect(Number(tftp?.detail?.bytes)).toBeGreaterThan(100_000);
    for (const stage of ['dhcp.ack', 'http.script', 'http.kernel', 'http.initrd', 'agent.hello']) expect(names).toContain(stage);
  });

  it('`dispatcherctl reboot node3 --firmware` reboots the machine, which PXE-boots again and comes back as node3', async () => {
    const before = await waitForNode(BIOS_MAC, (n) => n.state === 'ready' || n.state === 'busy', 'agent connected');
    const r = await srv.exec(
      process.execPath,
      ['dist/bin/dispatcherctl.mjs', '--url', API, '--data-dir', dataDir, 'reboot', 'node3', '--firmware'],
      {
        timeoutMs: 60_000,
      },
    );
    expect(r.code).toBe(0);
    const after = await waitForNode(
      BIOS_MAC,
      (n) => n.bootCount > before.bootCount && (n.state === 'ready' || n.state === 'busy'),
      'a new boot with its agent connected',
    );
    expect(after.name).toBe('node3');
    const stages = await bootLog('node3');
    const lastBoot = Math.max(...stages.map((s) => s.boot));
    expect(stages.filter((s) => s.boot === lastBoot).map((s) => s.stage)).toEqual(expect.arrayContaining(['http.script', 'agent.hello']));
    // The reboot went through the agent (an acknowledged command), recorded as an event.
    const events = await ctl<{ events: EventView[] } | EventView[]>('events', '--node', 'node3', '--limit', '500');
    const list = Array.isArray(events) ? events : events.events;
    expect(list.some((e) => e.kind.startsWith('node.command') && /reboot/.test(e.message))).toBe(true);
  });
});
