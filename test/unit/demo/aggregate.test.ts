/**
 * The demo's reduction of the π job (demo/aggregate.ts) and its settings: what
 * `DEMO_EXIT=1 make demo` passes or fails on.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { parseResults, problems, summarize, type TaskLine } from '../../../demo/aggregate.js';
import { clusterFileText, demoNodes, demoSettings, SettingsError } from '../../../demo/settings.js';
import { parseClusterFile } from '../../../dispatcher/src/nodes/cluster-file.js';

const done = (taskId: number, node: string, stdout: string): TaskLine => ({ taskId, state: 'done', result: { node, exitCode: 0, stdout } });
const expectation = { tasks: 3, nodes: ['node1', 'node2'], tolerance: 0.01 };

describe('summarize', () => {
  it('sums hits and samples over tasks, ignoring PROGRESS lines, and counts tasks per node', () => {
    const s = summarize([
      done(1, 'node1', 'PROGRESS 0.25\nPROGRESS 0.50\n785 1000\n'),
      done(2, 'node2', '786 1000'),
      done(3, 'node1', 'PROGRESS 0.75\n785 1000\n'),
    ]);
    expect(s.done).toBe(3);
    expect(s.hits).toBe(2356);
    expect(s.samples).toBe(3000);
    expect(s.estimate).toBeCloseTo((4 * 2356) / 3000, 12);
    expect([...s.perNode]).toEqual([
      ['node1', 2],
      ['node2', 1],
    ]);
    expect(problems(s, expectation)).toEqual([]);
  });

  it.each([
    [
      'a failed task',
      { taskId: 3, state: 'failed', result: { node: 'node1', exitCode: 1, stdout: '' } },
      /1 tasks failed or gave no count \(first: task 3: state failed\)/,
    ],
    ['a task with no result', { taskId: 3, state: 'queued', result: null }, /task 3: state queued/],
    ['a task whose last line is not a count', done(3, 'node1', '785 1000\nsomething else'), /task 3: no "<hits> <samples>" line/],
    ['more hits than samples', done(3, 'node1', '1001 1000'), /more hits than samples/],
  ] as const)('fails on %s', (_what, third, message) => {
    const s = summarize([done(1, 'node1', '785 1000'), done(2, 'node2', '786 1000'), third as TaskLine]);
    expect(problems(s, expectation).join('\n')).toMatch(message);
  });

  it('fails when a node ran no task', () => {
    const s = summarize([done(1, 'node1', '785 1000'), done(2, 'node1', '786 1000'), done(3, 'node1', '785 1000')]);
    expect(problems(s, expectation)).toEqual(['node2 ran no task']);
  });

  it('fails when the estimate is off, or when tasks are missing', () => {
    const off = summarize([done(1, 'node1', '700 1000'), done(2, 'node2', '700 1000'), done(3, 'node1', '700 1000')]);
    expect(problems(off, expectation).join('\n')).toMatch(/π estimate 2\.8 is off by more than 0\.01/);
    const short = summarize([done(1, 'node1', '785 1000'), done(2, 'node2', '786 1000')]);
    expect(problems(short, expectation)).toContain('2 tasks in the results, expected 3');
    expect(problems(summarize([]), expectation).join('\n')).toMatch(/π estimate NaN/);
  });

  it('reads JSON lines as dispatcherctl results --format jsonl prints them, and names a bad line', () => {
    const text = `${JSON.stringify(done(1, 'node1', '785 1000'))}\n\n${JSON.stringify(done(2, 'node2', '786 1000'))}\n`;
    expect(parseResults(text).map((t) => t.taskId)).toEqual([1, 2]);
    expect(() => parseResults('{"taskId":1}\nnot json\n')).toThrow(/results line 2 is not JSON/);
  });
});

describe('demo settings', () => {
  it('mixes firmware (odd nodes BIOS, even UEFI) with distinct MACs, addresses and lcdemo taps of at most 15 bytes', () => {
    const nodes = demoNodes(9);
    expect(nodes.map((n) => n.firmware)).toEqual(['bios', 'uefi', 'bios', 'uefi', 'bios', 'uefi', 'bios', 'uefi', 'bios']);
    expect(new Set(nodes.map((n) => n.mac)).size).toBe(9);
    expect(new Set(nodes.map((n) => n.ip)).size).toBe(9);
    for (const n of nodes) expect(n.tap).toMatch(/^lcdemo.{1,9}$/);
  });

  it('writes a cluster file the dispatcher accepts, naming each machine by MAC with its fixed address', () => {
    const nodes = demoNodes(3);
    const parsed = parseClusterFile(clusterFileText(nodes));
    expect(parsed.enrollment).toBe('auto');
    expect(parsed.nodes.map((n) => [n.name, n.ip, n.labels])).toEqual([
      ['node1', '10.77.0.11', ['demo', 'bios']],
      ['node2', '10.77.0.12', ['demo', 'uefi']],
      ['node3', '10.77.0.13', ['demo', 'bios']],
    ]);
  });

  it('reads DEMO_* with defaults, and refuses bad values by name', () => {
    const d = demoSettings({}, '/repo');
    expect(d.nodes).toHaveLength(3);
    expect(d.stateDir).toBe('/repo/.cache/demo');
    expect(d.exitWhenDone).toBe(false);
    expect(d.tasks).toBe(300);
    const ci = demoSettings({ DEMO_NODES: '2', DEMO_EXIT: '1', DEMO_DIR: 'x/y' }, '/repo');
    expect(ci.nodes.map((n) => n.name)).toEqual(['node1', 'node2']);
    expect(ci.exitWhenDone).toBe(true);
    expect(ci.stateDir).toBe('/repo/x/y');
    expect(() => demoSettings({ DEMO_NODES: '0' }, '/repo')).toThrow(SettingsError);
    expect(() => demoSettings({ DEMO_NODES: 'two' }, '/repo')).toThrow(/DEMO_NODES=two/);
    expect(() => demoSettings({ DEMO_ACCEL: 'xen' }, '/repo')).toThrow(/DEMO_ACCEL=xen/);
    expect(() => demoSettings({ DEMO_EXIT: 'yes' }, '/repo')).toThrow(/DEMO_EXIT=yes/);
  });
});

describe('the task script (demo/job/pi.js)', () => {
  const PI_JS = 'demo/job/pi.js';
  const run = (seed: number, samples: number) =>
    execFileSync(process.execPath, [PI_JS, String(seed), String(samples)], { encoding: 'utf8' });

  it('prints PROGRESS lines, then "<hits> <samples>", the same for the same seed and different for another', () => {
    const out = run(7, 40_000);
    const lines = out.trim().split('\n');
    expect(lines.slice(0, -1)).toEqual(['PROGRESS 0.25', 'PROGRESS 0.50', 'PROGRESS 0.75']);
    expect(lines.at(-1)).toMatch(/^\d+ 40000$/);
    expect(run(7, 40_000)).toBe(out);
    expect(run(8, 40_000)).not.toBe(out);
  });

  it('gives π over a few seeds, through the same reduction as the demo', () => {
    const lines = [1, 2, 3, 4].map((seed) => done(seed, 'node1', run(seed, 250_000)));
    const s = summarize(lines);
    // 1,000,000 samples: σ ≈ 0.0016.
    expect(Math.abs(s.estimate - Math.PI)).toBeLessThan(0.01);
  });

  it('refuses a missing or bad seed with exit code 2', () => {
    const r = spawnSync(process.execPath, [PI_JS, 'x'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/usage: node pi\.js SEED SAMPLES/);
  });
});
