/**
 * Real agent processes (dist/bin/node-agent.mjs) against the hub on loopback, with the
 * in-memory engine: trust (tokens, dispatcher key), timeouts that kill whole process groups,
 * agents killed or frozen mid-task, busy nodes, a dispatcher restart, operator commands.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { rawPublicKey } from '../../../dispatcher/src/trust/secrets.js';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';
import { groupMembers } from '../../../node-agent/src/proc.js';
import { FakeEngine } from './fake-engine.js';
import { AGENT_BIN, ROOT, startAgent, startHub, waitFor, type AgentProcess, type TestHub } from './harness.js';

const mac = (s: string) => parseMac(s) as Mac;
let hub: TestHub | undefined;
const agents: AgentProcess[] = [];

beforeAll(() => {
  if (!existsSync(AGENT_BIN)) execFileSync('make', ['build'], { cwd: ROOT, stdio: 'inherit' });
});

afterEach(async () => {
  for (const a of agents.splice(0)) {
    try {
      process.kill(a.child.pid!, 'SIGCONT');
    } catch {
      /* gone */
    }
    await a.kill('SIGKILL');
  }
  await hub?.stop();
  hub = undefined;
});

function agent(h: TestHub, m: string, extra: string[] = [], opts: { key?: string | null } = {}): AgentProcess {
  const keyArgs = opts.key === null ? [] : ['--dispatcher-key', opts.key ?? h.pubKeyFile];
  const a = startAgent(['--dispatcher', h.url, '--enroll-token', h.enrollToken, ...keyArgs, '--mac', m, '--work-dir', join(h.dataDir, `agent-${m.replaceAll(':', '')}`), ...extra]);
  agents.push(a);
  return a;
}

const busyLoop = (ms: number) => [process.execPath, '-e', `const e = Date.now() + ${ms}; while (Date.now() < e);`];

describe('agents: trust', () => {
  it('refuses an agent with a wrong token', async () => {
    const engine = new FakeEngine();
    hub = await startHub(engine);
    engine.add([{}]);
    const a = startAgent(['--dispatcher', hub.url, '--enroll-token', 'not-the-token-at-all', '--dispatcher-key', hub.pubKeyFile, '--mac', '52:54:00:00:02:01', '--work-dir', join(hub.dataDir, 'a')]);
    agents.push(a);
    await a.waitForLine(/refused by the dispatcher \(bad-token\)/);
    expect(engine.handedOut).toEqual([]);
    expect(hub.core.nodes.byMac(mac('52:54:00:00:02:01'))).toBeUndefined();
  });

  it('makes an agent holding the wrong dispatcher key refuse to run anything', async () => {
    const engine = new FakeEngine();
    hub = await startHub(engine);
    engine.add([{ command: 'touch /tmp/should-not-run' }]);
    const dir = mkdtempSync(join(tmpdir(), 'lc-key-'));
    const wrong = join(dir, 'wrong.pub');
    writeFileSync(wrong, rawPublicKey(generateKeyPairSync('ed25519').publicKey).toString('base64'));
    const a = agent(hub, '52:54:00:00:02:02', [], { key: wrong });
    await a.waitForLine(/REFUSING the dispatcher .* signature does not verify/);
    await waitFor('the agent tells the dispatcher', () => hub!.lines.find((l) => l.msg === 'agent reported an error' && l.code === 'untrusted'));
    await sleep(300);
    expect(engine.handedOut).toEqual([]);
  });

  it('runs nothing without a dispatcher key unless told --insecure, and says so', async () => {
    const engine = new FakeEngine();
    hub = await startHub(engine);
    const a = agent(hub, '52:54:00:00:02:03', [], { key: null });
    await a.waitForLine(/REFUSING the dispatcher .* no dispatcher key is configured/);
    engine.add([{ command: 'echo insecure' }]);
    await sleep(300);
    expect(engine.handedOut).toEqual([]);
    const b = agent(hub, '52:54:00:00:02:04', ['--insecure'], { key: null });
    await b.waitForLine(/INSECURE MODE/);
    await waitFor('result', () => engine.done === 1);
    expect([...engine.results.values()][0]).toMatchObject({ exitCode: 0, stdout: 'insecure\n' });
  });
});

