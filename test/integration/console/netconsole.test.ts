/**
 * The netconsole receiver of the real dispatcher process, in a namespace: datagrams sent
 * from another namespace are filed under the node whose address sent them, shown by the API
 * and `dispatcherctl console`, kept across a restart; strangers, oversized datagrams and a
 * flood are bounded. Needs root.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLab, type Lab, type Netns } from '../../lab/netns.js';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { CTL_BIN } from '../../lab/paths.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConsoleReply } from '../../../dispatcher/src/api/console/schemas.js';
import { NETCONSOLE_BURST_LINES, NETCONSOLE_PORT } from '../../../dispatcher/src/console/netconsole.js';

const SERVER = '10.66.0.1';
const NODE_IP = '10.66.0.11';
const STRANGER_IP = '10.66.0.99';
const NODE_MAC = '52:54:00:66:00:11';

let lab: Lab;
let srv: Netns;
let cli: Netns;
let d: DispatcherProcess;
let dataDir: string;
let srvIf: string;

/** Sends datagrams from `from` (an address of the client namespace) to the receiver. */
async function send(from: string, datagrams: string[], opts: { repeat?: number } = {}): Promise<void> {
  const script = `
    const s = require('node:dgram').createSocket('udp4');
    const msgs = JSON.parse(process.argv[1]).map((m) => Buffer.from(m));
    const repeat = Number(process.argv[2]);
    s.bind({ address: ${JSON.stringify(from)}, port: 0 }, async () => {
      for (let r = 0; r < repeat; r++)
        for (const m of msgs) await new Promise((ok, ko) => s.send(m, ${NETCONSOLE_PORT}, ${JSON.stringify(SERVER)}, (e) => (e ? ko(e) : ok())));
      s.close();
    });`;
  await cli.exec(process.execPath, ['-e', script, JSON.stringify(datagrams), String(opts.repeat ?? 1)]);
}

/** Polls an async probe until it gives a value. */
async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** dispatcherctl, run where the dispatcher is (its address is reachable only in its namespace). */
const ctl = (...args: string[]) =>
  srv.exec(process.execPath, [CTL_BIN, '--url', d.url, '--data-dir', d.dataDir, ...args], { allowFailure: true });

