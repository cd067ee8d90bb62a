/**
 * ProxyDHCP on the host that runs the site's DHCP server: dnsmasq hands out the addresses on
 * the dispatcher's own interface (bind-interfaces, so port 67 can be shared) and the dispatcher
 * runs `--dhcp proxy` beside it. A bare SeaBIOS machine PXE-boots: its address from dnsmasq,
 * its boot file and script from the dispatcher, and its agent says hello.
 *
 * Everything runs in a network namespace of its own: a bridge with the server's address and
 * the machine's tap. Nothing touches the host's interfaces.
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
const SERVER = '10.64.0.1';
const API = `http://${SERVER}:8080`;
const MAC = '52:54:00:64:00:01';
/** TCG on a busy 2-core CI machine. */
const BOOT_TIMEOUT_MS = 420_000;

interface NodeView {
  name: string;
  mac: string;
  state: string;
  ip: string | null;
}

let lab: Lab;
let srv: Netns;
let dnsmasq: LabProcess;
let dispatcher: LabProcess;
let dataDir: string;
let machine: QemuMachine | undefined;

async function ctl<T>(...args: string[]): Promise<T> {
  const r = await srv.exec(process.execPath, ['dist/bin/dispatcherctl.mjs', '--url', API, '--data-dir', dataDir, '--json', ...args], {
    timeoutMs: 60_000,
  });
  return JSON.parse(r.stdout) as T;
}

async function node(): Promise<NodeView | undefined> {
  const out = await ctl<{ nodes: NodeView[] } | NodeView[]>('nodes');
  return (Array.isArray(out) ? out : out.nodes).find((n) => n.mac === MAC);
}

beforeAll(async () => {
  execFileSync('make', ['-s', 'build', 'pxe', 'image'], { stdio: 'inherit' });
  mkdirSync(ARTIFACTS, { recursive: true });
  lab = await createLab('pxs');
  srv = await lab.namespace('srv');
  const bridge = await lab.bridge(srv, { address: `${SERVER}/24` });
  dataDir = mkdtempSync(join(tmpdir(), 'lc-proxy-e2e-'));
  dnsmasq = srv.spawn('dnsmasq', [
    '--no-daemon',
    '--conf-file=/dev/null',
    '--port=0',
    `--interface=${bridge.name}`,
    '--bind-interfaces',
    '--user=root',
    '--dhcp-range=10.64.0.100,10.64.0.150,255.255.255.0,600',
    `--dhcp-leasefile=${join(dataDir, 'dnsmasq.leases')}`,
    '--log-dhcp',
    '--log-facility=-',
  ]);
  await dnsmasq.waitForOutput(/DHCP, IP range 10\.64\.0\.100/, 10_000);
  dispatcher = srv.spawn(process.execPath, [
    'dist/bin/dispatcher.mjs',
    '--interface',
    bridge.name,
    '--dhcp',
    'proxy',
    '--data-dir',
    dataDir,
    '--image',
    'dist/image',
    '--pxe-dir',
    'pxe/bin',
    '--heartbeat',
    '2',
  ]);
  await dispatcher.waitForOutput(/dispatcher started/, 60_000);
  const tap = await lab.tap(srv, { bridge });
  machine = await QemuMachine.start({
    name: 'proxy-bios',
    firmware: 'bios',
    boot: { kind: 'pxe' },
    nics: [{ net: { kind: 'tap', ifname: tap.name }, mac: MAC }],
    memoryMiB: 1024,
    consoleLog: join(ARTIFACTS, 'proxy-same-host.console.log'),
    netns: srv.name,
  });
}, 900_000);

afterAll(async () => {
  await machine?.stop().catch(() => undefined);
  if (dispatcher) writeFileSync(join(ARTIFACTS, 'proxy-same-host-dispatcher.log'), dispatcher.output());
  if (dnsmasq) writeFileSync(join(ARTIFACTS, 'proxy-same-host-dnsmasq.log'), dnsmasq.output());
  await lab?.cleanup();
});

describe('ProxyDHCP beside dnsmasq on the same host', () => {
  it('a SeaBIOS machine gets its address from dnsmasq, boots from the dispatcher, and its agent says hello', async () => {
    expect(dispatcher.output()).toContain('another DHCP server holds port 67');
    const deadline = Date.now() + BOOT_TIMEOUT_MS;
    let last: NodeView | undefined;
    while (Date.now() < deadline) {
      last = await node();
      if (last && (last.state === 'ready' || last.state === 'busy')) break;
      await sleep(2000);
    }
    if (!last || (last.state !== 'ready' && last.state !== 'busy'))
      throw new Error(
        `agent not connected in ${BOOT_TIMEOUT_MS} ms; last seen ${JSON.stringify(last)}\n${machine?.console().slice(-3000)}\n--- dispatcher\n${dispatcher.output().slice(-4000)}`,
      );
    expect(last.ip).toMatch(/^10\.64\.0\.1([0-4]\d|50)$/);
    expect(dnsmasq.output()).toMatch(new RegExp(`DHCPACK\\(\\S+\\) 10\\.64\\.0\\.\\d+ ${MAC}`));

    const out = await ctl<{ boots: { stages: { stage: string }[] }[] }>('boot-log', last.name, '--boots', '1');
    const names = out.boots.flatMap((b) => b.stages.map((s) => s.stage));
    for (const stage of ['proxy.offer', 'http.script', 'http.kernel', 'http.initrd', 'agent.hello']) expect(names).toContain(stage);
  });
});