describe('agents: running tasks', () => {
  it('kills a task at its timeout with its whole process group, and it is retried up to its attempts', async () => {
    const engine = new FakeEngine();
    hub = await startHub(engine);
    agent(hub, '52:54:00:00:03:01', ['--kill-grace', '300']);
    engine.add([{ command: 'sleep 30 & echo $$ $!; sleep 30', timeoutMs: 500, maxAttempts: 2 }]);
    await waitFor('2 attempts', () => engine.allResults.length === 2, 20_000);
    expect(engine.allResults.map((r) => [r.result.attempt, r.result.timedOut, r.result.signal])).toEqual([[1, true, 'SIGTERM'], [2, true, 'SIGTERM']]);
    for (const { result } of engine.allResults) {
      const [pgid, bg] = result.stdout.trim().split(' ').map(Number);
      expect(groupMembers(pgid!)).toEqual([]);
      expect(existsSync(`/proc/${bg}`) && !/\) Z /.test(readFileSync(`/proc/${bg}/stat`, 'latin1'))).toBe(false);
    }
    await sleep(300);
    expect(engine.queue).toEqual([]); // no third attempt
  });

  it('finishes elsewhere the tasks of an agent killed with -9 mid-task', async () => {
    const engine = new FakeEngine();
    hub = await startHub(engine);
    const a = agent(hub, '52:54:00:00:03:02', ['--slots', '2']);
    await a.waitForLine(/connected to the dispatcher/);
    engine.add(Array.from({ length: 4 }, (_, i) => ({ command: `sleep 0.8; echo task ${i}` })));
    await waitFor('a holds 2 tasks', () => engine.handedOut.length === 2);
    await a.kill('SIGKILL');
    await waitFor('lost', () => engine.lost.length === 1);
    const b = agent(hub, '52:54:00:00:03:03', ['--slots', '2']);
    await waitFor('4 results', () => engine.done === 4, 20_000);
    expect([...engine.results.values()].every((r) => r.exitCode === 0)).toBe(true);
    expect(engine.allResults.every((r) => r.mac === mac('52:54:00:00:03:03'))).toBe(true);
    expect(engine.handedOut.filter((h) => h.mac === mac('52:54:00:00:03:03')).map((h) => h.attempt).sort()).toEqual([1, 1, 2, 2]);
    void b;
  });

  it('kills the orphans of a killed agent when it starts again', async () => {
    const engine = new FakeEngine();
    hub = await startHub(engine);
    const a = agent(hub, '52:54:00:00:03:04');
    engine.add([{ command: 'echo $$ > ../../pgid; sleep 60' }]);
    await waitFor('started', () => existsSync(join(hub!.dataDir, 'agent-525400000304', 'pgid')));
    const pgid = Number(readFileSync(join(hub.dataDir, 'agent-525400000304', 'pgid'), 'utf8'));
    await a.kill('SIGKILL');
    expect(groupMembers(pgid).length).toBeGreaterThan(0); // orphaned, still running
    const again = agent(hub, '52:54:00:00:03:04');
    await again.waitForLine(/killed 1 task\(s\) left running by a previous agent/);
    await waitFor('group gone', () => groupMembers(pgid).length === 0, 3000);
  });

  it('reports progress from PROGRESS lines', async () => {
    const engine = new FakeEngine();
    hub = await startHub(engine);
    agent(hub, '52:54:00:00:03:05');
    engine.add([{ command: 'echo PROGRESS 0.3; sleep 0.7; echo PROGRESS 0.9; sleep 0.7' }]);
    await waitFor('done', () => engine.done === 1, 10_000);
    expect(engine.progressLog.map((p) => p.fraction)).toEqual([0.3, 0.9]);
  });
});

