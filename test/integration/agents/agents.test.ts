/**
 * Real agent processes (dist/bin/node-agent.mjs) against the hub on loopback, with the
 * in-memory engine, for what the engine does not show: insecure mode, orphans of a killed
 * agent, progress, operator commands. Tokens, timeouts, kill -9, frozen and busy nodes and
 * restarts run against the real dispatcher process in dispatcher.test.ts.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseMac, type Mac } from '../../../dispatcher/src/nodes/mac.js';
import { groupMembers } from '../../../node-agent/src/proc.js';
import { FakeEngine } from './fake-engine.js';
import { startAgent, startHub, waitFor, type AgentProcess, type TestHub } from './harness.js';
import { AGENT_BIN, ROOT } from '../../lab/paths.js';

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
  const a = startAgent([
    '--dispatcher',
    h.url,
    '--enroll-token',
    h.enrollToken,
    ...keyArgs,
    '--mac',
    m,
    '--work-dir',
    join(h.dataDir, `agent-${m.replaceAll(':', '')}`),
    ...extra,
  ]);
  agents.push(a);
  return a;
}

describe('agents: trust', () => {
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
    // The agent coalesces progress within PROGRESS_THROTTLE_MS, so the task waits for the test
    // to see its first fraction before it prints the second (no race with a loaded machine).
    const go = join(hub.dataDir, 'agent-525400000305', 'go');
    const wait = (file: string) => `while [ ! -e ../../${file} ]; do sleep 0.05; done`;
    engine.add([{ command: `echo PROGRESS 0.3; ${wait('go')}; echo PROGRESS 0.9; ${wait('end')}` }]);
    await waitFor('first progress', () => engine.progressLog.length === 1, 10_000);
    writeFileSync(go, '');
    await waitFor('second progress', () => engine.progressLog.length === 2, 10_000);
    writeFileSync(join(hub.dataDir, 'agent-525400000305', 'end'), '');
    await waitFor('done', () => engine.done === 1, 10_000);
    expect(engine.progressLog.map((p) => p.fraction)).toEqual([0.3, 0.9]);
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
    const exec = await hub.hub.send(
      m,
      { kind: 'exec', command: 'echo one; echo two >&2; exit 3' },
      { onOutput: (s, d) => chunks.push(`${s}:${d}`) },
    );
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
