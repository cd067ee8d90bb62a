/**
 * Rolling reboot of 3 real agents (simulated machines, machine.ts) while a job runs on them:
 * every node is drained, rebooted and back under its name with one more boot; every task of
 * the job ends done, none lost and none cut short by a reboot (the drain waited for it).
 * Needs root (namespaces).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDispatcher, type DispatcherProcess } from '../../lab/dispatcher.js';
import { SimulatedMachine } from '../../lab/simulated-machine.js';
import { baseEnv, runCtl } from '../../lab/run-ctl.js';
import type { NodeList, OperationView } from '../../../dispatcher/src/api/schemas.js';

const MACS = ['52:54:00:bb:00:01', '52:54:00:bb:00:02', '52:54:00:bb:00:03'];
const TASKS = 120;

let d: DispatcherProcess;
let machines: SimulatedMachine[];

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await fetch(d.url + path, {
    method,
    headers: { authorization: `Bearer ${d.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return JSON.parse(text) as T;
}

async function until(what: string, f: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > end)
      throw new Error(
        `timed out waiting for ${what}\n${machines.map((m) => `${m.mac}: ${m.output.slice(-800)}`).join('\n')}\n${d.output().slice(-2000)}`,
      );
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  d = await startDispatcher();
  machines = MACS.map((mac) => new SimulatedMachine({ dispatcherUrl: d.url, mac, pubKeyFile: d.pubKeyFile, slots: 2 }));
  for (const m of machines) m.powerOn();
  await until(
    '3 ready nodes',
    async () => (await api<NodeList>('GET', '/api/v1/nodes')).nodes.filter((n) => n.state === 'ready').length === 3,
  );
}, 90_000);

afterAll(async () => {
  await Promise.all((machines ?? []).map((m) => m.stop()));
  for (const m of machines ?? []) m.cleanup();
  await d?.stop();
});

interface JobView {
  id: number;
  state: string;
  counts: { total: number; queued: number; running: number; done: number; failed: number; cancelled: number };
}

describe('rolling reboot while a job runs', () => {
  it('loses no task and brings every agent back', async () => {
    // Tasks of ~0.5 s each, 120 of them on 6 slots: the job spans the whole rolling reboot.
    const job = await api<JobView>('POST', '/api/v1/jobs', {
      name: 'rolling-reboot-test',
      command: ['sh', '-c', 'sleep 0.5; echo task {i} on $(cat /proc/sys/kernel/hostname)'],
      params: Array.from({ length: TASKS }, (_, i) => ({ i: String(i) })),
      maxAttempts: 1, // a task cut short by a reboot would fail the job: the drain must prevent it
    });
    await until(
      'the job running on every node',
      async () => (await api<NodeList>('GET', '/api/v1/nodes')).nodes.every((n) => n.tasks.length > 0),
      30_000,
    );
    const bootsBefore = machines.map((m) => m.boots);

    const r = await runCtl(
      ['reboot', '--all', '--rolling', '--batch', '1', '--json'],
      { ...baseEnv(d.url), LILCLUSTER_TOKEN: d.token },
      { timeoutMs: 180_000 },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const op = JSON.parse(r.stdout) as OperationView;
    expect(op.state).toBe('done');
    expect(op.nodes.map((n) => [n.name, n.phase])).toEqual([
      ['node1', 'back'],
      ['node2', 'back'],
      ['node3', 'back'],
    ]);
    // Each node was drained while it still ran tasks, then rebooted once they were done.
    const events = (await api<{ events: { node: string | null; message: string }[] }>('GET', '/api/v1/events?kind=operation&limit=1000'))
      .events;
    for (const name of ['node1', 'node2', 'node3']) {
      const phases = events.filter((e) => e.node === name).map((e) => e.message.replace(/^rolling reboot #\d+: /, ''));
      expect(phases.map((p) => p.split(' ')[1])).toEqual(['draining', 'rebooting', 'back']);
    }

    // Every agent is back, under the same name, one boot later.
    expect(machines.map((m) => m.boots)).toEqual(bootsBefore.map((b) => b + 1));
    expect(machines.every((m) => m.history.length === 1 && m.history[0] === 'reboot')).toBe(true);
    const after = (await api<NodeList>('GET', '/api/v1/nodes')).nodes;
    expect(after.map((n) => [n.name, n.mac, n.connected])).toEqual(MACS.map((mac, i) => [`node${i + 1}`, mac, true]));
    expect(after.every((n) => !n.draining)).toBe(true);

    // No task lost: the job finishes with every task done, on the rebooted nodes too.
    await until('the job done', async () => (await api<JobView>('GET', `/api/v1/jobs/${job.id}`)).state === 'done', 120_000);
    const done = await api<JobView>('GET', `/api/v1/jobs/${job.id}`);
    expect(done.counts).toMatchObject({ total: TASKS, done: TASKS, failed: 0, cancelled: 0 });
  });
});