describe('agents: liveness', () => {
  it('declares a frozen agent lost within 3 heartbeat intervals, and it comes back when thawed', async () => {
    const engine = new FakeEngine();
    hub = await startHub(engine, { heartbeatSeconds: 1 });
    const a = agent(hub, '52:54:00:00:04:01');
    await a.waitForLine(/connected to the dispatcher/);
    await sleep(1200);
    const stoppedAt = Date.now();
    process.kill(a.child.pid!, 'SIGSTOP');
    await waitFor('lost', () => engine.lost.length === 1, 6000);
    const took = engine.lost[0]!.at - stoppedAt;
    expect(took).toBeLessThanOrEqual(3000 + 100);
    expect(took).toBeGreaterThan(1500);
    process.kill(a.child.pid!, 'SIGCONT');
    await waitFor('reconnected', () => a.out.filter((l) => /connected to the dispatcher as/.test(l)).length === 2, 15_000);
    expect(hub.hub.isConnected(mac('52:54:00:00:04:01'))).toBe(true);
  });

  it('never declares lost a node whose tasks keep every core at 100 %', async () => {
    const engine = new FakeEngine();
    hub = await startHub(engine, { heartbeatSeconds: 0.5 });
    const cores = Number(execFileSync('nproc').toString().trim());
    agent(hub, '52:54:00:00:04:02', ['--slots', String(cores)]);
    engine.add(Array.from({ length: cores }, () => ({ command: busyLoop(7000) })));
    await waitFor('all done', () => engine.done === cores, 30_000);
    expect([...engine.results.values()].every((r) => r.exitCode === 0 && r.durationMs >= 6900)).toBe(true);
    expect(engine.lost).toEqual([]);
    expect(hub.lines.filter((l) => l.msg === 'agent gone')).toEqual([]);
  });
});

describe('agents: dispatcher restart', () => {
  it('reconnects, re-adopts the task it was running and delivers the result it could not deliver', async () => {
    const engine1 = new FakeEngine();
    hub = await startHub(engine1);
    const { port, dataDir } = hub;
    const a = agent(hub, '52:54:00:00:05:01', ['--slots', '2']);
    await a.waitForLine(/connected to the dispatcher/);
    engine1.add([{ command: 'sleep 0.5; echo short' }, { command: 'sleep 2.5; echo long' }]);
    await waitFor('both handed out', () => engine1.handedOut.length === 2);
    await hub.stop(); // graceful: nodes are not lost, leases stay
    hub = undefined;
    await sleep(1500); // the short task finishes while the dispatcher is down
    // The restarted dispatcher knows the leases from its store (here: copied by hand).
    const engine2 = new FakeEngine();
    for (const [k, v] of engine1.leases) engine2.leases.set(k, v);
    hub = await startHub(engine2, { dataDir, port });
    await waitFor('both results', () => engine2.done === 2, 20_000);
    expect([...engine2.results.values()].map((r) => r.stdout).sort()).toEqual(['long\n', 'short\n']);
    expect(engine2.handedOut).toEqual([]); // nothing ran twice
    expect(hub.lines.some((l) => l.msg === 'agent re-adopted' && l.kept === 2)).toBe(true);
  });
});

describe('agents: operator commands', () => {
  it('inspects, runs exec with streamed output, cancels a task, and refuses power commands on a host', async () => {
    const engine = new FakeEngine();
    hub = await startHub(engine);
    const m = mac('52:54:00:00:06:01');
    const a = agent(hub, m);
    await a.waitForLine(/connected to the dispatcher/);
    const inspect = await hub.hub.send(m, { kind: 'inspect' }, { timeoutMs: 30_000 });
    expect(inspect.ok).toBe(true);
    expect(inspect.result).toMatchObject({ inventory: { cpu: { cores: expect.any(Number) } }, live: { memTotalMiB: expect.any(Number) } });
    const chunks: string[] = [];
    const exec = await hub.hub.send(m, { kind: 'exec', command: 'echo one; echo two >&2; exit 3' }, { onOutput: (s, d) => chunks.push(`${s}:${d}`) });
    expect(exec).toMatchObject({ ok: true, result: { exitCode: 3 } });
    expect(chunks.sort()).toEqual(['stderr:two\n', 'stdout:one\n']);
    expect(await hub.hub.send(m, { kind: 'reboot' })).toMatchObject({ ok: false, error: expect.stringMatching(/--allow-power/) });
    engine.add([{ command: 'sleep 30' }]);
    await waitFor('running', () => hub!.hub.liveStatus(m)?.running.length === 1 || engine.handedOut.length === 1);
    await sleep(200);
    expect(await hub.hub.send(m, { kind: 'cancel', taskId: 1 })).toMatchObject({ ok: true });
    await waitFor('cancel reported', () => engine.allResults.length === 1);
    expect(engine.allResults[0]!.result.error).toMatch(/^cancelled: cancelled by the operator/);
  });
});