async function consoleOf(...args: string[]): Promise<ConsoleReply> {
  const r = await ctl('--json', 'console', 'node1', '--lines', '10000', ...args);
  if (r.code !== 0) throw new Error(`dispatcherctl console: ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as ConsoleReply;
}

async function start(): Promise<DispatcherProcess> {
  return startDispatcher({
    ns: srv,
    ...(dataDir ? { dataDir } : {}),
    args: ['--interface', srvIf, '--dhcp', 'off'],
    cluster: `nodes:\n  - {name: node1, mac: "${NODE_MAC}"}\n`,
    waitFor: /netconsole listening/,
  });
}

beforeAll(async () => {
  lab = await createLab('console');
  srv = await lab.namespace('srv');
  cli = await lab.namespace('cli');
  const [s0, c0] = await lab.veth({ ns: srv, address: `${SERVER}/24` }, { ns: cli, address: `${NODE_IP}/24`, mac: NODE_MAC });
  await cli.addAddress(c0.name, `${STRANGER_IP}/24`);
  srvIf = s0.name;
  d = await start();
  dataDir = d.dataDir;
}, 60_000);

afterAll(async () => {
  await d?.stop();
  await lab?.cleanup();
});

describe('netconsole receiver', () => {
  it("files a node's kernel lines under it; `dispatcherctl console` shows them, --follow streams new ones", async () => {
    await send(NODE_IP, ['[   42.000001] sysrq: Trigger a crash\n', '[   42.000002] Kernel panic - not syncing: sysrq triggered crash\n']);
    const reply = await until('the lines stored', async () => {
      const c = await consoleOf('--kernel');
      return c.lines.length >= 2 ? c : undefined;
    });
    expect(reply.node).toBe('node1');
    expect(reply.lines.map((l) => l.text)).toEqual([
      '[   42.000001] sysrq: Trigger a crash',
      '[   42.000002] Kernel panic - not syncing: sysrq triggered crash',
    ]);
    expect(reply.lines.every((l) => l.source === 'kernel')).toBe(true);

    const shown = await ctl('console', 'node1', '--kernel');
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/kernel {2}\[ {3}42\.000002\] Kernel panic - not syncing/);
    const unknown = await ctl('console', 'nosuchnode');
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/no node named "nosuchnode"/);

    const follow = srv.spawn(process.execPath, [
      CTL_BIN,
      '--url',
      d.url,
      '--data-dir',
      d.dataDir,
      'console',
      'node1',
      '--follow',
      '--kernel',
      '--lines',
      '1',
    ]);
    try {
      await follow.waitForOutput(/Kernel panic/, 10_000);
      expect(follow.output()).not.toContain('sysrq: Trigger');
      await send(NODE_IP, ['[   43.5] Out of memory: Killed process 1234 (leaky)\n']);
      await follow.waitForOutput(/Out of memory: Killed process 1234/, 10_000);
    } finally {
      await follow.stop('SIGINT');
    }
  });

  it('drops datagrams from an address that is no node, and cuts an oversized one', async () => {
    const before = (await consoleOf()).stored.lines;
    await send(STRANGER_IP, ['from a stranger\n']);
    await d.waitForLog((l) => String(l.msg).includes('no node: dropped') && l.peer === STRANGER_IP);
    await send(NODE_IP, [`${'A'.repeat(5000)}\nhidden past the cut\n`]);
    const r = await until('the cut line', async () => {
      const c = await consoleOf();
      return c.stored.lines > before ? c : undefined;
    });
    const last = r.lines.at(-1)!;
    expect(last.text.length).toBeLessThanOrEqual(1001);
    expect(last.text.startsWith('AAAA')).toBe(true);
    const all = (await consoleOf()).lines.map((l) => l.text);
    expect(all).not.toContain('from a stranger');
    expect(all).not.toContain('hidden past the cut');
  });

  it('stores a replayed boot log whole: 1,500 datagrams at once', async () => {
    const before = (await consoleOf()).stored.lines;
    await send(
      NODE_IP,
      Array.from({ length: 1500 }, (_, i) => `[    1.${String(i).padStart(6, '0')}] boot line ${i}\n`),
    );
    const texts = await until('the whole replay', async () => {
      const c = await consoleOf();
      return c.lines.some((l) => l.text.endsWith('boot line 1499')) ? c.lines.map((l) => l.text) : undefined;
    });
    const replay = texts.filter((t) => / boot line \d+$/.test(t));
    expect(replay).toHaveLength(1500);
    expect(before).toBeGreaterThan(0);
  });

  it('bounds a flood: lines past the node budget are dropped and counted, the store stays within its cap', async () => {
    const before = (await consoleOf()).stored;
    // 16 lines a datagram × 1000: 16,000 lines as fast as one process sends them.
    await send(NODE_IP, [Array.from({ length: 16 }, (_, i) => `flood line ${i}`).join('\n')], { repeat: 1000 });
    await d.waitForLog((l) => String(l.msg).includes('over the node budget'));
    const stored = await until('the flood stored', async () => {
      const c = (await consoleOf()).stored;
      return c.lines > before.lines ? c : undefined;
    });
    expect(stored.lines - before.lines).toBeLessThanOrEqual(NETCONSOLE_BURST_LINES + 400);
    expect(stored.lines).toBeLessThanOrEqual(stored.maxLines);
    expect(stored.bytes).toBeLessThanOrEqual(stored.maxBytes);
    // Once it has room again, one line says how many were lost.
    await send(NODE_IP, ['after the flood\n']);
    const tail = await until('the marker', async () => {
      const l = (await consoleOf('--lines', '3')).lines.map((x) => x.text);
      return l.includes('after the flood') ? l : undefined;
    });
    const metrics = await srv.exec(process.execPath, [
      '-e',
      `fetch(${JSON.stringify(`${d.url}/metrics`)}, { headers: { authorization: 'Bearer ${d.token}' } }).then((r) => r.text()).then((t) => process.stdout.write(t))`,
    ]);
    const dropped = /lilcluster_netconsole_total\{kind="floodDropped"\} (\d+)/.exec(metrics.stdout);
    expect(Number(dropped?.[1])).toBeGreaterThan(0);
    expect(metrics.stdout).toMatch(/lilcluster_netconsole_total\{kind="unknownSource"\} [1-9]/);
    expect(tail.join('\n')).toMatch(/\[lilcluster: \d+ kernel console lines dropped: over 200 lines\/s\]/);
  });

  it('keeps the lines across a dispatcher restart', async () => {
    await d.stop();
    d = await start();
    const texts = (await consoleOf('--kernel')).lines.map((l) => l.text);
    expect(texts).toContain('[   42.000002] Kernel panic - not syncing: sysrq triggered crash');
  });
});
