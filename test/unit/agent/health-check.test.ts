/**
 * The agent's health check runner, with real processes (the runner's exec path): pass, fail,
 * a hang killed at its timeout and counted as a failure, output bounded to its last 4 KiB,
 * and the schedule (at once, then every interval; a new check replaces the old).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HealthChecker, runHealthCheck, TailBuffer, type HealthRun } from '../../../node-agent/src/health-check.js';
import { ProcessRunner } from '../../../node-agent/src/runner.js';
import { ChildProcessLauncher } from '../../../node-agent/src/launcher.js';
import { MAX_HEALTH_OUTPUT } from '../../../dispatcher/src/protocol/messages.js';
import { Agent } from '../../../node-agent/src/agent.js';
import { FakeInventory, FakePower, FakeReporter, FakeRunner, FakeSource } from './fakes.js';

const runner = new ProcessRunner({
  tasksDir: mkdtempSync(join(tmpdir(), 'lc-health-')),
  maxOutputBytes: 1 << 20,
  maxOutputsBytes: 1 << 20,
  maxInputBytes: 1 << 20,
  killGraceMs: 200,
  httpBase: 'http://127.0.0.1:1',
  userAgent: 'test',
  launcher: new ChildProcessLauncher(),
});
const spec = (command: string | string[], timeoutMs = 5000, intervalMs = 60_000) => ({ command, timeoutMs, intervalMs });

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('health check runs', () => {
  it('passes on exit 0, with its output', async () => {
    const r = await runHealthCheck(runner, spec(['/bin/sh', '-c', 'echo all good']));
    expect(r).toMatchObject({ ok: true, exitCode: 0, timedOut: false, output: 'all good\n' });
  });

  it('fails on a non-zero exit, stdout and stderr both kept', async () => {
    const r = await runHealthCheck(runner, spec('echo checking; echo "/scratch is full" >&2; exit 3'));
    expect(r).toMatchObject({ ok: false, exitCode: 3, timedOut: false });
    expect(r.output).toContain('checking\n');
    expect(r.output).toContain('/scratch is full\n');
  });

  it('says so when a failing check printed nothing', async () => {
    const r = await runHealthCheck(runner, spec(['/bin/false']));
    expect(r.output).toBe('exited with status 1 (no output)\n');
  });

  it('kills a hanging check at its timeout and counts it as a failure', async () => {
    const t0 = Date.now();
    const r = await runHealthCheck(runner, spec('echo started; exec sleep 30', 300));
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(r).toMatchObject({ ok: false, timedOut: true });
    expect(r.output.split('\n')[0]).toBe('timed out after 0.3s');
    expect(r.output).toContain('started');
  });

  it('fails a check that cannot start, saying why', async () => {
    const r = await runHealthCheck(runner, spec(['/nonexistent/check']));
    expect(r.ok).toBe(false);
    expect(r.output).toMatch(/^cannot run the health check: .*nonexistent/);
  });

  it('keeps only the last 4 KiB of a chatty check', async () => {
    const r = await runHealthCheck(
      runner,
      spec('i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done; echo "the real error"; exit 1'),
    );
    expect(Buffer.byteLength(r.output)).toBeLessThanOrEqual(MAX_HEALTH_OUTPUT);
    expect(r.output.length).toBeGreaterThan(MAX_HEALTH_OUTPUT - 100);
    expect(r.output.endsWith('the real error\n')).toBe(true);
    expect(r.output).not.toContain('line 0\n');
  });

  it('bounds a timed-out chatty check too, its cause first', async () => {
    const r = await runHealthCheck(runner, spec('yes "spam spam spam"', 300));
    expect(Buffer.byteLength(r.output)).toBeLessThanOrEqual(MAX_HEALTH_OUTPUT);
    expect(r.output.startsWith('timed out after 0.3s\n')).toBe(true);
  });
});

describe('tail buffer', () => {
  it('keeps the last bytes and never cuts a character', () => {
    const t = new TailBuffer(5);
    t.push('abc');
    t.push('déf'); // é is 2 bytes
    expect(t.text()).toBe('cdéf');
    t.push('ééé');
    expect(t.text()).toBe('éé');
  });
});

describe('health checker schedule', () => {
  it('runs at once and every interval, and a new check replaces the old', async () => {
    const sent: HealthRun[] = [];
    const hc = new HealthChecker({
      runner,
      say: () => {},
      send: (r) => {
        sent.push(r);
        return true;
      },
    });
    hc.configure(spec('echo one', 2000, 50));
    await until(() => sent.length >= 3);
    expect(sent.every((r) => r.ok && r.output === 'one\n')).toBe(true);
    // The same check on a new welcome keeps its schedule and sends its last run again.
    const before = sent.length;
    hc.configure(spec('echo one', 2000, 50));
    expect(sent.length).toBe(before + 1);
    hc.configure(spec('echo two; exit 1', 2000, 50));
    await until(() => sent.some((r) => r.output === 'two\n'));
    expect(sent.at(-1)).toMatchObject({ ok: false, exitCode: 1 });
    hc.stop();
    const n = sent.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(sent.length).toBeLessThanOrEqual(n + 1); // at most the run in flight when it stopped... which reports nothing
  });
});

describe('no task before a new check has run', () => {
  it('the agent asks for none until the first run is reported, then asks', async () => {
    const source = new FakeSource();
    const fakeRunner = new FakeRunner();
    let finish!: () => void;
    const gate = new Promise<void>((r) => (finish = r));
    // The check's run waits for the test, like a slow check at boot.
    const slowRunner = {
      exec: async () => {
        await gate;
        return { exitCode: 1, signal: null, timedOut: false, durationMs: 5 };
      },
    };
    let agent!: Agent;
    const hc = new HealthChecker({
      runner: slowRunner,
      say: () => {},
      send: (r) => source.send({ type: 'health', ...r }),
      released: () => agent.topUp(),
    });
    agent = new Agent(
      { source, runner: fakeRunner, reporter: new FakeReporter(), inventory: new FakeInventory(), power: new FakePower() },
      {
        slots: 2,
        prefetch: 0,
        execTimeoutMs: 1000,
        say: () => {},
        onSession: (s) => hc.configure(s.healthCheck),
        holdTasks: () => hc.holding,
      },
    );
    agent.start();
    source.connect({
      nodeName: 'n1',
      heartbeatMs: 60_000,
      missedHeartbeats: 3,
      maxMessageBytes: 1 << 20,
      verified: true,
      healthCheck: spec('check'),
    });
    expect(hc.holding).toBe(true);
    expect(source.of('ready')).toEqual([]);
    finish();
    await until(() => source.of('ready').length > 0);
    // The report went out before the agent asked for work: a failing node is drained first.
    const order = source.sent.map((m) => m.type).filter((t) => t === 'health' || t === 'ready');
    expect(order).toEqual(['health', 'ready']);
    hc.stop();
    await agent.stop();
  });
});
