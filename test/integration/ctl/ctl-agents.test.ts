/**
 * `dispatcherctl` against the real dispatcher process with real agents (node-agent on
 * simulated machines, machine.ts): inspect, exec with streamed output and exit codes, drain,
 * reboot (the machine boots again and comes back under its name, with a higher boot count),
 * poweroff and Wake-on-LAN (a listener on port 9 powers the machine on, as its NIC would),
 * the boot log, events --follow, wrong tokens and unknown nodes. Needs root (namespaces).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSocket, type Socket } from 'node:dgram';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { SimulatedMachine } from '../../lab/simulated-machine.js';
import { baseEnv, runCtl, startCtl, waitUntil } from '../../lab/run-ctl.js';
import { EXIT } from '../../../dispatcher/src/ctl/errors.js';
import { parseMagicPacket } from '../../../dispatcher/src/nodes/wol.js';
import type { NodeList, NodeView } from '../../../dispatcher/src/api/schemas.js';

const MACS = ['52:54:00:aa:00:01', '52:54:00:aa:00:02', '52:54:00:aa:00:03'];

let d: DispatcherProcess;
let machines: SimulatedMachine[];
let env: Record<string, string>;
let admin: Record<string, string>;
let wol: Socket;
const wakes: string[] = [];

async function nodes(): Promise<NodeView[]> {
  return ((await (await fetch(`${d.url}/api/v1/nodes`)).json()) as NodeList).nodes;
}
async function node(name: string): Promise<NodeView> {
  return (await nodes()).find((n) => n.name === name)!;
}
async function until(what: string, f: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > end)
      throw new Error(`timed out waiting for ${what}\n${machines.map((m) => `${m.mac}: ${m.output.slice(-800)}`).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  d = await startDispatcher();
  env = baseEnv(d.url);
  admin = { ...env, LILCLUSTER_TOKEN: d.token };
  machines = MACS.map((mac) => new SimulatedMachine({ dispatcherUrl: d.url, mac, pubKeyFile: d.pubKeyFile, slots: 2 }));
  // The "NICs": a magic packet for a machine that is off powers it on.
  wol = createSocket({ type: 'udp4', reuseAddr: true });
  wol.on('message', (msg) => {
    const mac = parseMagicPacket(msg);
    const m = machines.find((x) => x.mac === mac);
    if (!m) return;
    wakes.push(mac!);
    if (m.state === 'off') m.powerOn();
  });
  await new Promise<void>((r) => wol.bind(9, '0.0.0.0', () => r()));
  for (const m of machines) m.powerOn();
  await until('3 ready nodes', async () => (await nodes()).filter((n) => n.state === 'ready' && n.connected).length === 3, 60_000);
}, 90_000);

afterAll(async () => {
  wol?.close();
  await Promise.all((machines ?? []).map((m) => m.stop()));
  for (const m of machines ?? []) m.cleanup();
  await d?.stop();
});

describe('dispatcherctl with real agents', () => {
  it('nodes and status show the machines as the agents describe them', async () => {
    const r = await runCtl(['nodes'], env);
    expect(r.code).toBe(0);
    const rows = r.stdout.trim().split('\n').slice(1);
    expect(rows).toHaveLength(3);
    for (const [i, row] of rows.entries()) expect(row).toMatch(new RegExp(`^node${i + 1}\\s+ready\\s+${MACS[i]}\\s+127\\.0\\.0\\.1\\s`));
    const j = JSON.parse((await runCtl(['nodes', '--json'], env)).stdout) as NodeList;
    for (const n of j.nodes) {
      expect(n).toMatchObject({ connected: true, state: 'ready', bootCount: 1, slots: 2, tasks: [] });
      expect(n.cores).toBeGreaterThan(0);
      expect(n.cpu).toBeTruthy();
      expect(n.memoryMiB).toBeGreaterThan(0);
    }
    const s = await runCtl(['status'], env);
    expect(s.stdout).toMatch(/nodes\s+3 total: 3 ready; 3 connected/);
  });

  it('inspect asks the agent for a snapshot', async () => {
    const r = await runCtl(['inspect', 'node1'], admin);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n').length).toBeGreaterThan(5);
    const j = JSON.parse((await runCtl(['inspect', 'node1', '--json'], admin)).stdout) as {
      node: string;
      ackMs: number;
      snapshot: unknown;
    };
    expect(j.node).toBe('node1');
    expect(typeof j.snapshot).toBe('object');
  });

  it("exec streams stdout and stderr and exits with the command's exit code", async () => {
    const r = await runCtl(['exec', 'node1', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7'], admin);
    expect(r).toMatchObject({ code: 7, stdout: 'out\n', stderr: 'err\n' });
    const shell = await runCtl(['exec', 'node2', '--', 'echo $((6*7))'], admin);
    expect(shell).toMatchObject({ code: 0, stdout: '42\n' });
    const t0 = Date.now();
    const slow = await runCtl(['exec', 'node1', '--timeout', '1', '--', 'sleep', '30'], admin);
    expect(slow.code).not.toBe(0);
    expect(Date.now() - t0).toBeLessThan(15_000);
  });

  it('drain and undrain', async () => {
    expect((await runCtl(['drain', 'node1'], admin)).code).toBe(0);
    expect((await node('node1')).state).toBe('draining');
    expect((await node('node1')).draining).toBe(true);
    expect((await runCtl(['undrain', 'node1'], admin)).code).toBe(0);
    await until('node1 ready', async () => (await node('node1')).state === 'ready');
  });

  it('refuses a wrong token and names an unknown node; nothing happens', async () => {
    const bootsBefore = machines[0]!.boots;
    const wrong = await runCtl(['reboot', 'node1', '--token', 'not-the-token'], env);
    expect(wrong.code).toBe(EXIT.UNAUTHORIZED);
    expect(wrong.stderr).toContain('wrong admin token');
    const unknown = await runCtl(['reboot', 'node7'], admin);
    expect(unknown.code).toBe(EXIT.FAILED);
    expect(unknown.stderr).toContain('no node named "node7"');
    await new Promise((r) => setTimeout(r, 500));
    expect(machines[0]!.boots).toBe(bootsBefore);
    expect((await node('node1')).state).toBe('ready');
  });

  it('reboot: the machine boots again and comes back as the same node, the events tell the story', async () => {
    // --limit 1: the last event first, then the stream resumes right after it (no gap to race with).
    const follow = startCtl(['events', '--follow', '--limit', '1', '--node', 'node2'], env);
    await waitUntil('the follow to start', () => follow.out().includes('\n'));
    const r = await runCtl(['reboot', 'node2'], admin);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^node2: reboot acknowledged in [\d.]+ ms/);
    await until('node2 back', async () => {
      const n = await node('node2');
      return n.state === 'ready' && n.connected && n.bootCount === 2;
    });
    expect(machines[1]!.boots).toBe(2);
    expect(machines[1]!.history).toEqual(['reboot']);
    const n2 = await node('node2');
    expect(n2.mac).toBe(MACS[1]);
    await waitUntil('the events', () => /booting → ready/.test(follow.out()) || /rebooting → ready/.test(follow.out()));
    follow.child.kill('SIGINT');
    const out = (await follow.done).stdout;
    expect(out).toMatch(/node2 reboot acknowledged/);
    expect(out).toMatch(/node2 ready → rebooting: operator reboot/);
    // The boot log shows both boots: boot script, then the agent's hello.
    const log = JSON.parse((await runCtl(['boot-log', 'node2', '--json'], env)).stdout) as {
      boots: { boot: number; stages: { stage: string }[] }[];
    };
    expect(log.boots.length).toBeGreaterThanOrEqual(2);
    for (const b of log.boots.slice(-2))
      expect(b.stages.map((s) => s.stage)).toEqual(expect.arrayContaining(['http.script', 'agent.hello']));
    expect((await runCtl(['boot-log', 'node2'], env)).stdout).toMatch(/agent\.hello/);
  });

  it('poweroff, then wake: the magic packet powers the machine on again', async () => {
    const r = await runCtl(['poweroff', 'node3'], admin);
    expect(r.code).toBe(0);
    await until('node3 off', async () => (await node('node3')).state === 'off' && machines[2]!.state === 'off');
    const i = await runCtl(['inspect', 'node3'], admin);
    expect(i.code).toBe(EXIT.FAILED);
    expect(i.stderr).toContain('dispatcherctl wake node3');
    const w = await runCtl(['wake', 'node3'], admin);
    expect(w.code).toBe(0);
    await until('node3 woken and back', async () => {
      const n = await node('node3');
      return n.state === 'ready' && n.connected && n.bootCount === 2;
    });
    expect(wakes).toContain(MACS[2]);
    expect(machines[2]!.history).toEqual(['poweroff']);
  });

  it('reboot --all --rolling brings every node back', async () => {
    const before = machines.map((m) => m.boots);
    const r = await runCtl(['reboot', '--all', '--rolling'], admin, { timeoutMs: 120_000 });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/rolling reboot #\d+ done in \S+: 3\/3 nodes back/);
    expect(machines.map((m) => m.boots)).toEqual(before.map((b) => b + 1));
    const after = await nodes();
    expect(after.map((n) => [n.name, n.mac, n.state])).toEqual(MACS.map((mac, i) => [`node${i + 1}`, mac, 'ready']));
  });
});

describe('enrollment: approve, with a real agent', () => {
  it('holds a new machine pending until `dispatcherctl approve`, then its agent joins', async () => {
    const p = await startDispatcher({ cluster: 'enrollment: approve\n' });
    const m = new SimulatedMachine({ dispatcherUrl: p.url, mac: '52:54:00:cc:00:01', pubKeyFile: p.pubKeyFile, slots: 1 });
    try {
      m.powerOn();
      const penv = baseEnv(p.url);
      const list = async () => (JSON.parse((await runCtl(['nodes', '--json'], penv)).stdout) as NodeList).nodes;
      await waitUntil('the machine registered', () => m.boots > 0);
      await new Promise((r) => setTimeout(r, 1500)); // its agent says hello and is told to wait
      const before = await list();
      expect(before).toEqual([expect.objectContaining({ name: 'node1', enrollment: 'pending', connected: false })]);
      expect((await runCtl(['nodes'], penv)).stdout).toMatch(/^node1 \(pending\)/m);
      const a = await runCtl(['approve', 'node1'], { ...penv, LILCLUSTER_TOKEN: p.token });
      expect(a.code).toBe(0);
      // The agent asks again within its retry interval (10 s) and is admitted.
      const end = Date.now() + 30_000;
      for (;;) {
        const n = (await list())[0]!;
        if (n.connected && n.state === 'ready') break;
        if (Date.now() > end) throw new Error(`node1 did not join after approval:\n${m.output.slice(-1500)}`);
        await new Promise((r) => setTimeout(r, 250));
      }
      expect((await list())[0]).toMatchObject({ enrollment: 'admitted' });
    } finally {
      await m.stop();
      m.cleanup();
      await p.stop();
    }
  });
});
